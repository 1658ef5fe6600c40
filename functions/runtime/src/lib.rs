//! Runtime code shared by the Audio-Alchemist functions.
//!
//! # Layout
//!
//! - [`config`]: reading environment variables once at start-up, reporting
//!   every bad value before the function exits.
//! - [`jwt`]: HS256 tokens: issuing, verifying, and the [`jwt::Authenticated`] extractor.
//! - [`password`]: argon2id hashing off the async workers.
//! - [`store`]: the [`store::Store`] trait for users, jobs and deliveries, with
//!   its SQL implementation in [`sql`] (SQLite and MySQL through sqlx).
//! - [`blob`]: the [`blob::BlobStore`] trait for videos and MP3s, with the
//!   directory implementation.
//! - [`gridfs`]: the MongoDB GridFS implementation of [`blob::BlobStore`].
//! - [`deps`]: connecting the store and blob store a deployment names.
//! - [`serve`]: binding `$PORT`, health and metrics routes, and graceful shutdown.
//! - [`metrics`]: the process's Prometheus registry, `GET /metrics`, and
//!   the HTTP request metrics that every function records.
//! - [`telemetry`]: `tracing` set-up.

pub mod blob;
pub mod config;
pub mod deps;
mod error;
pub mod gridfs;
pub mod jwt;
pub mod metrics;
pub mod password;
pub mod serve;
pub mod sql;
pub mod store;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::Error;

/// The current time as Unix milliseconds, the unit of every stored timestamp.
pub fn now_millis() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    millis(elapsed)
}

/// Converts `duration` to whole milliseconds, the unit of stored times,
/// saturating at `i64::MAX`.
pub fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
