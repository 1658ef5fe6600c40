//! Tests of the notify function: events go in through its router in-process,
//! and webhooks go out over HTTP to a receiver on 127.0.0.1 that records
//! every request.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use alchemist_events::{
    catalogue::{AudioConverted, ConversionFailed, FailureReason, build_event},
    http::to_request,
};
use alchemist_notify::{
    AppState, Config, app,
    queue::{self, RetryPolicy},
    webhook::WebhookSecret,
};
use alchemist_runtime::{
    jwt::Role,
    now_millis,
    store::{Job, NewJob, QueuedWebhook, WebhookDelivery, WebhookState},
    testing::{self, TempDeps},
};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tower::ServiceExt;
use uuid::Uuid;

/// The raw signing key; notify gets it in the `whsec_` text form.
const WEBHOOK_KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// One request the receiver recorded.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }
}

/// The requests the receiver has recorded, and the status it responds with.
struct Recorder {
    requests: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// A webhook receiver on 127.0.0.1 that records requests.
struct Receiver {
    url: String,
    recorder: Arc<Recorder>,
}

impl Receiver {
    async fn start() -> Receiver {
        let recorder = Arc::new(Recorder {
            requests: Mutex::new(Vec::new()),
            status: AtomicU16::new(200),
        });
        let router = Router::new()
            .route("/hook", post(record))
            .with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Receiver {
            url: format!("http://{address}/hook"),
            recorder,
        }
    }

    fn respond_with(&self, status: StatusCode) {
        self.recorder
            .status
            .store(status.as_u16(), Ordering::SeqCst);
    }

    fn received(&self) -> Vec<Received> {
        self.recorder.requests.lock().unwrap().clone()
    }
}

async fn record(
    State(recorder): State<Arc<Recorder>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    recorder
        .requests
        .lock()
        .unwrap()
        .push(Received { headers, body });
    StatusCode::from_u16(recorder.status.load(Ordering::SeqCst)).unwrap()
}

struct Fixture {
    deps: TempDeps,
    owner_id: String,
    receiver: Receiver,
    state: AppState,
    router: Router,
}

/// Retries a test can wait for: 100 ms, then 600 ms.
const QUICK_RETRIES: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    first_delay: Duration::from_millis(100),
};

async fn fixture(allow_private: bool) -> Fixture {
    fixture_with(allow_private, QUICK_RETRIES).await
}

async fn fixture_with(allow_private: bool, retry: RetryPolicy) -> Fixture {
    let deps = testing::temp_deps().await;
    let owner = testing::add_user(
        deps.store.as_ref(),
        "ada@example.com",
        "password123",
        Role::User,
    )
    .await;
    let secret = WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode(WEBHOOK_KEY))).unwrap();
    let config = Config {
        secret,
        allow_private,
        timeout: Duration::from_secs(5),
        retry,
    };
    let state = AppState {
        store: deps.store.clone(),
        config: Arc::new(config),
    };
    Fixture {
        deps,
        owner_id: owner.id,
        receiver: Receiver::start().await,
        router: app(state.clone()),
        state,
    }
}

impl Fixture {
    async fn job(&self, callback_url: Option<&str>) -> Job {
        let job = NewJob {
            id: Uuid::now_v7(),
            owner_id: self.owner_id.clone(),
            file_name: "holiday.mp4".to_owned(),
            video_id: "video-1".to_owned(),
            video_size: 1_048_576,
            bitrate_kbps: None,
            callback_url: callback_url.map(str::to_owned),
        };
        self.deps.store.create_job(job).await.unwrap()
    }

    /// A job whose callback URL is the receiver.
    async fn job_with_receiver(&self) -> Job {
        self.job(Some(&self.receiver.url)).await
    }

    fn converted(&self, job: &Job) -> Event {
        let payload = AudioConverted {
            job_id: job.id,
            owner_id: self.owner_id.clone(),
            audio_id: "audio-1".to_owned(),
            size: 65_536,
            duration_seconds: 4.5,
            warnings: Vec::new(),
        };
        build_event("/convert", &job.id.to_string(), &payload)
    }

    fn failed(&self, job: &Job) -> Event {
        let payload = ConversionFailed {
            job_id: job.id,
            owner_id: self.owner_id.clone(),
            reason: FailureReason::NoAudio,
            message: FailureReason::NoAudio.user_message().to_owned(),
        };
        build_event("/convert", &job.id.to_string(), &payload)
    }

    /// Sends `event` to notify in binary mode and returns the status.
    async fn deliver(&self, event: Event) -> StatusCode {
        let request = to_request(event, "/").unwrap();
        self.router.clone().oneshot(request).await.unwrap().status()
    }

    async fn deliveries(&self, job: &Job) -> Vec<WebhookDelivery> {
        self.deps.store.deliveries(job.id).await.unwrap()
    }

    /// Returns the job's only queued webhook.
    async fn queued(&self, job: &Job) -> QueuedWebhook {
        let mut webhooks = self.deps.store.webhooks(job.id).await.unwrap();
        assert_eq!(webhooks.len(), 1, "{webhooks:?}");
        webhooks.remove(0)
    }

    /// Runs retry passes until the webhook's next attempt has been made.
    async fn retry_when_due(&self, job: &Job) -> usize {
        let due_at = self.queued(job).await.next_attempt_at;
        let wait = u64::try_from(due_at - now_millis() + 20).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        queue::retry_due(&self.state).await.unwrap()
    }
}

/// Computes the Standard Webhooks signature: base64 HMAC-SHA256 of `id.timestamp.body`.
fn expected_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_KEY).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn unix_now() -> i64 {
    let elapsed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(elapsed.as_secs()).unwrap()
}

#[tokio::test]
async fn converted_event_sends_signed_webhook() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let event = fixture.converted(&job);

    let status = fixture.deliver(event.clone()).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    let received = fixture.receiver.received();
    assert_eq!(received.len(), 1);
    let webhook = &received[0];
    let timestamp = webhook.header("webhook-timestamp");
    let signatures: Vec<&str> = webhook.header("webhook-signature").split(' ').collect();
    let expected = expected_signature(webhook.header("webhook-id"), timestamp, &webhook.body);
    assert!(
        signatures.contains(&expected.as_str()),
        "signatures {signatures:?}, expected {expected}"
    );
    assert_eq!(webhook.header("webhook-id"), event.id());
    let sent_at: i64 = timestamp
        .parse()
        .expect("webhook-timestamp is Unix seconds");
    assert!(
        (unix_now() - sent_at).abs() <= 60,
        "webhook-timestamp {sent_at}"
    );
    assert_eq!(webhook.header("content-type"), "application/json");
    let body = webhook.json();
    assert_eq!(body["type"], "job.done");
    assert_eq!(body["data"]["job_id"], job.id.to_string());
    assert_eq!(body["data"]["status"], "done");
    assert_eq!(body["data"]["audio_url"], format!("/jobs/{}/audio", job.id));
    assert_eq!(body["data"]["duration_seconds"], 4.5);
}

#[tokio::test]
async fn delivery_is_recorded() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let event = fixture.converted(&job);

    fixture.deliver(event.clone()).await;

    let deliveries = fixture.deliveries(&job).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].outcome, "delivered");
    assert_eq!(deliveries[0].status_code, Some(200));
    assert_eq!(deliveries[0].event_id, event.id());
    assert_eq!(deliveries[0].url, fixture.receiver.url);
}

#[tokio::test]
async fn redelivered_event_sends_one_webhook() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let event = fixture.converted(&job);

    let first = fixture.deliver(event.clone()).await;
    let second = fixture.deliver(event).await;

    assert_eq!(first, StatusCode::ACCEPTED);
    assert_eq!(second, StatusCode::ACCEPTED);
    assert_eq!(fixture.receiver.received().len(), 1);
    assert_eq!(fixture.deliveries(&job).await.len(), 1);
}

#[tokio::test]
async fn failed_event_sends_job_failed() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;

    let status = fixture.deliver(fixture.failed(&job)).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    let received = fixture.receiver.received();
    assert_eq!(received.len(), 1);
    let body = received[0].json();
    assert_eq!(body["type"], "job.failed");
    assert_eq!(body["data"]["job_id"], job.id.to_string());
    assert_eq!(body["data"]["status"], "failed");
    assert_eq!(body["data"]["reason"], "no_audio");
    assert_eq!(
        body["data"]["message"],
        FailureReason::NoAudio.user_message()
    );
    assert!(body["data"].get("audio_url").is_none(), "{body}");
}

/// The address guard: with private targets not allowed, a callback on
/// 127.0.0.1 is rejected without a request, and retrying cannot help.
#[tokio::test]
async fn loopback_callback_is_refused() {
    let fixture = fixture(false).await;
    let job = fixture.job_with_receiver().await;

    let status = fixture.deliver(fixture.converted(&job)).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fixture.receiver.received().is_empty());
    let deliveries = fixture.deliveries(&job).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].outcome, "refused");
    assert_eq!(deliveries[0].status_code, None);
    assert!(deliveries[0].error.is_some());
    assert_eq!(fixture.queued(&job).await.state, WebhookState::Refused);
}

/// A receiver that fails gets the same webhook again on the queue's
/// schedule, not before, until it returns 2xx; the broker is not involved.
#[tokio::test]
async fn receiver_error_is_retried_on_schedule() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let event = fixture.converted(&job);
    fixture
        .receiver
        .respond_with(StatusCode::INTERNAL_SERVER_ERROR);
    let metrics_before = testing::scrape_metrics(&fixture.router).await;

    let status = fixture.deliver(event.clone()).await;

    assert_eq!(status, StatusCode::ACCEPTED, "the queue owns the retries");
    let first = fixture.queued(&job).await;
    assert_eq!(first.state, WebhookState::Pending);
    assert_eq!(first.attempts, 1);
    assert_eq!(
        queue::retry_due(&fixture.state).await.unwrap(),
        0,
        "nothing is sent before the first delay"
    );
    assert_eq!(fixture.receiver.received().len(), 1);

    // Second attempt fails too, and the wait grows.
    assert_eq!(fixture.retry_when_due(&job).await, 1);
    let second = fixture.queued(&job).await;
    assert_eq!(second.attempts, 2);
    assert_eq!(second.state, WebhookState::Pending);
    assert!(
        second.next_attempt_at - now_millis() > 300,
        "the second wait is six times the first"
    );

    fixture.receiver.respond_with(StatusCode::OK);
    assert_eq!(fixture.retry_when_due(&job).await, 1);

    let last = fixture.queued(&job).await;
    assert_eq!(last.state, WebhookState::Delivered);
    assert_eq!(last.attempts, 3);
    let received = fixture.receiver.received();
    assert_eq!(received.len(), 3);
    for webhook in &received {
        assert_eq!(webhook.header("webhook-id"), event.id());
        assert_eq!(
            webhook.body, received[0].body,
            "every attempt sends the same body"
        );
        let expected = expected_signature(
            webhook.header("webhook-id"),
            webhook.header("webhook-timestamp"),
            &webhook.body,
        );
        assert_eq!(webhook.header("webhook-signature"), expected);
    }
    let outcomes: Vec<(String, Option<u16>)> = fixture
        .deliveries(&job)
        .await
        .into_iter()
        .map(|delivery| (delivery.outcome, delivery.status_code))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("failed".to_owned(), Some(500)),
            ("failed".to_owned(), Some(500)),
            ("delivered".to_owned(), Some(200)),
        ]
    );

    // Other tests in this binary send webhooks at the same time, so a count
    // may move by more.
    let metrics_after = testing::scrape_metrics(&fixture.router).await;
    let moved = |outcome: &str| {
        let series = format!(r#"alchemist_webhook_attempts_total{{outcome="{outcome}"}}"#);
        testing::sample(&metrics_after, &series) - testing::sample(&metrics_before, &series)
    };
    assert!(moved("failed") >= 2.0);
    assert!(moved("delivered") >= 1.0);

    // A redelivery of the event after all that sends nothing more.
    assert_eq!(fixture.deliver(event).await, StatusCode::ACCEPTED);
    assert_eq!(fixture.receiver.received().len(), 3);
}

#[tokio::test]
async fn webhook_is_abandoned_after_the_last_attempt() {
    let fixture = fixture_with(
        true,
        RetryPolicy {
            max_attempts: 2,
            first_delay: Duration::from_millis(50),
        },
    )
    .await;
    let job = fixture.job_with_receiver().await;
    fixture
        .receiver
        .respond_with(StatusCode::SERVICE_UNAVAILABLE);

    fixture.deliver(fixture.failed(&job)).await;
    assert_eq!(fixture.retry_when_due(&job).await, 1);

    let webhook = fixture.queued(&job).await;
    assert_eq!(webhook.state, WebhookState::Abandoned);
    assert_eq!(webhook.attempts, 2);
    assert!(webhook.last_error.unwrap().contains("503"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(queue::retry_due(&fixture.state).await.unwrap(), 0);
    assert_eq!(fixture.receiver.received().len(), 2);
}

/// A notify process that queued a webhook and died before sending it, and
/// one that died in the middle of a request: the retry loop of the next
/// process sends both, once each.
#[tokio::test]
async fn webhooks_left_by_a_dead_process_are_sent() {
    let fixture = fixture(true).await;
    let store = fixture.deps.store.clone();
    let queued_only = fixture.job_with_receiver().await;
    let mid_request = fixture.job_with_receiver().await;
    let body = r#"{"type":"job.done"}"#;
    for (job, id) in [(&queued_only, "left-queued"), (&mid_request, "left-leased")] {
        assert!(
            store
                .enqueue_webhook(job.id, id, &fixture.receiver.url, body)
                .await
                .unwrap()
        );
    }
    // The dead sender's lease runs out 300 ms from now.
    store
        .take_webhook("left-leased", now_millis() + 300)
        .await
        .unwrap()
        .unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    let retries = tokio::spawn(queue::run_retries(
        fixture.state.clone(),
        stop.clone().cancelled_owned(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fixture.receiver.received().len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    retries.await.unwrap();

    let mut ids: Vec<String> = fixture
        .receiver
        .received()
        .iter()
        .map(|webhook| webhook.header("webhook-id").to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["left-leased", "left-queued"]);
    assert_eq!(
        fixture.queued(&queued_only).await.state,
        WebhookState::Delivered
    );
    let leased = fixture.queued(&mid_request).await;
    assert_eq!(leased.state, WebhookState::Delivered);
    assert_eq!(leased.attempts, 2, "the dead sender's attempt counts");
}

#[tokio::test]
async fn unknown_event_type_is_rejected() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let event = EventBuilderV10::new()
        .id("unknown-1")
        .source("/tests")
        .ty("dev.audioalchemist.video.archived.v1")
        .data("application/json", json!({ "job_id": job.id }))
        .build()
        .unwrap();

    let status = fixture.deliver(event).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(fixture.receiver.received().is_empty());
}

#[tokio::test]
async fn invalid_payload_is_rejected() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let mut event = fixture.converted(&job);
    event.set_data("application/json", json!({ "job_id": job.id }));

    let status = fixture.deliver(event).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(fixture.receiver.received().is_empty());
}

#[tokio::test]
async fn job_without_callback_sends_nothing() {
    let fixture = fixture(true).await;
    let job = fixture.job(None).await;

    let status = fixture.deliver(fixture.converted(&job)).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fixture.deliveries(&job).await.is_empty());
    assert!(fixture.receiver.received().is_empty());
}

#[tokio::test]
async fn unknown_job_sends_nothing() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let mut event = fixture.converted(&job);
    let other_job = Uuid::now_v7();
    event.set_data(
        "application/json",
        json!({
            "job_id": other_job,
            "owner_id": fixture.owner_id,
            "audio_id": "audio-1",
            "size": 1,
            "duration_seconds": 1.0,
        }),
    );

    let status = fixture.deliver(event).await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(fixture.receiver.received().is_empty());
}

/// The notify program's `retry` command, as the Kubernetes CronJob runs it:
/// it sends the webhooks that are due and exits.
#[tokio::test]
async fn retry_command_sends_due_webhooks() {
    let fixture = fixture(true).await;
    let job = fixture.job_with_receiver().await;
    let body = r#"{"type":"job.done"}"#;
    fixture
        .deps
        .store
        .enqueue_webhook(job.id, "left-for-the-cron-job", &fixture.receiver.url, body)
        .await
        .unwrap();
    let database = fixture.deps.dir.path().join("test.db");

    let logs = testing::run_to_success(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_alchemist-notify"))
            .arg("retry")
            .env_clear()
            .env("DATABASE_URL", format!("sqlite://{}", database.display()))
            .env(
                "WEBHOOK_SECRET",
                format!("whsec_{}", STANDARD.encode(WEBHOOK_KEY)),
            )
            .env("WEBHOOK_ALLOW_PRIVATE", "true"),
    )
    .await;
    assert!(logs.contains("webhook retry pass finished"), "{logs}");
    let received = fixture.receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("webhook-id"), "left-for-the-cron-job");
    assert_eq!(fixture.queued(&job).await.state, WebhookState::Delivered);
}

#[tokio::test]
async fn unknown_command_is_rejected() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_alchemist-notify"))
        .arg("retyr")
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown command \"retyr\""), "{stderr}");
    assert!(stderr.contains("`retry`"), "{stderr}");
}
