//! CloudEvents over HTTP.
//!
//! Incoming events may use binary or structured mode; outgoing events and
//! replies use binary mode. The SDK's own axum extractor reads bodies without
//! a limit, so [`IncomingEvent`] reads at most [`MAX_EVENT_BYTES`] first.

use axum::{
    body::Body,
    extract::{FromRequest, Request},
    response::{IntoResponse, Response},
};
use cloudevents::{AttributesReader, Event};
use http::{StatusCode, header};

use crate::Error;

/// Largest CloudEvent body accepted. Events carry ids, never media, so a few
/// kilobytes are plenty; the margin allows for large extensions.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// A CloudEvent read from an HTTP request, in binary or structured mode.
#[derive(Debug, Clone)]
pub struct IncomingEvent(pub Event);

impl<S: Send + Sync> FromRequest<S> for IncomingEvent {
    type Rejection = EventRejection;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_EVENT_BYTES)
            .await
            .map_err(|_| {
                EventRejection(Error::BodyTooLarge {
                    limit: MAX_EVENT_BYTES,
                })
            })?;
        let event = cloudevents::binding::http::to_event(&parts.headers, bytes.to_vec())
            .map_err(|err| EventRejection(Error::InvalidEvent(err.to_string())))?;
        Ok(IncomingEvent(event))
    }
}

/// The answer to a request that is not a valid CloudEvent.
#[derive(Debug)]
pub struct EventRejection(pub Error);

impl IntoResponse for EventRejection {
    fn into_response(self) -> Response {
        let status = match self.0 {
            Error::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        // The message names only what the sender got wrong, never internal state.
        let body = serde_json::json!({ "error": "invalid_event", "message": self.0.to_string() });
        (status, axum::Json(body)).into_response()
    }
}

/// What a function answers to an event: a reply event, or 202 with an empty body.
#[derive(Debug)]
// Boxing would save nothing: a reply is built once and moved straight into a response.
#[allow(clippy::large_enum_variant)]
pub enum EventReply {
    Reply(Event),
    Accepted,
}

impl IntoResponse for EventReply {
    fn into_response(self) -> Response {
        match self {
            EventReply::Reply(event) => event.into_response(),
            EventReply::Accepted => StatusCode::ACCEPTED.into_response(),
        }
    }
}

/// Builds a binary-mode `POST` request that carries `event` to `uri`.
///
/// # Errors
///
/// [`Error::InvalidEvent`] when an attribute cannot be written as a header.
pub fn to_request(event: Event, uri: &str) -> Result<Request, Error> {
    let response = cloudevents::binding::http::builder::adapter::to_response(event)
        .map_err(|err| Error::InvalidEvent(err.to_string()))?;
    let (parts, body) = response.into_parts();

    let mut request = Request::builder()
        .method(http::Method::POST)
        .uri(uri)
        .body(Body::new(body))
        .map_err(|err| Error::InvalidEvent(err.to_string()))?;
    *request.headers_mut() = parts.headers;
    Ok(request)
}

/// Reads a reply event from a subscriber's response, if it carries one.
///
/// A response without `ce-specversion` and without a structured-mode content
/// type carries no event.
///
/// # Errors
///
/// [`Error::InvalidEvent`] when the response claims to be an event but is not a valid one.
pub async fn reply_from_response(response: Response) -> Result<Option<Event>, Error> {
    let (parts, body) = response.into_parts();
    let structured = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/cloudevents+json"));
    if !parts.headers.contains_key("ce-specversion") && !structured {
        return Ok(None);
    }
    let bytes = axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|_| Error::BodyTooLarge {
            limit: MAX_EVENT_BYTES,
        })?;
    cloudevents::binding::http::to_event(&parts.headers, bytes.to_vec())
        .map(Some)
        .map_err(|err| Error::InvalidEvent(err.to_string()))
}

/// A short description of an event for logs: its type, id and source.
pub fn describe(event: &Event) -> String {
    format!("{} {} from {}", event.ty(), event.id(), event.source())
}
