//! HTTP tests of the convert function: CloudEvents in, reply events out, on
//! a temporary store with media made by ffmpeg.

use std::{path::Path, sync::Arc};

use alchemist_convert::{AppState, Config, app};
use alchemist_events::{
    catalogue::{
        AudioConverted, ConversionFailed, FailureReason, Payload, VideoUploaded, build_event,
        outcome_event_id, parse_payload,
    },
    http::{reply_from_response, to_request},
};
use alchemist_runtime::{
    blob::{BlobMeta, Bucket},
    jwt::Role,
    store::{JobStatus, NewJob},
    testing::{self, TempDeps},
};
use axum::{Router, body::Body, http::StatusCode};
use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

struct Fixture {
    deps: TempDeps,
    router: Router,
    owner: String,
}

async fn fixture() -> Fixture {
    let deps = testing::temp_deps().await;
    let owner = testing::add_user(
        deps.store.as_ref(),
        "owner@example.com",
        "password123",
        Role::User,
    )
    .await
    .id;
    let config = Config {
        work_dir: deps.dir.path().to_path_buf(),
        ..Config::default()
    };
    let router = app(AppState {
        store: deps.store.clone(),
        blobs: deps.blobs.clone(),
        config: Arc::new(config),
    });
    Fixture {
        deps,
        router,
        owner,
    }
}

impl Fixture {
    /// Stores `file` as a video and creates its queued job.
    async fn queue(&self, file: &Path, bitrate_kbps: Option<u32>) -> VideoUploaded {
        let job_id = Uuid::new_v4();
        let meta = BlobMeta {
            owner_id: self.owner.clone(),
            job_id: job_id.to_string(),
            content_type: "video/mp4".into(),
        };
        let reader = tokio::fs::File::open(file).await.unwrap();
        let blob = self
            .deps
            .blobs
            .put(Bucket::Videos, &meta, Box::pin(reader), u64::MAX)
            .await
            .unwrap();
        self.deps
            .store
            .create_job(NewJob {
                id: job_id,
                owner_id: self.owner.clone(),
                file_name: "input".into(),
                video_id: blob.id.clone(),
                video_size: blob.size,
                bitrate_kbps,
                callback_url: None,
            })
            .await
            .unwrap();
        VideoUploaded {
            job_id,
            owner_id: self.owner.clone(),
            video_id: blob.id,
            size: blob.size,
            bitrate_kbps,
        }
    }

    async fn deliver(&self, event: cloudevents::Event) -> (StatusCode, Option<cloudevents::Event>) {
        let response = self
            .router
            .clone()
            .oneshot(to_request(event, "/").unwrap())
            .await
            .unwrap();
        let status = response.status();
        (status, reply_from_response(response).await.unwrap())
    }

    fn audio_blob_count(&self) -> usize {
        std::fs::read_dir(self.deps.dir.path().join("blobs/audio"))
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

    async fn write_audio(&self, audio_id: &str) -> std::path::PathBuf {
        let path = self.deps.dir.path().join(format!("{audio_id}.mp3"));
        let mut reader = self
            .deps
            .blobs
            .open(Bucket::Audio, audio_id, 0)
            .await
            .unwrap();
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        tokio::io::copy(&mut reader, &mut file).await.unwrap();
        path
    }
}

fn uploaded_event(payload: &VideoUploaded) -> cloudevents::Event {
    build_event("/test", &payload.job_id.to_string(), payload)
}

#[tokio::test]
async fn video_converts_to_mp3_reply() {
    let fx = fixture().await;
    let input = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 3);
    let payload = fx.queue(&input, None).await;

    let (status, reply) = fx.deliver(uploaded_event(&payload)).await;

    assert_eq!(status, StatusCode::OK);
    let reply = reply.expect("a reply event");
    assert_eq!(reply.ty(), AudioConverted::TYPE);
    let converted: AudioConverted = parse_payload(&reply).unwrap();
    assert_eq!(converted.job_id, payload.job_id);
    assert!(
        (converted.duration_seconds - 3.0).abs() < 0.15,
        "{}",
        converted.duration_seconds
    );
    let job = fx.deps.store.job(payload.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.attempts, 1);
    let mp3 = fx.write_audio(&converted.audio_id).await;
    assert_eq!(testing::probe_field(&mp3, "stream=codec_name"), "mp3");
    assert_eq!(testing::probe_field(&mp3, "stream=sample_rate"), "44100");
    assert!(
        std::fs::read_dir(fx.deps.dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("alchemist-convert-")),
        "work directory left behind"
    );
}

#[tokio::test]
async fn requested_bitrate_is_used() {
    let fx = fixture().await;
    let input = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 2);
    let payload = fx.queue(&input, Some(96)).await;

    let (_, reply) = fx.deliver(uploaded_event(&payload)).await;

    let converted: AudioConverted = parse_payload(&reply.unwrap()).unwrap();
    let mp3 = fx.write_audio(&converted.audio_id).await;
    assert_eq!(testing::probe_field(&mp3, "stream=bit_rate"), "96000");
}

#[tokio::test]
async fn redelivery_converts_once() {
    let fx = fixture().await;
    let input = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 1);
    let payload = fx.queue(&input, None).await;
    let event = uploaded_event(&payload);

    let (_, first) = fx.deliver(event.clone()).await;
    let (status, second) = fx.deliver(event).await;

    // The redelivery converts nothing but repeats the outcome under the same
    // id, in case the first reply was lost; notify deduplicates by that id.
    let first = first.expect("a reply event");
    let second = second.expect("the outcome event again");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.id(), second.id());
    assert_eq!(first.ty(), second.ty());
    assert_eq!(
        parse_payload::<AudioConverted>(&first).unwrap(),
        parse_payload::<AudioConverted>(&second).unwrap()
    );
    assert_eq!(fx.audio_blob_count(), 1);
    assert_eq!(
        fx.deps
            .store
            .job(payload.job_id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
}

#[tokio::test]
async fn no_audio_fails_with_reason() {
    let fx = fixture().await;
    let input = testing::video_without_audio(fx.deps.dir.path(), "silent.mp4");
    let payload = fx.queue(&input, None).await;

    let (status, reply) = fx.deliver(uploaded_event(&payload)).await;

    assert_eq!(status, StatusCode::OK);
    let failed: ConversionFailed = parse_payload(&reply.unwrap()).unwrap();
    assert_eq!(failed.reason, FailureReason::NoAudio);
    let job = fx.deps.store.job(payload.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("no_audio"));
    assert_eq!(fx.audio_blob_count(), 0);
}

#[tokio::test]
async fn text_and_truncated_files_fail_with_reasons() {
    let fx = fixture().await;
    let dir = fx.deps.dir.path();
    let text = dir.join("notes.mp4");
    std::fs::write(&text, "this is a text file, not a video\n").unwrap();
    let whole = testing::video_with_audio(dir, "whole.mp4", 4);
    let bytes = std::fs::read(&whole).unwrap();
    // Cut before the moov atom, which ffmpeg writes at the end by default.
    let truncated = dir.join("cut.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let playlist = dir.join("list.mp4");
    std::fs::write(
        &playlist,
        format!("#EXTM3U\n#EXTINF:1,\n{}\n", whole.display()),
    )
    .unwrap();

    for (file, reason) in [
        (&text, "unreadable"),
        (&truncated, "truncated"),
        (&playlist, "unsupported_format"),
    ] {
        let payload = fx.queue(file, None).await;
        let (_, reply) = fx.deliver(uploaded_event(&payload)).await;
        let failed: ConversionFailed = parse_payload(&reply.expect("a reply event")).unwrap();
        assert_eq!(failed.reason.as_str(), reason, "{}", file.display());
    }
}

#[tokio::test]
async fn event_without_attributes_is_400() {
    let fx = fixture().await;
    let request = axum::http::Request::post("/")
        .header("ce-specversion", "1.0")
        .header("ce-source", "/test")
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();

    let response = fx.router.clone().oneshot(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn payload_breaking_schema_fails_job() {
    let fx = fixture().await;
    let input = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 1);
    let payload = fx.queue(&input, None).await;
    let mut data = serde_json::to_value(&payload).unwrap();
    data["bitrate_kbps"] = serde_json::json!(100);
    let event = EventBuilderV10::new()
        .id("bad-1")
        .source("/test")
        .ty(VideoUploaded::TYPE)
        .data("application/json", data)
        .build()
        .unwrap();

    let (status, reply) = fx.deliver(event).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply.is_none());
    let job = fx.deps.store.job(payload.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("delivery_failed"));
    let announced = announced_failure(&fx, payload.job_id).await;
    assert_eq!(announced.reason, FailureReason::DeliveryFailed);
    assert_eq!(announced.owner_id, payload.owner_id);
}

#[tokio::test]
async fn dead_letter_fails_the_job() {
    let fx = fixture().await;
    let input = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 1);
    let payload = fx.queue(&input, None).await;
    let event = alchemist_events::broker::with_error_extensions(
        uploaded_event(&payload),
        "convert",
        "status 503",
    );

    let response = fx
        .router
        .clone()
        .oneshot(to_request(event, "/events/dead-letter").unwrap())
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
    let job = fx.deps.store.job(payload.job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("delivery_failed"));
    let announced = announced_failure(&fx, payload.job_id).await;
    assert_eq!(announced.reason, FailureReason::DeliveryFailed);
    assert_eq!(announced.message, job.failure_message.unwrap());

    // A second dead letter for the ended job queues nothing more.
    let again = alchemist_events::broker::with_error_extensions(
        uploaded_event(&payload),
        "convert",
        "status 503",
    );
    fx.router
        .clone()
        .oneshot(to_request(again, "/events/dead-letter").unwrap())
        .await
        .unwrap();
    let queued = fx.deps.store.due_outbox(100).await.unwrap();
    assert_eq!(
        queued
            .iter()
            .filter(|message| message.job_id == payload.job_id)
            .count(),
        1
    );
}

#[tokio::test]
async fn readiness_checks_dependencies() {
    let fx = fixture().await;
    let response = fx
        .router
        .clone()
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    std::fs::remove_dir_all(fx.deps.dir.path().join("blobs")).unwrap();
    let response = fx
        .router
        .clone()
        .oneshot(
            axum::http::Request::get("/readyz")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn cut_file_keeps_audio_with_warning() {
    let fx = fixture().await;
    let dir = fx.deps.dir.path();
    // With the index at the front, a file cut in half still holds its first half of audio.
    let whole = testing::make_media(
        dir,
        "front.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=8",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=8",
            "-c:a",
            "aac",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-movflags",
            "+faststart",
        ],
    );
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.join("cut-front.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let payload = fx.queue(&cut, None).await;

    let (_, reply) = fx.deliver(uploaded_event(&payload)).await;

    let converted: AudioConverted = parse_payload(&reply.expect("a reply event")).unwrap();
    assert_eq!(converted.warnings, vec!["truncated".to_owned()]);
    assert!(
        converted.duration_seconds > 1.0 && converted.duration_seconds < 7.0,
        "{}",
        converted.duration_seconds
    );
    let job = fx.deps.store.job(payload.job_id).await.unwrap().unwrap();
    assert_eq!(job.warnings, vec!["truncated".to_owned()]);
}

#[tokio::test]
async fn silent_first_track_is_skipped() {
    let fx = fixture().await;
    let dir = fx.deps.dir.path();
    // Two tracks, neither flagged default: the first is digital silence.
    let input = testing::make_media(
        dir,
        "two-tracks.mkv",
        &[
            "-f",
            "lavfi",
            "-i",
            "anullsrc=sample_rate=48000:channel_layout=stereo",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=3",
            "-map",
            "0:a",
            "-map",
            "1:a",
            "-t",
            "3",
            "-c:a",
            "flac",
            "-disposition:a:0",
            "0",
            "-disposition:a:1",
            "0",
        ],
    );
    let payload = fx.queue(&input, None).await;

    let (_, reply) = fx.deliver(uploaded_event(&payload)).await;

    let converted: AudioConverted = parse_payload(&reply.expect("a reply event")).unwrap();
    let mp3 = fx.write_audio(&converted.audio_id).await;
    let volume = testing::mean_volume_db(&mp3);
    assert!(volume > -40.0, "the silent track was chosen ({volume} dB)");
}

#[tokio::test]
async fn duration_limit_rejects_long_audio() {
    let deps = testing::temp_deps().await;
    let owner = testing::add_user(
        deps.store.as_ref(),
        "owner@example.com",
        "password123",
        Role::User,
    )
    .await
    .id;
    let limits = alchemist_convert::media::Limits {
        max_duration_seconds: 2,
        ..Default::default()
    };
    let config = Config {
        work_dir: deps.dir.path().to_path_buf(),
        limits,
        ..Config::default()
    };
    let router = app(AppState {
        store: deps.store.clone(),
        blobs: deps.blobs.clone(),
        config: Arc::new(config),
    });
    let fx = Fixture {
        deps,
        router,
        owner,
    };
    let input = testing::video_with_audio(fx.deps.dir.path(), "long.mp4", 4);
    let payload = fx.queue(&input, None).await;

    let (_, reply) = fx.deliver(uploaded_event(&payload)).await;

    let failed: ConversionFailed = parse_payload(&reply.expect("a reply event")).unwrap();
    assert_eq!(failed.reason, FailureReason::LimitExceeded);
    assert_eq!(fx.audio_blob_count(), 0);
}

#[tokio::test]
async fn retry_after_dead_worker_leaves_one_mp3() {
    let deps = testing::temp_deps().await;
    let owner = testing::add_user(
        deps.store.as_ref(),
        "owner@example.com",
        "password123",
        Role::User,
    )
    .await
    .id;
    let config = Config {
        work_dir: deps.dir.path().to_path_buf(),
        lease: std::time::Duration::from_millis(10),
        ..Config::default()
    };
    let router = app(AppState {
        store: deps.store.clone(),
        blobs: deps.blobs.clone(),
        config: Arc::new(config),
    });
    let fx = Fixture {
        deps,
        router,
        owner,
    };
    let input = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 1);
    let payload = fx.queue(&input, None).await;

    // A first worker claimed the job, stored its MP3 and died before completing it.
    fx.deps
        .store
        .claim_job(payload.job_id, 60_000)
        .await
        .unwrap();
    let meta = BlobMeta {
        owner_id: fx.owner.clone(),
        job_id: payload.job_id.to_string(),
        content_type: "audio/mpeg".into(),
    };
    let orphan = alchemist_convert::audio_id(payload.job_id, 1);
    fx.deps
        .blobs
        .put_as(
            Bucket::Audio,
            &orphan,
            &meta,
            Box::pin(std::io::Cursor::new(vec![0u8; 100])),
            u64::MAX,
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;

    let (_, reply) = fx.deliver(uploaded_event(&payload)).await;

    let converted: AudioConverted = parse_payload(&reply.expect("a reply event")).unwrap();
    assert_eq!(
        converted.audio_id,
        alchemist_convert::audio_id(payload.job_id, 2)
    );
    assert_eq!(fx.audio_blob_count(), 1, "the dead worker's MP3 is removed");
    assert_eq!(
        fx.deps
            .store
            .job(payload.job_id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        2
    );
}

#[test]
fn mp3_headers_match_ffprobe() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 4] = [
        ("vbr-stereo.mp3", &["-ac", "2", "-ar", "44100", "-q:a", "2"]),
        (
            "cbr-mono.mp3",
            &["-ac", "1", "-ar", "48000", "-b:a", "128k"],
        ),
        ("mpeg2.mp3", &["-ac", "1", "-ar", "22050", "-b:a", "64k"]),
        (
            "tagged.mp3",
            &[
                "-ac",
                "2",
                "-ar",
                "32000",
                "-b:a",
                "96k",
                "-metadata",
                "title=A title",
            ],
        ),
    ];
    for (name, options) in cases {
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:duration=7.3",
            "-c:a",
            "libmp3lame",
        ];
        args.extend_from_slice(options);
        let path = testing::make_media(dir.path(), name, &args);

        let stats = alchemist_convert::mp3::inspect(&path).unwrap();

        let probed = testing::probe_duration(&path);
        assert!(
            (stats.duration_seconds - probed).abs() < 0.08,
            "{name}: {} s, ffprobe {probed} s",
            stats.duration_seconds
        );
        assert_eq!(
            stats.sample_rate.to_string(),
            testing::probe_field(&path, "stream=sample_rate"),
            "{name}"
        );
        assert_eq!(
            stats.channels.to_string(),
            testing::probe_field(&path, "stream=channels"),
            "{name}"
        );
    }
    let text = dir.path().join("text.mp3");
    std::fs::write(&text, "not an mp3").unwrap();
    assert_eq!(alchemist_convert::mp3::inspect(&text).unwrap().frames, 0);
}

/// Returns the `conversion.failed` event waiting in the outbox for `job_id`,
/// which notifies the owner of a failure that no reply announced.
async fn announced_failure(fx: &Fixture, job_id: Uuid) -> ConversionFailed {
    let queued = fx.deps.store.due_outbox(100).await.unwrap();
    let message = queued
        .iter()
        .find(|message| message.job_id == job_id)
        .expect("the failure is queued in the outbox");
    assert_eq!(message.event_id, outcome_event_id(job_id));
    let event: cloudevents::Event = serde_json::from_str(&message.event_json).unwrap();
    assert_eq!(event.ty(), ConversionFailed::TYPE);
    parse_payload(&event).unwrap()
}

#[tokio::test]
async fn metrics_count_conversions_by_outcome() {
    let fx = fixture().await;
    let silent = testing::video_without_audio(fx.deps.dir.path(), "silent.mp4");
    let tone = testing::video_with_audio(fx.deps.dir.path(), "tone.mp4", 1);
    let silent = fx.queue(&silent, None).await;
    let tone = fx.queue(&tone, None).await;
    let before = testing::scrape_metrics(&fx.router).await;

    let (status, _) = fx.deliver(uploaded_event(&silent)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = fx.deliver(uploaded_event(&tone)).await;
    assert_eq!(status, StatusCode::OK);
    let after = testing::scrape_metrics(&fx.router).await;

    // Other tests in this binary convert concurrently, so a count may move by more.
    let moved = |series: &str| testing::sample(&after, series) - testing::sample(&before, series);
    assert!(moved(r#"alchemist_conversions_total{outcome="no_audio"}"#) >= 1.0);
    assert!(moved(r#"alchemist_conversion_duration_seconds_count{outcome="no_audio"}"#) >= 1.0);
    assert!(moved(r#"alchemist_conversions_total{outcome="done"}"#) >= 1.0);
    assert!(moved(r#"alchemist_conversion_duration_seconds_count{outcome="done"}"#) >= 1.0);
    assert!(moved(r#"alchemist_conversion_duration_seconds_sum{outcome="done"}"#) > 0.0);
    assert!(moved(r#"alchemist_http_requests_total{method="POST",route="/",status="200"}"#) >= 2.0);
    // No test makes the service fail, yet its counter is listed, at 0.
    assert!(after.contains("\nalchemist_conversions_total{outcome=\"error\"} "));
}
