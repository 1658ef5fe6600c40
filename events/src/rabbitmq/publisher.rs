//! Publishing to RabbitMQ with publisher confirms, and [`RabbitBroker`].
//!
//! A [`Publisher`] keeps one connection with one confirm-mode channel and
//! declares the topology it publishes into each time it connects. A publish
//! that fails because the channel or connection is gone (RabbitMQ restarted,
//! the network dropped) is retried on a fresh connection, with backoff, for a
//! bounded time. Publishing is therefore at-least-once: when the connection
//! drops after RabbitMQ stored a message but before its confirm arrived, the
//! retry stores it again.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use cloudevents::{AttributesReader, Event};
use lapin::{
    Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::ShortString,
};
use tokio::{sync::Mutex, time::Instant};
use tracing::{debug, info, warn};

use super::{
    connection::{self, Backoff},
    message::{AmqpMessage, encode},
    topology,
};
use crate::{
    Error,
    broker::Broker,
    triggers::{Routes, Trigger},
};

/// How long a publish keeps retrying on fresh connections before it fails.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Maximum wait for RabbitMQ to confirm one message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes messages with confirms and reconnects when the connection drops.
pub(crate) struct Publisher {
    url: String,
    /// Shown by RabbitMQ in its connection list.
    connection_name: String,
    /// Brokers whose exchanges are declared on each connection.
    brokers: Vec<String>,
    /// Triggers whose queues are declared on each connection, so that events
    /// published before any dispatcher runs are kept.
    triggers: Vec<Trigger>,
    session: Mutex<Option<Session>>,
    /// Connection attempts so far; numbers the sessions.
    generations: AtomicU64,
    closed: AtomicBool,
}

/// One connection and its confirm-mode channel.
struct Session {
    connection: Connection,
    channel: Channel,
    /// Tells sessions apart, so a failed publish discards only the session it used.
    generation: u64,
}

/// The cause of a failed publish attempt.
enum AttemptError {
    /// RabbitMQ received the message and rejected it, so retrying will not help.
    Nacked,
    /// The channel or connection failed, and a fresh one may succeed.
    Channel(String),
}

impl Publisher {
    pub(crate) fn new(
        url: &str,
        connection_name: &str,
        brokers: Vec<String>,
        triggers: Vec<Trigger>,
    ) -> Result<Publisher, Error> {
        connection::check_url(url)?;
        for broker in &brokers {
            topology::short(topology::exchange_name(broker))?;
        }
        for trigger in &triggers {
            topology::check_names(trigger)?;
        }
        Ok(Publisher {
            url: url.to_owned(),
            connection_name: connection_name.to_owned(),
            brokers,
            triggers,
            session: Mutex::new(None),
            generations: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Publishes `message` to `exchange` and waits for its confirm, retrying
    /// on fresh connections for up to `retry_window`.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when RabbitMQ nacks the message, when no attempt
    /// succeeded within `retry_window`, or after [`Publisher::close`].
    pub(crate) async fn publish(
        &self,
        exchange: &ShortString,
        message: &AmqpMessage,
        retry_window: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + retry_window;
        let mut backoff = Backoff::new();
        for attempt in 1u32.. {
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Unavailable(
                    "the RabbitMQ publisher is closed".to_owned(),
                ));
            }
            let cause = match self.channel().await {
                Ok((channel, generation)) => {
                    match publish_once(&channel, exchange, message).await {
                        Ok(()) => return Ok(()),
                        Err(AttemptError::Nacked) => {
                            return Err(Error::Unavailable(format!(
                                "RabbitMQ rejected (nacked) the message for exchange {exchange}"
                            )));
                        }
                        Err(AttemptError::Channel(cause)) => {
                            self.discard(generation).await;
                            cause
                        }
                    }
                }
                Err(err) => err.to_string(),
            };

            let delay = backoff.next_delay();
            if Instant::now() + delay > deadline {
                return Err(Error::Unavailable(format!(
                    "publishing to exchange {exchange} failed for {}s, after {attempt} attempts: {cause}",
                    retry_window.as_secs_f32()
                )));
            }
            warn!(%exchange, attempt, retry_in_ms = delay.as_millis() as u64, %cause, "publishing to RabbitMQ failed; retrying on a new connection");
            tokio::time::sleep(delay).await;
        }
        unreachable!("the attempt counter does not run out")
    }

    /// Opens the connection and declares the topology now, instead of at the first publish.
    pub(crate) async fn connect(&self) -> Result<(), Error> {
        self.channel().await.map(|_| ())
    }

    /// Closes the connection. Later publishes fail.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(session) = self.session.lock().await.take() {
            connection::close(&session.connection).await;
        }
    }

    /// Returns the channel of the current session, after opening a new
    /// session when there is none or the current one is no longer connected.
    async fn channel(&self) -> Result<(Channel, u64), Error> {
        let mut session = self.session.lock().await;
        if let Some(current) = session.as_ref() {
            if current.connection.status().connected() && current.channel.status().connected() {
                return Ok((current.channel.clone(), current.generation));
            }
            debug!(
                generation = current.generation,
                "the RabbitMQ connection is no longer open"
            );
        }
        if let Some(old) = session.take() {
            connection::close(&old.connection).await;
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let new = self.open(generation).await?;
        let channel = new.channel.clone();
        *session = Some(new);
        Ok((channel, generation))
    }

    async fn open(&self, generation: u64) -> Result<Session, Error> {
        let connection = connection::connect(&self.url, &self.connection_name).await?;
        let result = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(|err| Error::Unavailable(format!("opening a channel failed: {err}")))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|err| {
                    Error::Unavailable(format!("enabling publisher confirms failed: {err}"))
                })?;
            for broker in &self.brokers {
                topology::declare_exchange(&channel, broker).await?;
            }
            for trigger in &self.triggers {
                topology::declare_trigger(&channel, trigger).await?;
            }
            Ok(channel)
        }
        .await;
        match result {
            Ok(channel) => {
                info!(
                    url = %connection::redact(&self.url),
                    connection = %self.connection_name,
                    generation,
                    "publisher connected to RabbitMQ"
                );
                Ok(Session {
                    connection,
                    channel,
                    generation,
                })
            }
            Err(err) => {
                connection::close(&connection).await;
                Err(err)
            }
        }
    }

    /// Drops the session `generation` after a failure, unless another
    /// publish has replaced it already.
    async fn discard(&self, generation: u64) {
        let mut session = self.session.lock().await;
        if session
            .as_ref()
            .is_some_and(|current| current.generation == generation)
            && let Some(old) = session.take()
        {
            drop(session);
            connection::close(&old.connection).await;
            debug!(
                generation,
                "discarded the RabbitMQ session after a failed publish"
            );
        }
    }
}

/// Publishes once and waits for the confirm.
async fn publish_once(
    channel: &Channel,
    exchange: &ShortString,
    message: &AmqpMessage,
) -> Result<(), AttemptError> {
    let attempt = async {
        let confirm = channel
            .basic_publish(
                exchange.clone(),
                ShortString::default(),
                BasicPublishOptions::default(),
                &message.body,
                message.properties.clone(),
            )
            .await?;
        confirm.await
    };
    match tokio::time::timeout(CONFIRM_TIMEOUT, attempt).await {
        Ok(Ok(confirmation)) if confirmation.is_ack() => Ok(()),
        Ok(Ok(_)) => Err(AttemptError::Nacked),
        Ok(Err(err)) => Err(AttemptError::Channel(err.to_string())),
        Err(_) => Err(AttemptError::Channel(format!(
            "no confirm within {}s",
            CONFIRM_TIMEOUT.as_secs()
        ))),
    }
}

/// A [`Broker`] backed by RabbitMQ, laid out as the Knative RabbitMQ Broker
/// lays it out: see [`topology`](super::topology).
///
/// Publishing returns once RabbitMQ has confirmed that it stored the event in
/// every matching Trigger queue. The dispatchers started by
/// [`run_dispatchers`](super::run_dispatchers) deliver it from there. An
/// event that no Trigger matches is dropped, as a Knative Broker drops it.
#[derive(Clone)]
pub struct RabbitBroker {
    publisher: std::sync::Arc<Publisher>,
    exchange: ShortString,
    retry_window: Duration,
}

impl RabbitBroker {
    /// Creates a broker that publishes to the exchange of the Broker named
    /// `broker` and declares the queues of its Triggers in `routes`. The
    /// connection opens at the first publish or at [`RabbitBroker::connect`].
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when `amqp_url` is not an AMQP URL,
    /// [`Error::InvalidTrigger`] when a name is too long for RabbitMQ.
    pub fn new(amqp_url: &str, routes: &Routes, broker: &str) -> Result<RabbitBroker, Error> {
        let triggers = routes
            .triggers
            .iter()
            .filter(|trigger| trigger.broker == broker)
            .cloned()
            .collect();
        let publisher = Publisher::new(
            amqp_url,
            &format!("alchemist publisher of broker {broker}"),
            vec![broker.to_owned()],
            triggers,
        )?;
        Ok(RabbitBroker {
            publisher: std::sync::Arc::new(publisher),
            exchange: topology::short(topology::exchange_name(broker))?,
            retry_window: DEFAULT_RETRY_WINDOW,
        })
    }

    /// Sets how long a publish retries on fresh connections before it fails
    /// (default [`DEFAULT_RETRY_WINDOW`]).
    pub fn with_retry_window(mut self, retry_window: Duration) -> RabbitBroker {
        self.retry_window = retry_window;
        self
    }

    /// Connects and declares the exchange and Trigger queues now.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when RabbitMQ cannot be reached or rejects a declaration.
    pub async fn connect(&self) -> Result<(), Error> {
        self.publisher.connect().await
    }

    /// Closes the connection. Publishing afterwards fails with [`Error::Unavailable`].
    pub async fn close(&self) {
        self.publisher.close().await;
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn publish(&self, event: Event) -> Result<(), Error> {
        let message = encode(&event)?;
        self.publisher
            .publish(&self.exchange, &message, self.retry_window)
            .await?;
        debug!(ce_id = %event.id(), ce_type = %event.ty(), exchange = %self.exchange, "event published to RabbitMQ");
        Ok(())
    }
}
