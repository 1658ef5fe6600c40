//! Serves the notify function on `$PORT`, or with the argument `retry` sends
//! the webhooks that are due and exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    alchemist_runtime::telemetry::init_json();
    let env = alchemist_runtime::config::ProcessEnv;
    match std::env::args().nth(1).as_deref() {
        None => alchemist_notify::run(&env, alchemist_runtime::serve::shutdown_signal()).await,
        Some("retry") => alchemist_notify::retry_pass(&env).await.map(drop),
        Some(other) => anyhow::bail!(
            "unknown command {other:?}: run without arguments to serve, or with `retry` to send the webhooks that are due"
        ),
    }
}
