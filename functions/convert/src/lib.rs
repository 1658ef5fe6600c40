//! The convert function: on `video.uploaded`, extract the audio to MP3.
//!
//! # Layout
//!
//! - [`app`] builds the router: `POST /` takes `video.uploaded` CloudEvents,
//!   `POST /events/dead-letter` takes every event a Trigger gave up on and
//!   fails its job, `/healthz` and `/readyz` report health, `/metrics`
//!   serves the Prometheus metrics.
//! - [`media`] runs ffprobe and ffmpeg and decides whether the result is good.
//! - `metrics` counts conversions by outcome and times them.
//! - [`mp3`] reads the frame headers of the MP3 that ffmpeg wrote.
//! - [`Error`] is the one error type of this crate, mapped to HTTP once.
//!
//! A job is claimed with one conditional update before the work starts, so a
//! redelivered event finds it converting or finished and does nothing twice.
//! Bad input ends the job `failed` with a reason and answers with a
//! `conversion.failed` reply; a fault of the service itself releases the
//! claim and answers 500, so the broker retries and finally dead-letters.

pub mod media;
mod metrics;
pub mod mp3;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use alchemist_events::{
    catalogue::{
        AudioConverted, ConversionFailed, FailureReason, VideoUploaded, build_event_with_id,
        outcome_event_id, parse_payload,
    },
    http::{EventReply, IncomingEvent},
};
use alchemist_runtime::{
    blob::{BlobMeta, BlobStore, Bucket},
    config::{Env, Reader},
    metrics::record_http,
    serve::{Readiness, health_routes},
    store::{Claim, Completion, Store, fail_and_announce},
};
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use cloudevents::AttributesReader;
use tokio::io::AsyncWriteExt;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

use crate::media::{EncodeOptions, Limits, MediaError};

/// The CloudEvent `source` of the events this function emits.
pub const SOURCE: &str = "/audio-alchemist/convert";

/// Configuration of the convert function.
#[derive(Debug, Clone)]
pub struct Config {
    pub limits: Limits,
    /// Directory for inputs and outputs while ffmpeg runs.
    pub work_dir: PathBuf,
    /// A converting job without a heartbeat for this long counts as abandoned
    /// by a dead worker; heartbeats go out at a quarter of it.
    pub lease: Duration,
}

impl Config {
    /// Reads `CONVERT_TIMEOUT_SECONDS`, `CONVERT_MAX_DURATION_SECONDS`,
    /// `CONVERT_MAX_OUTPUT_BYTES`, `CONVERT_WORK_DIR` and `JOB_LEASE_SECONDS`.
    pub fn read(reader: &mut Reader<'_>) -> Config {
        let defaults = Limits::default();
        let timeout = reader.parse_or("CONVERT_TIMEOUT_SECONDS", defaults.timeout.as_secs());
        if timeout == 0 {
            reader.problem("CONVERT_TIMEOUT_SECONDS must be at least 1");
        }
        let limits = Limits {
            timeout: Duration::from_secs(timeout),
            max_duration_seconds: reader.parse_or(
                "CONVERT_MAX_DURATION_SECONDS",
                defaults.max_duration_seconds,
            ),
            max_output_bytes: reader
                .parse_or("CONVERT_MAX_OUTPUT_BYTES", defaults.max_output_bytes),
        };
        let work_dir = reader
            .optional("CONVERT_WORK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        Config {
            lease: alchemist_runtime::config::job_lease(reader),
            limits,
            work_dir,
        }
    }

    /// Reads the configuration from `env` alone.
    ///
    /// # Errors
    ///
    /// Every invalid variable, listed.
    pub fn from_env(env: &dyn Env) -> Result<Config, alchemist_runtime::Error> {
        let mut reader = Reader::new(env);
        let config = Config::read(&mut reader);
        reader.finish()?;
        Ok(config)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease: DEFAULT_LEASE,
            limits: Limits::default(),
            work_dir: std::env::temp_dir(),
        }
    }
}

/// The default of `JOB_LEASE_SECONDS`.
const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub config: Arc<Config>,
}

/// Errors of the convert function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event is of another type or its payload breaks the schema; retrying cannot help.
    #[error("invalid event: {0}")]
    InvalidEvent(String),

    /// The job named by the event does not exist.
    #[error("job {0} not found")]
    JobNotFound(Uuid),

    /// The database or blob store failed; a retry may succeed.
    #[error(transparent)]
    Runtime(#[from] alchemist_runtime::Error),

    /// ffmpeg, ffprobe or the work directory failed; a retry may succeed.
    #[error("conversion failed: {0}")]
    Tool(String),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Error::InvalidEvent(reason) => {
                (StatusCode::BAD_REQUEST, "invalid_event", reason.clone())
            }
            Error::JobNotFound(_) => (StatusCode::BAD_REQUEST, "job_not_found", self.to_string()),
            Error::Runtime(_) | Error::Tool(_) => {
                error!(cause = %self, "conversion could not run");
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

/// The router of the convert function, with `/healthz`, `/readyz`,
/// `/metrics` and the HTTP request metrics.
pub fn app(state: AppState) -> Router {
    let readiness = Readiness {
        store: Some(state.store.clone()),
        blobs: Some(state.blobs.clone()),
    };
    record_http(routes(state).merge(health_routes(readiness)))
}

/// The convert function's own routes, without the health routes, for
/// serving several functions on one port.
pub fn routes(state: AppState) -> Router {
    metrics::register_metrics();
    Router::new()
        .route("/", post(receive))
        .route("/events/dead-letter", post(dead_letter))
        .with_state(state)
}

async fn receive(
    State(state): State<AppState>,
    IncomingEvent(event): IncomingEvent,
) -> Result<EventReply, Error> {
    let span = info_span!("convert", ce_id = %event.id(), ce_type = %event.ty(), job_id = tracing::field::Empty);
    async move {
        let uploaded: VideoUploaded = match parse_payload(&event) {
            Ok(payload) => payload,
            Err(err) => return reject_invalid(&state, &event, err.to_string()).await,
        };
        tracing::Span::current().record("job_id", tracing::field::display(uploaded.job_id));
        handle(&state, uploaded).await
    }
    .instrument(span)
    .await
}

/// Answers an event that cannot be processed; when its data still names a job,
/// that job fails with a reason instead of waiting forever.
async fn reject_invalid(
    state: &AppState,
    event: &cloudevents::Event,
    reason: String,
) -> Result<EventReply, Error> {
    warn!(cause = %reason, "rejecting an invalid event");
    if let Some(job_id) = job_id_of(event)
        && fail_announced(
            state,
            job_id,
            "The job's event was malformed. Submit the file again.",
        )
        .await?
    {
        info!(%job_id, "job failed because its event was malformed");
    }
    Err(Error::InvalidEvent(reason))
}

/// Receives an event whose delivery failed after every retry and fails its
/// job with a reason, so that no job waits forever for an event that is gone.
async fn dead_letter(
    State(state): State<AppState>,
    IncomingEvent(event): IncomingEvent,
) -> Result<EventReply, Error> {
    let cause = event
        .extension("knativeerrordata")
        .map(|value| value.to_string())
        .unwrap_or_default();
    let Some(job_id) = job_id_of(&event) else {
        warn!(ce_id = %event.id(), ce_type = %event.ty(), %cause, "dead-lettered event names no job; dropping it");
        return Ok(EventReply::Accepted);
    };
    let failed =
        fail_announced(&state, job_id, FailureReason::DeliveryFailed.user_message()).await?;
    warn!(%job_id, ce_id = %event.id(), ce_type = %event.ty(), %cause, job_failed = failed, "event dead-lettered");
    Ok(EventReply::Accepted)
}

/// Fails a job whose event could not be processed with `delivery_failed`, and
/// queues the `conversion.failed` event in the outbox, since no reply goes
/// back to the broker from here. Returns false when the job is unknown or
/// had already ended.
async fn fail_announced(state: &AppState, job_id: Uuid, message: &str) -> Result<bool, Error> {
    let Some(job) = state.store.job(job_id).await? else {
        return Ok(false);
    };
    Ok(fail_and_announce(
        state.store.as_ref(),
        &job,
        SOURCE,
        FailureReason::DeliveryFailed,
        message,
    )
    .await?)
}

/// Reads `job_id` from any event data, for events that fail their schema.
pub fn job_id_of(event: &cloudevents::Event) -> Option<Uuid> {
    let value: serde_json::Value = match event.data()? {
        cloudevents::Data::Json(value) => value.clone(),
        cloudevents::Data::Binary(bytes) => serde_json::from_slice(bytes).ok()?,
        cloudevents::Data::String(text) => serde_json::from_str(text).ok()?,
    };
    value.get("job_id")?.as_str()?.parse().ok()
}

async fn handle(state: &AppState, uploaded: VideoUploaded) -> Result<EventReply, Error> {
    let job_id = uploaded.job_id;
    let lease_millis = alchemist_runtime::millis(state.config.lease);
    let attempt = match state.store.claim_job(job_id, lease_millis).await {
        Ok(Claim::Started { attempt }) => {
            info!(attempt, "conversion started");
            attempt
        }
        Ok(Claim::Busy) => {
            info!("job is being converted by another worker; ignoring the redelivery");
            return Ok(EventReply::Accepted);
        }
        Ok(Claim::Finished(status)) => {
            // The worker that finished may have died before its reply reached
            // the broker, so the outcome is sent again, under the same id.
            info!(
                status = status.as_str(),
                "job already finished; repeating its outcome event"
            );
            let job = state
                .store
                .job(job_id)
                .await?
                .ok_or(Error::JobNotFound(job_id))?;
            return Ok(match outcome_event(&job) {
                Some(event) => EventReply::Reply(event),
                None => EventReply::Accepted,
            });
        }
        Err(alchemist_runtime::Error::NotFound(_)) => return Err(Error::JobNotFound(job_id)),
        Err(err) => return Err(err.into()),
    };

    // Heartbeats tell upload's relay that this worker is alive; a worker that
    // dies stops sending them and its job is requeued after the lease.
    let heartbeat = {
        let store = state.store.clone();
        let every = (state.config.lease / 4).max(Duration::from_millis(250));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                if let Err(err) = store.heartbeat(job_id).await {
                    warn!(cause = %err, "cannot record a heartbeat");
                }
            }
        })
    };
    let started = Instant::now();
    let outcome = convert_job(state, &uploaded, attempt).await;
    heartbeat.abort();
    let label = match &outcome {
        Ok(_) => metrics::DONE,
        Err(Outcome::Rejected { reason, .. }) => reason.as_str(),
        Err(Outcome::Retry(_)) => metrics::ERROR,
    };
    metrics::record_conversion(label, started.elapsed());

    match outcome {
        Ok(reply) => Ok(reply),
        Err(Outcome::Rejected { reason, detail }) => {
            info!(reason = reason.as_str(), detail = %detail, "conversion rejected the input");
            state
                .store
                .fail_job(job_id, reason.as_str(), reason.user_message())
                .await?;
            let payload = ConversionFailed {
                job_id,
                owner_id: uploaded.owner_id.clone(),
                reason,
                message: reason.user_message().to_owned(),
            };
            Ok(EventReply::Reply(build_event_with_id(
                &outcome_event_id(job_id),
                SOURCE,
                &job_id.to_string(),
                &payload,
            )))
        }
        Err(Outcome::Retry(err)) => {
            // Give the job back so that the broker's retry can claim it again.
            if let Err(release_err) = state.store.release_job(job_id).await {
                error!(cause = %release_err, "cannot release the job after a failure");
            }
            Err(err)
        }
    }
}

/// Derives the blob id of the MP3 that attempt `attempt` of a job writes, so
/// that a later attempt can find what an earlier one may have left.
pub fn audio_id(job_id: Uuid, attempt: u32) -> String {
    Uuid::new_v5(&job_id, format!("audio/{attempt}").as_bytes()).to_string()
}

/// Streams the video into the work directory for ffmpeg, as `input` without
/// an extension, so that ffprobe detects the format from the content.
async fn copy_video(
    state: &AppState,
    uploaded: &VideoUploaded,
    work: &std::path::Path,
) -> Result<PathBuf, Outcome> {
    let input = work.join("input");
    let reader = match state
        .blobs
        .open(Bucket::Videos, &uploaded.video_id, 0)
        .await
    {
        Ok(reader) => reader,
        Err(alchemist_runtime::Error::NotFound(_)) => {
            return Err(Outcome::Rejected {
                reason: FailureReason::Empty,
                detail: "the video blob is missing".into(),
            });
        }
        Err(err) => return Err(err.into()),
    };
    let failed =
        |err: std::io::Error| Outcome::Retry(Error::Tool(format!("cannot copy the video: {err}")));
    let file = tokio::fs::File::create(&input).await.map_err(failed)?;
    let mut writer = tokio::io::BufWriter::with_capacity(1024 * 1024, file);
    let mut reader = tokio::io::BufReader::with_capacity(1024 * 1024, reader);
    tokio::io::copy_buf(&mut reader, &mut writer)
        .await
        .map_err(failed)?;
    writer.flush().await.map_err(failed)?;
    Ok(input)
}

enum Outcome {
    Rejected {
        reason: FailureReason,
        detail: String,
    },
    Retry(Error),
}

impl From<alchemist_runtime::Error> for Outcome {
    fn from(err: alchemist_runtime::Error) -> Self {
        Outcome::Retry(err.into())
    }
}

async fn convert_job(
    state: &AppState,
    uploaded: &VideoUploaded,
    attempt: u32,
) -> Result<EventReply, Outcome> {
    let job_id = uploaded.job_id;
    let work = tempfile::Builder::new()
        .prefix("alchemist-convert-")
        .tempdir_in(&state.config.work_dir)
        .map_err(|err| {
            Outcome::Retry(Error::Tool(format!(
                "cannot create a work directory: {err}"
            )))
        })?;
    let output = work.path().join("output.mp3");
    let input = match state.blobs.local_path(Bucket::Videos, &uploaded.video_id) {
        // A blob kept as a file is read in place; its name is a UUID without
        // an extension, so ffprobe detects the format from the content.
        Some(path) => path,
        None => copy_video(state, uploaded, work.path()).await?,
    };

    let options = EncodeOptions {
        bitrate_kbps: uploaded.bitrate_kbps,
    };
    let converted = match media::convert(&input, &output, options, &state.config.limits).await {
        Ok(converted) => converted,
        Err(MediaError::Rejected { reason, detail }) => {
            return Err(Outcome::Rejected { reason, detail });
        }
        Err(MediaError::Internal(message)) => return Err(Outcome::Retry(Error::Tool(message))),
    };

    let meta = BlobMeta {
        owner_id: uploaded.owner_id.clone(),
        job_id: job_id.to_string(),
        content_type: "audio/mpeg".to_owned(),
    };
    let mp3 = tokio::fs::File::open(&output)
        .await
        .map_err(|err| Outcome::Retry(Error::Tool(format!("cannot read the MP3: {err}"))))?;
    let stored = state
        .blobs
        .put_as(
            Bucket::Audio,
            &audio_id(job_id, attempt),
            &meta,
            Box::pin(mp3),
            u64::MAX,
        )
        .await?;

    let completion = Completion {
        audio_id: stored.id.clone(),
        audio_size: stored.size,
        duration_seconds: converted.duration_seconds,
        warnings: converted.warnings.clone(),
    };
    if !state.store.complete_job(job_id, &completion).await? {
        // Another worker finished first after our lease expired; keep its result.
        warn!("job was finished by another worker; discarding this MP3");
        state.blobs.delete(Bucket::Audio, &stored.id).await?;
        return Ok(EventReply::Accepted);
    }
    info!(
        duration_seconds = converted.duration_seconds,
        size = stored.size,
        frames = converted.frames,
        "conversion done"
    );
    // A worker that died after storing its MP3 left it under its attempt's id.
    for earlier in 1..attempt {
        if let Err(err) = state
            .blobs
            .delete(Bucket::Audio, &audio_id(job_id, earlier))
            .await
        {
            warn!(attempt = earlier, cause = %err, "cannot remove the MP3 of an earlier attempt");
        }
    }

    let payload = AudioConverted {
        job_id,
        owner_id: uploaded.owner_id.clone(),
        audio_id: stored.id,
        size: stored.size,
        duration_seconds: converted.duration_seconds,
        warnings: converted.warnings,
    };
    Ok(EventReply::Reply(build_event_with_id(
        &outcome_event_id(job_id),
        SOURCE,
        &job_id.to_string(),
        &payload,
    )))
}

/// Rebuilds the outcome event of a finished job from its record.
fn outcome_event(job: &alchemist_runtime::store::Job) -> Option<cloudevents::Event> {
    let id = outcome_event_id(job.id);
    let subject = job.id.to_string();
    match job.status {
        alchemist_runtime::store::JobStatus::Done => {
            let payload = AudioConverted {
                job_id: job.id,
                owner_id: job.owner_id.clone(),
                audio_id: job.audio_id.clone()?,
                size: job.audio_size?,
                duration_seconds: job.duration_seconds?,
                warnings: job.warnings.clone(),
            };
            Some(build_event_with_id(&id, SOURCE, &subject, &payload))
        }
        alchemist_runtime::store::JobStatus::Failed => {
            let reason = job
                .failure_reason
                .as_deref()
                .and_then(FailureReason::parse)?;
            let payload = ConversionFailed {
                job_id: job.id,
                owner_id: job.owner_id.clone(),
                reason,
                message: job
                    .failure_message
                    .clone()
                    .unwrap_or_else(|| reason.user_message().to_owned()),
            };
            Some(build_event_with_id(&id, SOURCE, &subject, &payload))
        }
        _ => None,
    }
}

/// Reads the configuration from `env`, checks ffmpeg, connects, and serves on
/// `$PORT` until `shutdown` completes.
///
/// # Errors
///
/// Every invalid variable at once, a missing ffmpeg, or the error of
/// connecting or serving.
pub async fn run(
    env: &dyn Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut reader = Reader::new(env);
    let config = Config::read(&mut reader);
    let settings = alchemist_runtime::deps::DependencySettings::read(&mut reader, true);
    reader.finish()?;
    let settings = settings.expect("finish() fails when a required variable is missing");
    media::check_tools().map_err(anyhow::Error::msg)?;
    let deps = settings.connect().await?;

    let state = AppState {
        store: deps.store,
        blobs: deps.blobs.expect("blobs were requested"),
        config: Arc::new(config),
    };
    let addr = alchemist_runtime::serve::listen_addr(deps.bind, deps.port);
    alchemist_runtime::serve::serve(app(state), addr, shutdown)
        .await
        .context("serving the convert function failed")
}
