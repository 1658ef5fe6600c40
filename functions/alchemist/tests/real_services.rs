//! The pipeline as separate processes on MariaDB, RabbitMQ and a
//! MongoDB-compatible server: every function and the dispatcher run as
//! `alchemist serve NAME`, as `alchemist dev --services` starts them.
//!
//! The services come from `scripts/services` (`eval "$(scripts/services env)"`
//! sets DATABASE_URL, MONGODB_URL and AMQP_URL). Without them these tests
//! skip, except under `CI`, where they fail. Each test gets its own MySQL
//! database and GridFS database. The RabbitMQ queues are named after the
//! Trigger manifests and so are shared: the tests run one at a time and purge
//! the queues first.

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use alchemist::services::{Processes, Secrets, ServiceUrls};
use alchemist_events::{rabbitmq, triggers::Routes};
use alchemist_runtime::{
    blob::{BlobStore, Bucket},
    gridfs::GridFsBlobStore,
    jwt::Role,
    sql::SqlStore,
    store::{JobStatus, Store},
    testing,
};
use lapin::options::{BasicGetOptions, QueuePurgeOptions};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

/// The services' tests run one at a time: they share RabbitMQ's queues.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// URLs of the test services, or `None` (a skip) outside CI when unset.
fn service_urls() -> Option<ServiceUrls> {
    match ServiceUrls::from_env() {
        Ok(urls) => Some(urls),
        Err(err) if std::env::var_os("CI").is_some() => panic!("{err:#}"),
        Err(err) => {
            eprintln!("skipping: {err:#}");
            None
        }
    }
}

/// One running deployment on its own databases.
struct Deployment {
    processes: Option<Processes>,
    store: SqlStore,
    audio: GridFsBlobStore,
    urls: ServiceUrls,
    database: String,
    admin_url: String,
    client: reqwest::Client,
    token: String,
}

fn replace_database(url: &str, database: &str) -> String {
    let (prefix, rest) = url.rsplit_once('/').expect("the URL names a database");
    let query = rest
        .split_once('?')
        .map(|(_, query)| format!("?{query}"))
        .unwrap_or_default();
    format!("{prefix}/{database}{query}")
}

/// A free block of five loopback ports: the front port and one per function.
fn free_ports() -> u16 {
    for _ in 0..50 {
        let base = 20_000 + (rand_u16() % 20_000);
        let all_free =
            (0..5).all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of five free ports on 127.0.0.1");
}

fn rand_u16() -> u16 {
    u16::from_le_bytes(Uuid::new_v4().as_bytes()[..2].try_into().unwrap())
}

/// Empties every Trigger queue and dead-letter queue.
async fn purge_queues(amqp_url: &str) {
    let connection = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.unwrap();
    let routes = Routes::embedded();
    rabbitmq::topology::declare_exchange(&channel, rabbitmq::DEFAULT_BROKER)
        .await
        .unwrap();
    for trigger in &routes.triggers {
        rabbitmq::topology::declare_trigger(&channel, trigger)
            .await
            .unwrap();
        for queue in [
            rabbitmq::topology::queue_name(&trigger.name),
            rabbitmq::topology::dead_letter_queue_name(&trigger.name),
        ] {
            channel
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await
                .unwrap();
        }
    }
    let _ = connection.close(200, "purged".into()).await;
}

async fn deploy(urls: ServiceUrls, extra_env: &[(&str, &str)]) -> Deployment {
    let database = format!("alchemist_test_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::MySqlConnection::connect(&urls.database_url)
        .await
        .expect("connect to MySQL");
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let urls = ServiceUrls {
        database_url: replace_database(&urls.database_url, &database),
        mongodb_url: replace_database(&urls.mongodb_url, &database),
        amqp_url: urls.amqp_url,
    };
    purge_queues(&urls.amqp_url).await;

    let store = SqlStore::connect(&urls.database_url).await.unwrap();
    testing::add_user(
        &store,
        "ops@example.com",
        "correct horse battery",
        Role::Admin,
    )
    .await;
    let audio = GridFsBlobStore::connect(&urls.mongodb_url).await.unwrap();

    let secrets = Secrets {
        jwt: "a-test-secret-for-separate-processes-of-48-bytes".to_owned(),
        webhook: common::WEBHOOK_SECRET.to_owned(),
    };
    let mut env: Vec<(String, String)> = vec![
        ("WEBHOOK_ALLOW_PRIVATE".to_owned(), "true".to_owned()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    let program = Path::new(env!("CARGO_BIN_EXE_alchemist"));
    let processes = alchemist::services::start(program, free_ports(), &urls, &secrets, &env)
        .await
        .expect("start the functions");

    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/login", processes.urls["login"]))
        .basic_auth("ops@example.com", Some("correct horse battery"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Deployment {
        admin_url: processes.urls["upload"].clone(),
        processes: Some(processes),
        store,
        audio,
        urls,
        database,
        client,
        token: login["access_token"].as_str().unwrap().to_owned(),
    }
}

impl Deployment {
    async fn upload(&self, path: &Path, callback_url: Option<&str>) -> Uuid {
        let mut request = self
            .client
            .post(format!("{}/uploads", self.admin_url))
            .bearer_auth(&self.token)
            .header(
                "x-file-name",
                path.file_name().unwrap().to_string_lossy().as_ref(),
            )
            .body(std::fs::read(path).unwrap());
        if let Some(url) = callback_url {
            request = request.query(&[("callback_url", url)]);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 202, "uploading {}", path.display());
        let body: Value = response.json().await.unwrap();
        body["job_id"].as_str().unwrap().parse().unwrap()
    }

    /// Waits until every job has ended, for at most `limit`.
    async fn wait_all(
        &self,
        jobs: &[Uuid],
        limit: Duration,
    ) -> HashMap<Uuid, alchemist_runtime::store::Job> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut finished = HashMap::new();
            for id in jobs {
                let job = self.store.job(*id).await.unwrap().unwrap();
                if job.status.is_final() {
                    finished.insert(*id, job);
                }
            }
            if finished.len() == jobs.len() {
                return finished;
            }
            if tokio::time::Instant::now() > deadline {
                let pending: Vec<_> = jobs
                    .iter()
                    .filter(|id| !finished.contains_key(id))
                    .collect();
                panic!(
                    "{} of {} jobs did not end in time: {pending:?}",
                    pending.len(),
                    jobs.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many MP3s the audio bucket holds for a job, over its attempts.
    async fn mp3_count(&self, job: &alchemist_runtime::store::Job) -> usize {
        let mut count = 0;
        for attempt in 1..=job.attempts.max(1) + 1 {
            let id = alchemist_convert::audio_id(job.id, attempt);
            if self.audio.size(Bucket::Audio, &id).await.is_ok() {
                count += 1;
            }
        }
        count
    }

    async fn shutdown(mut self) {
        if let Some(processes) = self.processes.take() {
            processes.stop(Duration::from_secs(10)).await;
        }
        let _ = self.audio.database().drop().await;
        let base = self.urls.database_url.replace(&self.database, "alchemist");
        if let Ok(mut admin) = sqlx::MySqlConnection::connect(&base).await {
            let _ = sqlx::query(&format!("DROP DATABASE {}", self.database))
                .execute(&mut admin)
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_manifest_on_real_services() {
    let Some(urls) = service_urls() else { return };
    let Some(folder) = testing::shared_folder("media") else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let deployment = deploy(urls, &[]).await;
    let rows = testing::read_manifest(&folder);

    let mut jobs = Vec::new();
    for row in &rows {
        let path = folder.join(&row["file"]);
        if std::fs::metadata(&path).unwrap().len() == 0 {
            // A zero-byte upload is refused at upload time, with the reason.
            let response = deployment
                .client
                .post(format!("{}/uploads", deployment.admin_url))
                .bearer_auth(&deployment.token)
                .body(Vec::new())
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body["error"],
                row["reject_reason"].as_str(),
                "{}",
                row["file"]
            );
            continue;
        }
        jobs.push((row, deployment.upload(&path, None).await));
    }
    let ids: Vec<Uuid> = jobs.iter().map(|(_, id)| *id).collect();
    let finished = deployment.wait_all(&ids, Duration::from_secs(120)).await;

    for (row, id) in &jobs {
        let job = &finished[id];
        let file = &row["file"];
        if row["expect"] == "ok" {
            assert_eq!(job.status, JobStatus::Done, "{file}: {job:?}");
            let audio = deployment
                .client
                .get(format!("{}/jobs/{id}/audio", deployment.admin_url))
                .bearer_auth(&deployment.token)
                .send()
                .await
                .unwrap();
            let mp3 = std::env::temp_dir().join(format!("{id}.mp3"));
            std::fs::write(&mp3, audio.bytes().await.unwrap()).unwrap();
            let duration = testing::probe_duration(&mp3);
            let expected: f64 = row["audio_seconds"].parse().unwrap();
            assert!(
                (duration - expected).abs() <= 0.15,
                "{file}: {duration} s, expected {expected} s"
            );
            let _ = std::fs::remove_file(&mp3);
        } else {
            assert_eq!(job.status, JobStatus::Failed, "{file}");
            assert_eq!(
                job.failure_reason.as_deref(),
                Some(row["reject_reason"].as_str()),
                "{file}"
            );
        }
    }
    deployment.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_event_converts_once() {
    let Some(urls) = service_urls() else { return };
    let _serial = SERIAL.lock().await;
    let deployment = deploy(urls, &[]).await;
    let receiver = common::start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let video = testing::video_with_audio(dir.path(), "twice.mp4", 2);

    let job_id = deployment.upload(&video, Some(&receiver.url)).await;
    deployment
        .wait_all(&[job_id], Duration::from_secs(60))
        .await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(20)).await.len(), 1);

    // The same video.uploaded event, as the outbox stored it, delivered twice more.
    let row: (String,) = sqlx::query_as("SELECT event_json FROM outbox WHERE job_id = ?")
        .bind(job_id.to_string())
        .fetch_one(
            &mut sqlx::MySqlConnection::connect(&deployment.urls.database_url)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    let event: cloudevents::Event = serde_json::from_str(&row.0).unwrap();
    let broker = rabbitmq::RabbitBroker::new(
        &deployment.urls.amqp_url,
        &Routes::embedded(),
        rabbitmq::DEFAULT_BROKER,
    )
    .unwrap();
    for _ in 0..2 {
        alchemist_events::broker::Broker::publish(&broker, event.clone())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;

    let job = deployment.store.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Done);
    assert_eq!(job.attempts, 1, "the redeliveries must not convert again");
    assert_eq!(deployment.mp3_count(&job).await, 1);
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        1,
        "one completion, one webhook"
    );
    broker.close().await;
    deployment.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_subscriber_is_dead_lettered() {
    let Some(urls) = service_urls() else { return };
    let _serial = SERIAL.lock().await;
    // convert answers 500 to every delivery: its work directory does not exist.
    let deployment = deploy(urls, &[("CONVERT_WORK_DIR", "/nonexistent/alchemist-work")]).await;
    let dir = tempfile::tempdir().unwrap();
    let video = testing::video_with_audio(dir.path(), "doomed.mp4", 1);

    let job_id = deployment.upload(&video, None).await;
    // Three retries with exponential backoff from one second: about 15 s.
    let job = deployment
        .wait_all(&[job_id], Duration::from_secs(90))
        .await
        .remove(&job_id)
        .unwrap();

    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.failure_reason.as_deref(), Some("delivery_failed"));
    assert_eq!(job.attempts, 4, "the first delivery and three retries");
    let connection = lapin::Connection::connect(
        &deployment.urls.amqp_url,
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = rabbitmq::topology::dead_letter_queue_name("convert-on-video-uploaded");
    let message = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the event is in the dead-letter queue");
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let error = match headers.inner().get("ce-knativeerrordata") {
        Some(lapin::types::AMQPValue::LongString(text)) => {
            String::from_utf8_lossy(text.as_bytes()).into_owned()
        }
        other => format!("{other:?}"),
    };
    assert!(error.contains("500"), "the error is recorded: {error}");
    let _ = connection.close(200, "done".into()).await;
    deployment.shutdown().await;
}

fn restart_rabbitmq() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services");
    let status = std::process::Command::new(script)
        .arg("restart-rabbitmq")
        .status()
        .expect("run scripts/services");
    assert!(status.success(), "scripts/services restart-rabbitmq failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_restart_loses_no_job() {
    let Some(urls) = service_urls() else { return };
    let _serial = SERIAL.lock().await;
    let deployment = deploy(urls, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let video = testing::video_with_audio(dir.path(), "batch.mp4", 1);

    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(deployment.upload(&video, None).await);
    }
    let restart = tokio::task::spawn_blocking(restart_rabbitmq);
    for _ in 0..6 {
        jobs.push(deployment.upload(&video, None).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    restart.await.unwrap();
    for _ in 0..4 {
        jobs.push(deployment.upload(&video, None).await);
    }

    let finished = deployment.wait_all(&jobs, Duration::from_secs(180)).await;
    for job in finished.values() {
        assert_eq!(job.status, JobStatus::Done, "{job:?}");
        assert_eq!(deployment.mp3_count(job).await, 1, "{}", job.id);
    }
    deployment.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_and_outage_lose_nothing() {
    let Some(urls) = service_urls() else { return };
    let _serial = SERIAL.lock().await;
    // A short lease, so that a job whose worker was killed is requeued quickly.
    let mut deployment = deploy(urls, &[("JOB_LEASE_SECONDS", "4")]).await;
    let receiver = common::start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let video = testing::video_with_audio(dir.path(), "crash.mp4", 3);

    let mut jobs = Vec::new();
    for _ in 0..30 {
        jobs.push(deployment.upload(&video, Some(&receiver.url)).await);
    }
    // Kill convert at varied moments while the batch runs, and restart RabbitMQ once.
    let pauses = [700u64, 1300, 400, 2100, 900, 1600];
    for (round, pause) in pauses.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        let processes = deployment.processes.as_mut().unwrap();
        processes.kill("convert").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        processes.restart("convert").await.unwrap();
        if round == 2 {
            tokio::task::spawn_blocking(restart_rabbitmq).await.unwrap();
        }
    }

    let finished = deployment.wait_all(&jobs, Duration::from_secs(300)).await;
    for job in finished.values() {
        assert_eq!(job.status, JobStatus::Done, "{job:?}");
        assert_eq!(
            deployment.mp3_count(job).await,
            1,
            "{} has leftover MP3s",
            job.id
        );
    }
    let webhooks = receiver.wait_for(30, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for webhook in receiver.requests.lock().unwrap().iter() {
        let body: Value = serde_json::from_slice(&webhook.body).unwrap();
        *per_job
            .entry(body["data"]["job_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(webhooks.len() >= 30);
    assert_eq!(per_job.len(), 30, "every job notified");
    assert!(
        per_job.values().all(|count| *count == 1),
        "one webhook per job: {per_job:?}"
    );
    let converting = deployment
        .store
        .jobs(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|job| job.status == JobStatus::Converting)
        .count();
    assert_eq!(converting, 0);
    deployment.shutdown().await;
}
