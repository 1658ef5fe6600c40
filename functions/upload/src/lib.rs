//! The upload function: takes videos, records jobs, serves status and MP3s.
//!
//! # Layout
//!
//! - [`app`] builds the router: `POST /uploads`, `GET /jobs`,
//!   `GET /jobs/{id}` and `GET /jobs/{id}/audio`.
//! - [`ingest`] streams a request body (raw or multipart) into the blob store.
//! - [`download`] serves an MP3 with Range support.
//! - [`outbox`] keeps events until the broker has them, and requeues jobs
//!   whose convert worker died.
//! - [`Error`] is the one error type of this crate, mapped to HTTP once.

pub mod download;
mod error;
pub mod ingest;
pub mod jobs;
pub mod outbox;

use std::sync::Arc;

use alchemist_events::broker::Broker;
use alchemist_runtime::{
    blob::BlobStore,
    config::Reader,
    jwt::JwtKeys,
    serve::{Readiness, health_routes},
    store::Store,
};
use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef},
    routing::{get, post},
};

pub use error::Error;

/// The CloudEvent `source` of the events this function emits.
pub const SOURCE: &str = "/audio-alchemist/upload";

/// Default largest upload: 2 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Configuration of the upload function.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest video accepted, in bytes; enforced while the body streams in.
    pub max_upload_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

impl Config {
    /// Reads `MAX_UPLOAD_BYTES`.
    pub fn read(reader: &mut Reader<'_>) -> Config {
        let max_upload_bytes = reader.parse_or("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES);
        if max_upload_bytes == 0 {
            reader.problem("MAX_UPLOAD_BYTES must be at least 1");
        }
        Config { max_upload_bytes }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub broker: Arc<dyn Broker>,
    pub keys: Arc<JwtKeys>,
    pub config: Arc<Config>,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// The router of the upload function, with `/healthz` and `/readyz`.
pub fn app(state: AppState) -> Router {
    let readiness = Readiness {
        store: Some(state.store.clone()),
        blobs: Some(state.blobs.clone()),
    };
    routes(state).merge(health_routes(readiness))
}

/// The upload function's own routes, without the health routes, for
/// serving several functions on one port.
pub fn routes(state: AppState) -> Router {
    Router::new()
        // The upload size is enforced while streaming, against MAX_UPLOAD_BYTES.
        .route(
            "/uploads",
            post(ingest::create_upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/audio", get(download::get_audio))
        .with_state(state)
}
