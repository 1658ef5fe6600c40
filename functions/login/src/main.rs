//! Serves the login function on `$PORT`.

use std::sync::Arc;

use alchemist_runtime::{config::ProcessEnv, jwt::JwtKeys, serve, telemetry};
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_json();
    let env = ProcessEnv;
    let jwt = alchemist_runtime::jwt::JwtConfig::from_env(&env)?;
    let deps = alchemist_runtime::deps::Dependencies::from_env(&env).await?;
    alchemist_runtime::password::warm_up();

    let state = alchemist_login::AppState {
        store: deps.store,
        keys: Arc::new(JwtKeys::from(&jwt)),
        limiter: Arc::new(alchemist_login::limiter::FailureLimiter::new()),
    };
    serve::serve(
        alchemist_login::app(state),
        serve::listen_addr(deps.port),
        serve::shutdown_signal(),
    )
    .await
    .context("serving the login function failed")
}
