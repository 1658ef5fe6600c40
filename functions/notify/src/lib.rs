//! The notify function: tells a job's owner that the job ended.
//!
//! # Layout
//!
//! - [`app`] builds the router: `POST /` takes `audio.converted` and
//!   `conversion.failed` CloudEvents.
//! - [`webhook`] signs webhooks per Standard Webhooks and guards their targets.
//! - [`Error`] is the one error type of this crate, mapped to HTTP once.
//!
//! - [`queue`] stores each webhook before its first attempt and retries it
//!   on its own schedule.
//!
//! notify acknowledges an event with 202 once its webhook is queued. From then
//! on the queue, not the broker, owns the delivery, so a receiver that is down
//! for hours still gets the webhook. The event's id is the webhook's id, so a
//! redelivered event queues nothing new.

pub mod queue;
pub mod webhook;

use std::{sync::Arc, time::Duration};

use alchemist_events::{
    catalogue::{AudioConverted, ConversionFailed, Payload, parse_payload},
    http::{EventReply, IncomingEvent},
};
use alchemist_runtime::{
    config::Reader,
    serve::{Readiness, health_routes},
    store::Store,
};
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use cloudevents::{AttributesReader, Event};
use serde::Serialize;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

use crate::{queue::RetryPolicy, webhook::WebhookSecret};

/// Configuration of the notify function.
#[derive(Debug, Clone)]
pub struct Config {
    pub secret: WebhookSecret,
    /// Lets webhooks reach private, loopback and link-local addresses.
    pub allow_private: bool,
    /// Time limit of one webhook request.
    pub timeout: Duration,
    /// When failed webhooks are tried again.
    pub retry: RetryPolicy,
}

impl Config {
    /// Reads `WEBHOOK_SECRET`, `WEBHOOK_ALLOW_PRIVATE`, `WEBHOOK_TIMEOUT_SECONDS`,
    /// `WEBHOOK_MAX_ATTEMPTS` and `WEBHOOK_RETRY_SECONDS`.
    pub fn read(reader: &mut Reader<'_>) -> Option<Config> {
        let secret = reader
            .required(
                "WEBHOOK_SECRET",
                "the Standard Webhooks signing secret, whsec_ and base64",
            )
            .and_then(|text| match WebhookSecret::parse(&text) {
                Ok(secret) => Some(secret),
                Err(problem) => {
                    reader.problem(problem);
                    None
                }
            });
        let allow_private = reader.flag("WEBHOOK_ALLOW_PRIVATE");
        let timeout = Duration::from_secs(reader.parse_or("WEBHOOK_TIMEOUT_SECONDS", 10));
        let defaults = RetryPolicy::default();
        let max_attempts = reader.parse_or("WEBHOOK_MAX_ATTEMPTS", defaults.max_attempts);
        if max_attempts == 0 {
            reader.problem("WEBHOOK_MAX_ATTEMPTS=0 is not valid: use 1 or more");
        }
        let retry_seconds =
            reader.parse_or("WEBHOOK_RETRY_SECONDS", defaults.first_delay.as_secs());
        if retry_seconds == 0 {
            reader.problem("WEBHOOK_RETRY_SECONDS=0 is not valid: use 1 or more");
        }
        let retry = RetryPolicy {
            max_attempts,
            first_delay: Duration::from_secs(retry_seconds),
        };
        Some(Config {
            secret: secret?,
            allow_private,
            timeout,
            retry,
        })
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
}

/// Errors of the notify function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event of another type or with a payload that breaks its schema.
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    #[error(transparent)]
    Runtime(#[from] alchemist_runtime::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Error::InvalidEvent(reason) => {
                (StatusCode::BAD_REQUEST, "invalid_event", reason.clone())
            }
            Error::Runtime(err) => {
                error!(cause = %err, "notification failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".to_owned(),
                )
            }
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": code, "message": message })),
        )
            .into_response()
    }
}

/// The router of the notify function, with `/healthz` and `/readyz`.
pub fn app(state: AppState) -> Router {
    let readiness = Readiness {
        store: Some(state.store.clone()),
        blobs: None,
    };
    alchemist_runtime::metrics::record_http(routes(state).merge(health_routes(readiness)))
}

/// The notify function's own routes, without the health routes, for
/// serving several functions on one port.
pub fn routes(state: AppState) -> Router {
    queue::register_metrics();
    Router::new().route("/", post(receive)).with_state(state)
}

/// The JSON body of a webhook.
#[derive(Debug, Serialize)]
pub struct Notification {
    /// `job.done` or `job.failed`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub data: NotificationData,
}

/// What a webhook says about the job.
#[derive(Debug, Serialize)]
pub struct NotificationData {
    pub job_id: Uuid,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

async fn receive(
    State(state): State<AppState>,
    IncomingEvent(event): IncomingEvent,
) -> Result<EventReply, Error> {
    let span = info_span!("notify", ce_id = %event.id(), ce_type = %event.ty(), job_id = tracing::field::Empty);
    async move {
        let data = notification_data(&event)?;
        tracing::Span::current().record("job_id", tracing::field::display(data.job_id));
        handle(&state, &event, data).await
    }
    .instrument(span)
    .await
}

fn notification_data(event: &Event) -> Result<NotificationData, Error> {
    let invalid = |err: alchemist_events::Error| Error::InvalidEvent(err.to_string());
    match event.ty() {
        AudioConverted::TYPE => {
            let payload: AudioConverted = parse_payload(event).map_err(invalid)?;
            Ok(NotificationData {
                job_id: payload.job_id,
                status: "done",
                audio_url: Some(format!("/jobs/{}/audio", payload.job_id)),
                duration_seconds: Some(payload.duration_seconds),
                warnings: payload.warnings,
                reason: None,
                message: None,
            })
        }
        ConversionFailed::TYPE => {
            let payload: ConversionFailed = parse_payload(event).map_err(invalid)?;
            Ok(NotificationData {
                job_id: payload.job_id,
                status: "failed",
                audio_url: None,
                duration_seconds: None,
                warnings: Vec::new(),
                reason: Some(payload.reason.as_str().to_owned()),
                message: Some(payload.message),
            })
        }
        other => Err(Error::InvalidEvent(format!(
            "notify does not handle events of type {other}"
        ))),
    }
}

async fn handle(
    state: &AppState,
    event: &Event,
    data: NotificationData,
) -> Result<EventReply, Error> {
    let Some(job) = state.store.job(data.job_id).await? else {
        warn!("the event names a job that does not exist; nothing to notify");
        return Ok(EventReply::Accepted);
    };
    let Some(callback_url) = job.callback_url.clone() else {
        info!("job has no callback URL; nothing to notify");
        return Ok(EventReply::Accepted);
    };

    let notification = Notification {
        kind: if data.status == "done" {
            "job.done"
        } else {
            "job.failed"
        },
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data,
    };
    let body = serde_json::to_string(&notification).expect("notifications serialize to JSON");
    if !state
        .store
        .enqueue_webhook(job.id, event.id(), &callback_url, &body)
        .await?
    {
        info!("webhook for this event is queued already; ignoring the redelivery");
        return Ok(EventReply::Accepted);
    }
    queue::attempt(state, event.id()).await?;
    Ok(EventReply::Accepted)
}

/// Reads the configuration from `env`, connects, starts the webhook retries,
/// and serves on `$PORT` until `shutdown` completes.
///
/// # Errors
///
/// Every invalid variable at once, or the error of connecting or serving.
pub async fn run(
    env: &dyn alchemist_runtime::config::Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let (state, addr) = connect(env).await?;
    let retries_stop = tokio_util::sync::CancellationToken::new();
    let retries = tokio::spawn(queue::run_retries(
        state.clone(),
        retries_stop.clone().cancelled_owned(),
    ));
    let served = alchemist_runtime::serve::serve(app(state), addr, shutdown).await;
    retries_stop.cancel();
    let _ = retries.await;
    served.context("serving the notify function failed")
}

/// Sends every webhook that is due, once, and returns how many were
/// attempted. A Kubernetes CronJob runs it, so that retries keep their times
/// while notify is scaled to zero.
///
/// # Errors
///
/// Every invalid variable at once, or the error of connecting or of the store.
pub async fn retry_pass(env: &dyn alchemist_runtime::config::Env) -> anyhow::Result<usize> {
    let (state, _) = connect(env).await?;
    let attempted = queue::retry_due(&state).await?;
    info!(attempted, "webhook retry pass finished");
    Ok(attempted)
}

/// Reads the configuration from `env` and connects to the database. Returns
/// the handlers' state and the address to listen on.
async fn connect(
    env: &dyn alchemist_runtime::config::Env,
) -> anyhow::Result<(AppState, std::net::SocketAddr)> {
    let mut reader = Reader::new(env);
    let config = Config::read(&mut reader);
    let settings = alchemist_runtime::deps::DependencySettings::read(&mut reader, false);
    reader.finish()?;
    let (Some(config), Some(settings)) = (config, settings) else {
        unreachable!("finish() fails when a required variable is missing")
    };
    let deps = settings.connect().await?;
    let addr = alchemist_runtime::serve::listen_addr(deps.bind, deps.port);
    let state = AppState {
        store: deps.store,
        config: Arc::new(config),
    };
    Ok((state, addr))
}
