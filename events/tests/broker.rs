//! The in-process broker against real axum routers: routing by type, retries
//! with backoff, the dead-letter sink, reply events and shutdown.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use alchemist_events::{
    broker::{Broker, InMemoryBroker},
    http::{EventReply, IncomingEvent},
    triggers::Routes,
};
use axum::{Router, http::StatusCode, routing::post};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10, event::ExtensionValue};

/// Two Triggers: `ordered` events go to `orders` with two retries and a
/// dead-letter sink, `shipped` events go to `shipping` without retries.
const TRIGGERS: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders-on-ordered
spec:
  broker: default
  filter:
    attributes:
      type: dev.example.ordered.v1
  subscriber:
    ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: orders }
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.01S
    deadLetterSink:
      ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: dlq }
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: shipping-on-shipped
spec:
  broker: default
  filter:
    attributes:
      type: dev.example.shipped.v1
  subscriber:
    ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: shipping }
"#;

const ORDERED: &str = "dev.example.ordered.v1";
const SHIPPED: &str = "dev.example.shipped.v1";

fn broker() -> InMemoryBroker {
    let routes = Routes::parse(TRIGGERS).expect("the test Triggers parse");
    InMemoryBroker::new(routes, &HashMap::new())
}

fn event(id: &str, event_type: &str) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("/tests")
        .ty(event_type)
        .build()
        .unwrap()
}

/// Builds a subscriber that counts its calls and responds with `status(call)`,
/// where the first call is number 0.
fn counting(
    calls: &Arc<AtomicUsize>,
    status: impl Fn(usize) -> StatusCode + Clone + Send + Sync + 'static,
) -> Router {
    let calls = calls.clone();
    Router::new().route(
        "/",
        post(move |IncomingEvent(_event): IncomingEvent| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            let status = status.clone();
            async move { status(call) }
        }),
    )
}

/// Builds a subscriber that keeps every event it receives and responds with 202.
fn recording(events: &Arc<Mutex<Vec<Event>>>) -> Router {
    let events = events.clone();
    Router::new().route(
        "/",
        post(move |IncomingEvent(event): IncomingEvent| {
            events.lock().unwrap().push(event);
            async { StatusCode::ACCEPTED }
        }),
    )
}

/// Polls `condition` every 5 ms for up to 2 s.
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !condition() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn extension(event: &Event, name: &str) -> Option<String> {
    match event.extension(name)? {
        ExtensionValue::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[tokio::test]
async fn events_reach_matching_subscriber_only() {
    let broker = broker();
    let orders = Arc::new(Mutex::new(Vec::new()));
    let shipping = Arc::new(Mutex::new(Vec::new()));
    broker.subscribe("orders", recording(&orders));
    broker.subscribe("shipping", recording(&shipping));

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.publish(event("s-1", SHIPPED)).await.unwrap();
    broker
        .publish(event("x-1", "dev.example.unrouted.v1"))
        .await
        .unwrap();
    broker.shutdown().await;

    let orders: Vec<String> = orders
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id().to_owned())
        .collect();
    let shipping: Vec<String> = shipping
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id().to_owned())
        .collect();
    assert_eq!(orders, ["o-1"]);
    assert_eq!(shipping, ["s-1"]);
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let broker = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(Mutex::new(Vec::new()));
    broker.subscribe(
        "orders",
        counting(&calls, |call| {
            if call < 2 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }),
    );
    broker.subscribe("dlq", recording(&dead));

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.shutdown().await;

    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(dead.lock().unwrap().is_empty());
}

#[tokio::test]
async fn exhausted_retries_dead_letter() {
    let broker = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(Mutex::new(Vec::new()));
    broker.subscribe(
        "orders",
        counting(&calls, |_| StatusCode::SERVICE_UNAVAILABLE),
    );
    broker.subscribe("dlq", recording(&dead));

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.shutdown().await;

    // One attempt and the two retries of the Trigger's delivery spec.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let dead = dead.lock().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id(), "o-1");
    assert_eq!(dead[0].ty(), ORDERED);
    // Knative sets knativeerrordest to the destination whose delivery failed, not to the sink.
    assert_eq!(
        extension(&dead[0], "knativeerrordest").as_deref(),
        Some("orders")
    );
    let error_data = extension(&dead[0], "knativeerrordata").unwrap_or_default();
    assert!(
        error_data.contains("503"),
        "knativeerrordata is {error_data:?}"
    );
}

#[tokio::test]
async fn retries_wait_for_backoff() {
    let broker = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    broker.subscribe(
        "orders",
        counting(&calls, |_| StatusCode::SERVICE_UNAVAILABLE),
    );
    broker.subscribe("dlq", recording(&Arc::new(Mutex::new(Vec::new()))));
    let started = std::time::Instant::now();

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.shutdown().await;

    // Exponential backoff from 10 ms: 20 ms before the first retry, 40 ms before the second.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(60), "took {elapsed:?}");
}

#[tokio::test]
async fn client_error_dead_letters_at_once() {
    let broker = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(Mutex::new(Vec::new()));
    broker.subscribe("orders", counting(&calls, |_| StatusCode::BAD_REQUEST));
    broker.subscribe("dlq", recording(&dead));

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.shutdown().await;

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(dead.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn retryable_client_errors_are_retried() {
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::REQUEST_TIMEOUT,
        StatusCode::CONFLICT,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let broker = broker();
        let calls = Arc::new(AtomicUsize::new(0));
        broker.subscribe("orders", counting(&calls, move |_| status));
        broker.subscribe("dlq", recording(&Arc::new(Mutex::new(Vec::new()))));

        broker.publish(event("o-1", ORDERED)).await.unwrap();
        broker.shutdown().await;

        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "subscriber responding with {status}"
        );
    }
}

#[tokio::test]
async fn reply_event_is_published() {
    let broker = broker();
    let shipping = Arc::new(Mutex::new(Vec::new()));
    let orders = Router::new().route(
        "/",
        post(|IncomingEvent(order): IncomingEvent| async move {
            let reply = event(&format!("reply-to-{}", order.id()), SHIPPED);
            EventReply::Reply(reply)
        }),
    );
    broker.subscribe("orders", orders);
    broker.subscribe("shipping", recording(&shipping));

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    // Waits for the reply before shutting down, so that this test does not
    // depend on shutdown draining replies, which `shutdown_waits_for_replies` checks.
    wait_until(|| !shipping.lock().unwrap().is_empty()).await;
    broker.shutdown().await;

    let shipping = shipping.lock().unwrap();
    assert_eq!(shipping.len(), 1);
    assert_eq!(shipping[0].id(), "reply-to-o-1");
    assert_eq!(shipping[0].ty(), SHIPPED);
}

#[tokio::test]
async fn shutdown_waits_for_deliveries() {
    let broker = broker();
    let calls = Arc::new(AtomicUsize::new(0));
    let finished = calls.clone();
    let slow = Router::new().route(
        "/",
        post(move |IncomingEvent(_event): IncomingEvent| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            finished.fetch_add(1, Ordering::SeqCst);
            StatusCode::ACCEPTED
        }),
    );
    broker.subscribe("orders", slow);

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.shutdown().await;

    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn shutdown_waits_for_replies() {
    let broker = broker();
    let shipping = Arc::new(Mutex::new(Vec::new()));
    let slow = Router::new().route(
        "/",
        post(|IncomingEvent(order): IncomingEvent| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            EventReply::Reply(event(&format!("reply-to-{}", order.id()), SHIPPED))
        }),
    );
    broker.subscribe("orders", slow);
    broker.subscribe("shipping", recording(&shipping));

    broker.publish(event("o-1", ORDERED)).await.unwrap();
    broker.shutdown().await;

    assert_eq!(shipping.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn publish_after_shutdown_fails() {
    let broker = broker();
    broker.shutdown().await;

    let result = broker.publish(event("o-1", ORDERED)).await;

    assert!(
        matches!(result, Err(alchemist_events::Error::Unavailable(_))),
        "{result:?}"
    );
}
