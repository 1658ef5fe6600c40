//! Blobs in MongoDB GridFS: one GridFS bucket per [`Bucket`], in the database
//! that the connection string names.
//!
//! A blob is a GridFS file whose `_id` is the blob id, a UUID string, and
//! whose `metadata` contains `owner_id`, `job_id`, `content_type`, `size` and
//! `sha256`. Files are written through the driver's upload stream. They are
//! read straight from the chunks collection instead of through the driver's
//! download stream, because that stream always starts at the first chunk and a
//! read from an offset should start at the chunk that contains the offset.

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use mongodb::{
    Client, Collection, Cursor, Database, IndexModel,
    bson::{Binary, Bson, Document, doc},
    error::{ErrorKind, GridFsErrorKind},
    gridfs::{FilesCollectionDocument, GridFsBucket, GridFsUploadStream},
    options::{ClientOptions, GridFsBucketOptions, IndexOptions},
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio_util::{compat::FuturesAsyncWriteCompatExt, io::StreamReader};

use crate::{
    Error,
    blob::{BlobMeta, BlobReader, BlobStore, Bucket, StoredBlob, check_id, copy_hashed},
};

/// The database used when the connection string names none.
pub const DEFAULT_DATABASE: &str = "alchemist";

/// The application name sent to the server, shown in its logs and `currentOp`.
const APP_NAME: &str = "audio-alchemist";

/// Chunks per cursor batch when reading. The server's default first batch may
/// hold up to 16 MiB, and four chunks of the default 255 KiB keep an open
/// reader near 1 MiB.
const CHUNKS_PER_BATCH: u32 = 4;

/// Server error codes for "an index with these keys exists with other
/// options" (`IndexOptionsConflict`, `IndexKeySpecsConflict`).
const INDEX_CONFLICT_CODES: [i32; 2] = [85, 86];

/// Blobs as GridFS files, in the buckets `videos` and `audio`.
#[derive(Debug, Clone)]
pub struct GridFsBlobStore {
    database: Database,
    videos: GridFsBucket,
    audio: GridFsBucket,
}

/// The fields of a chunks collection document that a read needs.
#[derive(Debug, Deserialize)]
struct ChunkDocument {
    n: i64,
    data: Binary,
}

impl GridFsBlobStore {
    /// Connects to the server of a `mongodb://` or `mongodb+srv://` URL and
    /// opens the database in its path, or [`DEFAULT_DATABASE`] when it has none.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`] when the URL is invalid or the server cannot be reached
    /// within the server selection timeout (30 s unless the URL sets
    /// `serverSelectionTimeoutMS`).
    pub async fn connect(url: &str) -> Result<GridFsBlobStore, Error> {
        let mut options = ClientOptions::parse(url).await?;
        if options.app_name.is_none() {
            options.app_name = Some(APP_NAME.to_owned());
        }
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(options)?;
        GridFsBlobStore::open(client.database(&name)).await
    }

    /// Opens the buckets in `database` and creates their indexes if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Mongo`] when the indexes cannot be created.
    pub async fn open(database: Database) -> Result<GridFsBlobStore, Error> {
        let store = GridFsBlobStore {
            videos: gridfs_bucket(&database, Bucket::Videos),
            audio: gridfs_bucket(&database, Bucket::Audio),
            database,
        };
        for bucket in [Bucket::Videos, Bucket::Audio] {
            store.create_indexes(bucket).await?;
        }
        Ok(store)
    }

    /// The database that contains the buckets.
    pub fn database(&self) -> &Database {
        &self.database
    }

    fn gridfs(&self, bucket: Bucket) -> &GridFsBucket {
        match bucket {
            Bucket::Videos => &self.videos,
            Bucket::Audio => &self.audio,
        }
    }

    fn files(&self, bucket: Bucket) -> Collection<Document> {
        self.database
            .collection(&format!("{}.files", bucket.as_str()))
    }

    fn chunks(&self, bucket: Bucket) -> Collection<ChunkDocument> {
        self.database
            .collection(&format!("{}.chunks", bucket.as_str()))
    }

    /// Creates the two indexes that the GridFS specification requires.
    ///
    /// The driver creates them itself only when a file fills a whole chunk
    /// while the files collection is still empty, so a bucket whose first
    /// file is smaller than one chunk would never get them. The chunks index
    /// is unique, as the specification says; an index with the same keys but
    /// other options, as the driver creates, is accepted as it is.
    async fn create_indexes(&self, bucket: Bucket) -> Result<(), Error> {
        let files_index = IndexModel::builder()
            .keys(doc! { "filename": 1, "uploadDate": 1 })
            .build();
        let chunks_index = IndexModel::builder()
            .keys(doc! { "files_id": 1, "n": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build();

        let created = [
            self.files(bucket).create_index(files_index).await,
            self.chunks(bucket).create_index(chunks_index).await,
        ];
        for result in created {
            match result {
                Ok(_) => {}
                Err(err) if is_index_conflict(&err) => {
                    tracing::debug!(
                        bucket = bucket.as_str(),
                        cause = %err,
                        "a GridFS index exists with other options; keeping it"
                    );
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    async fn find_file(&self, bucket: Bucket, id: &str) -> Result<FilesCollectionDocument, Error> {
        check_id(id)?;
        self.gridfs(bucket)
            .find_one(doc! { "_id": id })
            .await?
            .ok_or(Error::NotFound("blob"))
    }

    /// Deletes the files document and every chunk of `id`, if there are any.
    async fn remove(&self, bucket: Bucket, id: &str) -> Result<(), Error> {
        self.files(bucket).delete_one(doc! { "_id": id }).await?;
        self.chunks(bucket)
            .delete_many(doc! { "files_id": id })
            .await?;
        Ok(())
    }

    /// Removes what a failed put wrote, logging when that fails too.
    async fn discard(&self, bucket: Bucket, upload: &mut GridFsUploadStream, id: &str) {
        // `abort` deletes the chunks of a stream that is still open, and stops
        // its `Drop` from spawning the same delete. It fails on a stream that
        // is closed already (by `close`, or by the driver after a failed
        // write), so its result is ignored and `remove` below does the work
        // in every case.
        let _ = upload.abort().await;
        if let Err(err) = self.remove(bucket, id).await {
            tracing::warn!(
                bucket = bucket.as_str(),
                blob_id = id,
                cause = %err,
                "failed to remove a partial GridFS file"
            );
        }
    }
}

#[async_trait]
impl BlobStore for GridFsBlobStore {
    async fn ping(&self) -> Result<(), Error> {
        self.database.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    async fn put_as(
        &self,
        bucket: Bucket,
        id: &str,
        meta: &BlobMeta,
        reader: BlobReader<'_>,
        max_bytes: u64,
    ) -> Result<StoredBlob, Error> {
        check_id(id)?;
        let id = id.to_owned();
        let metadata = doc! {
            "owner_id": &meta.owner_id,
            "job_id": &meta.job_id,
            "content_type": &meta.content_type,
        };
        let mut upload = self
            .gridfs(bucket)
            .open_upload_stream(&id)
            .id(Bson::String(id.clone()))
            .metadata(metadata)
            .await?;

        let (size, sha256) = match write_and_close(&mut upload, reader, max_bytes).await {
            Ok(written) => written,
            Err(err) => {
                self.discard(bucket, &mut upload, &id).await;
                return Err(err);
            }
        };

        // The upload stream takes its metadata when it opens, before the size
        // and hash are known. Until this update the files document lacks
        // them, but no caller can look the blob up before `put` returns.
        // NOTE: a put cancelled before `close` leaves nothing, because the
        // stream's `Drop` deletes its chunks, but one cancelled during this
        // update leaves a complete file that no job refers to.
        let recorded = self
            .files(bucket)
            .update_one(
                doc! { "_id": &id },
                doc! { "$set": {
                    // BSON has no unsigned integers. GridFS stores `length`
                    // as a signed 64-bit integer too, so any stored size fits.
                    "metadata.size": i64::try_from(size).unwrap_or(i64::MAX),
                    "metadata.sha256": &sha256,
                } },
            )
            .await;
        if let Err(err) = recorded {
            self.discard(bucket, &mut upload, &id).await;
            return Err(err.into());
        }

        Ok(StoredBlob { id, size, sha256 })
    }

    async fn size(&self, bucket: Bucket, id: &str) -> Result<u64, Error> {
        Ok(self.find_file(bucket, id).await?.length)
    }

    async fn open(
        &self,
        bucket: Bucket,
        id: &str,
        offset: u64,
    ) -> Result<BlobReader<'static>, Error> {
        let file = self.find_file(bucket, id).await?;
        if offset >= file.length {
            return Ok(Box::pin(tokio::io::empty()));
        }

        let chunk_size = u64::from(file.chunk_size_bytes);
        if chunk_size == 0 {
            return Err(Error::Corrupt(format!("GridFS file {id} has chunkSize 0")));
        }
        // Whole chunks before the offset are never fetched. The bytes of the
        // first fetched chunk before the offset are dropped.
        let first_chunk = offset / chunk_size;
        let cursor = self
            .chunks(bucket)
            .find(doc! { "files_id": id, "n": { "$gte": chunk_number(first_chunk)? } })
            .sort(doc! { "n": 1 })
            .projection(doc! { "_id": 0, "n": 1, "data": 1 })
            .batch_size(CHUNKS_PER_BATCH)
            .await?;

        let chunks = ChunkReader {
            file_id: id.to_owned(),
            cursor,
            length: file.length,
            chunk_size,
            next_chunk: first_chunk,
            chunk_count: file.length.div_ceil(chunk_size),
            skip: usize::try_from(offset % chunk_size)
                .map_err(|_| Error::Corrupt(format!("GridFS file {id} has chunks too large")))?,
        };
        Ok(Box::pin(StreamReader::new(Box::pin(chunks.into_stream()))))
    }

    async fn delete(&self, bucket: Bucket, id: &str) -> Result<(), Error> {
        check_id(id)?;
        match self
            .gridfs(bucket)
            .delete(Bson::String(id.to_owned()))
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if is_file_not_found(&err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Streams `reader` into `upload`, then closes it, which writes the last chunk
/// and the files document. Returns the size and hex SHA-256.
async fn write_and_close(
    upload: &mut GridFsUploadStream,
    reader: BlobReader<'_>,
    max_bytes: u64,
) -> Result<(u64, String), Error> {
    let mut writer = upload.compat_write();
    let written = copy_hashed(reader, &mut writer, max_bytes).await?;
    writer.shutdown().await?;
    Ok(written)
}

fn gridfs_bucket(database: &Database, bucket: Bucket) -> GridFsBucket {
    database.gridfs_bucket(
        GridFsBucketOptions::builder()
            .bucket_name(bucket.as_str().to_owned())
            .build(),
    )
}

fn is_index_conflict(err: &mongodb::error::Error) -> bool {
    matches!(&*err.kind, ErrorKind::Command(command) if INDEX_CONFLICT_CODES.contains(&command.code))
}

fn is_file_not_found(err: &mongodb::error::Error) -> bool {
    matches!(
        &*err.kind,
        ErrorKind::GridFs(GridFsErrorKind::FileNotFound { .. })
    )
}

/// Converts a chunk number to the signed type of the `n` field.
fn chunk_number(n: u64) -> Result<i64, Error> {
    i64::try_from(n).map_err(|_| Error::Corrupt(format!("GridFS chunk number {n} is too large")))
}

/// Reads the chunks of one file in order from a cursor that starts at
/// `next_chunk`, checking each chunk's number and length as the driver's
/// download stream does.
struct ChunkReader {
    file_id: String,
    cursor: Cursor<ChunkDocument>,
    length: u64,
    chunk_size: u64,
    next_chunk: u64,
    chunk_count: u64,
    /// Bytes to drop from the start of the next chunk.
    skip: usize,
}

impl ChunkReader {
    fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures::stream::try_unfold(self, |mut chunks| async move {
            match chunks.next_chunk().await {
                Ok(Some(bytes)) => Ok(Some((bytes, chunks))),
                Ok(None) => Ok(None),
                Err(err) => Err(io::Error::other(err)),
            }
        })
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        if self.next_chunk == self.chunk_count {
            return Ok(None);
        }

        let expected = chunk_number(self.next_chunk)?;
        let chunk = self.cursor.try_next().await?.ok_or_else(|| {
            Error::Corrupt(format!(
                "GridFS file {} is missing chunk {expected}",
                self.file_id
            ))
        })?;
        if chunk.n != expected {
            return Err(Error::Corrupt(format!(
                "GridFS file {} is missing chunk {expected}, found chunk {} instead",
                self.file_id, chunk.n
            )));
        }
        let start = self.next_chunk * self.chunk_size;
        let expected_len = self.chunk_size.min(self.length - start);
        if chunk.data.bytes.len() as u64 != expected_len {
            return Err(Error::Corrupt(format!(
                "GridFS file {} has chunk {expected} of {} bytes, expected {expected_len}",
                self.file_id,
                chunk.data.bytes.len()
            )));
        }

        self.next_chunk += 1;
        let skip = std::mem::take(&mut self.skip);
        Ok(Some(Bytes::from(chunk.data.bytes).slice(skip..)))
    }
}
