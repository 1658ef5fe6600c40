//! Media files behind the [`BlobStore`] trait, streamed in both directions.
//!
//! A blob is written under a fresh id and becomes visible only when it is
//! complete: a write that fails or exceeds its limit leaves nothing behind.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    pin::Pin,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use uuid::Uuid;

use crate::Error;

/// A boxed byte stream.
pub type BlobReader<'a> = Pin<Box<dyn AsyncRead + Send + 'a>>;

/// The buckets of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Uploaded videos.
    Videos,
    /// Converted MP3 files.
    Audio,
}

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Videos => "videos",
            Bucket::Audio => "audio",
        }
    }
}

/// Metadata stored with a blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub owner_id: String,
    pub job_id: String,
    pub content_type: String,
}

/// A blob after it was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBlob {
    pub id: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// A store of media files.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Checks that the store responds.
    async fn ping(&self) -> Result<(), Error>;

    /// Streams `reader` into a new blob of at most `max_bytes`.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when the stream is longer than `max_bytes`, and
    /// [`Error::Blob`] when reading or writing fails; the partial blob is
    /// removed in both cases.
    async fn put(
        &self,
        bucket: Bucket,
        meta: &BlobMeta,
        reader: BlobReader<'_>,
        max_bytes: u64,
    ) -> Result<StoredBlob, Error> {
        let id = Uuid::new_v4().to_string();
        self.put_as(bucket, &id, meta, reader, max_bytes).await
    }

    /// Like [`BlobStore::put`], under an id the caller chose (a UUID), so that
    /// a retried writer can find and remove what an earlier attempt left.
    async fn put_as(
        &self,
        bucket: Bucket,
        id: &str,
        meta: &BlobMeta,
        reader: BlobReader<'_>,
        max_bytes: u64,
    ) -> Result<StoredBlob, Error>;

    /// The size of a blob in bytes. [`Error::NotFound`] when it does not exist.
    async fn size(&self, bucket: Bucket, id: &str) -> Result<u64, Error>;

    /// Opens a blob for reading from byte `offset` to its end.
    async fn open(
        &self,
        bucket: Bucket,
        id: &str,
        offset: u64,
    ) -> Result<BlobReader<'static>, Error>;

    /// Removes a blob; removing one that does not exist succeeds.
    async fn delete(&self, bucket: Bucket, id: &str) -> Result<(), Error>;

    /// The blob as a local file that may be read in place, when the store
    /// keeps blobs as files; readers must not modify it.
    fn local_path(&self, _bucket: Bucket, _id: &str) -> Option<PathBuf> {
        None
    }
}

/// Blob ids are UUIDs; anything else is refused before it can become a path.
pub fn check_id(id: &str) -> Result<(), Error> {
    Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| Error::NotFound("blob"))
}

/// Copies `reader` into `writer` while counting and hashing, up to `max_bytes`.
///
/// # Errors
///
/// [`Error::TooLarge`] as soon as more than `max_bytes` arrive; [`Error::Blob`]
/// when reading or writing fails.
pub async fn copy_hashed<W>(
    mut reader: BlobReader<'_>,
    writer: &mut W,
    max_bytes: u64,
) -> Result<(u64, String), Error>
where
    W: tokio::io::AsyncWrite + Unpin + ?Sized,
{
    // Hashing runs on a blocking thread while the next chunk is read and
    // written, so that it adds almost nothing to the copy. The channel bounds
    // the chunks in flight to 8 (2 MiB).
    let (chunks, mut received) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        while let Some(chunk) = received.blocking_recv() {
            hasher.update(&chunk);
        }
        hex::encode(hasher.finalize())
    });

    let mut size = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        size += read as u64;
        if size > max_bytes {
            return Err(Error::TooLarge { limit: max_bytes });
        }
        chunks
            .send(buffer[..read].to_vec())
            .await
            .map_err(|_| Error::Blob(std::io::Error::other("the hashing task stopped")))?;
        writer.write_all(&buffer[..read]).await?;
    }
    writer.flush().await?;
    drop(chunks);
    Ok((size, hashing.await?))
}

/// Blobs as files in a directory: `ROOT/BUCKET/ID` with `ID.json` beside it.
#[derive(Debug, Clone)]
pub struct DirBlobStore {
    root: PathBuf,
    /// Whether each blob is flushed to disk before it counts as stored.
    durable: bool,
}

impl DirBlobStore {
    /// Opens (and creates) a blob directory.
    ///
    /// # Errors
    ///
    /// [`Error::Blob`] when the directories cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> Result<DirBlobStore, Error> {
        let root = root.into();
        for bucket in [Bucket::Videos, Bucket::Audio] {
            tokio::fs::create_dir_all(root.join(bucket.as_str())).await?;
        }
        Ok(DirBlobStore {
            root,
            durable: true,
        })
    }

    /// Stores blobs without flushing them to disk, for blobs that are
    /// transient copies of files the user still has, as in `alchemist
    /// convert`. Flushing a 95 MB video took about 60 ms on the benchmark
    /// machine, 2% of its conversion. After a crash such a blob may be lost,
    /// and with it the copy's job, never the user's file.
    pub fn without_flush(self) -> DirBlobStore {
        DirBlobStore {
            durable: false,
            ..self
        }
    }

    fn path(&self, bucket: Bucket, id: &str) -> Result<PathBuf, Error> {
        check_id(id)?;
        Ok(self.root.join(bucket.as_str()).join(id))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[async_trait]
impl BlobStore for DirBlobStore {
    async fn ping(&self) -> Result<(), Error> {
        tokio::fs::metadata(self.root.join(Bucket::Videos.as_str())).await?;
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
        let final_path = self.path(bucket, id)?;
        let id = id.to_owned();
        // A name no reader looks up, so a half-written file is never served.
        let partial_path = self.root.join(bucket.as_str()).join(format!(".{id}.part"));

        let written = async {
            let file = tokio::fs::File::create(&partial_path).await?;
            let mut writer = tokio::io::BufWriter::with_capacity(256 * 1024, file);
            let (size, sha256) = copy_hashed(reader, &mut writer, max_bytes).await?;
            if self.durable {
                writer.into_inner().sync_all().await?;
            }
            let stored = StoredBlob {
                id: id.clone(),
                size,
                sha256,
            };
            let record = serde_json::json!({ "meta": meta, "blob": stored });
            tokio::fs::write(final_path.with_extension("json"), record.to_string()).await?;
            tokio::fs::rename(&partial_path, &final_path).await?;
            Ok::<_, Error>(stored)
        }
        .await;

        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial_path).await;
            let _ = tokio::fs::remove_file(final_path.with_extension("json")).await;
        }
        written
    }

    async fn size(&self, bucket: Bucket, id: &str) -> Result<u64, Error> {
        match tokio::fs::metadata(self.path(bucket, id)?).await {
            Ok(metadata) => Ok(metadata.len()),
            Err(err) if err.kind() == ErrorKind::NotFound => Err(Error::NotFound("blob")),
            Err(err) => Err(err.into()),
        }
    }

    async fn open(
        &self,
        bucket: Bucket,
        id: &str,
        offset: u64,
    ) -> Result<BlobReader<'static>, Error> {
        let mut file = match tokio::fs::File::open(self.path(bucket, id)?).await {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::NotFound => return Err(Error::NotFound("blob")),
            Err(err) => return Err(err.into()),
        };
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::pin(file))
    }

    fn local_path(&self, bucket: Bucket, id: &str) -> Option<PathBuf> {
        self.path(bucket, id).ok().filter(|path| path.is_file())
    }

    async fn delete(&self, bucket: Bucket, id: &str) -> Result<(), Error> {
        let path = self.path(bucket, id)?;
        for path in [path.with_extension("json"), path] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BlobMeta {
        BlobMeta {
            owner_id: "u".into(),
            job_id: "j".into(),
            content_type: "video/mp4".into(),
        }
    }

    #[tokio::test]
    async fn put_open_delete_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        roundtrip(DirBlobStore::open(dir.path()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn unflushed_store_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        roundtrip(
            DirBlobStore::open(dir.path())
                .await
                .unwrap()
                .without_flush(),
        )
        .await;
    }

    async fn roundtrip(store: DirBlobStore) {
        let data = b"0123456789".repeat(1000);
        let stored = store
            .put(
                Bucket::Videos,
                &meta(),
                Box::pin(std::io::Cursor::new(data.clone())),
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));

        let mut tail = Vec::new();
        store
            .open(Bucket::Videos, &stored.id, 9990)
            .await
            .unwrap()
            .read_to_end(&mut tail)
            .await
            .unwrap();
        assert_eq!(tail, b"0123456789");

        store.delete(Bucket::Videos, &stored.id).await.unwrap();
        assert!(matches!(
            store.size(Bucket::Videos, &stored.id).await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn oversized_put_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path()).await.unwrap();
        let result = store
            .put(
                Bucket::Videos,
                &meta(),
                Box::pin(std::io::Cursor::new(vec![7u8; 5000])),
                4096,
            )
            .await;
        assert!(
            matches!(result, Err(Error::TooLarge { limit: 4096 })),
            "{result:?}"
        );
        let mut entries = std::fs::read_dir(dir.path().join("videos")).unwrap();
        assert!(entries.next().is_none(), "a partial file was left behind");
    }

    #[tokio::test]
    async fn ids_that_are_not_uuids_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirBlobStore::open(dir.path()).await.unwrap();
        for id in ["../secret", "/etc/passwd", "a/b", ""] {
            assert!(
                matches!(
                    store.open(Bucket::Audio, id, 0).await,
                    Err(Error::NotFound(_))
                ),
                "{id}"
            );
        }
    }
}
