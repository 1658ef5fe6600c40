//! CloudEvents over HTTP: the size-limited extractor, binary-mode requests
//! and replies, against a router whose handler echoes the event back.

use alchemist_events::{
    catalogue::{AudioConverted, build_event, parse_payload},
    http::{EventReply, IncomingEvent, MAX_EVENT_BYTES, reply_from_response, to_request},
};
use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn echo(IncomingEvent(event): IncomingEvent) -> EventReply {
    EventReply::Reply(event)
}

fn echo_app() -> Router {
    Router::new().route("/", post(echo))
}

fn sample_event() -> Event {
    let payload = AudioConverted {
        job_id: "0190a5d2-7c1e-7b3a-9f00-5a1b2c3d4e5f".parse().unwrap(),
        owner_id: "user-1".to_owned(),
        audio_id: "audio-1".to_owned(),
        size: 4096,
        duration_seconds: 2.5,
        warnings: Vec::new(),
    };
    build_event("/convert", "0190a5d2-7c1e-7b3a-9f00-5a1b2c3d4e5f", &payload)
}

async fn send(request: Request<Body>) -> Response {
    echo_app().oneshot(request).await.unwrap()
}

async fn json_body(response: Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn binary_mode_round_trips() {
    let event = sample_event();
    let request = to_request(event.clone(), "/").unwrap();

    let response = send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let reply = reply_from_response(response)
        .await
        .unwrap()
        .expect("the echo is an event");
    assert_eq!(reply.id(), event.id());
    assert_eq!(reply.ty(), event.ty());
    assert_eq!(reply.source(), event.source());
    assert_eq!(reply.subject(), event.subject());
    assert_eq!(reply.dataschema(), event.dataschema());
    assert_eq!(reply.time(), event.time());
    assert_eq!(
        parse_payload::<AudioConverted>(&reply).unwrap(),
        parse_payload::<AudioConverted>(&event).unwrap()
    );
}

#[tokio::test]
async fn binary_request_has_ce_headers() {
    let event = sample_event();

    let request = to_request(event.clone(), "/").unwrap();

    let headers = request.headers();
    assert_eq!(request.method(), "POST");
    assert_eq!(headers["ce-specversion"], "1.0");
    assert_eq!(headers["ce-id"], event.id());
    assert_eq!(headers["ce-type"], event.ty());
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
}

#[tokio::test]
async fn structured_mode_is_accepted() {
    let body = json!({
        "specversion": "1.0",
        "id": "structured-1",
        "source": "/tests",
        "type": "dev.example.structured.v1",
        "datacontenttype": "application/json",
        "data": { "hello": "world" }
    });
    let request = Request::post("/")
        .header(header::CONTENT_TYPE, "application/cloudevents+json")
        .body(Body::from(body.to_string()))
        .unwrap();

    let response = send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let reply = reply_from_response(response).await.unwrap().unwrap();
    assert_eq!(reply.id(), "structured-1");
    assert_eq!(reply.ty(), "dev.example.structured.v1");
    assert_eq!(reply.source().as_str(), "/tests");
}

#[tokio::test]
async fn missing_required_header_is_rejected() {
    for name in ["ce-id", "ce-type", "ce-source", "ce-specversion"] {
        let mut request = to_request(sample_event(), "/").unwrap();
        request.headers_mut().remove(name);

        let response = send(request).await;

        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "request without {name}"
        );
        let body = json_body(response).await;
        assert_eq!(body["error"], "invalid_event", "request without {name}");
    }
}

#[tokio::test]
async fn malformed_structured_body_is_rejected() {
    let request = Request::post("/")
        .header(header::CONTENT_TYPE, "application/cloudevents+json")
        .body(Body::from("{ not json"))
        .unwrap();

    let response = send(request).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

/// Builds a binary-mode request whose body is `size` bytes of JSON.
fn request_with_body_size(size: usize) -> Request<Body> {
    let mut request = to_request(sample_event(), "/").unwrap();
    // A JSON string of `size` bytes: two quotes around `size - 2` letters.
    let body = format!("\"{}\"", "a".repeat(size - 2));
    *request.body_mut() = Body::from(body);
    request
}

#[tokio::test]
async fn oversized_body_is_rejected() {
    let request = request_with_body_size(MAX_EVENT_BYTES + 1);

    let response = send(request).await;

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn body_at_limit_is_accepted() {
    let request = request_with_body_size(MAX_EVENT_BYTES);

    let response = send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn plain_accepted_has_no_reply() {
    let response = EventReply::Accepted.into_response();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let reply = reply_from_response(response).await.unwrap();

    assert!(reply.is_none(), "{reply:?}");
}

#[tokio::test]
async fn plain_json_response_has_no_reply() {
    let response = (StatusCode::OK, axum::Json(json!({ "ok": true }))).into_response();

    let reply = reply_from_response(response).await.unwrap();

    assert!(reply.is_none(), "{reply:?}");
}

#[tokio::test]
async fn incomplete_reply_event_is_an_error() {
    let response = Response::builder()
        .status(StatusCode::OK)
        .header("ce-specversion", "1.0")
        .header("ce-type", "dev.example.reply.v1")
        .body(axum::body::Body::empty())
        .unwrap();

    let result = reply_from_response(response).await;

    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn reply_without_data_round_trips() {
    let event = EventBuilderV10::new()
        .id("no-data-1")
        .source("/tests")
        .ty("dev.example.empty.v1")
        .build()
        .unwrap();

    let response = send(to_request(event, "/").unwrap()).await;

    assert_eq!(response.status(), StatusCode::OK);
    let reply = reply_from_response(response).await.unwrap().unwrap();
    assert_eq!(reply.id(), "no-data-1");
    assert!(reply.data().is_none(), "{:?}", reply.data());
}
