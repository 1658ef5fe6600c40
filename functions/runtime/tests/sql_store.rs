//! One suite of store behaviours, run on SQLite and on MySQL (MariaDB), so
//! that both backends are shown to behave the same.
//!
//! The MySQL run uses `DATABASE_URL` when it is a `mysql://` URL (as
//! `scripts/services env` prints it) and creates a throwaway database named
//! `alchemist_test_<uuid>` beside it. Without a reachable server it skips,
//! except under `CI`, where it fails.

use std::time::Duration;

use alchemist_runtime::{
    Error,
    jwt::Role,
    now_millis,
    sql::SqlStore,
    store::{
        Claim, Completion, JobStatus, NewJob, OutboxMessage, Store, WebhookDelivery, WebhookState,
    },
};
use sqlx::Connection;
use uuid::Uuid;

fn new_job(owner_id: &str, name: &str) -> NewJob {
    NewJob {
        id: Uuid::new_v4(),
        owner_id: owner_id.to_owned(),
        file_name: name.to_owned(),
        video_id: Uuid::new_v4().to_string(),
        video_size: 1234,
        bitrate_kbps: Some(192),
        callback_url: Some("https://example.com/hook".to_owned()),
    }
}

/// The behaviours every backend must show.
async fn store_suite(store: &dyn Store) {
    store.ping().await.unwrap();

    // Users: unique emails, exact lookups, bound parameters only.
    let alice = store
        .create_user("alice@example.com", "hash-a", Role::User)
        .await
        .unwrap();
    let duplicate = store
        .create_user("alice@example.com", "hash-b", Role::Admin)
        .await;
    assert!(
        matches!(duplicate, Err(Error::Conflict(_))),
        "{duplicate:?}"
    );
    let tricky = "x'; DROP TABLE users; --";
    store
        .create_user(tricky, "hash-t", Role::Admin)
        .await
        .unwrap();
    assert_eq!(
        store.user_by_email(tricky).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert!(store.user_by_email("' OR '1'='1").await.unwrap().is_none());
    assert_eq!(
        store
            .user_by_email("alice@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        alice.id
    );
    assert_eq!(store.count_users().await.unwrap(), 2);

    // Jobs: created queued, listed newest first, filtered by owner.
    let bob = store
        .create_user("bob@example.com", "hash-b", Role::User)
        .await
        .unwrap();
    let first = store
        .create_job(new_job(&alice.id, "first.mp4"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = store
        .create_job(new_job(&alice.id, "second.mp4"))
        .await
        .unwrap();
    store.create_job(new_job(&bob.id, "bob.mp4")).await.unwrap();
    assert_eq!(first.status, JobStatus::Queued);
    assert_eq!(first.bitrate_kbps, Some(192));
    assert_eq!(first.video_size, 1234);
    let alices: Vec<Uuid> = store
        .jobs(Some(&alice.id), 10)
        .await
        .unwrap()
        .iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(alices, vec![second.id, first.id]);
    assert_eq!(store.jobs(None, 10).await.unwrap().len(), 3);
    assert_eq!(store.jobs(None, 1).await.unwrap().len(), 1);
    assert!(store.job(Uuid::new_v4()).await.unwrap().is_none());

    // Claiming: once, then busy, then finished; an expired lease is taken over.
    assert_eq!(
        store.claim_job(first.id, 60_000).await.unwrap(),
        Claim::Started { attempt: 1 }
    );
    assert_eq!(
        store.claim_job(first.id, 60_000).await.unwrap(),
        Claim::Busy
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.claim_job(first.id, 10).await.unwrap(),
        Claim::Started { attempt: 2 }
    );
    let completion = Completion {
        audio_id: Uuid::new_v4().to_string(),
        audio_size: 4096,
        duration_seconds: 9.665,
        warnings: vec!["truncated".to_owned()],
    };
    assert!(store.complete_job(first.id, &completion).await.unwrap());
    assert!(
        !store.complete_job(first.id, &completion).await.unwrap(),
        "a job completes once"
    );
    assert_eq!(
        store.claim_job(first.id, 0).await.unwrap(),
        Claim::Finished(JobStatus::Done)
    );
    assert!(
        !store.fail_job(first.id, "internal", "late").await.unwrap(),
        "a done job cannot fail"
    );
    let done = store.job(first.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Done);
    assert_eq!(done.duration_seconds, Some(9.665));
    assert_eq!(done.audio_size, Some(4096));
    assert_eq!(done.warnings, vec!["truncated".to_owned()]);
    assert!(done.finished_at.is_some());
    assert!(matches!(
        store.claim_job(Uuid::new_v4(), 0).await,
        Err(Error::NotFound(_))
    ));

    // Releasing gives a converting job back; failing records the reason once.
    assert_eq!(
        store.claim_job(second.id, 60_000).await.unwrap(),
        Claim::Started { attempt: 1 }
    );
    store.release_job(second.id).await.unwrap();
    assert_eq!(
        store.job(second.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert!(
        !store.complete_job(second.id, &completion).await.unwrap(),
        "only a converting job completes"
    );
    assert!(
        store
            .fail_job(second.id, "no_audio", "The file has no audio.")
            .await
            .unwrap()
    );
    assert!(
        !store
            .fail_job(second.id, "internal", "again")
            .await
            .unwrap()
    );
    let failed = store.job(second.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some("no_audio"));
    assert_eq!(
        failed.failure_message.as_deref(),
        Some("The file has no audio.")
    );

    // Webhook deliveries are kept per job, in order.
    for (index, outcome) in ["failed", "delivered"].iter().enumerate() {
        let delivery = WebhookDelivery {
            event_id: "event-1".to_owned(),
            url: "https://example.com/hook".to_owned(),
            outcome: (*outcome).to_owned(),
            status_code: Some(if index == 0 { 503 } else { 200 }),
            error: (index == 0).then(|| "the receiver answered 503".to_owned()),
            attempted_at: 1_000 + index as i64,
        };
        store.record_delivery(first.id, &delivery).await.unwrap();
    }
    let deliveries = store.deliveries(first.id).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].status_code, Some(503));
    assert_eq!(deliveries[1].outcome, "delivered");
    assert!(store.deliveries(second.id).await.unwrap().is_empty());

    failure_with_event(store, &alice.id).await;
    webhook_queue(store, first.id).await;
}

/// Checks that a failure and its announcing event are stored together, or
/// not at all.
async fn failure_with_event(store: &dyn Store, owner_id: &str) {
    let job = store
        .create_job(new_job(owner_id, "broken.mp4"))
        .await
        .unwrap();
    let event = OutboxMessage {
        event_id: format!("failed-{}", job.id),
        job_id: job.id,
        event_json: "{}".to_owned(),
        attempts: 0,
    };
    let outbox_before = store.due_outbox(1000).await.unwrap().len();
    assert!(
        store
            .fail_job_with_event(job.id, "delivery_failed", "Try again.", &event)
            .await
            .unwrap()
    );
    let failed = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.failure_reason.as_deref(), Some("delivery_failed"));
    let due = store.due_outbox(1000).await.unwrap();
    assert_eq!(due.len(), outbox_before + 1);
    assert!(due.iter().any(|message| message.event_id == event.event_id));

    // A job that already ended gets neither a new reason nor a second event.
    let again = OutboxMessage {
        event_id: format!("again-{}", job.id),
        ..event
    };
    assert!(
        !store
            .fail_job_with_event(job.id, "internal", "Other.", &again)
            .await
            .unwrap()
    );
    let due = store.due_outbox(1000).await.unwrap();
    assert!(!due.iter().any(|message| message.event_id == again.event_id));
    assert_eq!(
        store
            .job(job.id)
            .await
            .unwrap()
            .unwrap()
            .failure_reason
            .as_deref(),
        Some("delivery_failed")
    );
}

/// Webhooks are queued once, taken by one sender at a time, and rescheduled.
async fn webhook_queue(store: &dyn Store, job_id: Uuid) {
    let url = "https://example.com/hook";
    assert!(
        store
            .enqueue_webhook(job_id, "wh-1", url, r#"{"n":1}"#)
            .await
            .unwrap()
    );
    assert!(
        !store
            .enqueue_webhook(job_id, "wh-1", url, r#"{"n":2}"#)
            .await
            .unwrap(),
        "a second webhook under the same id is refused"
    );
    let due = store.due_webhooks(100).await.unwrap();
    let queued = due
        .iter()
        .find(|webhook| webhook.webhook_id == "wh-1")
        .unwrap();
    assert_eq!(queued.state, WebhookState::Pending);
    assert_eq!(queued.attempts, 0);
    assert_eq!(queued.body, r#"{"n":1}"#);

    // One sender takes it; a second finds it leased.
    let lease_until = now_millis() + 60_000;
    let taken = store
        .take_webhook("wh-1", lease_until)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.attempts, 1);
    assert_eq!(taken.next_attempt_at, lease_until);
    assert!(
        store
            .take_webhook("wh-1", lease_until)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .due_webhooks(100)
            .await
            .unwrap()
            .iter()
            .any(|webhook| webhook.webhook_id == "wh-1")
    );

    // A failed attempt schedules the next; a past time makes it due again.
    assert!(
        store
            .webhook_attempted(
                "wh-1",
                1,
                WebhookState::Pending,
                now_millis() - 1,
                Some("503")
            )
            .await
            .unwrap()
    );
    let retaken = store
        .take_webhook("wh-1", now_millis() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retaken.attempts, 2);
    assert_eq!(retaken.last_error.as_deref(), Some("503"));

    // A sender whose lease ran out, and whose attempt was taken over, cannot
    // overwrite the later attempt's outcome.
    assert!(
        !store
            .webhook_attempted(
                "wh-1",
                1,
                WebhookState::Pending,
                now_millis() - 1,
                Some("late")
            )
            .await
            .unwrap()
    );

    // A webhook that ended is never taken again.
    assert!(
        store
            .webhook_attempted("wh-1", 2, WebhookState::Delivered, now_millis() - 1, None)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_webhook("wh-1", now_millis())
            .await
            .unwrap()
            .is_none()
    );
    let listed = store.webhooks(job_id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, WebhookState::Delivered);
    assert_eq!(listed[0].attempts, 2);
}

#[tokio::test]
async fn sqlite_store_behaves() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("suite.db").display()
    );
    let store = SqlStore::connect(&url).await.unwrap();
    store_suite(&store).await;

    // Migrations run again on every start without harm.
    let again = SqlStore::connect(&url).await.unwrap();
    assert_eq!(again.count_users().await.unwrap(), 3);
}

/// The MySQL URL of the test services, if one is configured.
fn mysql_url() -> Option<String> {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| url.starts_with("mysql:"));
    match url {
        Some(url) => Some(url),
        None if std::env::var_os("CI").is_some() => {
            panic!("DATABASE_URL must name the MySQL test server under CI (run scripts/services)")
        }
        None => {
            eprintln!(
                "skipping: DATABASE_URL is not a mysql:// URL; run `eval \"$(scripts/services env)\"`"
            );
            None
        }
    }
}

#[tokio::test]
async fn mysql_store_behaves() {
    let Some(base_url) = mysql_url() else { return };
    let database = format!("alchemist_test_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::MySqlConnection::connect(&base_url)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to MySQL at DATABASE_URL: {err}"));
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap();

    let (prefix, _) = base_url.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{database}");
    let result = async move {
        let store = SqlStore::connect(&url).await.unwrap();
        store_suite(&store).await;
        let again = SqlStore::connect(&url).await.unwrap();
        assert_eq!(again.count_users().await.unwrap(), 3);
    };
    let outcome = tokio::spawn(result).await;

    sqlx::query(&format!("DROP DATABASE {database}"))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}
