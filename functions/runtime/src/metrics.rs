//! Prometheus metrics: the process's registry, `GET /metrics`, and the
//! request counter and latency histogram of every function.
//!
//! One registry serves the whole process, because `alchemist dev` runs
//! several functions in one process and one scrape should return all of
//! them. Every name starts with `alchemist_`. Every label value comes from a
//! fixed set, so requests cannot create new series: the route label is the
//! route pattern that axum matched (`/jobs/{id}`), never the request path.

use std::{
    sync::{LazyLock, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Metric, Registry},
};
use tracing::error;

/// The content type of `GET /metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The route label of requests that matched no route. Route patterns start
/// with `/`, so it cannot be mistaken for one.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method label of requests whose method is not one of [`METHODS`].
pub const OTHER_METHOD: &str = "other";

/// Methods that keep their name as a label value. HTTP allows any token as a
/// method, so every other method gets [`OTHER_METHOD`].
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Upper bounds of the request latency buckets, in seconds: the usual 5 ms to
/// 10 s, extended to 10 minutes because an upload streams a whole video and
/// convert responds only when ffmpeg has finished (default limit 600 s).
const REQUEST_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::with_prefix("alchemist")));

static HTTP: LazyLock<HttpMetrics> = LazyLock::new(HttpMetrics::register);

/// Registers `metric` in the process's registry as `alchemist_<name>`.
///
/// Call it once for each name, for example from a `LazyLock`. A second call
/// with the same name adds a second family of that name, which the text
/// format does not allow. Counter names get their `_total` suffix when
/// encoded, so `name` must not end in `_total`. `prometheus-client` 0.26 ends
/// `help` with a full stop, so `help` must not.
pub fn register(name: &str, help: &str, metric: impl Metric) {
    lock_registry().register(name, help, metric);
}

/// The label set of a metric counted by outcome, such as conversions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Registers a counter family labelled by [`OutcomeLabels`] as
/// `alchemist_<name>_total`, with a series at 0 for each of `outcomes`.
///
/// Series that exist at 0 let `rate()` and alerts see the first event of
/// each outcome. An outcome missing from `outcomes` appears when first counted.
pub fn register_outcome_counter(
    name: &str,
    help: &str,
    outcomes: impl IntoIterator<Item = &'static str>,
) -> Family<OutcomeLabels, Counter> {
    let family = Family::<OutcomeLabels, Counter>::default();
    for outcome in outcomes {
        drop(family.get_or_create(&OutcomeLabels { outcome }));
    }
    register(name, help, family.clone());
    family
}

fn lock_registry() -> MutexGuard<'static, Registry> {
    // Registering and encoding never leave the registry half-changed, so a
    // panic elsewhere while the lock was held does not make it unusable.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Encodes every registered metric in the Prometheus text format.
///
/// A family without series is left out, so a labelled metric appears with
/// its first label set. The HTTP metrics appear with the first request.
///
/// # Errors
///
/// When a label set fails to encode.
pub fn encode() -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, &lock_registry())?;
    Ok(text)
}

/// Handles `GET /metrics`.
pub(crate) async fn scrape() -> Response {
    match encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            error!(cause = %err, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Adds the request counter and the latency histogram to every route of
/// `router`, and to its fallback.
///
/// Apply it to the finished router: axum applies a layer only to the routes
/// added before it, so routes merged later are not counted.
///
/// The latency is measured until the response headers are ready. The body of
/// a streamed response, such as an MP3 download, may take longer.
pub fn record_http(router: Router) -> Router {
    LazyLock::force(&HTTP);
    router.layer(middleware::from_fn(observe_request))
}

async fn observe_request(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();

    let response = next.run(request).await;

    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    HTTP.requests.get_or_create(&labels).inc();
    HTTP.duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

fn method_label(method: &Method) -> &'static str {
    METHODS
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or(OTHER_METHOD)
}

/// Labels of the HTTP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The matched route pattern, or [`UNMATCHED_ROUTE`].
    route: String,
    status: u16,
}

struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    fn register() -> HttpMetrics {
        let metrics = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
        };
        register(
            "http_requests",
            "HTTP requests handled, by method, matched route and status code",
            metrics.requests.clone(),
        );
        register(
            "http_request_duration_seconds",
            "Time from receiving an HTTP request to its response headers, in seconds",
            metrics.duration.clone(),
        );
        metrics
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        routing::{get, post},
    };
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{sample, scrape_metrics};

    /// Builds a router with a path parameter, wrapped the way every function's `app()` is.
    fn app() -> Router {
        let routes = Router::new()
            .route("/probe/items/{id}", get(|| async { "item" }))
            .route("/probe/fail", post(|| async { StatusCode::CONFLICT }));
        record_http(routes.merge(crate::serve::health_routes(Default::default())))
    }

    async fn send(router: &Router, method: &str, uri: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        router.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern() {
        let router = app();
        let before = scrape_metrics(&router).await;

        assert_eq!(
            send(&router, "GET", "/probe/items/41").await,
            StatusCode::OK
        );
        assert_eq!(
            send(&router, "GET", "/probe/items/42").await,
            StatusCode::OK
        );
        assert_eq!(
            send(&router, "POST", "/probe/fail").await,
            StatusCode::CONFLICT
        );
        let after = scrape_metrics(&router).await;

        let items = r#"{method="GET",route="/probe/items/{id}",status="200"}"#;
        let requests = format!("alchemist_http_requests_total{items}");
        assert_eq!(sample(&after, &requests) - sample(&before, &requests), 2.0);
        let count = format!("alchemist_http_request_duration_seconds_count{items}");
        assert_eq!(sample(&after, &count) - sample(&before, &count), 2.0);
        let failed =
            r#"alchemist_http_requests_total{method="POST",route="/probe/fail",status="409"}"#;
        assert_eq!(sample(&after, failed) - sample(&before, failed), 1.0);
        assert!(
            !after.contains("/probe/items/41"),
            "a request path became a label value:\n{after}"
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_share_labels() {
        let router = app();
        let before = scrape_metrics(&router).await;

        let path = "/probe/unknown/7f3a9c";
        assert_eq!(send(&router, "GET", path).await, StatusCode::NOT_FOUND);
        assert_eq!(
            send(&router, "BREW", "/probe/items/1").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let after = scrape_metrics(&router).await;

        let unmatched =
            r#"alchemist_http_requests_total{method="GET",route="unmatched",status="404"}"#;
        assert_eq!(sample(&after, unmatched) - sample(&before, unmatched), 1.0);
        let other = r#"alchemist_http_requests_total{method="other",route="/probe/items/{id}",status="405"}"#;
        assert_eq!(sample(&after, other) - sample(&before, other), 1.0);
        assert!(!after.contains(path), "a request path became a label value");
        assert!(
            !after.contains("BREW"),
            "a request method became a label value"
        );
    }

    #[tokio::test]
    async fn metrics_route_serves_text_format() {
        let router = app();
        assert_eq!(send(&router, "GET", "/healthz").await, StatusCode::OK);

        let text = scrape_metrics(&router).await;

        let help = "# HELP alchemist_http_requests_total HTTP requests handled, by method, matched route and status code.\n";
        assert!(text.contains(help), "{text}");
        assert!(
            text.contains("# TYPE alchemist_http_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE alchemist_http_request_duration_seconds histogram"),
            "{text}"
        );
    }
}
