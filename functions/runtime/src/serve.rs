//! Serving a function: health and metrics routes, `$PORT`, graceful shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tower_http::trace::TraceLayer;
use tracing::{error, info, warn};

use crate::{blob::BlobStore, store::Store};

/// How long in-flight requests may run after SIGTERM. Knative's default
/// termination grace period is 30 seconds; this leaves a margin inside it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// The dependencies a function's readiness depends on.
#[derive(Clone, Default)]
pub struct Readiness {
    pub store: Option<Arc<dyn Store>>,
    pub blobs: Option<Arc<dyn BlobStore>>,
}

/// `GET /healthz` (the process runs), `GET /readyz` (its dependencies respond)
/// and `GET /metrics` (the process's Prometheus metrics, see [`crate::metrics`]).
pub fn health_routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(ready))
        .route("/metrics", get(crate::metrics::scrape))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    if let Some(store) = &readiness.store
        && let Err(err) = store.ping().await
    {
        warn!(cause = %err, "readiness check: database does not respond");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    }
    if let Some(blobs) = &readiness.blobs
        && let Err(err) = blobs.ping().await
    {
        warn!(cause = %err, "readiness check: blob store does not respond");
        return (StatusCode::SERVICE_UNAVAILABLE, "blob store unavailable");
    }
    (StatusCode::OK, "ready")
}

/// Completes on SIGINT or SIGTERM (what Kubernetes sends before it stops a pod).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            error!(cause = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                error!(cause = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => info!("SIGINT received, draining"),
        () = terminate => info!("SIGTERM received, draining"),
    }
}

/// Serves `router` on `addr` until `shutdown` completes, then lets in-flight
/// requests finish for at most [`SHUTDOWN_GRACE`].
///
/// # Errors
///
/// Returns the error of binding `addr` or of the accept loop.
pub async fn serve(
    router: Router,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(address = %listener.local_addr()?, "listening");
    serve_listener(router, listener, shutdown).await
}

/// Like [`serve`], on a listener the caller bound (tests bind port 0).
///
/// # Errors
///
/// Returns the error of the accept loop.
pub async fn serve_listener(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = started_tx.send(());
    };
    let server = axum::serve(
        listener,
        router.layer(TraceLayer::new_for_http()).into_make_service(),
    )
    .with_graceful_shutdown(signal);
    let server = std::pin::pin!(server.into_future());

    let deadline = async {
        if started_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server => {
            info!("stopped");
            result
        }
        () = deadline => {
            warn!(grace_seconds = SHUTDOWN_GRACE.as_secs(), "requests still running after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// The address a function listens on: `bind` (all interfaces unless
/// `BIND_ADDRESS` says otherwise), port `$PORT` (default 8080).
pub fn listen_addr(bind: std::net::IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(bind, port)
}
