//! The store and blob store of a deployment, chosen by environment variables.

use std::sync::Arc;

use mongodb::options::ConnectionString;

use crate::{
    Error,
    blob::{BlobStore, DirBlobStore},
    config::{Env, Reader},
    gridfs::GridFsBlobStore,
    sql::SqlStore,
    store::Store,
};

/// Names of the variables read here.
pub const ENV_PORT: &str = "PORT";
pub const ENV_BIND_ADDRESS: &str = "BIND_ADDRESS";
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_BLOB_DIR: &str = "BLOB_DIR";
pub const ENV_MONGODB_URL: &str = "MONGODB_URL";

/// Connections every function opens at start-up.
pub struct Dependencies {
    pub port: u16,
    /// The address to listen on, from `BIND_ADDRESS` (default: all interfaces).
    pub bind: std::net::IpAddr,
    pub store: Arc<dyn Store>,
    /// The blob store, for the functions that read or write media.
    pub blobs: Option<Arc<dyn BlobStore>>,
}

/// The variables of [`Dependencies`], read and checked before anything connects.
pub struct DependencySettings {
    port: u16,
    bind: std::net::IpAddr,
    database_url: String,
    blob_location: Option<BlobLocation>,
}

impl DependencySettings {
    /// Reads `PORT`, `DATABASE_URL` and, when `with_blobs` is set, either
    /// `MONGODB_URL` (blobs in GridFS) or `BLOB_DIR` (blobs in a directory).
    /// Problems are recorded in `reader`; `None` means one was recorded.
    pub fn read(reader: &mut Reader<'_>, with_blobs: bool) -> Option<DependencySettings> {
        let port = reader.parse_or(ENV_PORT, 8080u16);
        let bind = reader.parse_or(ENV_BIND_ADDRESS, std::net::IpAddr::from([0, 0, 0, 0]));
        let database_url = reader.required(
            ENV_DATABASE_URL,
            "the SQL database, sqlite:PATH or mysql://USER:PASSWORD@HOST/DB",
        );
        let blob_location = if with_blobs {
            Some(read_blob_location(reader)?)
        } else {
            None
        };
        Some(DependencySettings {
            port,
            bind,
            database_url: database_url?,
            blob_location,
        })
    }

    /// Connects to the database (applying its migrations) and the blob store.
    ///
    /// # Errors
    ///
    /// The error of connecting to the database or the blob store.
    pub async fn connect(self) -> Result<Dependencies, Error> {
        let store = SqlStore::connect(&self.database_url).await?;
        let blobs: Option<Arc<dyn BlobStore>> = match self.blob_location {
            None => None,
            Some(BlobLocation::GridFs(url)) => {
                let blobs = GridFsBlobStore::connect(&url).await?;
                tracing::info!(
                    database = blobs.database().name(),
                    "storing blobs in MongoDB GridFS"
                );
                Some(Arc::new(blobs))
            }
            Some(BlobLocation::Directory(dir)) => {
                let blobs = DirBlobStore::open(dir).await?;
                tracing::info!(
                    directory = %blobs.root().display(),
                    "storing blobs in a directory"
                );
                Some(Arc::new(blobs))
            }
        };
        Ok(Dependencies {
            port: self.port,
            bind: self.bind,
            store: Arc::new(store),
            blobs,
        })
    }
}

impl Dependencies {
    /// Reads the variables of [`DependencySettings::read`] from `env` alone, then connects.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every missing or invalid variable, or the
    /// error of connecting to the database or the blob store.
    pub async fn from_env(env: &dyn Env, with_blobs: bool) -> Result<Dependencies, Error> {
        let mut reader = Reader::new(env);
        let settings = DependencySettings::read(&mut reader, with_blobs);
        reader.finish()?;
        settings
            .expect("finish() fails when a variable is missing")
            .connect()
            .await
    }
}

/// The blob store of a deployment, chosen by [`ENV_MONGODB_URL`] and [`ENV_BLOB_DIR`].
#[derive(Debug, PartialEq, Eq)]
enum BlobLocation {
    GridFs(String),
    Directory(String),
}

/// Reads `MONGODB_URL`, or `BLOB_DIR` when it is unset, recording a problem
/// when neither is set or the URL is not a valid connection string.
fn read_blob_location(reader: &mut Reader<'_>) -> Option<BlobLocation> {
    if let Some(url) = reader.optional(ENV_MONGODB_URL) {
        // The value is left out of the message because it may contain a password.
        if let Err(err) = ConnectionString::parse(&url) {
            reader.problem(format!(
                "{ENV_MONGODB_URL} is not a valid MongoDB connection string \
                 (mongodb://HOST/DB or mongodb+srv://HOST/DB): {err}"
            ));
            return None;
        }
        return Some(BlobLocation::GridFs(url));
    }
    reader
        .required(
            ENV_BLOB_DIR,
            "the directory that contains videos and MP3 files, used when MONGODB_URL is not set",
        )
        .map(BlobLocation::Directory)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn mongodb_url_takes_precedence_over_blob_dir() {
        let env = HashMap::from([
            ("MONGODB_URL", "mongodb://127.0.0.1:27017/alchemist"),
            ("BLOB_DIR", "/var/lib/alchemist"),
        ]);
        let mut reader = Reader::new(&env);
        let location = read_blob_location(&mut reader);
        assert!(reader.finish().is_ok());
        assert_eq!(
            location,
            Some(BlobLocation::GridFs(
                "mongodb://127.0.0.1:27017/alchemist".to_owned()
            ))
        );
    }

    #[test]
    fn blob_dir_used_without_mongodb_url() {
        let env = HashMap::from([("BLOB_DIR", "/var/lib/alchemist")]);
        let mut reader = Reader::new(&env);
        let location = read_blob_location(&mut reader);
        assert!(reader.finish().is_ok());
        assert_eq!(
            location,
            Some(BlobLocation::Directory("/var/lib/alchemist".to_owned()))
        );
    }

    #[test]
    fn missing_blob_location_is_reported() {
        let env: HashMap<&str, &str> = HashMap::new();
        let mut reader = Reader::new(&env);
        assert_eq!(read_blob_location(&mut reader), None);
        let err = reader.finish().unwrap_err().to_string();
        assert!(err.contains("BLOB_DIR is not set"), "{err}");
        assert!(err.contains("MONGODB_URL is not set"), "{err}");
    }

    #[test]
    fn invalid_mongodb_url_is_reported_without_its_value() {
        let env = HashMap::from([("MONGODB_URL", "mysql://user:secret@db/alchemist")]);
        let mut reader = Reader::new(&env);
        assert_eq!(read_blob_location(&mut reader), None);
        let err = reader.finish().unwrap_err().to_string();
        assert!(err.contains("MONGODB_URL is not a valid"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn every_bad_variable_is_reported() {
        let env = HashMap::from([("PORT", "eighty"), ("MONGODB_URL", "not a url")]);
        let err = match Dependencies::from_env(&env, true).await {
            Ok(_) => panic!("from_env accepted an invalid environment"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains("PORT=eighty is not valid"), "{err}");
        assert!(err.contains("DATABASE_URL is not set"), "{err}");
        assert!(err.contains("MONGODB_URL is not a valid"), "{err}");
        assert!(!err.contains("BLOB_DIR"), "{err}");
    }
}
