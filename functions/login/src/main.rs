//! Serves the login function on `$PORT`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    alchemist_runtime::telemetry::init_json();
    alchemist_login::run(
        &alchemist_runtime::config::ProcessEnv,
        alchemist_runtime::serve::shutdown_signal(),
    )
    .await
}
