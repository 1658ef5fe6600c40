//! The whole pipeline end to end over HTTP: login, upload, the in-process
//! broker, convert, notify's signed webhook, status and download.

mod common;

use std::time::Duration;

use alchemist_runtime::{jwt::Role, testing};
use serde_json::Value;

async fn login(client: &reqwest::Client, base_url: &str, email: &str, password: &str) -> String {
    let response = client
        .post(format!("{base_url}/login"))
        .basic_auth(email, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn wait_until_final(client: &reqwest::Client, url: &str, token: &str) -> Value {
    for _ in 0..600 {
        let job: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "done" || job["status"] == "failed" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job at {url} did not finish within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_converts_and_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::serve_stack(common::options(dir.path())).await;
    let receiver = common::start_receiver().await;
    testing::add_user(
        served.stack.store.as_ref(),
        "ana@example.com",
        "correct horse",
        Role::User,
    )
    .await;
    let client = reqwest::Client::new();
    let token = login(
        &client,
        &served.base_url,
        "ana@example.com",
        "correct horse",
    )
    .await;
    let video = testing::video_with_audio(dir.path(), "holiday.mp4", 3);

    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(&video).unwrap())
                .file_name("holiday.mp4"),
        )
        .text("callback_url", receiver.url.clone());
    let response = client
        .post(format!("{}/uploads", served.base_url))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let status_url = format!(
        "{}{}",
        served.base_url,
        accepted["status_url"].as_str().unwrap()
    );

    let job = wait_until_final(&client, &status_url, &token).await;
    assert_eq!(job["status"], "done", "{job}");
    let audio = client
        .get(format!("{status_url}/audio"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(audio.status(), 200);
    let mp3 = dir.path().join("holiday.mp3");
    std::fs::write(&mp3, audio.bytes().await.unwrap()).unwrap();
    assert!((testing::probe_duration(&mp3) - 3.0).abs() < 0.15);

    let webhooks = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    let id = webhook.headers["webhook-id"].to_str().unwrap();
    let timestamp = webhook.headers["webhook-timestamp"].to_str().unwrap();
    assert_eq!(
        webhook.headers["webhook-signature"].to_str().unwrap(),
        common::expected_signature(common::WEBHOOK_SECRET, id, timestamp, &webhook.body)
    );
    let notification: Value = serde_json::from_slice(&webhook.body).unwrap();
    assert_eq!(notification["type"], "job.done");
    assert_eq!(notification["data"]["job_id"], accepted["job_id"]);

    // The delivery is recorded on the job.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let job: Value = client
        .get(&status_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["deliveries"][0]["outcome"], "delivered", "{job}");
    assert_eq!(job["webhook"]["state"], "delivered", "{job}");
    assert_eq!(job["webhook"]["attempts"], 1, "{job}");
    let attempted_at = job["deliveries"][0]["attempted_at"].as_str().unwrap();
    let created_at = job["created_at"].as_str().unwrap();
    assert_eq!(
        attempted_at.len(),
        created_at.len(),
        "the same ISO 8601 form: {attempted_at} and {created_at}"
    );
    assert!(
        attempted_at.ends_with('Z') && attempted_at > created_at,
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_reports_reason_and_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::serve_stack(common::options(dir.path())).await;
    let receiver = common::start_receiver().await;
    testing::add_user(
        served.stack.store.as_ref(),
        "ana@example.com",
        "correct horse",
        Role::User,
    )
    .await;
    let client = reqwest::Client::new();
    let token = login(
        &client,
        &served.base_url,
        "ana@example.com",
        "correct horse",
    )
    .await;
    let video = testing::video_without_audio(dir.path(), "mute.mp4");

    let response = client
        .post(format!("{}/uploads", served.base_url))
        .query(&[("callback_url", receiver.url.as_str())])
        .bearer_auth(&token)
        .header("x-file-name", "mute.mp4")
        .body(std::fs::read(&video).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let status_url = format!(
        "{}{}",
        served.base_url,
        accepted["status_url"].as_str().unwrap()
    );

    let job = wait_until_final(&client, &status_url, &token).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["reason"], "no_audio");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no audio"),
        "{job}"
    );
    let audio = client
        .get(format!("{status_url}/audio"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(audio.status(), 409);

    let webhooks = receiver.wait_for(1, Duration::from_secs(10)).await;
    let notification: Value = serde_json::from_slice(&webhooks[0].body).unwrap();
    assert_eq!(notification["type"], "job.failed");
    assert_eq!(notification["data"]["reason"], "no_audio");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_routes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::serve_stack(common::options(dir.path())).await;
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = client
            .get(format!("{}{path}", served.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// Runs `alchemist convert --out OUT [EXTRA...] INPUT` with its data in `work`.
fn convert_cli(work: &std::path::Path, input: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_alchemist"))
        .arg("convert")
        .arg("--out")
        .arg(work.join("out"))
        .args(extra)
        .arg(input)
        .env("ALCHEMIST_DATA_DIR", work.join("data"))
        .env("CONVERT_WORK_DIR", work)
        .env("RUST_LOG", "info")
        .output()
        .expect("run alchemist convert");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INFO"),
        "info logs are written:
{stderr}"
    );
    assert!(
        !stderr.contains('\x1b'),
        "logs to a pipe carry no colour codes:\n{stderr}"
    );
    (output.status.code().unwrap(), stdout)
}

/// A second run into the same folder leaves the first MP3 alone unless
/// `--overwrite` is given.
#[test]
fn existing_mp3_is_kept_unless_overwrite_is_given() {
    let work = tempfile::tempdir().unwrap();
    let input = testing::video_with_audio(work.path(), "talk.mp4", 1);
    let mp3 = work.path().join("out").join("talk.mp3");

    let (code, stdout) = convert_cli(work.path(), &input, &[]);
    assert_eq!(code, 0, "{stdout}");
    std::fs::write(&mp3, b"the user's own file").unwrap();

    let (code, stdout) = convert_cli(work.path(), &input, &[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("failed: output_exists"), "{stdout}");
    assert!(stdout.contains("--overwrite"), "{stdout}");
    assert_eq!(std::fs::read(&mp3).unwrap(), b"the user's own file");

    let (code, stdout) = convert_cli(work.path(), &input, &["--overwrite"]);
    assert_eq!(code, 0, "{stdout}");
    let bytes = std::fs::read(&mp3).unwrap();
    assert!(bytes.len() > 1000, "the MP3 replaced the old file");
    assert!(
        !std::fs::read_dir(work.path().join("out"))
            .unwrap()
            .any(|entry| entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".part")),
        "no partial file is left"
    );
}

/// A job still queued when the last server stopped lost its event with the
/// in-process broker's memory. The next `alchemist dev` sends it again, while
/// a one-off command on the same data directory leaves it alone.
#[tokio::test]
async fn queued_job_resumes_after_restart() {
    use alchemist::stack::Stack;
    use alchemist_runtime::{
        blob::{BlobMeta, Bucket},
        store::{JobStatus, NewJob},
    };

    let dir = tempfile::tempdir().unwrap();
    let video = testing::video_with_audio(dir.path(), "left.mp4", 1);

    // What a stopped server leaves: the video stored and its job queued.
    let stack = Stack::open(common::options(dir.path())).await.unwrap();
    let owner = testing::add_user(
        stack.store.as_ref(),
        "ada@example.com",
        "password123",
        Role::User,
    )
    .await;
    let job_id = uuid::Uuid::now_v7();
    let meta = BlobMeta {
        owner_id: owner.id.clone(),
        job_id: job_id.to_string(),
        content_type: "video/mp4".to_owned(),
    };
    let file = tokio::fs::File::open(&video).await.unwrap();
    let blob = stack
        .blobs
        .put(Bucket::Videos, &meta, Box::pin(file), u64::MAX)
        .await
        .unwrap();
    stack
        .store
        .create_job(NewJob {
            id: job_id,
            owner_id: owner.id,
            file_name: "left.mp4".to_owned(),
            video_id: blob.id,
            video_size: blob.size,
            bitrate_kbps: None,
            callback_url: None,
        })
        .await
        .unwrap();
    stack.shutdown().await;
    drop(stack);

    let one_off = Stack::open(common::options(dir.path())).await.unwrap();
    assert!(
        one_off.store.due_outbox(10).await.unwrap().is_empty(),
        "a one-off command sends nothing"
    );
    one_off.shutdown().await;
    drop(one_off);

    let mut options = common::options(dir.path());
    options.resume_queued_jobs = true;
    let server = Stack::open(options).await.unwrap();
    let mut status = JobStatus::Queued;
    for _ in 0..300 {
        status = server.store.job(job_id).await.unwrap().unwrap().status;
        if status.is_final() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
    assert_eq!(status, JobStatus::Done);
}
