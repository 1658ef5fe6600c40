//! The upload function: takes videos, records jobs, serves status and MP3s.
//!
//! # Layout
//!
//! - [`app`] builds the router: `POST /uploads`, `GET /jobs`,
//!   `GET /jobs/{id}` and `GET /jobs/{id}/audio`, plus `/healthz`, `/readyz`
//!   and `/metrics`.
//! - [`ingest`] streams a request body (raw or multipart) into the blob store.
//! - `metrics` counts uploads by outcome and the bytes accepted.
//! - [`download`] serves an MP3 with Range support.
//! - [`outbox`] keeps events until the broker has them, and requeues jobs
//!   whose convert worker died.
//! - [`Error`] is the one error type of this crate, mapped to HTTP once.

pub mod download;
mod error;
pub mod ingest;
pub mod jobs;
mod metrics;
pub mod outbox;

use std::sync::Arc;

use alchemist_events::broker::Broker;
use alchemist_runtime::{
    blob::BlobStore,
    config::Reader,
    jwt::JwtKeys,
    metrics::record_http,
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

/// The router of the upload function, with `/healthz`, `/readyz`,
/// `/metrics` and the HTTP request metrics.
pub fn app(state: AppState) -> Router {
    let readiness = Readiness {
        store: Some(state.store.clone()),
        blobs: Some(state.blobs.clone()),
    };
    record_http(routes(state).merge(health_routes(readiness)))
}

/// The upload function's own routes, without the health routes, for
/// serving several functions on one port.
pub fn routes(state: AppState) -> Router {
    metrics::register_metrics();
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

/// Reads the configuration from `env`, connects, starts the outbox relay, and
/// serves on `$PORT` until `shutdown` completes.
///
/// Events go to `K_SINK` when it is set (Knative's SinkBinding sets it),
/// otherwise to RabbitMQ at `AMQP_URL`.
///
/// # Errors
///
/// Every invalid variable at once, or the error of connecting or serving.
pub async fn run(
    env: &dyn alchemist_runtime::config::Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut reader = Reader::new(env);
    let jwt = alchemist_runtime::jwt::JwtConfig::read(&mut reader);
    let config = Config::read(&mut reader);
    let lease = alchemist_runtime::config::job_lease(&mut reader);
    let settings = alchemist_runtime::deps::DependencySettings::read(&mut reader, true);
    let broker = BrokerSettings::read(&mut reader);
    reader.finish()?;
    let (Some(jwt), Some(settings), Some(broker)) = (jwt, settings, broker) else {
        unreachable!("finish() fails when a required variable is missing")
    };
    let broker = broker.connect()?;
    let deps = settings.connect().await?;

    let relay_stop = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(outbox::run_relay(
        deps.store.clone(),
        broker.clone(),
        outbox::RelayConfig {
            lease,
            ..outbox::RelayConfig::default()
        },
        relay_stop.clone().cancelled_owned(),
    ));

    let state = AppState {
        store: deps.store,
        blobs: deps.blobs.expect("blobs were requested"),
        broker,
        keys: Arc::new(JwtKeys::from(&jwt)),
        config: Arc::new(config),
    };
    let addr = alchemist_runtime::serve::listen_addr(deps.bind, deps.port);
    let served = alchemist_runtime::serve::serve(app(state), addr, shutdown).await;
    relay_stop.cancel();
    let _ = relay.await;
    served.context("serving the upload function failed")
}

/// Runs one pass of the outbox relay and returns: publishes the events that
/// are due, requeues jobs whose worker died, and fails jobs that killed
/// their workers every time. A Kubernetes CronJob runs it, so that nothing
/// waits in the outbox while upload is scaled to zero.
///
/// Reads `DATABASE_URL`, `JOB_LEASE_SECONDS`, and `K_SINK` or `AMQP_URL`.
///
/// # Errors
///
/// Every invalid variable at once, or the error of connecting or of the store.
pub async fn relay_pass(
    env: &dyn alchemist_runtime::config::Env,
) -> anyhow::Result<outbox::RelayReport> {
    let mut reader = Reader::new(env);
    let lease = alchemist_runtime::config::job_lease(&mut reader);
    let settings = alchemist_runtime::deps::DependencySettings::read(&mut reader, false);
    let broker = BrokerSettings::read(&mut reader);
    reader.finish()?;
    let (Some(settings), Some(broker)) = (settings, broker) else {
        unreachable!("finish() fails when a required variable is missing")
    };
    let broker = broker.connect()?;
    let deps = settings.connect().await?;
    let report = outbox::relay_once(deps.store.as_ref(), broker.as_ref(), lease).await?;
    tracing::info!(?report, "outbox relay pass finished");
    Ok(report)
}

/// Broker that upload publishes to: `K_SINK` when it is set (Knative's SinkBinding
/// sets it), otherwise RabbitMQ at `AMQP_URL`.
enum BrokerSettings {
    Sink(String),
    Rabbit(String),
}

impl BrokerSettings {
    fn read(reader: &mut Reader<'_>) -> Option<BrokerSettings> {
        let sink = reader.optional("K_SINK");
        let amqp_url = reader.optional("AMQP_URL");
        match (sink, amqp_url) {
            (Some(sink), _) => Some(BrokerSettings::Sink(sink)),
            (None, Some(url)) => Some(BrokerSettings::Rabbit(url)),
            (None, None) => {
                reader.problem("neither K_SINK nor AMQP_URL is set: set K_SINK to the broker's URL (Knative's SinkBinding does) or AMQP_URL to RabbitMQ");
                None
            }
        }
    }

    fn connect(self) -> anyhow::Result<Arc<dyn Broker>> {
        use alchemist_events::{
            http_broker::HttpSinkBroker, rabbitmq::RabbitBroker, triggers::Routes,
        };
        use anyhow::Context;

        Ok(match self {
            BrokerSettings::Sink(sink) => {
                Arc::new(HttpSinkBroker::new(&sink).context("K_SINK is not a valid URL")?)
            }
            BrokerSettings::Rabbit(url) => Arc::new(
                RabbitBroker::new(
                    &url,
                    &Routes::embedded(),
                    alchemist_events::rabbitmq::DEFAULT_BROKER,
                )
                .context("AMQP_URL is not valid")?,
            ),
        })
    }
}
