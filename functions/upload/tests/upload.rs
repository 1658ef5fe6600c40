//! HTTP tests of the upload function, in-process, on a temporary SQLite store
//! and blob directory. Events go to a broker that records them.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use alchemist_events::{
    broker::Broker,
    catalogue::{
        ConversionFailed, FailureReason, Payload, VideoUploaded, outcome_event_id, parse_payload,
    },
};
use alchemist_runtime::{
    blob::Bucket,
    jwt::{JwtKeys, Role},
    store::{Claim, Completion, JobStatus},
    testing::{self, TempDeps},
};
use alchemist_upload::{
    AppState, Config, app,
    outbox::{RelayReport, relay_once},
};
use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

/// A broker that keeps what is published, or refuses everything.
#[derive(Default)]
struct RecordingBroker {
    events: Mutex<Vec<cloudevents::Event>>,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl Broker for RecordingBroker {
    async fn publish(&self, event: cloudevents::Event) -> Result<(), alchemist_events::Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(alchemist_events::Error::Unavailable(
                "test broker is down".into(),
            ));
        }
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

struct Fixture {
    deps: TempDeps,
    broker: Arc<RecordingBroker>,
    keys: Arc<JwtKeys>,
    router: Router,
}

async fn fixture_with(config: Config, broker: RecordingBroker) -> Fixture {
    let deps = testing::temp_deps().await;
    let broker = Arc::new(broker);
    let keys = Arc::new(testing::keys());
    let router = app(AppState {
        store: deps.store.clone(),
        blobs: deps.blobs.clone(),
        broker: broker.clone(),
        keys: keys.clone(),
        config: Arc::new(config),
    });
    Fixture {
        deps,
        broker,
        keys,
        router,
    }
}

async fn fixture() -> Fixture {
    fixture_with(Config::default(), RecordingBroker::default()).await
}

impl Fixture {
    /// Runs one pass of the outbox relay, with `lease` as the job lease.
    async fn relay(&self, lease: std::time::Duration) -> RelayReport {
        relay_once(self.deps.store.as_ref(), self.broker.as_ref(), lease)
            .await
            .unwrap()
    }

    async fn token(&self, email: &str, role: Role) -> String {
        let user = testing::add_user(self.deps.store.as_ref(), email, "password123", role).await;
        self.keys.issue(&user.id, &user.email, role).0
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    async fn upload_raw(
        &self,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
        query: &str,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::post(format!("/uploads{query}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "video/mp4")
            .header("x-file-name", name)
            .body(Body::from(bytes))
            .unwrap();
        let (status, _, body) = self.send(request).await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    async fn get(&self, token: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    fn video_blob_count(&self) -> usize {
        std::fs::read_dir(self.deps.dir.path().join("blobs/videos"))
            .unwrap()
            .filter(|entry| {
                !entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count()
    }
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file_name {
            Some(file_name) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: video/mp4\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn raw_upload_queues_job_and_publishes() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;

    let (status, answer) = fx
        .upload_raw(
            &token,
            "clip.mp4",
            b"not really a video".to_vec(),
            "?bitrate_kbps=192",
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["status"], "queued");
    let job_id: Uuid = answer["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(answer["status_url"], format!("/jobs/{job_id}"));
    let events = fx.broker.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    let payload: VideoUploaded = parse_payload(&events[0]).unwrap();
    assert_eq!(payload.job_id, job_id);
    assert_eq!(payload.size, 18);
    assert_eq!(payload.bitrate_kbps, Some(192));
    let job = fx.deps.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.file_name, "clip.mp4");
    assert_eq!(
        fx.deps
            .blobs
            .size(Bucket::Videos, &payload.video_id)
            .await
            .unwrap(),
        18
    );
}

#[tokio::test]
async fn multipart_upload_reads_fields() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    let body = multipart(
        "XyZ",
        &[
            ("file", Some("../../etc/holiday.mkv"), b"0123456789"),
            ("callback_url", None, b"https://hooks.example.com/done"),
            ("bitrate_kbps", None, b"128"),
        ],
    );
    let request = Request::post("/uploads")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
        .body(Body::from(body))
        .unwrap();

    let (status, _, body) = fx.send(request).await;

    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let job = fx
        .deps
        .store
        .job(answer["job_id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.file_name, "holiday.mkv");
    assert_eq!(
        job.callback_url.as_deref(),
        Some("https://hooks.example.com/done")
    );
    assert_eq!(job.bitrate_kbps, Some(128));
    assert_eq!(job.video_size, 10);
}

#[tokio::test]
async fn zero_byte_upload_is_refused() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;

    let (status, answer) = fx.upload_raw(&token, "empty.mp4", Vec::new(), "").await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "empty");
    assert_eq!(fx.video_blob_count(), 0);
    assert!(fx.broker.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn oversized_upload_is_413_and_leaves_nothing() {
    let fx = fixture_with(
        Config {
            max_upload_bytes: 1000,
        },
        RecordingBroker::default(),
    )
    .await;
    let token = fx.token("a@example.com", Role::User).await;

    let (status, answer) = fx.upload_raw(&token, "big.mp4", vec![1u8; 5000], "").await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "too_large");
    assert_eq!(fx.video_blob_count(), 0);
    assert!(fx.deps.store.jobs(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn malformed_multipart_is_400() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    let cases: [(&str, &[u8]); 3] = [
        ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\nabc"),
        ("multipart/form-data", b"whatever"),
        ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--XyZ--\r\n"),
    ];
    for (content_type, body) in cases {
        let request = Request::post("/uploads")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_vec()))
            .unwrap();
        let (status, _, _) = fx.send(request).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{content_type} {}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(fx.video_blob_count(), 0);
}

#[tokio::test]
async fn bad_options_are_400_and_leave_nothing() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    for query in [
        "?bitrate_kbps=100",
        "?callback_url=ftp%3A%2F%2Fexample.com",
        "?callback_url=nonsense",
    ] {
        let (status, answer) = fx
            .upload_raw(&token, "clip.mp4", b"data".to_vec(), query)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer["error"], "bad_request", "{query}");
    }
    assert_eq!(fx.video_blob_count(), 0);
}

#[tokio::test]
async fn upload_needs_a_token() {
    let fx = fixture().await;
    let request = Request::post("/uploads").body(Body::from("data")).unwrap();

    let (status, headers, _) = fx.send(request).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn broker_outage_keeps_event_in_outbox() {
    let fx = fixture_with(
        Config::default(),
        RecordingBroker {
            down: AtomicBool::new(true),
            ..Default::default()
        },
    )
    .await;
    let token = fx.token("a@example.com", Role::User).await;

    let (status, answer) = fx
        .upload_raw(&token, "clip.mp4", b"data".to_vec(), "")
        .await;

    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the event is stored, so the upload is accepted"
    );
    let job_id: Uuid = answer["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        fx.deps.store.job(job_id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert!(fx.broker.events.lock().unwrap().is_empty());
    assert_eq!(
        fx.deps.store.due_outbox(10).await.unwrap().len(),
        0,
        "the failed event waits for its backoff"
    );

    // The broker comes back; once the backoff has passed, the relay publishes the event once.
    fx.broker.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = fx.relay(std::time::Duration::from_secs(60)).await;
    assert_eq!(report.published, 1);
    let events = fx.broker.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(
        parse_payload::<VideoUploaded>(&events[0]).unwrap().job_id,
        job_id
    );
    let again = fx.relay(std::time::Duration::from_secs(60)).await;
    assert_eq!(again.published, 0, "a published event leaves the outbox");
}

#[tokio::test]
async fn stale_converting_job_is_requeued() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    let (_, answer) = fx
        .upload_raw(&token, "clip.mp4", b"data".to_vec(), "")
        .await;
    let job_id: Uuid = answer["job_id"].as_str().unwrap().parse().unwrap();
    fx.deps.store.claim_job(job_id, 60_000).await.unwrap();

    // A live worker's job is left alone.
    let report = fx.relay(std::time::Duration::from_secs(60)).await;
    assert_eq!(report.requeued, 0);

    // Its worker died: no heartbeat within the lease.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let report = fx.relay(std::time::Duration::from_millis(10)).await;
    assert_eq!(report.requeued, 1);
    assert_eq!(report.published, 1);
    assert_eq!(
        fx.deps.store.job(job_id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    let events = fx.broker.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "the upload's event and the requeue's");
    assert_eq!(
        parse_payload::<VideoUploaded>(&events[1]).unwrap().job_id,
        job_id
    );
    assert_ne!(
        cloudevents::AttributesReader::id(&events[0]),
        cloudevents::AttributesReader::id(&events[1])
    );
}

/// A file that kills its worker every time is not retried forever: the job
/// fails, and the failure is announced so that its owner hears of it.
#[tokio::test]
async fn relay_fails_job_killing_every_worker() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    let (_, answer) = fx
        .upload_raw(&token, "clip.mp4", b"data".to_vec(), "")
        .await;
    let job_id: Uuid = answer["job_id"].as_str().unwrap().parse().unwrap();
    for _ in 0..alchemist_upload::outbox::MAX_ATTEMPTS {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let claim = fx.deps.store.claim_job(job_id, 1).await.unwrap();
        assert!(matches!(claim, Claim::Started { .. }), "{claim:?}");
    }

    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let report = fx.relay(std::time::Duration::from_millis(10)).await;

    assert_eq!(report.requeued, 0);
    let job = fx.deps.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("internal"));
    let events = fx.broker.events.lock().unwrap().clone();
    let failed = events
        .iter()
        .find(|event| cloudevents::AttributesReader::ty(*event) == ConversionFailed::TYPE)
        .expect("the failure is published");
    assert_eq!(
        cloudevents::AttributesReader::id(failed),
        outcome_event_id(job_id)
    );
    let payload = parse_payload::<ConversionFailed>(failed).unwrap();
    assert_eq!(payload.job_id, job_id);
    assert_eq!(payload.reason, FailureReason::Internal);
}

#[tokio::test]
async fn users_see_only_their_jobs() {
    let fx = fixture().await;
    let alice = fx.token("alice@example.com", Role::User).await;
    let bob = fx.token("bob@example.com", Role::User).await;
    let admin = fx.token("admin@example.com", Role::Admin).await;
    let (_, answer) = fx.upload_raw(&alice, "a.mp4", b"alice".to_vec(), "").await;
    let alice_job = answer["job_id"].as_str().unwrap().to_owned();
    fx.upload_raw(&bob, "b.mp4", b"bob".to_vec(), "").await;

    let (status, _, _) = fx.get(&bob, &format!("/jobs/{alice_job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = fx.get(&bob, &format!("/jobs/{alice_job}/audio")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = fx.get(&alice, &format!("/jobs/{alice_job}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = fx.get(&alice, "/jobs/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, _, body) = fx.get(&alice, "/jobs").await;
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    let (_, _, body) = fx.get(&admin, "/jobs").await;
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2);
    let (status, _, _) = fx.get(&admin, &format!("/jobs/{alice_job}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn audio_is_served_with_ranges() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    let (_, answer) = fx
        .upload_raw(&token, "song.webm", b"video".to_vec(), "")
        .await;
    let job_id: Uuid = answer["job_id"].as_str().unwrap().parse().unwrap();
    let uri = format!("/jobs/{job_id}/audio");

    let (status, _, body) = fx.get(&token, &uri).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Finish the job by hand with a stored "MP3" of known bytes.
    let content: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let meta = alchemist_runtime::blob::BlobMeta {
        owner_id: "x".into(),
        job_id: job_id.to_string(),
        content_type: "audio/mpeg".into(),
    };
    let stored = fx
        .deps
        .blobs
        .put(
            Bucket::Audio,
            &meta,
            Box::pin(std::io::Cursor::new(content.clone())),
            u64::MAX,
        )
        .await
        .unwrap();
    fx.deps.store.claim_job(job_id, 60_000).await.unwrap();
    let completion = Completion {
        audio_id: stored.id,
        audio_size: 1000,
        duration_seconds: 1.5,
        warnings: vec![],
    };
    assert!(
        fx.deps
            .store
            .complete_job(job_id, &completion)
            .await
            .unwrap()
    );

    let (status, headers, body) = fx.get(&token, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, content);
    assert_eq!(headers[header::CONTENT_TYPE], "audio/mpeg");
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");
    assert!(
        headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("song.mp3")
    );

    let request = Request::get(&uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::RANGE, "bytes=100-199")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = fx.send(request).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 100-199/1000");
    assert_eq!(body, content[100..200]);

    let request = Request::get(&uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::RANGE, "bytes=5000-")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = fx.send(request).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes */1000");

    let (_, _, body) = fx.get(&token, &format!("/jobs/{job_id}")).await;
    let view: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(view["status"], "done");
    assert_eq!(view["audio_url"], uri);
    assert_eq!(view["duration_seconds"], 1.5);
}

#[tokio::test]
async fn oversized_text_field_is_400() {
    let fx = fixture().await;
    let token = fx.token("a@example.com", Role::User).await;
    let long_url = format!("https://example.com/{}", "a".repeat(10_000));
    let body = multipart(
        "XyZ",
        &[
            ("callback_url", None, long_url.as_bytes()),
            ("file", Some("a.mp4"), b"data"),
        ],
    );
    let request = Request::post("/uploads")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XyZ")
        .body(Body::from(body))
        .unwrap();

    let (status, _, body) = fx.send(request).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("longer than 4096 bytes"));
    assert_eq!(fx.video_blob_count(), 0);
}

#[tokio::test]
async fn metrics_count_uploads_by_outcome() {
    let fx = fixture_with(
        Config {
            max_upload_bytes: 20_000,
        },
        RecordingBroker::default(),
    )
    .await;
    let token = fx.token("a@example.com", Role::User).await;
    let before = testing::scrape_metrics(&fx.router).await;

    let (status, _) = fx
        .upload_raw(&token, "clip.mp4", vec![7u8; 12_345], "")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = fx.upload_raw(&token, "empty.mp4", Vec::new(), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = fx
        .upload_raw(&token, "big.mp4", vec![1u8; 30_000], "")
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = fx
        .upload_raw(&token, "clip.mp4", b"data".to_vec(), "?bitrate_kbps=100")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let unknown_job = Uuid::new_v4();
    let (status, _, _) = fx.get(&token, &format!("/jobs/{unknown_job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let after = testing::scrape_metrics(&fx.router).await;

    // Other tests in this binary upload concurrently, so a count may move by more.
    let moved = |series: &str| testing::sample(&after, series) - testing::sample(&before, series);
    assert!(moved(r#"alchemist_uploads_total{outcome="accepted"}"#) >= 1.0);
    assert!(moved("alchemist_upload_bytes_total") >= 12_345.0);
    assert!(moved(r#"alchemist_uploads_total{outcome="empty"}"#) >= 1.0);
    assert!(moved(r#"alchemist_uploads_total{outcome="too_large"}"#) >= 1.0);
    assert!(moved(r#"alchemist_uploads_total{outcome="bad_request"}"#) >= 1.0);
    assert!(
        moved(r#"alchemist_http_requests_total{method="POST",route="/uploads",status="202"}"#)
            >= 1.0
    );
    assert!(
        moved(r#"alchemist_http_requests_total{method="GET",route="/jobs/{id}",status="404"}"#)
            >= 1.0
    );
    assert!(
        !after.contains(&unknown_job.to_string()),
        "a job id became a label value"
    );
}

/// The upload program's `relay` command, as the Kubernetes CronJob runs it:
/// it publishes what waits in the outbox to `K_SINK` and exits.
#[tokio::test]
async fn relay_command_publishes_the_outbox() {
    let fx = fixture().await;
    let owner = testing::add_user(
        fx.deps.store.as_ref(),
        "a@example.com",
        "password123",
        Role::User,
    )
    .await;
    let job = alchemist_runtime::store::NewJob {
        id: Uuid::now_v7(),
        owner_id: owner.id.clone(),
        file_name: "clip.mp4".to_owned(),
        video_id: "video-1".to_owned(),
        video_size: 4,
        bitrate_kbps: None,
        callback_url: None,
    };
    let payload = VideoUploaded {
        job_id: job.id,
        owner_id: owner.id,
        video_id: job.video_id.clone(),
        size: job.video_size,
        bitrate_kbps: None,
    };
    let event = alchemist_events::catalogue::build_event("/test", &job.id.to_string(), &payload);
    let event_id = cloudevents::AttributesReader::id(&event).to_owned();
    fx.deps
        .store
        .create_job_with_event(
            job,
            &alchemist_runtime::store::OutboxMessage::new(&event, payload.job_id),
        )
        .await
        .unwrap();

    // The broker's ingress: records the id of every event posted to it.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Router::new().route(
        "/",
        axum::routing::post({
            let received = received.clone();
            move |headers: axum::http::HeaderMap| async move {
                let id = headers["ce-id"].to_str().unwrap().to_owned();
                received.lock().unwrap().push(id);
                StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sink).await });

    let logs = testing::run_to_success(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_alchemist-upload"))
            .arg("relay")
            .env_clear()
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", fx.deps.dir.path().join("test.db").display()),
            )
            .env("K_SINK", &sink_url),
    )
    .await;
    assert!(logs.contains("outbox relay pass finished"), "{logs}");
    assert_eq!(*received.lock().unwrap(), [event_id]);
    assert!(fx.deps.store.due_outbox(10).await.unwrap().is_empty());
}
