//! The RabbitMQ exchanges and queues behind a Broker and its Triggers.
//!
//! For a Broker `B` and a Trigger `T`:
//!
//! | object | name | kind |
//! | --- | --- | --- |
//! | Broker exchange | `alchemist.broker.B` | durable `headers` exchange |
//! | Trigger queue | `alchemist.trigger.T` | durable quorum queue, bound to the Broker exchange |
//! | dead-letter exchange | `alchemist.trigger.T.dlx` | durable `fanout` exchange |
//! | dead-letter queue | `alchemist.trigger.T.dlq` | durable quorum queue, bound to the dead-letter exchange |
//!
//! The binding of a Trigger queue has the arguments `x-match: all` and one
//! `ce-<attribute>: <value>` pair per filter attribute, so the exchange routes
//! an event to every Trigger whose filter its headers match, exactly as
//! Knative's exact-match filters do. A Trigger without a filter gets every event.
//! The Trigger queue dead-letters to its dead-letter exchange, so a message
//! the dispatcher rejects (one that is not a CloudEvent) lands in the
//! dead-letter queue too.
//!
//! Quorum queues follow `queueType: quorum` of the Broker's
//! `RabbitmqBrokerConfig` in `knative/base/broker.yaml`.
//!
//! Declaring is idempotent, so the publisher and every dispatcher declare
//! what they use on each (re)connection, and whichever starts first creates it.
//!
//! NOTE: bindings only ever get added. When a Trigger's filter changes, the
//! binding of the old filter stays until it is removed by hand (or the queue
//! is deleted), so the queue still receives the old filter's events.

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use super::message::header_name;
use crate::{Error, triggers::Trigger};

/// Prefix of every exchange and queue name.
pub const NAME_PREFIX: &str = "alchemist";

/// Returns the name of the headers exchange of the Broker named `broker`.
pub fn exchange_name(broker: &str) -> String {
    format!("{NAME_PREFIX}.broker.{broker}")
}

/// Returns the name of the queue that the dispatcher of the Trigger named
/// `trigger` consumes.
pub fn queue_name(trigger: &str) -> String {
    format!("{NAME_PREFIX}.trigger.{trigger}")
}

/// Returns the name of the exchange that feeds the Trigger's dead-letter queue.
pub fn dead_letter_exchange_name(trigger: &str) -> String {
    format!("{NAME_PREFIX}.trigger.{trigger}.dlx")
}

/// Returns the name of the queue that keeps every event the Trigger gave up on.
pub fn dead_letter_queue_name(trigger: &str) -> String {
    format!("{NAME_PREFIX}.trigger.{trigger}.dlq")
}

/// Converts a name to an AMQP short string (at most 255 bytes).
pub(crate) fn short(name: String) -> Result<ShortString, Error> {
    ShortString::try_new(name.clone()).map_err(|_| {
        Error::InvalidTrigger(format!(
            "the RabbitMQ name {name} is longer than 255 bytes; shorten the Broker or Trigger name"
        ))
    })
}

/// Checks that every name derived from `trigger` is a valid AMQP name.
///
/// # Errors
///
/// [`Error::InvalidTrigger`] when a name or a filter attribute is too long.
pub fn check_names(trigger: &Trigger) -> Result<(), Error> {
    short(exchange_name(&trigger.broker))?;
    short(dead_letter_queue_name(&trigger.name))?;
    short(dead_letter_exchange_name(&trigger.name))?;
    binding_arguments(trigger)?;
    Ok(())
}

fn unavailable(what: &str, name: &str) -> impl FnOnce(lapin::Error) -> Error {
    let context = format!("{what} {name}");
    move |err| Error::Unavailable(format!("{context} failed: {err}"))
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn quorum_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments
}

/// Builds the binding arguments that make the headers exchange apply the Trigger's filter.
fn binding_arguments(trigger: &Trigger) -> Result<FieldTable, Error> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-match".into(),
        AMQPValue::LongString(LongString::from("all")),
    );
    for (attribute, value) in &trigger.filter {
        arguments.insert(
            short(header_name(attribute))?,
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    Ok(arguments)
}

/// Declares the headers exchange of the Broker named `broker`.
///
/// # Errors
///
/// [`Error::InvalidTrigger`] when the name is too long, [`Error::Unavailable`]
/// when RabbitMQ fails the declaration.
pub async fn declare_exchange(channel: &Channel, broker: &str) -> Result<(), Error> {
    let exchange = exchange_name(broker);
    channel
        .exchange_declare(
            short(exchange.clone())?,
            ExchangeKind::Headers,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(unavailable("declaring the exchange", &exchange))
}

/// Declares the Broker exchange, queue, binding and dead-letter objects of `trigger`.
///
/// # Errors
///
/// [`Error::InvalidTrigger`] when a name is too long, [`Error::Unavailable`]
/// when RabbitMQ fails a declaration, for example because a queue of the same
/// name exists with other arguments.
pub async fn declare_trigger(channel: &Channel, trigger: &Trigger) -> Result<(), Error> {
    let exchange = exchange_name(&trigger.broker);
    let queue = queue_name(&trigger.name);
    let dead_letter_exchange = dead_letter_exchange_name(&trigger.name);
    let dead_letter_queue = dead_letter_queue_name(&trigger.name);

    declare_exchange(channel, &trigger.broker).await?;

    channel
        .exchange_declare(
            short(dead_letter_exchange.clone())?,
            ExchangeKind::Fanout,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(unavailable("declaring the exchange", &dead_letter_exchange))?;
    channel
        .queue_declare(
            short(dead_letter_queue.clone())?,
            QueueDeclareOptions::durable(),
            quorum_queue_arguments(),
        )
        .await
        .map_err(unavailable("declaring the queue", &dead_letter_queue))?;
    channel
        .queue_bind(
            short(dead_letter_queue.clone())?,
            short(dead_letter_exchange.clone())?,
            ShortString::default(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(unavailable("binding the queue", &dead_letter_queue))?;

    let mut queue_arguments = quorum_queue_arguments();
    queue_arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dead_letter_exchange.as_str())),
    );
    channel
        .queue_declare(
            short(queue.clone())?,
            QueueDeclareOptions::durable(),
            queue_arguments,
        )
        .await
        .map_err(unavailable("declaring the queue", &queue))?;
    channel
        .queue_bind(
            short(queue.clone())?,
            short(exchange)?,
            ShortString::default(),
            QueueBindOptions::default(),
            binding_arguments(trigger)?,
        )
        .await
        .map_err(unavailable("binding the queue", &queue))
}

/// Deletes the queues and the dead-letter exchange of `trigger`, with the
/// messages they hold. The Broker exchange stays, because other Triggers may
/// use it; [`delete_exchange`] removes it.
///
/// # Errors
///
/// [`Error::Unavailable`] when RabbitMQ fails a deletion.
pub async fn delete_trigger(channel: &Channel, trigger: &Trigger) -> Result<(), Error> {
    for queue in [
        queue_name(&trigger.name),
        dead_letter_queue_name(&trigger.name),
    ] {
        channel
            .queue_delete(short(queue.clone())?, QueueDeleteOptions::default())
            .await
            .map_err(unavailable("deleting the queue", &queue))?;
    }
    let dead_letter_exchange = dead_letter_exchange_name(&trigger.name);
    channel
        .exchange_delete(
            short(dead_letter_exchange.clone())?,
            ExchangeDeleteOptions::default(),
        )
        .await
        .map_err(unavailable("deleting the exchange", &dead_letter_exchange))
}

/// Deletes the exchange of the Broker named `broker`.
///
/// # Errors
///
/// [`Error::Unavailable`] when RabbitMQ fails the deletion.
pub async fn delete_exchange(channel: &Channel, broker: &str) -> Result<(), Error> {
    let exchange = exchange_name(broker);
    channel
        .exchange_delete(short(exchange.clone())?, ExchangeDeleteOptions::default())
        .await
        .map_err(unavailable("deleting the exchange", &exchange))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::triggers::{Delivery, Destination};

    fn trigger(name: &str, filter: &[(&str, &str)]) -> Trigger {
        Trigger {
            name: name.to_owned(),
            broker: "alchemist".to_owned(),
            filter: filter
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            subscriber: Destination {
                service: "convert".to_owned(),
                path: "/".to_owned(),
            },
            delivery: Delivery::default(),
            parallelism: None,
        }
    }

    #[test]
    fn names_follow_the_pattern() {
        assert_eq!(exchange_name("alchemist"), "alchemist.broker.alchemist");
        assert_eq!(queue_name("t"), "alchemist.trigger.t");
        assert_eq!(dead_letter_exchange_name("t"), "alchemist.trigger.t.dlx");
        assert_eq!(dead_letter_queue_name("t"), "alchemist.trigger.t.dlq");
    }

    #[test]
    fn binding_matches_all_filter_headers() {
        let arguments =
            binding_arguments(&trigger("t", &[("type", "a.b.v1"), ("source", "/up")])).unwrap();
        let text = |key: &str| match arguments.inner().get(key) {
            Some(AMQPValue::LongString(value)) => value.to_string(),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(text("x-match"), "all");
        assert_eq!(text("ce-type"), "a.b.v1");
        assert_eq!(text("ce-source"), "/up");
        assert_eq!(arguments.inner().len(), 3);
    }

    #[test]
    fn overlong_names_are_rejected() {
        let long = "t".repeat(250);
        let err = check_names(&trigger(&long, &[])).unwrap_err();
        assert!(matches!(err, Error::InvalidTrigger(_)), "{err}");
        assert!(check_names(&trigger("convert-on-video-uploaded", &[("type", "x")])).is_ok());
    }
}
