//! The RabbitMQ broker and its dispatchers against a real RabbitMQ.
//!
//! The server is the one `scripts/services up` starts on 127.0.0.1:5672, or
//! the one `AMQP_URL` names. When it is unreachable, each test prints that it
//! is skipped and passes, unless `CI` is set, where it fails.
//!
//! Every test declares its own Broker and Triggers with a UUID suffix and
//! deletes them at the end, so tests run in parallel and leave nothing behind.
//! Subscribers are axum servers on 127.0.0.1 that count calls and respond with
//! scripted statuses.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alchemist_events::{
    broker::Broker,
    http::{EventReply, IncomingEvent},
    rabbitmq::{DispatcherOptions, RabbitBroker, run_dispatchers, topology},
    triggers::Routes,
};
use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    message::Delivery,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use tokio::{sync::RwLock, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use url::Url;

const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The restart test takes this for writing, every other test for reading, so
/// that no other test of this file runs while RabbitMQ restarts.
static RABBITMQ_NODE: RwLock<()> = RwLock::const_new(());

/// The AMQP URL of a reachable RabbitMQ, or `None` when the test should be skipped.
async fn rabbitmq_url(test: &str) -> Option<String> {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_owned());
    let connect = Connection::connect(&url, ConnectionProperties::default());
    let cause = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close(200, "reachability check".into()).await;
            return Some(url);
        }
        Ok(Err(err)) => err.to_string(),
        Err(_) => "timed out after 5s".to_owned(),
    };
    if std::env::var_os("CI").is_some() {
        panic!("RabbitMQ at {url} is unreachable ({cause}); CI needs it: run scripts/services up");
    }
    eprintln!(
        "skipping {test}: RabbitMQ at {url} is unreachable ({cause}); run scripts/services up"
    );
    None
}

/// Sends this test's logs to the test output, shown when the test fails or
/// with `--nocapture`. `RUST_LOG` overrides the default level.
fn capture_logs() -> tracing::subscriber::DefaultGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("alchemist_events=info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .finish();
    tracing::subscriber::set_default(subscriber)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

// === Subscribers ===

/// An HTTP subscriber that records every event and responds with scripted statuses.
#[derive(Clone)]
struct Subscriber {
    state: Arc<SubscriberState>,
}

struct SubscriberState {
    /// Statuses for the next calls, in order, and `default_status` after them.
    script: Mutex<VecDeque<u16>>,
    default_status: u16,
    /// Builds a reply event from the received one, sent with 2xx responses.
    reply: Option<fn(&Event) -> Event>,
    /// Every call: request path and event.
    calls: Mutex<Vec<(String, Event)>>,
}

impl Subscriber {
    /// Starts a subscriber on 127.0.0.1 and returns it with its base URL.
    async fn start(
        script: &[u16],
        default_status: u16,
        reply: Option<fn(&Event) -> Event>,
    ) -> (Subscriber, Url) {
        let subscriber = Subscriber {
            state: Arc::new(SubscriberState {
                script: Mutex::new(script.iter().copied().collect()),
                default_status,
                reply,
                calls: Mutex::new(Vec::new()),
            }),
        };
        let router = Router::new()
            .fallback(receive)
            .with_state(subscriber.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (subscriber, url)
    }

    fn calls(&self) -> Vec<(String, Event)> {
        self.state.calls.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<Event> {
        self.calls().into_iter().map(|(_, event)| event).collect()
    }

    /// Waits until at least `count` calls arrived, and returns the events.
    async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if events.len() >= count || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(
    State(subscriber): State<Subscriber>,
    uri: Uri,
    IncomingEvent(event): IncomingEvent,
) -> Response {
    let state = &subscriber.state;
    state
        .calls
        .lock()
        .unwrap()
        .push((uri.path().to_owned(), event.clone()));
    let status = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(state.default_status);
    let status = StatusCode::from_u16(status).unwrap();
    if !status.is_success() {
        return (status, "scripted failure").into_response();
    }
    match state.reply {
        Some(build) => EventReply::Reply(build(&event)).into_response(),
        None => (status, ()).into_response(),
    }
}

// === Brokers, dispatchers and clean-up ===

/// One Trigger for [`routes`]: name, event type, subscriber Service, retries
/// and an optional dead-letter sink Service with path.
struct TriggerSpec<'a> {
    name: &'a str,
    event_type: &'a str,
    service: &'a str,
    retry: u32,
    dead_letter: Option<(&'a str, &'a str)>,
}

/// Parses Trigger manifests with short backoffs, as a deployment would write them.
fn routes(broker: &str, specs: &[TriggerSpec<'_>]) -> Routes {
    let mut yaml = String::new();
    for spec in specs {
        let dead_letter = match spec.dead_letter {
            Some((service, path)) => format!(
                "    deadLetterSink:\n      ref: {{ apiVersion: serving.knative.dev/v1, kind: Service, name: {service} }}\n      uri: {path}\n"
            ),
            None => String::new(),
        };
        yaml.push_str(&format!(
            "---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {name}
  annotations:
    rabbitmq.eventing.knative.dev/parallelism: \"4\"
spec:
  broker: {broker}
  filter:
    attributes:
      type: {event_type}
  subscriber:
    ref: {{ apiVersion: serving.knative.dev/v1, kind: Service, name: {service} }}
  delivery:
    retry: {retry}
    backoffPolicy: exponential
    backoffDelay: PT0.05S
{dead_letter}",
            name = spec.name,
            event_type = spec.event_type,
            service = spec.service,
            retry = spec.retry,
        ));
    }
    Routes::parse(&yaml).unwrap()
}

/// Running dispatchers, stopped by [`Dispatchers::stop`].
struct Dispatchers {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), alchemist_events::Error>>,
}

impl Dispatchers {
    fn start(url: &str, routes: &Routes, services: &[(&str, &Url)]) -> Dispatchers {
        let url = url.to_owned();
        let routes = routes.clone();
        let services: HashMap<String, Url> = services
            .iter()
            .map(|(name, url)| ((*name).to_owned(), (*url).clone()))
            .collect();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone().cancelled_owned();
        let options = DispatcherOptions {
            request_timeout: Duration::from_secs(10),
            publish_retry_window: Duration::from_secs(60),
            ..DispatcherOptions::default()
        };
        let task = tokio::spawn(async move {
            run_dispatchers(&url, &routes, &services, options, signal).await
        });
        Dispatchers { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the dispatchers stop within 30s")
            .expect("the dispatcher task does not panic")
            .expect("the dispatchers run without a configuration error");
    }
}

/// Deletes the test's exchanges and queues when dropped, also after a
/// failed assertion. It runs on a thread of its own because `Drop` cannot
/// await on the test's runtime.
struct Cleanup {
    url: String,
    broker: String,
    routes: Routes,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let broker = self.broker.clone();
        let routes = self.routes.clone();
        let cleaning = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let connection = Connection::connect(&url, ConnectionProperties::default())
                    .await
                    .expect("connecting for the clean-up");
                let channel = connection.create_channel().await.unwrap();
                for trigger in &routes.triggers {
                    topology::delete_trigger(&channel, trigger).await.unwrap();
                }
                topology::delete_exchange(&channel, &broker).await.unwrap();
                let _ = connection.close(200, "clean-up done".into()).await;
            });
        });
        if cleaning.join().is_err() && !std::thread::panicking() {
            panic!("deleting the test's exchanges and queues failed");
        }
    }
}

/// Takes every message out of a queue.
async fn drain_queue(url: &str, queue: &str) -> Vec<Delivery> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        messages.push(message.delivery);
    }
    let _ = connection.close(200, "drained".into()).await;
    messages
}

fn header(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn event(event_type: &str) -> Event {
    EventBuilderV10::new()
        .id(uuid::Uuid::new_v4().to_string())
        .source("/tests/rabbitmq")
        .ty(event_type)
        .subject("job/42")
        .time("2026-01-02T03:04:05Z")
        .extension(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .data("application/json", serde_json::json!({ "job_id": 42 }))
        .build()
        .unwrap()
}

fn json_data(event: &Event) -> serde_json::Value {
    match event.data().expect("the event has data") {
        cloudevents::Data::Json(value) => value.clone(),
        cloudevents::Data::Binary(bytes) => serde_json::from_slice(bytes).unwrap(),
        cloudevents::Data::String(text) => serde_json::from_str(text).unwrap(),
    }
}

fn text_extension(event: &Event, name: &str) -> Option<String> {
    event.extension(name).map(ToString::to_string)
}

const WAIT: Duration = Duration::from_secs(20);

/// Time for a wrong delivery to show up, before asserting there was none.
const QUIET: Duration = Duration::from_millis(500);

// === Tests ===

#[tokio::test]
async fn routes_by_type_with_attributes_intact() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("routes_by_type_with_attributes_intact").await else {
        return;
    };
    let broker = unique("routing");
    let (first, second) = (unique("first"), unique("second"));
    let routes = routes(
        &broker,
        &[
            TriggerSpec {
                name: &first,
                event_type: "test.first.v1",
                service: "first",
                retry: 0,
                dead_letter: None,
            },
            TriggerSpec {
                name: &second,
                event_type: "test.second.v1",
                service: "second",
                retry: 0,
                dead_letter: None,
            },
        ],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (first_subscriber, first_url) = Subscriber::start(&[], 202, None).await;
    let (second_subscriber, second_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(
        &url,
        &routes,
        &[("first", &first_url), ("second", &second_url)],
    );
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    let sent = event("test.first.v1");
    publisher.publish(sent.clone()).await.unwrap();

    let received = first_subscriber.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(first_subscriber.events().len(), 1, "first subscriber calls");
    assert!(
        second_subscriber.events().is_empty(),
        "second subscriber calls"
    );
    let got = &received[0];
    assert_eq!(got.id(), sent.id());
    assert_eq!(got.source(), sent.source());
    assert_eq!(got.ty(), "test.first.v1");
    assert_eq!(got.subject(), Some("job/42"));
    assert_eq!(got.time(), sent.time());
    assert_eq!(got.datacontenttype(), Some("application/json"));
    assert_eq!(
        text_extension(got, "traceparent"),
        text_extension(&sent, "traceparent")
    );
    assert_eq!(json_data(got), serde_json::json!({ "job_id": 42 }));
    assert_eq!(first_subscriber.calls()[0].0, "/");

    dispatchers.stop().await;
    publisher.close().await;
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("transient_failures_are_retried").await else {
        return;
    };
    let broker = unique("retry");
    let trigger = unique("flaky");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.flaky.v1",
            service: "flaky",
            retry: 3,
            dead_letter: Some(("sink", "/events/dead-letter")),
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[503, 503], 202, None).await;
    let (sink, sink_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(
        &url,
        &routes,
        &[("flaky", &subscriber_url), ("sink", &sink_url)],
    );
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    let sent = event("test.flaky.v1");
    publisher.publish(sent.clone()).await.unwrap();

    let received = subscriber.wait_for(3, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(subscriber.events().len(), 3, "subscriber calls");
    assert!(received.iter().all(|event| event.id() == sent.id()));
    assert!(sink.events().is_empty(), "dead-letter sink calls");
    dispatchers.stop().await;
    let dead_letters = drain_queue(&url, &topology::dead_letter_queue_name(&trigger)).await;
    assert!(
        dead_letters.is_empty(),
        "dead-letter queue: {dead_letters:?}"
    );
    publisher.close().await;
}

#[tokio::test]
async fn exhausted_retries_dead_letter() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("exhausted_retries_dead_letter").await else {
        return;
    };
    let broker = unique("exhausted");
    let trigger = unique("down");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.down.v1",
            service: "down",
            retry: 2,
            dead_letter: Some(("sink", "/events/dead-letter")),
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[], 503, None).await;
    let (sink, sink_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(
        &url,
        &routes,
        &[("down", &subscriber_url), ("sink", &sink_url)],
    );
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    let sent = event("test.down.v1");
    publisher.publish(sent.clone()).await.unwrap();

    let dead = sink.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        subscriber.events().len(),
        3,
        "subscriber calls: retry 2 + 1"
    );
    assert_eq!(sink.events().len(), 1, "dead-letter sink calls");
    assert_eq!(sink.calls()[0].0, "/events/dead-letter");
    let dead = &dead[0];
    assert_eq!(dead.id(), sent.id());
    assert_eq!(dead.ty(), "test.down.v1");
    assert_eq!(
        text_extension(dead, "knativeerrorcode").as_deref(),
        Some("503")
    );
    let error_data = text_extension(dead, "knativeerrordata").unwrap_or_default();
    assert!(error_data.contains("503"), "knativeerrordata: {error_data}");
    assert!(
        error_data.contains("scripted failure"),
        "knativeerrordata: {error_data}"
    );
    assert_eq!(
        text_extension(dead, "knativeerrordest"),
        Some(format!("{subscriber_url}"))
    );
    assert_eq!(json_data(dead), serde_json::json!({ "job_id": 42 }));

    dispatchers.stop().await;
    let dead_letters = drain_queue(&url, &topology::dead_letter_queue_name(&trigger)).await;
    assert_eq!(dead_letters.len(), 1, "dead-letter queue messages");
    let recorded = &dead_letters[0];
    assert_eq!(header(recorded, "ce-id").as_deref(), Some(sent.id()));
    assert_eq!(
        header(recorded, "ce-knativeerrorcode").as_deref(),
        Some("503")
    );
    assert!(
        header(recorded, "ce-knativeerrordata").is_some_and(|data| data.contains("503")),
        "{:?}",
        recorded.properties.headers()
    );
    publisher.close().await;
}

#[tokio::test]
async fn bad_request_dead_letters_at_once() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("bad_request_dead_letters_at_once").await else {
        return;
    };
    let broker = unique("bad-request");
    let trigger = unique("strict");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.strict.v1",
            service: "strict",
            retry: 3,
            dead_letter: Some(("sink", "/events/dead-letter")),
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[], 400, None).await;
    let (sink, sink_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(
        &url,
        &routes,
        &[("strict", &subscriber_url), ("sink", &sink_url)],
    );
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    publisher.publish(event("test.strict.v1")).await.unwrap();

    let dead = sink.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(subscriber.events().len(), 1, "subscriber calls");
    assert_eq!(dead.len(), 1, "dead-letter sink calls");
    assert_eq!(
        text_extension(&dead[0], "knativeerrorcode").as_deref(),
        Some("400")
    );
    dispatchers.stop().await;
    let dead_letters = drain_queue(&url, &topology::dead_letter_queue_name(&trigger)).await;
    assert_eq!(dead_letters.len(), 1, "dead-letter queue messages");
    publisher.close().await;
}

#[tokio::test]
async fn dead_letter_queue_keeps_events_when_sink_is_down() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("dead_letter_queue_keeps_events_when_sink_is_down").await else {
        return;
    };
    let broker = unique("sink-down");
    let trigger = unique("rejecting");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.rejecting.v1",
            service: "rejecting",
            retry: 1,
            dead_letter: Some(("sink", "/events/dead-letter")),
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[], 500, None).await;
    // A port that was just free: nothing listens on it.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let dispatchers = Dispatchers::start(
        &url,
        &routes,
        &[("rejecting", &subscriber_url), ("sink", &sink_url)],
    );
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    let sent = event("test.rejecting.v1");
    publisher.publish(sent.clone()).await.unwrap();

    subscriber.wait_for(2, WAIT).await;
    let queue = topology::dead_letter_queue_name(&trigger);
    let deadline = Instant::now() + WAIT;
    let dead_letters = loop {
        let messages = drain_queue(&url, &queue).await;
        if !messages.is_empty() || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead_letters.len(), 1, "dead-letter queue messages");
    assert_eq!(
        header(&dead_letters[0], "ce-id").as_deref(),
        Some(sent.id())
    );
    assert_eq!(
        subscriber.events().len(),
        2,
        "subscriber calls: retry 1 + 1"
    );
    dispatchers.stop().await;
    publisher.close().await;
}

#[tokio::test]
async fn reply_reaches_matching_trigger() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("reply_reaches_matching_trigger").await else {
        return;
    };
    let broker = unique("reply");
    let (request_trigger, reply_trigger) = (unique("request"), unique("reply"));
    let routes = routes(
        &broker,
        &[
            TriggerSpec {
                name: &request_trigger,
                event_type: "test.request.v1",
                service: "worker",
                retry: 0,
                dead_letter: None,
            },
            TriggerSpec {
                name: &reply_trigger,
                event_type: "test.reply.v1",
                service: "listener",
                retry: 0,
                dead_letter: None,
            },
        ],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    fn answer(request: &Event) -> Event {
        EventBuilderV10::new()
            .id(format!("reply-to-{}", request.id()))
            .source("/tests/worker")
            .ty("test.reply.v1")
            .data("application/json", serde_json::json!({ "done": true }))
            .build()
            .unwrap()
    }
    let (worker, worker_url) = Subscriber::start(&[], 200, Some(answer)).await;
    let (listener, listener_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(
        &url,
        &routes,
        &[("worker", &worker_url), ("listener", &listener_url)],
    );
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    let sent = event("test.request.v1");
    publisher.publish(sent.clone()).await.unwrap();

    let replies = listener.wait_for(1, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(worker.events().len(), 1, "worker calls");
    assert_eq!(listener.events().len(), 1, "listener calls");
    assert_eq!(replies[0].id(), format!("reply-to-{}", sent.id()));
    assert_eq!(replies[0].ty(), "test.reply.v1");
    assert_eq!(json_data(&replies[0]), serde_json::json!({ "done": true }));
    dispatchers.stop().await;
    publisher.close().await;
}

#[tokio::test]
async fn same_event_twice_is_delivered_twice() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("same_event_twice_is_delivered_twice").await else {
        return;
    };
    let broker = unique("twice");
    let trigger = unique("twice");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.twice.v1",
            service: "twice",
            retry: 0,
            dead_letter: None,
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(&url, &routes, &[("twice", &subscriber_url)]);
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();

    // Delivery is at-least-once; deduplicating on source + id is the consumer's job.
    let sent = event("test.twice.v1");
    publisher.publish(sent.clone()).await.unwrap();
    publisher.publish(sent.clone()).await.unwrap();

    let received = subscriber.wait_for(2, WAIT).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(subscriber.events().len(), 2, "subscriber calls");
    assert!(received.iter().all(|event| event.id() == sent.id()));
    dispatchers.stop().await;
    publisher.close().await;
}

#[tokio::test]
async fn events_published_before_dispatch_are_kept() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("events_published_before_dispatch_are_kept").await else {
        return;
    };
    let broker = unique("persist");
    let trigger = unique("later");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.later.v1",
            service: "later",
            retry: 0,
            dead_letter: None,
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();
    let sent: Vec<Event> = (0..3).map(|_| event("test.later.v1")).collect();
    for event in &sent {
        publisher.publish(event.clone()).await.unwrap();
    }
    publisher.close().await;

    let (subscriber, subscriber_url) = Subscriber::start(&[], 202, None).await;
    tokio::time::sleep(QUIET).await;
    assert!(subscriber.events().is_empty(), "no dispatcher runs yet");
    let dispatchers = Dispatchers::start(&url, &routes, &[("later", &subscriber_url)]);

    let received = subscriber.wait_for(3, WAIT).await;
    let received: HashSet<String> = received.iter().map(|event| event.id().to_owned()).collect();
    let expected: HashSet<String> = sent.iter().map(|event| event.id().to_owned()).collect();
    assert_eq!(received, expected);
    dispatchers.stop().await;
}

#[tokio::test]
async fn malformed_message_goes_to_dead_letter_queue() {
    let _node = RABBITMQ_NODE.read().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("malformed_message_goes_to_dead_letter_queue").await else {
        return;
    };
    let broker = unique("malformed");
    let trigger = unique("malformed");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.malformed.v1",
            service: "strict",
            retry: 3,
            dead_letter: None,
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[], 202, None).await;
    let publisher = RabbitBroker::new(&url, &routes, &broker).unwrap();
    publisher.connect().await.unwrap();

    // Routed by its ce-type header, but without ce-specversion, ce-id and
    // ce-source it is no CloudEvent.
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "ce-type".into(),
        AMQPValue::LongString(LongString::from("test.malformed.v1")),
    );
    let confirmation = channel
        .basic_publish(
            topology::exchange_name(&broker).into(),
            "".into(),
            BasicPublishOptions::default(),
            b"not an event",
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack());
    let _ = connection.close(200, "published".into()).await;

    let dispatchers = Dispatchers::start(&url, &routes, &[("strict", &subscriber_url)]);
    let queue = topology::dead_letter_queue_name(&trigger);
    let deadline = Instant::now() + WAIT;
    let dead_letters = loop {
        let messages = drain_queue(&url, &queue).await;
        if !messages.is_empty() || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead_letters.len(), 1, "dead-letter queue messages");
    assert_eq!(dead_letters[0].data, b"not an event");
    assert!(subscriber.events().is_empty(), "subscriber calls");
    dispatchers.stop().await;
    publisher.close().await;
}

/// Restarts the RabbitMQ node with `scripts/services restart-rabbitmq` while
/// events are published, and checks that every event is delivered at least
/// once: the publisher and the dispatcher both reconnect.
#[tokio::test]
async fn survives_rabbitmq_restart() {
    let _node = RABBITMQ_NODE.write().await;
    let _logs = capture_logs();
    let Some(url) = rabbitmq_url("survives_rabbitmq_restart").await else {
        return;
    };
    let started = Instant::now();
    let broker = unique("restart");
    let trigger = unique("restart");
    let routes = routes(
        &broker,
        &[TriggerSpec {
            name: &trigger,
            event_type: "test.restart.v1",
            service: "steady",
            retry: 3,
            dead_letter: None,
        }],
    );
    let _cleanup = Cleanup {
        url: url.clone(),
        broker: broker.clone(),
        routes: routes.clone(),
    };
    let (subscriber, subscriber_url) = Subscriber::start(&[], 202, None).await;
    let dispatchers = Dispatchers::start(&url, &routes, &[("steady", &subscriber_url)]);
    let publisher = RabbitBroker::new(&url, &routes, &broker)
        .unwrap()
        .with_retry_window(Duration::from_secs(60));
    let mut published = Vec::new();

    for _ in 0..20 {
        let sent = event("test.restart.v1");
        publisher.publish(sent.clone()).await.unwrap();
        published.push(sent.id().to_owned());
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services");
    let restart = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .arg("restart-rabbitmq")
            .output()
    });
    let mut during_restart = 0;
    while !restart.is_finished() {
        let sent = event("test.restart.v1");
        publisher
            .publish(sent.clone())
            .await
            .expect("publishing while RabbitMQ restarts succeeds after a reconnect");
        published.push(sent.id().to_owned());
        during_restart += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = restart.await.unwrap().expect("scripts/services runs");
    assert!(
        output.status.success(),
        "scripts/services restart-rabbitmq failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let restarted_at = started.elapsed();

    // Published on the new node: only a reconnected publisher can send them,
    // and only a reconnected dispatcher can deliver them.
    for _ in 0..20 {
        let sent = event("test.restart.v1");
        publisher.publish(sent.clone()).await.unwrap();
        published.push(sent.id().to_owned());
    }

    let expected: HashSet<String> = published.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = loop {
        let delivered: HashSet<String> = subscriber
            .events()
            .iter()
            .map(|event| event.id().to_owned())
            .collect();
        if expected.is_subset(&delivered) || Instant::now() > deadline {
            break delivered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let missing: Vec<&String> = expected.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events were never delivered: {missing:?}",
        missing.len(),
        expected.len()
    );
    let calls = subscriber.events().len();
    eprintln!(
        "survives_rabbitmq_restart: {} events ({during_restart} while restarting), {calls} deliveries, restart done after {:.1}s, all delivered after {:.1}s",
        expected.len(),
        restarted_at.as_secs_f32(),
        started.elapsed().as_secs_f32()
    );
    assert!(calls >= expected.len());

    dispatchers.stop().await;
    publisher.close().await;
}
