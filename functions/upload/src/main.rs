//! Serves the upload function on `$PORT`, or with the argument `relay` runs
//! one pass of the outbox relay and exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    alchemist_runtime::telemetry::init_json();
    let env = alchemist_runtime::config::ProcessEnv;
    match std::env::args().nth(1).as_deref() {
        None => alchemist_upload::run(&env, alchemist_runtime::serve::shutdown_signal()).await,
        Some("relay") => alchemist_upload::relay_pass(&env).await.map(drop),
        Some(other) => anyhow::bail!(
            "unknown command {other:?}: run without arguments to serve, or with `relay` for one pass of the outbox relay"
        ),
    }
}
