//! Runs one dispatcher per Trigger until SIGTERM or SIGINT.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    alchemist_runtime::telemetry::init_json();
    alchemist_dispatcher::run(
        &alchemist_runtime::config::ProcessEnv,
        alchemist_runtime::serve::shutdown_signal(),
    )
    .await
}
