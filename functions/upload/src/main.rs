//! Serves the upload function on `$PORT`.

use std::sync::Arc;

use alchemist_events::{broker::Broker, http_broker::HttpSinkBroker};
use alchemist_runtime::{
    config::{ProcessEnv, Reader},
    jwt::{JwtConfig, JwtKeys},
    serve, telemetry,
};
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_json();
    let env = ProcessEnv;
    let mut reader = Reader::new(&env);
    let jwt = JwtConfig::read(&mut reader);
    let config = alchemist_upload::Config::read(&mut reader);
    let sink = reader.required(
        "K_SINK",
        "the URL events are sent to; Knative's SinkBinding sets it",
    );
    reader.finish()?;
    let (Some(jwt), Some(sink)) = (jwt, sink) else {
        unreachable!("finish() fails when a required variable is missing")
    };
    let deps = alchemist_runtime::deps::Dependencies::from_env(&env).await?;

    let broker: Arc<dyn Broker> =
        Arc::new(HttpSinkBroker::new(&sink).context("K_SINK is not a valid URL")?);
    let state = alchemist_upload::AppState {
        store: deps.store,
        blobs: deps.blobs,
        broker,
        keys: Arc::new(JwtKeys::from(&jwt)),
        config: Arc::new(config),
    };
    serve::serve(
        alchemist_upload::app(state),
        serve::listen_addr(deps.port),
        serve::shutdown_signal(),
    )
    .await
    .context("serving the upload function failed")
}
