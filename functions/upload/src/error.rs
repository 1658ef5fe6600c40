use alchemist_events::catalogue::FailureReason;
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use tracing::error;

/// Errors of the upload function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not valid `multipart/form-data`, or a field is missing.
    #[error("{0}")]
    BadRequest(String),

    /// A zero-byte upload.
    #[error("the uploaded file is empty")]
    EmptyUpload,

    /// The body exceeds MAX_UPLOAD_BYTES.
    #[error("the upload exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },

    /// No such job, or a job of another user (the two are not told apart).
    #[error("job not found")]
    JobNotFound,

    /// The job has no MP3 (yet).
    #[error("{0}")]
    NoAudio(String),

    /// The requested byte range lies outside the MP3.
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },

    /// The event could not be handed to the broker.
    #[error("the broker is unavailable: {0}")]
    Broker(#[from] alchemist_events::Error),

    #[error(transparent)]
    Runtime(#[from] alchemist_runtime::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Error::BadRequest(message) => (StatusCode::BAD_REQUEST, "bad_request", message.clone()),
            Error::EmptyUpload => (
                StatusCode::BAD_REQUEST,
                FailureReason::Empty.as_str(),
                FailureReason::Empty.user_message().to_owned(),
            ),
            Error::TooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "The upload exceeds the limit of {limit} bytes. Split the file or ask the operator to raise MAX_UPLOAD_BYTES."
                ),
            ),
            Error::JobNotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such job.".to_owned(),
            ),
            Error::NoAudio(message) => (StatusCode::CONFLICT, "no_audio_yet", message.clone()),
            Error::RangeNotSatisfiable { .. } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                "The range lies outside the file.".to_owned(),
            ),
            Error::Broker(err) => {
                error!(cause = %err, "publishing failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The service cannot take jobs right now. Try again later.".to_owned(),
                )
            }
            Error::Runtime(err) => {
                error!(cause = %err, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error.".to_owned(),
                )
            }
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": code, "message": message })),
        )
            .into_response();
        if let Error::RangeNotSatisfiable { size } = self {
            let value = HeaderValue::from_str(&format!("bytes */{size}"))
                .expect("digits are a valid header value");
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}
