//! The [`Broker`] trait and the in-process broker.
//!
//! A function publishes through a `Broker` and never learns where events go:
//! the routes come from the Trigger manifests. The in-process broker delivers
//! by calling each subscriber's axum `Router` directly, with the same HTTP
//! requests a Knative broker would send, and follows each Trigger's delivery
//! spec: retries with backoff, then the dead-letter sink. Reply events in a
//! subscriber's response are published again, as Knative does.
//!
//! NOTE: the in-process broker keeps events in memory only. An event still in
//! flight when the process stops is lost; the RabbitMQ broker is the durable one.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use async_trait::async_trait;
use axum::Router;
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::{
    Error,
    http::{reply_from_response, to_request},
    triggers::{Destination, Routes, Trigger},
};

/// Something events can be published to.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Accepts `event` for delivery to every matching Trigger.
    ///
    /// Returns once the broker has taken responsibility for the event, not
    /// once it is delivered.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the broker cannot take the event.
    async fn publish(&self, event: Event) -> Result<(), Error>;
}

/// Dispatcher concurrency of a Trigger without the parallelism annotation.
const DEFAULT_PARALLELISM: usize = 16;

/// Delivers events in-process to subscriber routers, following Trigger manifests.
#[derive(Clone)]
pub struct InMemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Vec<Route>,
    subscribers: RwLock<HashMap<String, Router>>,
    tasks: TaskTracker,
}

struct Route {
    trigger: Trigger,
    /// Bounds the deliveries in flight on this Trigger.
    permits: Arc<Semaphore>,
}

impl InMemoryBroker {
    /// Creates a broker for `routes`. `parallelism` overrides the dispatcher
    /// concurrency of the named Triggers.
    pub fn new(routes: Routes, parallelism: &HashMap<String, usize>) -> InMemoryBroker {
        let routes = routes
            .triggers
            .into_iter()
            .map(|trigger| {
                let permits = parallelism
                    .get(&trigger.name)
                    .copied()
                    .or(trigger.parallelism)
                    .unwrap_or(DEFAULT_PARALLELISM)
                    .max(1);
                Route {
                    trigger,
                    permits: Arc::new(Semaphore::new(permits)),
                }
            })
            .collect();
        InMemoryBroker {
            inner: Arc::new(Inner {
                routes,
                subscribers: RwLock::new(HashMap::new()),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Registers the router of the Knative Service named `service`.
    pub fn subscribe(&self, service: &str, router: Router) {
        self.inner
            .subscribers
            .write()
            .expect("subscriber map lock is not poisoned")
            .insert(service.to_owned(), router);
    }

    /// Stops accepting events and waits until every delivery in flight,
    /// including the replies they cause, has finished.
    pub async fn shutdown(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn router(&self, service: &str) -> Option<Router> {
        self.inner
            .subscribers
            .read()
            .expect("subscriber map lock is not poisoned")
            .get(service)
            .cloned()
    }

    /// Delivers to one Trigger's subscriber with retries, then to its dead-letter sink.
    async fn dispatch(self, index: usize, event: Event) {
        let route = &self.inner.routes[index];
        let trigger = &route.trigger;
        let _permit = route
            .permits
            .acquire()
            .await
            .expect("route semaphores are never closed");

        let mut last_error = String::new();
        for attempt in 0..=trigger.delivery.retry {
            if attempt > 0 {
                tokio::time::sleep(trigger.delivery.backoff(attempt)).await;
            }
            match self.deliver(&trigger.subscriber, event.clone()).await {
                Ok(reply) => {
                    debug!(attempt, "delivered");
                    if let Some(reply) = reply {
                        self.publish_reply(reply);
                    }
                    return;
                }
                Err(err) => {
                    warn!(attempt, cause = %err, "delivery failed");
                    last_error = err.to_string();
                    if !is_retryable(&err) {
                        break;
                    }
                }
            }
        }

        let Some(sink) = &trigger.delivery.dead_letter_sink else {
            error!(cause = %last_error, "delivery failed after every retry and the Trigger has no dead-letter sink; the event is dropped");
            return;
        };
        let dead_letter = with_error_extensions(event, &trigger.subscriber.service, &last_error);
        match self.deliver(sink, dead_letter).await {
            Ok(_) => info!(sink = %sink.service, "event sent to the dead-letter sink"),
            Err(err) => error!(cause = %err, "dead-letter delivery failed; the event is dropped"),
        }
    }

    /// Sends one event to one destination; a non-2xx answer is an error.
    async fn deliver(
        &self,
        destination: &Destination,
        event: Event,
    ) -> Result<Option<Event>, Error> {
        let failed = |reason: String| Error::Delivery {
            subscriber: destination.service.clone(),
            reason,
        };
        let router = self
            .router(&destination.service)
            .ok_or_else(|| failed("no such service is running in this process".to_owned()))?;
        let request = to_request(event, &destination.path)?;
        let response = router
            .oneshot(request)
            .await
            .expect("axum routers are infallible");
        let status = response.status();
        if !status.is_success() {
            return Err(Error::Rejected {
                subscriber: destination.service.clone(),
                status: status.as_u16(),
            });
        }
        reply_from_response(response).await
    }

    fn publish_reply(&self, reply: Event) {
        // Routed without the shut-down check: a reply of a delivery that was
        // in flight at shutdown is part of the work shutdown() waits for.
        self.route(reply);
    }
}

impl InMemoryBroker {
    /// Starts one delivery per Trigger that matches `event`.
    fn route(&self, event: Event) {
        let event_type = event.ty().to_owned();
        let mut matched = false;
        for (index, route) in self.inner.routes.iter().enumerate() {
            if !route.trigger.matches(|name| attribute(&event, name)) {
                continue;
            }
            matched = true;
            let span = info_span!(
                "dispatch",
                trigger = %route.trigger.name,
                ce_id = %event.id(),
                ce_type = %event_type,
                ce_subject = event.subject().unwrap_or_default(),
            );
            self.inner
                .tasks
                .spawn(self.clone().dispatch(index, event.clone()).instrument(span));
        }
        if !matched {
            debug!(ce_type = %event_type, ce_id = %event.id(), "no Trigger matches the event");
        }
    }
}

#[async_trait]
impl Broker for InMemoryBroker {
    async fn publish(&self, event: Event) -> Result<(), Error> {
        if self.inner.tasks.is_closed() {
            return Err(Error::Unavailable(
                "the in-process broker is shut down".to_owned(),
            ));
        }
        self.route(event);
        Ok(())
    }
}

/// Whether Knative Eventing would retry after this failure: network errors
/// and the statuses its dispatcher treats as transient (5xx, 404, 408, 409,
/// 429). Any other answer, such as 400 for a malformed event, goes straight
/// to the dead-letter sink.
fn is_retryable(err: &Error) -> bool {
    match err {
        Error::Rejected { status, .. } => matches!(status, 404 | 408 | 409 | 429 | 500..=599),
        _ => true,
    }
}

/// Reads a context attribute or extension as text, for Trigger filters.
fn attribute<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    match name {
        "type" => Some(event.ty()),
        "source" => Some(event.source().as_str()),
        "subject" => event.subject(),
        "id" => Some(event.id()),
        _ => match event.extension(name) {
            Some(cloudevents::event::ExtensionValue::String(text)) => Some(text.as_str()),
            _ => None,
        },
    }
}

/// Adds the extensions Knative sets on dead-lettered events: where delivery
/// failed and why.
pub fn with_error_extensions(event: Event, destination: &str, error: &str) -> Event {
    let mut builder = EventBuilderV10::from(event);
    builder = builder
        .extension("knativeerrordest", destination)
        .extension("knativeerrordata", error);
    builder
        .build()
        .expect("an event rebuilt from a valid event is valid")
}
