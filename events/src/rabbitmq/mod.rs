//! A RabbitMQ broker laid out like the Knative RabbitMQ Broker and routed by
//! the same Trigger manifests.
//!
//! # Layout
//!
//! - [`message`]: CloudEvents as AMQP messages (attributes in `ce-*`
//!   headers, data as the body, `datacontenttype` as `content-type`).
//! - [`topology`]: the exchange of each Broker, and the queue, binding and
//!   dead-letter queue of each Trigger, with their names.
//! - [`publisher`]: [`RabbitBroker`], the [`Broker`](crate::broker::Broker)
//!   that publishes with confirms and reconnects after a lost connection.
//! - [`dispatcher`]: [`run_dispatchers`], one consumer per Trigger that POSTs
//!   events to its subscriber and follows the Trigger's delivery spec.
//! - `connection`: connecting, and the backoff between reconnections.
//!
//! Delivery is at-least-once at every step: a publish retried after a lost
//! confirm, a message redelivered after a lost ack, and an event published
//! twice all reach the subscriber more than once. Consumers deduplicate on
//! the event's `source` + `id`.

mod connection;
pub mod dispatcher;
pub mod message;
pub mod publisher;
pub mod topology;

pub use connection::check_url;
pub use dispatcher::{DispatcherOptions, run_dispatchers};
pub use publisher::RabbitBroker;

/// The Broker that `knative/base/broker.yaml` declares and every Trigger in
/// `knative/base/triggers.yaml` names.
pub const DEFAULT_BROKER: &str = "alchemist";
