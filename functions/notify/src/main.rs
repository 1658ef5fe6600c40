//! Serves the notify function on `$PORT`.

use std::sync::Arc;

use alchemist_runtime::{
    config::{ProcessEnv, Reader},
    serve, telemetry,
};
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_json();
    let env = ProcessEnv;
    let mut reader = Reader::new(&env);
    let config = alchemist_notify::Config::read(&mut reader);
    reader.finish()?;
    let config = config.expect("finish() fails when WEBHOOK_SECRET is missing or invalid");
    let deps = alchemist_runtime::deps::Dependencies::from_env(&env).await?;

    let state = alchemist_notify::AppState {
        store: deps.store,
        config: Arc::new(config),
    };
    serve::serve(
        alchemist_notify::app(state),
        serve::listen_addr(deps.port),
        serve::shutdown_signal(),
    )
    .await
    .context("serving the notify function failed")
}
