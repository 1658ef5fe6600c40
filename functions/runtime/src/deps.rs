//! The store and blob store of a deployment, chosen by environment variables.

use std::sync::Arc;

use crate::{
    Error,
    blob::{BlobStore, DirBlobStore},
    config::{Env, Reader},
    sql::SqlStore,
    store::Store,
};

/// Names of the variables read here.
pub const ENV_PORT: &str = "PORT";
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_BLOB_DIR: &str = "BLOB_DIR";

/// What every function connects to at start-up.
pub struct Dependencies {
    pub port: u16,
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
}

impl Dependencies {
    /// Reads `PORT`, `DATABASE_URL` and `BLOB_DIR`, then connects.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every missing or invalid variable, or the
    /// error of connecting to the database or opening the blob directory.
    pub async fn from_env(env: &dyn Env) -> Result<Dependencies, Error> {
        let mut reader = Reader::new(env);
        let port = reader.parse_or(ENV_PORT, 8080u16);
        let database_url = reader.required(
            ENV_DATABASE_URL,
            "the SQL database, sqlite:PATH or mysql://USER:PASSWORD@HOST/DB",
        );
        let blob_dir = reader.required(
            ENV_BLOB_DIR,
            "the directory that holds videos and MP3 files",
        );
        reader.finish()?;
        let (Some(database_url), Some(blob_dir)) = (database_url, blob_dir) else {
            unreachable!("finish() fails when a required variable is missing");
        };

        let store = SqlStore::connect(&database_url).await?;
        let blobs = DirBlobStore::open(blob_dir).await?;
        Ok(Dependencies {
            port,
            store: Arc::new(store),
            blobs: Arc::new(blobs),
        })
    }
}
