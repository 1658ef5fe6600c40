//! Dispatchers: one per Trigger, from its queue to its subscriber over HTTP.
//!
//! Each dispatcher consumes its Trigger queue with a prefetch limit and hands
//! at most `parallelism` events to the subscriber at once. For each message:
//!
//! 1. The message is read back into a CloudEvent. A message that is not one
//!    is rejected, and RabbitMQ moves it to the Trigger's dead-letter queue.
//! 2. The event is POSTed in binary mode to the subscriber's URL. Network
//!    errors and the statuses Knative retries (5xx, 404, 408, 409, 429) are
//!    retried per the Trigger's delivery spec. Any other non-2xx status gives
//!    up at once.
//! 3. On a 2xx response, a reply event in the response is published to the
//!    Broker exchange, with confirms, before the message is acked.
//! 4. When delivery gives up, the event gets the `knativeerrordest`,
//!    `knativeerrorcode` and `knativeerrordata` extensions, is published to the
//!    dead-letter queue, and is then POSTed to the dead-letter sink. Only then
//!    is the message acked. The copy in the dead-letter queue stays there even
//!    when the sink is down.
//!
//! A message is acked only after one of these outcomes. While it waits for
//! a retry it stays unacked, and the retry count lives in memory. When the
//! dispatcher stops or crashes meanwhile, RabbitMQ redelivers the message and
//! the count starts again from zero. Delivery is therefore at-least-once, and
//! subscribers must be idempotent on `source` + `id`.
//!
//! When the connection drops, the dispatcher reconnects with backoff and
//! consumes again. RabbitMQ redelivers every message that was not acked on
//! the old connection.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    sync::Arc,
    time::Duration,
};

use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use futures::StreamExt;
use lapin::{
    Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::{FieldTable, ShortString},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};
use url::Url;

use super::{
    connection::{self, Backoff},
    message::{decode, encode},
    publisher::{DEFAULT_RETRY_WINDOW, Publisher},
    topology,
};
use crate::{
    Error,
    http::{MAX_EVENT_BYTES, reply_from_response, to_request},
    triggers::{Destination, Routes, Trigger},
};

/// Default timeout of one HTTP request to a subscriber. It matches the
/// `timeoutSeconds` of the convert Service in `knative/base/convert.yaml`,
/// because convert responds only when its ffmpeg run is over.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// Maximum bytes of a failed response body kept in `knativeerrordata`. Knative
/// Eventing cuts that extension at the same length
/// (`KnativeErrorDataExtensionMaxLength`).
const ERROR_DATA_LIMIT: usize = 1024;

/// Settings of [`run_dispatchers`] that the Trigger manifests do not carry.
#[derive(Debug, Clone)]
pub struct DispatcherOptions {
    /// Messages RabbitMQ sends to a dispatcher ahead of its acks (the
    /// `basic.qos` prefetch count). `None` uses the Trigger's parallelism.
    pub prefetch: Option<u16>,
    /// Parallelism by Trigger name, overriding the Trigger's
    /// `rabbitmq.eventing.knative.dev/parallelism` annotation. A Trigger in
    /// neither place gets 1, as in the Knative RabbitMQ Broker.
    pub parallelism: HashMap<String, usize>,
    /// Timeout of one HTTP request to a subscriber or dead-letter sink.
    pub request_timeout: Duration,
    /// How long publishing a reply or a dead-letter record retries on fresh
    /// connections before the message is requeued.
    pub publish_retry_window: Duration,
}

impl Default for DispatcherOptions {
    fn default() -> Self {
        DispatcherOptions {
            prefetch: None,
            parallelism: HashMap::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            publish_retry_window: DEFAULT_RETRY_WINDOW,
        }
    }
}

/// Runs one dispatcher per Trigger in `routes` until `shutdown` completes,
/// then stops consuming and waits for the deliveries in flight.
///
/// `service_urls` maps the name of each Knative Service that a Trigger sends
/// to, as subscriber or dead-letter sink, to the base URL it listens on. The
/// destination's path is appended to that URL. A lost connection is retried for as
/// long as the dispatchers run, so this returns only after `shutdown`.
///
/// A delivery that waits for a retry when `shutdown` completes is not retried
/// again: its message goes back to the queue for the next dispatcher.
///
/// # Errors
///
/// [`Error::Unavailable`] when `amqp_url` is not an AMQP URL, and
/// [`Error::InvalidTrigger`] when a Service has no URL or a name is too long
/// for RabbitMQ. Both are checked before anything connects.
pub async fn run_dispatchers(
    amqp_url: &str,
    routes: &Routes,
    service_urls: &HashMap<String, Url>,
    options: DispatcherOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    connection::check_url(amqp_url)?;
    check_service_urls(routes, service_urls)?;
    for name in options.parallelism.keys() {
        if !routes.triggers.iter().any(|trigger| &trigger.name == name) {
            warn!(trigger = %name, "a parallelism is set for a Trigger that does not exist");
        }
    }

    let mut brokers: Vec<String> = routes
        .triggers
        .iter()
        .map(|trigger| trigger.broker.clone())
        .collect();
    brokers.sort();
    brokers.dedup();
    let publisher = Arc::new(Publisher::new(
        amqp_url,
        "alchemist dispatcher publisher",
        brokers,
        routes.triggers.clone(),
    )?);
    let client = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .build()
        .map_err(|err| Error::Unavailable(format!("building the HTTP client failed: {err}")))?;

    let mut dispatchers = Vec::new();
    for trigger in &routes.triggers {
        dispatchers.push(Arc::new(Dispatcher::new(
            amqp_url,
            trigger,
            service_urls,
            &options,
            publisher.clone(),
            client.clone(),
        )?));
    }

    let token = CancellationToken::new();
    let tasks = TaskTracker::new();
    for dispatcher in dispatchers {
        let span = info_span!("dispatcher", trigger = %dispatcher.trigger.name);
        tasks.spawn(dispatcher.run(token.clone()).instrument(span));
    }
    tasks.close();

    shutdown.await;
    info!(dispatchers = tasks.len(), "stopping the dispatchers");
    token.cancel();
    tasks.wait().await;
    publisher.close().await;
    info!("every dispatcher has stopped");
    Ok(())
}

/// Checks that every Service a Trigger names has a URL, and names all that do not.
fn check_service_urls(routes: &Routes, service_urls: &HashMap<String, Url>) -> Result<(), Error> {
    let mut missing = BTreeSet::new();
    for trigger in &routes.triggers {
        let destinations =
            std::iter::once(&trigger.subscriber).chain(&trigger.delivery.dead_letter_sink);
        for destination in destinations {
            if !service_urls.contains_key(&destination.service) {
                missing.insert(destination.service.as_str());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidTrigger(format!(
        "no URL is given for the Services {}",
        missing.into_iter().collect::<Vec<_>>().join(", ")
    )))
}

/// Returns the URL of a destination: the Service's base URL with the path appended.
fn destination_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

/// Returns whether Knative Eventing retries after this status, which is one
/// its dispatcher treats as transient. The in-process broker applies the same rule.
fn is_retryable_status(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429 | 500..=599)
}

/// The cause of a failed delivery attempt.
#[derive(Debug, Clone)]
struct Failure {
    /// The response status, when the destination sent a response.
    status: Option<u16>,
    /// Description of the failure, with the start of the response body when
    /// there was one.
    message: String,
    retryable: bool,
}

/// The end of the retries of one message.
enum Outcome {
    /// The subscriber accepted the event, with this reply. Boxed, because
    /// an event is ten times the size of the other variants.
    Delivered(Option<Box<Event>>),
    /// Every attempt failed, or one failed for good.
    Failed(Failure),
    /// Shutdown began while a retry was waiting.
    Interrupted,
}

/// Consumes one Trigger queue and delivers to its subscriber.
struct Dispatcher {
    url: String,
    trigger: Trigger,
    queue: ShortString,
    subscriber_url: Url,
    dead_letter_url: Option<Url>,
    reply_exchange: ShortString,
    dead_letter_exchange: ShortString,
    parallelism: usize,
    prefetch: u16,
    publisher: Arc<Publisher>,
    publish_retry_window: Duration,
    client: reqwest::Client,
}

impl Dispatcher {
    fn new(
        url: &str,
        trigger: &Trigger,
        service_urls: &HashMap<String, Url>,
        options: &DispatcherOptions,
        publisher: Arc<Publisher>,
        client: reqwest::Client,
    ) -> Result<Dispatcher, Error> {
        topology::check_names(trigger)?;
        let resolve = |destination: &Destination| {
            service_urls
                .get(&destination.service)
                .map(|base| destination_url(base, &destination.path))
                .ok_or_else(|| {
                    Error::InvalidTrigger(format!(
                        "no URL is given for the Service {}",
                        destination.service
                    ))
                })
        };
        let parallelism = options
            .parallelism
            .get(&trigger.name)
            .copied()
            .or(trigger.parallelism)
            .unwrap_or(1)
            .max(1);
        let prefetch = options
            .prefetch
            .unwrap_or_else(|| u16::try_from(parallelism).unwrap_or(u16::MAX))
            .max(1);
        Ok(Dispatcher {
            url: url.to_owned(),
            queue: topology::short(topology::queue_name(&trigger.name))?,
            subscriber_url: resolve(&trigger.subscriber)?,
            dead_letter_url: trigger
                .delivery
                .dead_letter_sink
                .as_ref()
                .map(resolve)
                .transpose()?,
            reply_exchange: topology::short(topology::exchange_name(&trigger.broker))?,
            dead_letter_exchange: topology::short(topology::dead_letter_exchange_name(
                &trigger.name,
            ))?,
            trigger: trigger.clone(),
            parallelism,
            prefetch,
            publisher,
            publish_retry_window: options.publish_retry_window,
            client,
        })
    }

    /// Consumes, reconnecting after every lost connection, until `token` is cancelled.
    async fn run(self: Arc<Self>, token: CancellationToken) {
        // Shared by all connections, so deliveries still running from a lost
        // connection count against the subscriber's parallelism.
        let permits = Arc::new(Semaphore::new(self.parallelism));
        let in_flight = TaskTracker::new();
        let mut backoff = Backoff::new();

        while !token.is_cancelled() {
            let Err(err) = self
                .consume(&token, &permits, &in_flight, &mut backoff)
                .await
            else {
                break;
            };
            let delay = backoff.next_delay();
            warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "consuming from RabbitMQ stopped; reconnecting");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = token.cancelled() => break,
            }
        }

        in_flight.close();
        in_flight.wait().await;
        info!("dispatcher stopped");
    }

    /// Consumes on one connection. Returns `Ok` after a shutdown, and an
    /// error when the connection or channel is lost.
    async fn consume(
        self: &Arc<Self>,
        token: &CancellationToken,
        permits: &Arc<Semaphore>,
        in_flight: &TaskTracker,
        backoff: &mut Backoff,
    ) -> Result<(), Error> {
        let name = format!("alchemist dispatcher of trigger {}", self.trigger.name);
        let connection = connection::connect(&self.url, &name).await?;
        let result = self
            .consume_on(&connection, token, permits, in_flight, backoff)
            .await;
        connection::close(&connection).await;
        result
    }

    async fn consume_on(
        self: &Arc<Self>,
        connection: &Connection,
        token: &CancellationToken,
        permits: &Arc<Semaphore>,
        in_flight: &TaskTracker,
        backoff: &mut Backoff,
    ) -> Result<(), Error> {
        let failed = |what: &str| {
            let what = what.to_owned();
            move |err: lapin::Error| Error::Unavailable(format!("{what} failed: {err}"))
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(failed("opening a channel"))?;
        topology::declare_trigger(&channel, &self.trigger).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(failed("setting the prefetch count"))?;
        let mut consumer = channel
            .basic_consume(
                self.queue.clone(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("starting the consumer"))?;
        backoff.reset();
        info!(queue = %self.queue, prefetch = self.prefetch, parallelism = self.parallelism, "consuming");

        loop {
            let delivery = tokio::select! {
                biased;
                () = token.cancelled() => break,
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(err)) => return Err(failed("consuming")(err)),
                    None => {
                        return Err(Error::Unavailable(
                            "RabbitMQ ended the consumer, because the channel, the connection or the queue is gone".to_owned(),
                        ));
                    }
                },
            };
            let permit = tokio::select! {
                biased;
                () = token.cancelled() => {
                    requeue(&delivery).await;
                    break;
                }
                permit = permits.clone().acquire_owned() => {
                    permit.expect("the dispatcher never closes its semaphore")
                }
            };
            let span = info_span!(
                "delivery",
                delivery_tag = delivery.delivery_tag,
                redelivered = delivery.redelivered,
                ce_id = field::Empty,
                ce_type = field::Empty,
            );
            in_flight.spawn(
                self.clone()
                    .handle(delivery, token.clone(), permit)
                    .instrument(span),
            );
        }

        // Shutdown: stop the flow of messages, then let the deliveries in
        // flight finish on this channel, so that their acks reach RabbitMQ.
        // Messages prefetched but not yet started go back to the queue when
        // the channel closes.
        if let Err(err) = channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
        {
            debug!(cause = %err, "cancelling the consumer failed");
        }
        in_flight.close();
        in_flight.wait().await;
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            channel.close(200, "shutdown".into()),
        )
        .await;
        Ok(())
    }

    /// Delivers one message and settles it with RabbitMQ.
    async fn handle(
        self: Arc<Self>,
        delivery: Delivery,
        token: CancellationToken,
        _permit: OwnedSemaphorePermit,
    ) {
        let event = match decode(&delivery.properties, delivery.data.clone()) {
            Ok(event) => event,
            Err(err) => {
                error!(cause = %err, "the message is not a CloudEvent; rejecting it to the dead-letter queue");
                reject(&delivery).await;
                return;
            }
        };
        Span::current().record("ce_id", event.id());
        Span::current().record("ce_type", event.ty());

        let failure = match self.deliver_with_retries(&event, &token).await {
            Outcome::Delivered(None) => {
                ack(&delivery).await;
                return;
            }
            Outcome::Delivered(Some(reply)) => match self.publish_reply(&reply).await {
                Ok(()) => {
                    ack(&delivery).await;
                    return;
                }
                Err(Error::InvalidEvent(reason)) => Failure {
                    status: None,
                    message: format!("the reply event cannot be published to RabbitMQ: {reason}"),
                    retryable: false,
                },
                Err(err) => {
                    error!(cause = %err, reply_id = %reply.id(), "publishing the reply event failed; the message goes back to the queue");
                    requeue(&delivery).await;
                    return;
                }
            },
            Outcome::Interrupted => {
                info!(
                    "shutdown began while a retry was waiting; the message goes back to the queue"
                );
                requeue(&delivery).await;
                return;
            }
            Outcome::Failed(failure) => failure,
        };

        match self.dead_letter(event, &failure).await {
            Ok(()) => ack(&delivery).await,
            Err(Error::InvalidEvent(reason)) => {
                error!(cause = %reason, "the dead-letter event cannot be encoded; rejecting the original message to the dead-letter queue");
                reject(&delivery).await;
            }
            Err(err) => {
                error!(cause = %err, "recording the event in the dead-letter queue failed; the message goes back to the queue");
                requeue(&delivery).await;
            }
        }
    }

    /// Sends `event` to the subscriber, retrying per the Trigger's delivery spec.
    async fn deliver_with_retries(&self, event: &Event, token: &CancellationToken) -> Outcome {
        let delivery = &self.trigger.delivery;
        let mut last_failure = None;
        for attempt in 0..=delivery.retry {
            if attempt > 0 {
                tokio::select! {
                    () = tokio::time::sleep(delivery.backoff(attempt)) => {}
                    () = token.cancelled() => return Outcome::Interrupted,
                }
            }
            match self
                .send(
                    &self.subscriber_url,
                    &self.trigger.subscriber.service,
                    event.clone(),
                )
                .await
            {
                Ok(reply) => {
                    debug!(attempt, "delivered");
                    return Outcome::Delivered(reply.map(Box::new));
                }
                Err(failure) => {
                    warn!(attempt, status = failure.status, retryable = failure.retryable, cause = %failure.message, "delivery failed");
                    let retryable = failure.retryable;
                    last_failure = Some(failure);
                    if !retryable {
                        break;
                    }
                }
            }
        }
        Outcome::Failed(last_failure.expect("the loop makes at least one attempt"))
    }

    /// POSTs `event` in binary mode to `url` and reads the reply event, if any.
    async fn send(&self, url: &Url, service: &str, event: Event) -> Result<Option<Event>, Failure> {
        let permanent = |message: String| Failure {
            status: None,
            message,
            retryable: false,
        };
        let request = to_request(event, url.as_str()).map_err(|err| permanent(err.to_string()))?;
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, MAX_EVENT_BYTES)
            .await
            .map_err(|err| permanent(format!("reading the event body failed: {err}")))?;

        let response = self
            .client
            .post(url.clone())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|err| Failure {
                status: None,
                message: format!("sending to {service} failed: {}", error_chain(&err)),
                retryable: true,
            })?;

        let status = response.status();
        if !status.is_success() {
            let rejected = Error::Rejected {
                subscriber: service.to_owned(),
                status: status.as_u16(),
            };
            let excerpt = read_excerpt(response).await;
            let message = if excerpt.is_empty() {
                rejected.to_string()
            } else {
                format!("{rejected}: {excerpt}")
            };
            return Err(Failure {
                status: Some(status.as_u16()),
                message,
                retryable: is_retryable_status(status.as_u16()),
            });
        }

        let invalid_reply = |reason: String| Failure {
            status: Some(status.as_u16()),
            message: format!("{service} responded {status} with an invalid reply event: {reason}"),
            retryable: false,
        };
        let headers = response.headers().clone();
        let body = read_limited(response)
            .await
            .map_err(|err| invalid_reply(err.to_string()))?;
        let mut reply = http::Response::new(axum::body::Body::from(body));
        *reply.status_mut() = status;
        *reply.headers_mut() = headers;
        reply_from_response(reply)
            .await
            .map_err(|err| invalid_reply(err.to_string()))
    }

    /// Publishes a reply event to the exchange of the Trigger's Broker.
    async fn publish_reply(&self, reply: &Event) -> Result<(), Error> {
        let message = encode(reply)?;
        self.publisher
            .publish(&self.reply_exchange, &message, self.publish_retry_window)
            .await?;
        debug!(reply_id = %reply.id(), reply_type = %reply.ty(), "reply event published");
        Ok(())
    }

    /// Records the event in the dead-letter queue, then sends it to the
    /// dead-letter sink. A failing sink is logged, because the dead-letter
    /// queue keeps the event.
    async fn dead_letter(&self, event: Event, failure: &Failure) -> Result<(), Error> {
        let dead_letter = with_failure_extensions(event, &self.subscriber_url, failure);
        let message = encode(&dead_letter)?;
        self.publisher
            .publish(
                &self.dead_letter_exchange,
                &message,
                self.publish_retry_window,
            )
            .await?;
        info!(status = failure.status, cause = %failure.message, "delivery failed for good; the event is in the dead-letter queue");

        let (Some(url), Some(sink)) = (
            &self.dead_letter_url,
            &self.trigger.delivery.dead_letter_sink,
        ) else {
            warn!(
                "the Trigger has no dead-letter sink; the event stays in the dead-letter queue only"
            );
            return Ok(());
        };
        match self.send(url, &sink.service, dead_letter).await {
            Ok(_) => info!(sink = %sink.service, "event sent to the dead-letter sink"),
            Err(sink_failure) => error!(
                sink = %sink.service,
                status = sink_failure.status,
                cause = %sink_failure.message,
                "sending to the dead-letter sink failed; the event stays in the dead-letter queue"
            ),
        }
        Ok(())
    }
}

/// Adds the extensions Knative sets on a dead-lettered event: the
/// destination URL that failed, its response status, and the error text.
fn with_failure_extensions(event: Event, destination: &Url, failure: &Failure) -> Event {
    let mut builder = EventBuilderV10::from(event)
        .extension("knativeerrordest", destination.as_str())
        .extension("knativeerrordata", header_safe(&failure.message));
    if let Some(status) = failure.status {
        builder = builder.extension("knativeerrorcode", status.to_string());
    }
    builder
        .build()
        .expect("an event rebuilt from a valid event is valid")
}

/// Makes `text` fit an HTTP header value: printable ASCII stays, other
/// characters become `\u{..}` escapes, and the result is cut at
/// [`ERROR_DATA_LIMIT`] bytes. The dead-letter event travels to the sink in
/// binary mode, where its extensions are headers.
fn header_safe(text: &str) -> String {
    let mut safe = String::new();
    for character in text.trim().chars() {
        if character == ' ' || character.is_ascii_graphic() {
            safe.push(character);
        } else {
            safe.extend(character.escape_unicode());
        }
        if safe.len() >= ERROR_DATA_LIMIT {
            safe.truncate(ERROR_DATA_LIMIT);
            break;
        }
    }
    safe
}

/// Joins the error and its sources, which carry the useful part of reqwest
/// errors ("connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads a reply body of at most [`MAX_EVENT_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| Error::InvalidEvent(format!("reading the reply failed: {err}")))?
    {
        if body.len() + chunk.len() > MAX_EVENT_BYTES {
            return Err(Error::BodyTooLarge {
                limit: MAX_EVENT_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the start of an error response body as text, for `knativeerrordata`.
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_DATA_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(ERROR_DATA_LIMIT);
    String::from_utf8_lossy(&body).trim().to_owned()
}

async fn ack(delivery: &Delivery) {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(true) => {}
        Ok(false) => warn!(
            "the ack was not sent because the channel is closed; RabbitMQ will redeliver the message"
        ),
        Err(err) => warn!(cause = %err, "the ack failed; RabbitMQ will redeliver the message"),
    }
}

/// Returns the message to its queue, for a later attempt.
async fn requeue(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(err) = delivery.nack(options).await {
        debug!(cause = %err, "the nack failed; RabbitMQ requeues the message when the channel closes");
    }
}

/// Rejects the message without requeueing it, so that RabbitMQ moves it to
/// the dead-letter exchange of its queue.
async fn reject(delivery: &Delivery) {
    let options = BasicRejectOptions { requeue: false };
    if let Err(err) = delivery.reject(options).await {
        warn!(cause = %err, "the reject failed; RabbitMQ will redeliver the message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_url_appends_the_path() {
        let base = Url::parse("http://127.0.0.1:8082").unwrap();
        assert_eq!(
            destination_url(&base, "/events/dead-letter").as_str(),
            "http://127.0.0.1:8082/events/dead-letter"
        );
        assert_eq!(
            destination_url(&base, "/").as_str(),
            "http://127.0.0.1:8082/"
        );
        let prefixed = Url::parse("http://127.0.0.1:8082/convert/").unwrap();
        assert_eq!(
            destination_url(&prefixed, "/events/dead-letter").as_str(),
            "http://127.0.0.1:8082/convert/events/dead-letter"
        );
    }

    #[test]
    fn retryable_statuses_follow_knative() {
        for status in [404, 408, 409, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(status), "{status}");
        }
        for status in [400, 401, 403, 410, 413, 422] {
            assert!(!is_retryable_status(status), "{status}");
        }
    }

    #[test]
    fn header_safe_escapes_and_truncates() {
        assert_eq!(
            header_safe(" line one\nline two "),
            "line one\\u{a}line two"
        );
        assert_eq!(header_safe("café"), "caf\\u{e9}");
        assert_eq!(header_safe(&"x".repeat(5000)).len(), ERROR_DATA_LIMIT);
    }

    #[test]
    fn missing_service_urls_are_all_named() {
        let routes = Routes::embedded();
        let urls = HashMap::from([(
            "notify".to_owned(),
            Url::parse("http://127.0.0.1:8083").unwrap(),
        )]);
        let err = check_service_urls(&routes, &urls).unwrap_err().to_string();
        assert!(err.contains("convert"), "{err}");
        assert!(!err.contains("notify"), "{err}");
    }

    #[test]
    fn failure_extensions_are_set() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/s")
            .ty("t.v1")
            .build()
            .unwrap();
        let failure = Failure {
            status: Some(503),
            message: "notify answered with status 503".to_owned(),
            retryable: true,
        };
        let url = Url::parse("http://127.0.0.1:1/").unwrap();
        let dead = with_failure_extensions(event, &url, &failure);
        let text = |name: &str| dead.extension(name).map(ToString::to_string);
        assert_eq!(text("knativeerrorcode").as_deref(), Some("503"));
        assert_eq!(
            text("knativeerrordata").as_deref(),
            Some("notify answered with status 503")
        );
        assert_eq!(
            text("knativeerrordest").as_deref(),
            Some("http://127.0.0.1:1/")
        );
    }
}
