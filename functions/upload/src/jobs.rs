//! Job status for their owners.

use alchemist_events::catalogue::FailureReason;
use alchemist_runtime::{
    jwt::{Authenticated, Claims},
    store::{Job, QueuedWebhook, WebhookDelivery},
};
use axum::{
    Json,
    extract::{Path, Query, State},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AppState, Error};

/// A job as its owner sees it.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobView {
    pub id: Uuid,
    pub status: String,
    pub file_name: String,
    pub video_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    pub attempts: u32,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub status_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    /// The state of the job's webhook, shown only in a single job's view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryView>,
}

/// One attempt to deliver the job's webhook.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliveryView {
    /// The `webhook-id` header of the attempt.
    pub event_id: String,
    pub url: String,
    /// `delivered`, `failed` or `refused`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempted_at: String,
}

impl DeliveryView {
    fn new(delivery: WebhookDelivery) -> DeliveryView {
        DeliveryView {
            event_id: delivery.event_id,
            url: delivery.url,
            outcome: delivery.outcome,
            status_code: delivery.status_code,
            error: delivery.error,
            attempted_at: rfc3339(delivery.attempted_at),
        }
    }
}

/// The state of a job's webhook in notify's queue.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookView {
    /// `pending`, `delivered`, `refused` or `abandoned`.
    pub state: String,
    pub attempts: u32,
    /// When the next attempt is due, while the webhook is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl WebhookView {
    fn new(webhook: QueuedWebhook) -> WebhookView {
        let pending = webhook.state == alchemist_runtime::store::WebhookState::Pending;
        WebhookView {
            state: webhook.state.as_str().to_owned(),
            attempts: webhook.attempts,
            next_attempt_at: pending.then(|| rfc3339(webhook.next_attempt_at)),
        }
    }
}

/// Why a job failed.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobError {
    pub reason: String,
    pub message: String,
}

fn rfc3339(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl JobView {
    /// Builds the view of `job`, with the newest of its queued `webhooks`
    /// and every attempt at them in `deliveries`.
    pub fn new(
        job: Job,
        webhooks: Vec<QueuedWebhook>,
        deliveries: Vec<WebhookDelivery>,
    ) -> JobView {
        let status_url = format!("/jobs/{}", job.id);
        let error = job.failure_reason.map(|reason| JobError {
            message: job.failure_message.unwrap_or_else(|| {
                FailureReason::parse(&reason)
                    .map(FailureReason::user_message)
                    .unwrap_or_default()
                    .to_owned()
            }),
            reason,
        });
        JobView {
            audio_url: job.audio_id.as_ref().map(|_| format!("{status_url}/audio")),
            id: job.id,
            status: job.status.as_str().to_owned(),
            file_name: job.file_name,
            video_size: job.video_size,
            bitrate_kbps: job.bitrate_kbps,
            callback_url: job.callback_url,
            duration_seconds: job.duration_seconds,
            audio_size: job.audio_size,
            warnings: job.warnings,
            error,
            attempts: job.attempts,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            finished_at: job.finished_at.map(rfc3339),
            status_url,
            webhook: webhooks.into_iter().last().map(WebhookView::new),
            deliveries: deliveries.into_iter().map(DeliveryView::new).collect(),
        }
    }
}

/// Loads a job the caller may see; another user's job is "not found".
pub(crate) async fn visible_job(state: &AppState, claims: &Claims, id: &str) -> Result<Job, Error> {
    let id = Uuid::parse_str(id).map_err(|_| Error::JobNotFound)?;
    let job = state.store.job(id).await?.ok_or(Error::JobNotFound)?;
    if job.owner_id != claims.sub && !claims.is_admin() {
        return Err(Error::JobNotFound);
    }
    Ok(job)
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    limit: Option<u32>,
}

/// The list answer of `GET /jobs`.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Query(params): Query<ListParams>,
) -> Result<Json<JobList>, Error> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let owner = (!claims.is_admin()).then_some(claims.sub.as_str());
    let jobs = state.store.jobs(owner, limit).await?;
    Ok(Json(JobList {
        jobs: jobs
            .into_iter()
            .map(|job| JobView::new(job, Vec::new(), Vec::new()))
            .collect(),
    }))
}

pub(crate) async fn get_job(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Error> {
    let job = visible_job(&state, &claims, &id).await?;
    let webhooks = state.store.webhooks(job.id).await?;
    let deliveries = state.store.deliveries(job.id).await?;
    Ok(Json(JobView::new(job, webhooks, deliveries)))
}
