//! Conversion metrics, in the process's registry (see [`alchemist_runtime::metrics`]).
//!
//! - `alchemist_conversions_total{outcome}`: conversions that ran, by outcome.
//! - `alchemist_conversion_duration_seconds{outcome}`: their duration, from
//!   reading the video to storing the MP3 or deciding that the input is bad.
//!
//! The outcome is `done`, a [`FailureReason`] code when the input is bad
//! (`no_audio`, `truncated`, `unreadable`, `unsupported_format`, `empty`,
//! `limit_exceeded`), or `error` when the service failed and released the job
//! for the broker's retry. Redeliveries of a job that is busy or finished run
//! no conversion and are not counted.

use std::{sync::LazyLock, time::Duration};

use alchemist_events::catalogue::FailureReason;
use alchemist_runtime::metrics::{OutcomeLabels, register, register_outcome_counter};
use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};

/// The outcome label of a conversion that stored its MP3.
pub(crate) const DONE: &str = "done";

/// The outcome label of a conversion that the service itself failed.
pub(crate) const ERROR: &str = "error";

/// Upper bounds of the duration buckets, in seconds: a bad input is found in
/// under a second, and a long video converts in minutes, up to
/// `CONVERT_TIMEOUT_SECONDS` (default 600).
const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The reasons that [`crate::media`] and the copy of the video give for a
/// bad input.
const REJECTION_REASONS: [FailureReason; 6] = [
    FailureReason::Empty,
    FailureReason::Truncated,
    FailureReason::NoAudio,
    FailureReason::Unreadable,
    FailureReason::UnsupportedFormat,
    FailureReason::LimitExceeded,
];

static METRICS: LazyLock<ConversionMetrics> = LazyLock::new(ConversionMetrics::register);

struct ConversionMetrics {
    conversions: Family<OutcomeLabels, Counter>,
    duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
}

impl ConversionMetrics {
    fn register() -> ConversionMetrics {
        let outcomes = REJECTION_REASONS.map(FailureReason::as_str);
        let conversions = register_outcome_counter(
            "conversions",
            "Conversions that ran, by outcome: done, the failure reason of a bad input, or error",
            [DONE, ERROR].into_iter().chain(outcomes),
        );
        // The histogram series appear with their first observation, to keep
        // the scrape short.
        let duration: Family<OutcomeLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        register(
            "conversion_duration_seconds",
            "Duration of the conversions that ran, by outcome, in seconds",
            duration.clone(),
        );
        ConversionMetrics {
            conversions,
            duration,
        }
    }
}

/// Registers the conversion metrics.
pub(crate) fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// Counts one conversion and its duration.
pub(crate) fn record_conversion(outcome: &'static str, elapsed: Duration) {
    let labels = OutcomeLabels { outcome };
    METRICS.conversions.get_or_create(&labels).inc();
    METRICS
        .duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}
