//! The event contract between the Audio-Alchemist functions.
//!
//! # Layout
//!
//! - [`catalogue`]: the versioned event types, their payloads and JSON Schemas.
//! - [`http`]: CloudEvents over HTTP: a size-limited extractor that accepts
//!   binary and structured mode, and binary-mode requests and replies.
//! - [`triggers`]: Knative `Trigger` manifests parsed into routes with their
//!   delivery spec; the manifests in `knative/base/triggers.yaml` are compiled in.
//! - [`http_broker`]: publishing to an HTTP sink such as `K_SINK`.
//! - [`broker`]: the [`Broker`](broker::Broker) trait and the in-process broker
//!   that follows those routes.
//! - [`rabbitmq`]: the RabbitMQ broker and its per-Trigger dispatchers, which
//!   follow the same routes through RabbitMQ exchanges and queues.
//!
//! Events carry ids, never media bytes: the payloads name a job, its owner and
//! the blob ids that hold the video and the audio.

pub mod broker;
pub mod catalogue;
mod error;
pub mod http;
pub mod http_broker;
pub mod rabbitmq;
pub mod triggers;

pub use error::Error;
