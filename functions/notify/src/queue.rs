//! The durable webhook queue: every webhook is stored before its first
//! attempt and retried on its own schedule until the receiver takes it.
//!
//! A broker retries an event for seconds; a receiver can be down for hours.
//! So notify acknowledges the event as soon as the webhook is queued, and the
//! queue owns every attempt after that:
//!
//! - the first attempt runs at once, inside the request that queued it;
//! - a failed attempt is tried again after a delay that grows six times per
//!   attempt, from [`RetryPolicy::first_delay`] up to ten hours, until
//!   [`RetryPolicy::max_attempts`] have failed;
//! - [`run_retries`] sends the webhooks that are due, in every notify process,
//!   so a webhook queued by a process that died is sent by the next one.
//!
//! A sender takes a webhook by moving its next attempt past the end of the
//! request (a lease), so two processes never send it at the same time. A
//! sender that dies mid-request leaves a webhook that falls due again when
//! the lease ends. Receivers may still get a webhook twice, because the sender
//! can die after the receiver responded, and drop repeats by `webhook-id`, as
//! Standard Webhooks expects of them.

use std::{future::Future, sync::LazyLock, time::Duration};

use alchemist_runtime::{
    metrics::{OutcomeLabels, register_outcome_counter},
    millis, now_millis,
    store::{QueuedWebhook, WebhookDelivery, WebhookState},
};
use prometheus_client::metrics::{counter::Counter, family::Family};
use tracing::{Instrument, error, info, info_span, warn};

use crate::{
    AppState,
    webhook::{TargetError, resolve_allowed},
};

/// The maximum wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(10 * 60 * 60);

/// Webhooks taken from the queue in one pass of [`retry_due`].
const BATCH: u32 = 50;

/// `alchemist_webhook_attempts_total{outcome}`: webhook attempts by outcome:
/// `delivered`, `refused`, `failed` (tried again later) or `abandoned` (the
/// last attempt failed).
static ATTEMPTS: LazyLock<Family<OutcomeLabels, Counter>> = LazyLock::new(|| {
    register_outcome_counter(
        "webhook_attempts",
        "Webhook attempts by outcome: delivered, refused, failed (tried again later) or abandoned",
        ["delivered", "refused", "failed", "abandoned"],
    )
});

/// Registers the webhook metrics, so that their series exist before the
/// first attempt.
pub fn register_metrics() {
    LazyLock::force(&ATTEMPTS);
}

/// When failed webhooks are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included, before a webhook is abandoned.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; each later wait is six times
    /// the one before, up to ten hours.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    /// Eight attempts over about a day: at once, then after 5 s, 30 s, 3 min,
    /// 18 min, 1.8 h, 10 h and 10 h.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            first_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Returns the wait after `failed` failed attempts (counting from 1).
    pub fn delay_after(&self, failed: u32) -> Duration {
        let factor = 6u32.saturating_pow(failed.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(MAX_DELAY)
    }

    /// Returns how often [`run_retries`] looks for due webhooks: every fifth
    /// of the first delay, so that the first retry comes close to its time,
    /// and at least every five seconds.
    pub fn poll_interval(&self) -> Duration {
        (self.first_delay / 5).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }
}

/// Makes one attempt at a queued webhook, if it is still due and no other
/// sender has it, and records the outcome. Returns the webhook's new state,
/// or `None` when it was not taken.
///
/// # Errors
///
/// When the store fails.
pub async fn attempt(
    state: &AppState,
    webhook_id: &str,
) -> Result<Option<WebhookState>, alchemist_runtime::Error> {
    // The lease covers the address lookup and the request, each limited by
    // the timeout, with a margin.
    let lease = state
        .config
        .timeout
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(30));
    let lease_until = now_millis().saturating_add(millis(lease));
    let Some(webhook) = state.store.take_webhook(webhook_id, lease_until).await? else {
        return Ok(None);
    };
    let span = info_span!(
        "webhook",
        webhook_id = %webhook.webhook_id,
        job_id = %webhook.job_id,
        attempt = webhook.attempts,
    );
    async move {
        let delivery = send(state, &webhook).await;
        state
            .store
            .record_delivery(webhook.job_id, &delivery)
            .await?;
        let policy = state.config.retry;
        let (next_state, next_attempt_at) = match delivery.outcome.as_str() {
            "delivered" => {
                info!(status_code = delivery.status_code, "webhook delivered");
                (WebhookState::Delivered, now_millis())
            }
            "refused" => {
                // Retrying cannot change the guard's decision.
                warn!(
                    cause = delivery.error.as_deref().unwrap_or_default(),
                    "webhook target refused"
                );
                (WebhookState::Refused, now_millis())
            }
            _ if webhook.attempts >= policy.max_attempts => {
                error!(
                    status_code = delivery.status_code,
                    cause = delivery.error.as_deref().unwrap_or_default(),
                    "webhook delivery failed on every attempt; giving up"
                );
                (WebhookState::Abandoned, now_millis())
            }
            _ => {
                let wait = policy.delay_after(webhook.attempts);
                warn!(
                    status_code = delivery.status_code,
                    cause = delivery.error.as_deref().unwrap_or_default(),
                    retry_in_ms = millis(wait),
                    "webhook delivery failed; it stays queued"
                );
                (
                    WebhookState::Pending,
                    now_millis().saturating_add(millis(wait)),
                )
            }
        };
        let recorded = state
            .store
            .webhook_attempted(
                &webhook.webhook_id,
                webhook.attempts,
                next_state,
                next_attempt_at,
                delivery.error.as_deref(),
            )
            .await?;
        if !recorded {
            warn!("the lease ran out during the attempt and another sender took the webhook; its outcome is kept");
        }
        let outcome = match next_state {
            WebhookState::Pending => "failed",
            other => other.as_str(),
        };
        ATTEMPTS.get_or_create(&OutcomeLabels { outcome }).inc();
        Ok(Some(next_state))
    }
    .instrument(span)
    .await
}

/// Makes one attempt at every webhook that is due. Returns how many attempts
/// were made.
///
/// # Errors
///
/// When the store fails.
pub async fn retry_due(state: &AppState) -> Result<usize, alchemist_runtime::Error> {
    let mut attempted = 0;
    for webhook in state.store.due_webhooks(BATCH).await? {
        if attempt(state, &webhook.webhook_id).await?.is_some() {
            attempted += 1;
        }
    }
    Ok(attempted)
}

/// Sends due webhooks until `shutdown` completes.
pub async fn run_retries(state: AppState, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let interval = state.config.retry.poll_interval();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(
        interval_ms = millis(interval),
        max_attempts = state.config.retry.max_attempts,
        "webhook retries started"
    );
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = ticker.tick() => {}
        }
        match retry_due(&state).await {
            Ok(0) => {}
            Ok(attempted) => info!(attempted, "queued webhooks attempted"),
            Err(err) => error!(cause = %err, "webhook retry pass failed"),
        }
    }
    info!("webhook retries stopped");
}

/// Sends one signed webhook and describes the outcome.
async fn send(state: &AppState, webhook: &QueuedWebhook) -> WebhookDelivery {
    let mut delivery = WebhookDelivery {
        event_id: webhook.webhook_id.clone(),
        url: webhook.url.clone(),
        outcome: "failed".to_owned(),
        status_code: None,
        error: None,
        attempted_at: now_millis(),
    };
    let url = match url::Url::parse(&webhook.url) {
        Ok(url) => url,
        Err(err) => {
            delivery.outcome = "refused".to_owned();
            delivery.error = Some(format!("invalid URL: {err}"));
            return delivery;
        }
    };
    let addresses =
        match resolve_allowed(&url, state.config.allow_private, state.config.timeout).await {
            Ok(addresses) => addresses,
            Err(TargetError::Refused(reason)) => {
                delivery.outcome = "refused".to_owned();
                delivery.error = Some(reason);
                return delivery;
            }
            Err(TargetError::Unresolved(reason)) => {
                delivery.error = Some(reason);
                return delivery;
            }
        };

    // Pin the checked addresses so that a second DNS answer cannot redirect
    // the request, and follow no redirects for the same reason.
    let host = url.host_str().unwrap_or_default().to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the host itself, past the checked addresses.
        .no_proxy()
        .timeout(state.config.timeout)
        .resolve_to_addrs(&host, &addresses)
        .build();
    let client = match client {
        Ok(client) => client,
        Err(err) => {
            delivery.error = Some(format!("cannot build the HTTP client: {err}"));
            return delivery;
        }
    };

    // The timestamp is the time of this attempt, so that receivers that
    // refuse old timestamps accept a late retry.
    let timestamp = now_millis() / 1000;
    let signature =
        state
            .config
            .secret
            .sign(&webhook.webhook_id, timestamp, webhook.body.as_bytes());
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &webhook.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(webhook.body.clone())
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status();
            delivery.status_code = Some(status.as_u16());
            if status.is_success() {
                delivery.outcome = "delivered".to_owned();
            } else {
                delivery.error = Some(format!("the receiver answered {status}"));
            }
        }
        Err(err) => delivery.error = Some(format!("request failed: {err}")),
    }
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_about_a_day() {
        let policy = RetryPolicy::default();
        let waits: Vec<u64> = (1..policy.max_attempts)
            .map(|failed| policy.delay_after(failed).as_secs())
            .collect();
        assert_eq!(waits, [5, 30, 180, 1080, 6480, 36_000, 36_000]);
        let total: u64 = waits.iter().sum();
        assert!((20 * 3600..30 * 3600).contains(&total), "{total} s");
    }

    #[test]
    fn polling_follows_the_first_delay_within_bounds() {
        let quick = RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_millis(10),
        };
        assert_eq!(quick.poll_interval(), Duration::from_millis(50));
        assert_eq!(
            RetryPolicy::default().poll_interval(),
            Duration::from_secs(1)
        );
        let slow = RetryPolicy {
            max_attempts: 3,
            first_delay: Duration::from_secs(600),
        };
        assert_eq!(slow.poll_interval(), Duration::from_secs(5));
        assert_eq!(slow.delay_after(9), MAX_DELAY);
    }
}
