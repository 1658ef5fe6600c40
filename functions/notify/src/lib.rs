//! The notify function: tells a job's owner that the job ended.
//!
//! # Layout
//!
//! - [`app`] builds the router: `POST /` takes `audio.converted` and
//!   `conversion.failed` CloudEvents.
//! - [`webhook`] signs webhooks per Standard Webhooks and guards their targets.
//! - [`Error`] is the one error type of this crate, mapped to HTTP once.
//!
//! Each event is handled once: its `source` and `id` are recorded before the
//! webhook goes out, and a failed delivery removes the record again and
//! answers 502 so that the broker retries with backoff.
//!
//! NOTE: a crash between recording the event and sending the webhook loses
//! that webhook; a durable webhook outbox would close the gap.

pub mod webhook;

use std::{sync::Arc, time::Duration};

use alchemist_events::{
    catalogue::{AudioConverted, ConversionFailed, Payload, parse_payload},
    http::{EventReply, IncomingEvent},
};
use alchemist_runtime::{
    config::Reader,
    now_millis,
    serve::{Readiness, health_routes},
    store::{Store, WebhookDelivery},
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

use crate::webhook::{WebhookSecret, resolve_allowed};

/// Name under which processed events are recorded.
const CONSUMER: &str = "notify";

/// Configuration of the notify function.
#[derive(Debug, Clone)]
pub struct Config {
    pub secret: WebhookSecret,
    /// Lets webhooks reach private, loopback and link-local addresses.
    pub allow_private: bool,
    /// Time limit of one webhook request.
    pub timeout: Duration,
}

impl Config {
    /// Reads `WEBHOOK_SECRET`, `WEBHOOK_ALLOW_PRIVATE` and `WEBHOOK_TIMEOUT_SECONDS`.
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
        Some(Config {
            secret: secret?,
            allow_private,
            timeout,
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

    /// The webhook could not be delivered; the broker should retry.
    #[error("webhook delivery failed: {0}")]
    Delivery(String),

    #[error(transparent)]
    Runtime(#[from] alchemist_runtime::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Error::InvalidEvent(reason) => {
                (StatusCode::BAD_REQUEST, "invalid_event", reason.clone())
            }
            Error::Delivery(_) => (
                StatusCode::BAD_GATEWAY,
                "delivery_failed",
                "webhook delivery failed".to_owned(),
            ),
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
    if !state
        .store
        .mark_processed(CONSUMER, event.source().as_str(), event.id())
        .await?
    {
        info!("event already handled; ignoring the redelivery");
        return Ok(EventReply::Accepted);
    }

    let notification = Notification {
        kind: if data.status == "done" {
            "job.done"
        } else {
            "job.failed"
        },
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        data,
    };
    let delivery = send(state, event.id(), &callback_url, &notification).await;
    state.store.record_delivery(job.id, &delivery).await?;

    match delivery.outcome.as_str() {
        "delivered" => {
            info!(status_code = delivery.status_code, "webhook delivered");
            Ok(EventReply::Accepted)
        }
        "refused" => {
            // Retrying cannot change the guard's answer.
            warn!(
                cause = delivery.error.as_deref().unwrap_or_default(),
                "webhook target refused"
            );
            Ok(EventReply::Accepted)
        }
        _ => {
            warn!(
                status_code = delivery.status_code,
                cause = delivery.error.as_deref().unwrap_or_default(),
                "webhook delivery failed; the broker will retry"
            );
            state
                .store
                .unmark_processed(CONSUMER, event.source().as_str(), event.id())
                .await?;
            Err(Error::Delivery(delivery.error.unwrap_or_default()))
        }
    }
}

/// Sends one signed webhook and describes the outcome.
async fn send(
    state: &AppState,
    event_id: &str,
    callback_url: &str,
    notification: &Notification,
) -> WebhookDelivery {
    let mut delivery = WebhookDelivery {
        event_id: event_id.to_owned(),
        url: callback_url.to_owned(),
        outcome: "failed".to_owned(),
        status_code: None,
        error: None,
        attempted_at: now_millis(),
    };
    let url = match url::Url::parse(callback_url) {
        Ok(url) => url,
        Err(err) => {
            delivery.outcome = "refused".to_owned();
            delivery.error = Some(format!("invalid URL: {err}"));
            return delivery;
        }
    };
    let addresses = match resolve_allowed(&url, state.config.allow_private).await {
        Ok(addresses) => addresses,
        Err(reason) => {
            delivery.outcome = "refused".to_owned();
            delivery.error = Some(reason);
            return delivery;
        }
    };

    // Pin the checked addresses so that a second DNS answer cannot redirect
    // the request, and follow no redirects for the same reason.
    let host = url.host_str().unwrap_or_default().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the host itself, past the checked addresses.
        .no_proxy()
        .timeout(state.config.timeout)
        .resolve_to_addrs(&host, &addresses)
        .build();
    let client = match client {
        Ok(client) => client,
        Err(err) => {
            delivery.error = Some(format!("cannot build the HTTP client: {err}"));
            return delivery;
        }
    };

    let body = serde_json::to_vec(notification).expect("notifications serialize to JSON");
    let timestamp = now_millis() / 1000;
    let signature = state.config.secret.sign(event_id, timestamp, &body);
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status();
            delivery.status_code = Some(status.as_u16());
            if status.is_success() {
                delivery.outcome = "delivered".to_owned();
            } else {
                delivery.error = Some(format!("the receiver answered {status}"));
            }
        }
        Err(err) => delivery.error = Some(format!("request failed: {err}")),
    }
    delivery
}

/// Reads the configuration from `env`, connects, and serves on `$PORT` until
/// `shutdown` completes.
///
/// # Errors
///
/// Every invalid variable at once, or the error of connecting or serving.
pub async fn run(
    env: &dyn alchemist_runtime::config::Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut reader = Reader::new(env);
    let config = Config::read(&mut reader);
    let settings = alchemist_runtime::deps::DependencySettings::read(&mut reader, false);
    reader.finish()?;
    let (Some(config), Some(settings)) = (config, settings) else {
        unreachable!("finish() fails when a required variable is missing")
    };
    let deps = settings.connect().await?;

    let state = AppState {
        store: deps.store,
        config: Arc::new(config),
    };
    let addr = alchemist_runtime::serve::listen_addr(deps.bind, deps.port);
    alchemist_runtime::serve::serve(app(state), addr, shutdown)
        .await
        .context("serving the notify function failed")
}
