//! Serves the convert function on `$PORT`.

use std::sync::Arc;

use alchemist_runtime::{config::ProcessEnv, serve, telemetry};
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_json();
    let env = ProcessEnv;
    let deps = alchemist_runtime::deps::Dependencies::from_env(&env).await?;
    let config = alchemist_convert::Config::from_env(&env)?;
    alchemist_convert::media::check_tools().map_err(anyhow::Error::msg)?;

    let state = alchemist_convert::AppState {
        store: deps.store,
        blobs: deps.blobs,
        config: Arc::new(config),
    };
    serve::serve(
        alchemist_convert::app(state),
        serve::listen_addr(deps.port),
        serve::shutdown_signal(),
    )
    .await
    .context("serving the convert function failed")
}
