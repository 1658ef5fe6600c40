//! The GridFS blob store against a MongoDB-compatible server, and one
//! behaviour suite run against both the GridFS and the directory store.
//!
//! The server is the one `MONGODB_URL` names (default
//! `mongodb://127.0.0.1:27017/alchemist_test`); `scripts/services` starts one.
//! Each test works in a database of its own, named after the URL's database
//! with a random suffix, and drops it at the end. When no server responds, the
//! GridFS tests print a message and pass, unless `CI` is set, when they fail.

use std::{
    future::Future,
    io,
    panic::AssertUnwindSafe,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use alchemist_runtime::{
    Error,
    blob::{BlobMeta, BlobReader, BlobStore, Bucket, DirBlobStore},
    gridfs::GridFsBlobStore,
};
use futures::{FutureExt, TryStreamExt};
use mongodb::{
    Client, Database,
    bson::{Bson, Document, doc},
    options::ClientOptions,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use uuid::Uuid;

/// The driver's default GridFS chunk size.
const CHUNK_SIZE: usize = 255 * 1024;

/// More than two chunks, so that a file has full chunks and a short last one.
const LARGE_LEN: usize = 600 * 1000;

const DEFAULT_URL: &str = "mongodb://127.0.0.1:27017/alchemist_test";

fn meta() -> BlobMeta {
    BlobMeta {
        owner_id: "owner-1".into(),
        job_id: "job-1".into(),
        content_type: "video/mp4".into(),
    }
}

/// Pseudo-random bytes (the top byte of a multiplicative hash of the
/// position), so that a read from a wrong offset returns other bytes.
fn sample(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn reader(data: Vec<u8>) -> BlobReader<'static> {
    Box::pin(io::Cursor::new(data))
}

/// A reader whose every read fails, as a request body that breaks off.
struct BrokenReader;

impl AsyncRead for BrokenReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the body broke off",
        )))
    }
}

/// Yields `data`, then fails.
fn reader_failing_after(data: Vec<u8>) -> BlobReader<'static> {
    Box::pin(io::Cursor::new(data).chain(BrokenReader))
}

async fn read_from(store: &dyn BlobStore, bucket: Bucket, id: &str, offset: u64) -> Vec<u8> {
    let mut content = Vec::new();
    store
        .open(bucket, id, offset)
        .await
        .unwrap_or_else(|err| panic!("open {id} at {offset}: {err}"))
        .read_to_end(&mut content)
        .await
        .unwrap_or_else(|err| panic!("read {id} from {offset}: {err}"));
    content
}

#[track_caller]
fn assert_not_found<T>(result: Result<T, Error>, operation: &str) {
    match result {
        Err(Error::NotFound("blob")) => {}
        Err(err) => panic!("{operation}: expected NotFound, got {err:?}"),
        Ok(_) => panic!("{operation}: expected NotFound, got Ok"),
    }
}

// === The behaviour every blob store shares ===

/// Checks, through the trait alone, the behaviour that callers rely on.
async fn check_blob_store(store: &dyn BlobStore) {
    store.ping().await.expect("ping");

    check_round_trip_and_offsets(store).await;
    check_empty_blob(store).await;
    check_size_limit(store).await;
    check_reader_error(store).await;
    check_missing_and_invalid_ids(store).await;
}

async fn check_round_trip_and_offsets(store: &dyn BlobStore) {
    let data = sample(LARGE_LEN);
    let stored = store
        .put(Bucket::Videos, &meta(), reader(data.clone()), 1 << 20)
        .await
        .expect("put");
    assert_eq!(stored.size, LARGE_LEN as u64);
    assert_eq!(stored.sha256, sha256_hex(&data));
    assert!(Uuid::parse_str(&stored.id).is_ok(), "id {}", stored.id);
    assert_eq!(
        store.size(Bucket::Videos, &stored.id).await.expect("size"),
        LARGE_LEN as u64
    );

    let whole = read_from(store, Bucket::Videos, &stored.id, 0).await;
    assert_eq!(whole.len(), LARGE_LEN);
    assert_eq!(sha256_hex(&whole), stored.sha256);

    let offsets = [
        1,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1000,
        2 * CHUNK_SIZE + 7,
        LARGE_LEN - 1,
        LARGE_LEN,
    ];
    for offset in offsets {
        let tail = read_from(store, Bucket::Videos, &stored.id, offset as u64).await;
        assert_eq!(tail.len(), LARGE_LEN - offset, "length from {offset}");
        assert!(tail == data[offset..], "content from {offset}");
    }
    let past_end = read_from(store, Bucket::Videos, &stored.id, LARGE_LEN as u64 + 10).await;
    assert!(past_end.is_empty(), "read past the end");

    assert_not_found(
        store.size(Bucket::Audio, &stored.id).await,
        "size in the other bucket",
    );

    let other = store
        .put(Bucket::Videos, &meta(), reader(b"other".to_vec()), 1 << 20)
        .await
        .expect("put a second blob");
    assert_ne!(other.id, stored.id);

    store
        .delete(Bucket::Videos, &stored.id)
        .await
        .expect("delete");
    assert_not_found(
        store.size(Bucket::Videos, &stored.id).await,
        "size after delete",
    );
    assert_not_found(
        store.open(Bucket::Videos, &stored.id, 0).await,
        "open after delete",
    );
    store
        .delete(Bucket::Videos, &stored.id)
        .await
        .expect("delete twice");
    assert_eq!(
        read_from(store, Bucket::Videos, &other.id, 0).await,
        b"other",
        "the second blob after the first was deleted"
    );
}

async fn check_empty_blob(store: &dyn BlobStore) {
    let stored = store
        .put(Bucket::Audio, &meta(), reader(Vec::new()), 1 << 20)
        .await
        .expect("put an empty blob");
    assert_eq!(stored.size, 0);
    assert_eq!(stored.sha256, sha256_hex(b""));
    assert_eq!(
        store.size(Bucket::Audio, &stored.id).await.expect("size"),
        0
    );
    assert!(
        read_from(store, Bucket::Audio, &stored.id, 0)
            .await
            .is_empty()
    );
}

async fn check_size_limit(store: &dyn BlobStore) {
    let at_limit = store
        .put(Bucket::Videos, &meta(), reader(sample(5000)), 5000)
        .await
        .expect("a blob of exactly max_bytes");
    assert_eq!(at_limit.size, 5000);

    let over = store
        .put(Bucket::Videos, &meta(), reader(sample(5001)), 5000)
        .await;
    assert!(
        matches!(over, Err(Error::TooLarge { limit: 5000 })),
        "{over:?}"
    );
}

async fn check_reader_error(store: &dyn BlobStore) {
    let result = store
        .put(
            Bucket::Videos,
            &meta(),
            reader_failing_after(sample(LARGE_LEN)),
            1 << 20,
        )
        .await;
    // The upload function returns 400 Bad Request for InvalidData, so the reader's error
    // must reach the caller unchanged.
    match result {
        Err(Error::Blob(err)) => assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}"),
        other => panic!("expected the reader's error, got {other:?}"),
    }
}

async fn check_missing_and_invalid_ids(store: &dyn BlobStore) {
    let missing = Uuid::new_v4().to_string();
    assert_not_found(
        store.size(Bucket::Videos, &missing).await,
        "size of a missing id",
    );
    assert_not_found(
        store.open(Bucket::Videos, &missing, 0).await,
        "open a missing id",
    );
    store
        .delete(Bucket::Videos, &missing)
        .await
        .expect("delete a missing id");

    for id in ["../secret", "/etc/passwd", "a/b", "", "{\"$ne\": null}"] {
        assert_not_found(store.size(Bucket::Videos, id).await, id);
        assert_not_found(store.open(Bucket::Videos, id, 0).await, id);
        assert_not_found(store.delete(Bucket::Videos, id).await, id);
    }
}

#[tokio::test]
async fn dir_store_behaviour() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = DirBlobStore::open(dir.path())
        .await
        .expect("open the store");
    check_blob_store(&store).await;
}

#[tokio::test]
async fn gridfs_store_behaviour() {
    with_gridfs(|store| async move { check_blob_store(&store).await }).await;
}

// === GridFS only ===

/// A database of its own on the test server, or `None` to skip the test.
///
/// # Panics
///
/// When `MONGODB_URL` is invalid, or when the server cannot be reached and
/// `CI` is set.
async fn test_database() -> Option<Database> {
    let url = std::env::var("MONGODB_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let mut options = ClientOptions::parse(&url)
        .await
        .expect("MONGODB_URL is a valid MongoDB connection string");
    options.server_selection_timeout = Some(Duration::from_secs(3));
    let base_name = options
        .default_database
        .clone()
        .unwrap_or_else(|| "alchemist_test".to_owned());
    let client = Client::with_options(options).expect("create a MongoDB client");

    if let Err(err) = client
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "no MongoDB server responds at MONGODB_URL and CI is set: {err}"
        );
        eprintln!(
            "skipping a GridFS test: no MongoDB server responds at MONGODB_URL \
             (start one with scripts/services): {err}"
        );
        return None;
    }

    let suffix = Uuid::new_v4().simple().to_string();
    Some(client.database(&format!("{base_name}_{}", &suffix[..16])))
}

/// Runs `test` with a store in a fresh database and drops the database
/// afterwards, also when the test fails.
async fn with_gridfs<F, Fut>(test: F)
where
    F: FnOnce(GridFsBlobStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(database) = test_database().await else {
        return;
    };
    let outcome = AssertUnwindSafe(async {
        let store = GridFsBlobStore::open(database.clone())
            .await
            .expect("open the GridFS store");
        test(store).await;
    })
    .catch_unwind()
    .await;

    if let Err(err) = database.drop().await {
        eprintln!(
            "failed to drop the test database {}: {err}",
            database.name()
        );
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn count(database: &Database, collection: &str) -> u64 {
    database
        .collection::<Document>(collection)
        .count_documents(doc! {})
        .await
        .unwrap_or_else(|err| panic!("count {collection}: {err}"))
}

#[track_caller]
fn assert_eq_count(actual: u64, expected: u64, collection: &str) {
    assert_eq!(actual, expected, "documents in {collection}");
}

#[tokio::test]
async fn gridfs_round_trip_spans_chunks() {
    with_gridfs(|store| async move {
        let data = sample(LARGE_LEN);
        let stored = store
            .put(Bucket::Videos, &meta(), reader(data.clone()), 1 << 20)
            .await
            .expect("put");

        let database = store.database();
        assert_eq_count(count(database, "videos.files").await, 1, "videos.files");
        assert_eq_count(
            count(database, "videos.chunks").await,
            LARGE_LEN.div_ceil(CHUNK_SIZE) as u64,
            "videos.chunks",
        );

        let content = read_from(&store, Bucket::Videos, &stored.id, 0).await;
        assert_eq!(sha256_hex(&content), sha256_hex(&data));
        assert!(content == data, "content differs");

        store
            .delete(Bucket::Videos, &stored.id)
            .await
            .expect("delete");
        assert_eq_count(count(database, "videos.files").await, 0, "videos.files");
        assert_eq_count(count(database, "videos.chunks").await, 0, "videos.chunks");
    })
    .await;
}

#[tokio::test]
async fn gridfs_offset_in_second_chunk() {
    with_gridfs(|store| async move {
        let data = sample(LARGE_LEN);
        let stored = store
            .put(Bucket::Audio, &meta(), reader(data.clone()), 1 << 20)
            .await
            .expect("put");

        let offset = CHUNK_SIZE + CHUNK_SIZE / 2;
        let tail = read_from(&store, Bucket::Audio, &stored.id, offset as u64).await;
        assert_eq!(tail.len(), LARGE_LEN - offset);
        assert!(tail == data[offset..], "tail content differs");
    })
    .await;
}

#[tokio::test]
async fn gridfs_too_large_leaves_nothing() {
    with_gridfs(|store| async move {
        // Two reads of 256 KiB go through before the limit is crossed, so a
        // full chunk is already in the chunks collection when the put fails.
        let result = store
            .put(Bucket::Videos, &meta(), reader(sample(LARGE_LEN)), 300_000)
            .await;
        assert!(
            matches!(result, Err(Error::TooLarge { limit: 300_000 })),
            "{result:?}"
        );

        let database = store.database();
        assert_eq_count(count(database, "videos.files").await, 0, "videos.files");
        assert_eq_count(count(database, "videos.chunks").await, 0, "videos.chunks");
    })
    .await;
}

#[tokio::test]
async fn gridfs_reader_error_leaves_nothing() {
    with_gridfs(|store| async move {
        let result = store
            .put(
                Bucket::Audio,
                &meta(),
                reader_failing_after(sample(LARGE_LEN)),
                1 << 20,
            )
            .await;
        assert!(matches!(result, Err(Error::Blob(_))), "{result:?}");

        let database = store.database();
        assert_eq_count(count(database, "audio.files").await, 0, "audio.files");
        assert_eq_count(count(database, "audio.chunks").await, 0, "audio.chunks");
    })
    .await;
}

#[tokio::test]
async fn gridfs_files_document_fields() {
    with_gridfs(|store| async move {
        let data = sample(LARGE_LEN);
        let stored = store
            .put(Bucket::Videos, &meta(), reader(data.clone()), 1 << 20)
            .await
            .expect("put");

        let file = store
            .database()
            .collection::<Document>("videos.files")
            .find_one(doc! { "_id": &stored.id })
            .await
            .expect("find the files document")
            .expect("a files document whose _id is the blob id as a string");
        assert_eq!(file.get("_id"), Some(&Bson::String(stored.id.clone())));
        assert_eq!(file.get_i64("length"), Ok(LARGE_LEN as i64));
        assert_eq!(file.get_i32("chunkSize"), Ok(CHUNK_SIZE as i32));

        let metadata = file.get_document("metadata").expect("metadata");
        assert_eq!(metadata.get_str("owner_id"), Ok("owner-1"));
        assert_eq!(metadata.get_str("job_id"), Ok("job-1"));
        assert_eq!(metadata.get_str("content_type"), Ok("video/mp4"));
        assert_eq!(metadata.get_i64("size"), Ok(LARGE_LEN as i64));
        assert_eq!(metadata.get_str("sha256"), Ok(sha256_hex(&data).as_str()));
    })
    .await;
}

#[tokio::test]
async fn gridfs_indexes_created_on_open() {
    with_gridfs(|store| async move {
        for bucket in ["videos", "audio"] {
            let files_index =
                find_index(store.database(), &format!("{bucket}.files"), "filename").await;
            assert_eq!(
                files_index.get_document("key").ok(),
                Some(&doc! { "filename": 1, "uploadDate": 1 }),
                "{bucket}.files index"
            );

            let chunks_index =
                find_index(store.database(), &format!("{bucket}.chunks"), "files_id").await;
            assert_eq!(
                chunks_index.get_document("key").ok(),
                Some(&doc! { "files_id": 1, "n": 1 }),
                "{bucket}.chunks index"
            );
            assert_eq!(
                chunks_index.get_bool("unique"),
                Ok(true),
                "{bucket}.chunks index"
            );
        }
    })
    .await;
}

/// The index of `collection` whose first key is `first_key`.
async fn find_index(database: &Database, collection: &str, first_key: &str) -> Document {
    let indexes: Vec<Document> = database
        .run_cursor_command(doc! { "listIndexes": collection })
        .await
        .unwrap_or_else(|err| panic!("list the indexes of {collection}: {err}"))
        .try_collect()
        .await
        .unwrap_or_else(|err| panic!("read the indexes of {collection}: {err}"));
    indexes
        .into_iter()
        .find(|index| {
            index
                .get_document("key")
                .ok()
                .and_then(|key| key.keys().next())
                .is_some_and(|key| key == first_key)
        })
        .unwrap_or_else(|| panic!("{collection} has no index on {first_key}"))
}

#[tokio::test]
async fn gridfs_open_keeps_non_unique_index() {
    let Some(database) = test_database().await else {
        return;
    };
    // The driver creates the chunks index without `unique` when it writes the
    // first chunk of a bucket, so an existing deployment may already have it.
    let created = database
        .run_command(doc! {
            "createIndexes": "videos.chunks",
            "indexes": [{ "key": { "files_id": 1, "n": 1 }, "name": "files_id_1_n_1" }],
        })
        .await;
    let opened = match created {
        Ok(_) => GridFsBlobStore::open(database.clone()).await.map(|_| ()),
        Err(err) => Err(err.into()),
    };
    let dropped = database.drop().await;

    opened.expect("open a store whose chunks index is not unique");
    dropped.expect("drop the test database");
}
