//! The transactional outbox of events, and its relay.
//!
//! An upload stores its job row and its event in one transaction, then tries
//! to publish at once. When the broker is down the event stays in the outbox
//! and the relay publishes it later, so a broker outage delays a job but
//! never loses it. Events are published at least once; consumers deduplicate.
//!
//! The relay also recovers jobs whose convert worker died: a job still
//! `converting` without a heartbeat for the lease goes back to `queued` with
//! a fresh event.
//!
//! On Knative, upload scales to zero. While no upload pod runs, a CronJob
//! runs the upload program with the argument `relay`, which makes one pass of
//! [`relay_once`], once a minute.

use std::{future::Future, sync::Arc, time::Duration};

use alchemist_events::{
    broker::Broker,
    catalogue::{VideoUploaded, build_event},
};
use alchemist_runtime::{
    millis, now_millis,
    store::{Job, OutboxMessage, Store, fail_and_announce},
};
use cloudevents::Event;
use tracing::{debug, error, info, warn};

use crate::SOURCE;

/// Conversions started on one job before the relay gives up on it: a file
/// that kills its worker every time must not be retried forever.
pub const MAX_ATTEMPTS: u32 = 5;

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Time between two passes.
    pub interval: Duration,
    /// A converting job without a heartbeat for this long is requeued.
    pub lease: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            interval: Duration::from_secs(2),
            lease: Duration::from_secs(60),
        }
    }
}

/// Counts of what one pass of the relay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayReport {
    pub published: usize,
    pub failed: usize,
    pub requeued: usize,
}

/// The `video.uploaded` event that starts (or restarts) a job's conversion.
pub fn uploaded_event(job: &Job) -> Event {
    let payload = VideoUploaded {
        job_id: job.id,
        owner_id: job.owner_id.clone(),
        video_id: job.video_id.clone(),
        size: job.video_size,
        bitrate_kbps: job.bitrate_kbps,
    };
    build_event(SOURCE, &job.id.to_string(), &payload)
}

/// Publishes one outbox event and records the outcome; returns whether it was published.
///
/// # Errors
///
/// Only when the outcome cannot be recorded in the store.
pub async fn publish_message(
    store: &dyn Store,
    broker: &dyn Broker,
    message: &OutboxMessage,
) -> Result<bool, alchemist_runtime::Error> {
    let event: Event = match serde_json::from_str(&message.event_json) {
        Ok(event) => event,
        Err(err) => {
            error!(event_id = %message.event_id, cause = %err, "outbox event is unreadable; it stays in the outbox");
            store
                .outbox_retry_later(&message.event_id, i64::MAX, &err.to_string())
                .await?;
            return Ok(false);
        }
    };
    match broker.publish(event).await {
        Ok(()) => {
            store.outbox_sent(&message.event_id).await?;
            debug!(event_id = %message.event_id, job_id = %message.job_id, "outbox event published");
            Ok(true)
        }
        Err(err) => {
            let wait = backoff(message.attempts);
            let next = now_millis().saturating_add(millis(wait));
            warn!(
                event_id = %message.event_id,
                job_id = %message.job_id,
                attempts = message.attempts + 1,
                retry_in_ms = wait.as_millis() as u64,
                cause = %err,
                "publishing failed; the event stays in the outbox"
            );
            store
                .outbox_retry_later(&message.event_id, next, &err.to_string())
                .await?;
            Ok(false)
        }
    }
}

/// Wait before the next attempt after `attempts` failures: 1 s doubling to 60 s.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(Duration::from_secs(60))
}

/// Runs one pass: requeues stale jobs, then publishes every due event.
///
/// # Errors
///
/// When the store fails.
pub async fn relay_once(
    store: &dyn Store,
    broker: &dyn Broker,
    lease: Duration,
) -> Result<RelayReport, alchemist_runtime::Error> {
    let mut report = RelayReport::default();

    let stale_before = now_millis().saturating_sub(millis(lease));
    for job in store.stale_jobs(stale_before, 100).await? {
        if job.attempts >= MAX_ATTEMPTS {
            let reason = alchemist_events::catalogue::FailureReason::Internal;
            if fail_and_announce(store, &job, SOURCE, reason, reason.user_message()).await? {
                error!(job_id = %job.id, attempts = job.attempts, "convert workers died on this job every time; job failed");
            }
            continue;
        }
        let message = OutboxMessage::new(&uploaded_event(&job), job.id);
        if store
            .requeue_stale_job(job.id, stale_before, &message)
            .await?
        {
            warn!(job_id = %job.id, attempts = job.attempts, "convert worker stopped sending heartbeats; job requeued");
            report.requeued += 1;
        }
    }

    for message in store.due_outbox(100).await? {
        if publish_message(store, broker, &message).await? {
            report.published += 1;
        } else {
            report.failed += 1;
        }
    }
    Ok(report)
}

/// Runs the relay every `config.interval` until `shutdown` completes.
pub async fn run_relay(
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    config: RelayConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(
        interval_ms = config.interval.as_millis() as u64,
        lease_s = config.lease.as_secs(),
        "outbox relay started"
    );
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        match relay_once(store.as_ref(), broker.as_ref(), config.lease).await {
            Ok(report) if report != RelayReport::default() => info!(?report, "outbox relay pass"),
            Ok(_) => {}
            Err(err) => error!(cause = %err, "outbox relay pass failed"),
        }
    }
    info!("outbox relay stopped");
}
