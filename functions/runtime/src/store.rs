//! Users, jobs and webhook deliveries, behind the [`Store`] trait.

use alchemist_events::catalogue::{
    ConversionFailed, FailureReason, build_event_with_id, outcome_event_id,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, jwt::Role};

/// A user account.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
}

/// Stage of a job's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Converting,
    Done,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Converting => "converting",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<JobStatus> {
        [
            JobStatus::Queued,
            JobStatus::Converting,
            JobStatus::Done,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Whether the job can change no more.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Failed)
    }
}

/// A conversion job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub owner_id: String,
    pub status: JobStatus,
    /// The client's file name, for display only; it never becomes a path.
    pub file_name: String,
    pub video_id: String,
    pub video_size: u64,
    pub bitrate_kbps: Option<u32>,
    pub callback_url: Option<String>,
    pub audio_id: Option<String>,
    pub audio_size: Option<u64>,
    pub duration_seconds: Option<f64>,
    pub warnings: Vec<String>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub attempts: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// Fields of a job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub owner_id: String,
    pub file_name: String,
    pub video_id: String,
    pub video_size: u64,
    pub bitrate_kbps: Option<u32>,
    pub callback_url: Option<String>,
}

/// An event waiting in the outbox to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// The CloudEvent id.
    pub event_id: String,
    pub job_id: Uuid,
    /// The CloudEvent in structured-mode JSON.
    pub event_json: String,
    pub attempts: u32,
}

impl OutboxMessage {
    /// Wraps an event for the outbox.
    pub fn new(event: &cloudevents::Event, job_id: Uuid) -> OutboxMessage {
        use cloudevents::AttributesReader;
        OutboxMessage {
            event_id: event.id().to_owned(),
            job_id,
            event_json: serde_json::to_string(event).expect("CloudEvents serialize to JSON"),
            attempts: 0,
        }
    }
}

/// Fails a job that has not ended and, in the same transaction, queues the
/// `conversion.failed` event that notifies its owner, under the job's outcome
/// id. Returns false, and queues nothing, when the job had already ended.
///
/// # Errors
///
/// When the store fails.
pub async fn fail_and_announce(
    store: &dyn Store,
    job: &Job,
    source: &str,
    reason: FailureReason,
    message: &str,
) -> Result<bool, Error> {
    let payload = ConversionFailed {
        job_id: job.id,
        owner_id: job.owner_id.clone(),
        reason,
        message: message.to_owned(),
    };
    let event = build_event_with_id(
        &outcome_event_id(job.id),
        source,
        &job.id.to_string(),
        &payload,
    );
    store
        .fail_job_with_event(
            job.id,
            reason.as_str(),
            message,
            &OutboxMessage::new(&event, job.id),
        )
        .await
}

/// The outcome of claiming a job for conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The job was queued (or its worker's lease expired) and is now converting
    /// under this caller; `attempt` counts from 1.
    Started { attempt: u32 },
    /// Another worker holds a fresh lease on the job.
    Busy,
    /// The job already ended; nothing is to be done again.
    Finished(JobStatus),
}

/// The result of a finished conversion.
#[derive(Debug, Clone)]
pub struct Completion {
    pub audio_id: String,
    pub audio_size: u64,
    pub duration_seconds: f64,
    pub warnings: Vec<String>,
}

/// One attempt to deliver a webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub event_id: String,
    pub url: String,
    /// `delivered`, `failed` or `refused` (the URL did not pass the address guard).
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub attempted_at: i64,
}

/// State of a queued webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookState {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver returned a 2xx status.
    Delivered,
    /// The URL did not pass the address guard; no attempt can change that.
    Refused,
    /// Every attempt failed; no more are made.
    Abandoned,
}

impl WebhookState {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookState::Pending => "pending",
            WebhookState::Delivered => "delivered",
            WebhookState::Refused => "refused",
            WebhookState::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<WebhookState> {
        [
            WebhookState::Pending,
            WebhookState::Delivered,
            WebhookState::Refused,
            WebhookState::Abandoned,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A webhook in the delivery queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedWebhook {
    /// The `webhook-id` header: the same on every attempt, so receivers can
    /// drop repeats.
    pub webhook_id: String,
    pub job_id: Uuid,
    pub url: String,
    /// The JSON body, fixed when the webhook is queued.
    pub body: String,
    pub state: WebhookState,
    /// Attempts started so far, this one included once it is taken.
    pub attempts: u32,
    /// When the next attempt is due (Unix milliseconds).
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Persistent state of users, jobs and deliveries.
///
/// Every state change of a job is one conditional update, so that concurrent
/// or repeated deliveries of the same event cannot move a job twice.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database responds.
    async fn ping(&self) -> Result<(), Error>;

    /// Creates a user. [`Error::Conflict`] when the email is taken.
    async fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<User, Error>;

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, Error>;

    async fn count_users(&self) -> Result<u64, Error>;

    async fn create_job(&self, job: NewJob) -> Result<Job, Error>;

    /// Creates a job and puts its announcing event in the outbox, in one
    /// transaction: either both are stored or neither is.
    async fn create_job_with_event(&self, job: NewJob, event: &OutboxMessage)
    -> Result<Job, Error>;

    /// Puts an event in the outbox on its own, due at once.
    async fn add_to_outbox(&self, event: &OutboxMessage) -> Result<(), Error>;

    /// Jobs in `status`, oldest first.
    async fn jobs_in_status(&self, status: JobStatus, limit: u32) -> Result<Vec<Job>, Error>;

    /// Outbox events not yet published whose next attempt is due, oldest first.
    async fn due_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>, Error>;

    /// Marks an outbox event as published.
    async fn outbox_sent(&self, event_id: &str) -> Result<(), Error>;

    /// Records a failed publish and when to try again.
    async fn outbox_retry_later(
        &self,
        event_id: &str,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), Error>;

    /// Jobs still `converting` whose worker has not sent a heartbeat since
    /// `stale_before` (Unix milliseconds): their worker is presumed dead.
    async fn stale_jobs(&self, stale_before: i64, limit: u32) -> Result<Vec<Job>, Error>;

    /// Puts a stale job back in the queue with a fresh event in the outbox,
    /// in one transaction. Returns false when the job is no longer stale.
    async fn requeue_stale_job(
        &self,
        id: Uuid,
        stale_before: i64,
        event: &OutboxMessage,
    ) -> Result<bool, Error>;

    /// Records that the worker converting the job is alive.
    async fn heartbeat(&self, id: Uuid) -> Result<(), Error>;

    async fn job(&self, id: Uuid) -> Result<Option<Job>, Error>;

    /// Jobs, newest first; only `owner_id`'s when given.
    async fn jobs(&self, owner_id: Option<&str>, limit: u32) -> Result<Vec<Job>, Error>;

    /// Moves a job to `converting` for a worker. A job already converting is
    /// taken over only when its last heartbeat is more than `lease_millis`
    /// old, since its worker then counts as dead.
    async fn claim_job(&self, id: Uuid, lease_millis: i64) -> Result<Claim, Error>;

    /// Moves a converting job to `done`. Returns false when the job was not converting.
    async fn complete_job(&self, id: Uuid, completion: &Completion) -> Result<bool, Error>;

    /// Gives a converting job back to the queue after a failure that a retry
    /// may cure, so that the redelivered event can claim it at once.
    async fn release_job(&self, id: Uuid) -> Result<(), Error>;

    /// Moves a job that has not ended to `failed`. Returns false when it had already ended.
    async fn fail_job(&self, id: Uuid, reason: &str, message: &str) -> Result<bool, Error>;

    /// Like [`Store::fail_job`], and puts the event that announces the
    /// failure in the outbox in the same transaction. Writes nothing when the
    /// job had already ended.
    async fn fail_job_with_event(
        &self,
        id: Uuid,
        reason: &str,
        message: &str,
        event: &OutboxMessage,
    ) -> Result<bool, Error>;

    /// Queues a webhook, due at once. Returns false when a webhook with the
    /// same id is queued already, so that a redelivered event sends nothing twice.
    async fn enqueue_webhook(
        &self,
        job_id: Uuid,
        webhook_id: &str,
        url: &str,
        body: &str,
    ) -> Result<bool, Error>;

    /// Pending webhooks whose next attempt is due, oldest first.
    async fn due_webhooks(&self, limit: u32) -> Result<Vec<QueuedWebhook>, Error>;

    /// Takes a due webhook for one attempt: counts the attempt and moves its
    /// next attempt to `lease_until`, so that no other sender takes it before
    /// then. `None` when it is not pending or not due (another sender has it).
    async fn take_webhook(
        &self,
        webhook_id: &str,
        lease_until: i64,
    ) -> Result<Option<QueuedWebhook>, Error>;

    /// Records the end of attempt number `attempt`: the new state and, for a
    /// pending webhook, when the next attempt is due. Returns false, and
    /// changes nothing, when another sender took the webhook after this
    /// attempt's lease ran out.
    async fn webhook_attempted(
        &self,
        webhook_id: &str,
        attempt: u32,
        state: WebhookState,
        next_attempt_at: i64,
        error: Option<&str>,
    ) -> Result<bool, Error>;

    /// Lists the webhooks of one job, oldest first.
    async fn webhooks(&self, job_id: Uuid) -> Result<Vec<QueuedWebhook>, Error>;

    async fn record_delivery(&self, job_id: Uuid, delivery: &WebhookDelivery) -> Result<(), Error>;

    async fn deliveries(&self, job_id: Uuid) -> Result<Vec<WebhookDelivery>, Error>;
}
