//! Upload metrics, in the process's registry (see [`alchemist_runtime::metrics`]).
//!
//! - `alchemist_uploads_total{outcome}`: uploads by outcome, `accepted` or the
//!   error code of the response to a bad upload (`too_large`, `empty`,
//!   `bad_request`). Requests without a valid token, and uploads that fail on
//!   the service's side, are counted only in the HTTP metrics, by status code.
//! - `alchemist_upload_bytes_total`: bytes of the accepted uploads.

use std::sync::LazyLock;

use alchemist_runtime::metrics::{OutcomeLabels, register, register_outcome_counter};
use prometheus_client::metrics::{counter::Counter, family::Family};

use crate::Error;

/// Every value of the `outcome` label.
const OUTCOMES: [&str; 4] = [ACCEPTED, "too_large", "empty", "bad_request"];

const ACCEPTED: &str = "accepted";

static METRICS: LazyLock<UploadMetrics> = LazyLock::new(UploadMetrics::register);

struct UploadMetrics {
    uploads: Family<OutcomeLabels, Counter>,
    bytes: Counter,
}

impl UploadMetrics {
    fn register() -> UploadMetrics {
        let uploads = register_outcome_counter(
            "uploads",
            "Uploads by outcome: accepted, too_large, empty or bad_request",
            OUTCOMES,
        );
        let bytes = Counter::default();
        register(
            "upload_bytes",
            "Bytes of the accepted uploads",
            bytes.clone(),
        );
        UploadMetrics { uploads, bytes }
    }
}

/// Registers the upload metrics.
pub(crate) fn register_metrics() {
    LazyLock::force(&METRICS);
}

/// Counts an accepted upload of `size` bytes.
pub(crate) fn record_accepted(size: u64) {
    let labels = OutcomeLabels { outcome: ACCEPTED };
    METRICS.uploads.get_or_create(&labels).inc();
    METRICS.bytes.inc_by(size);
}

/// Counts a failed upload when the client caused it.
pub(crate) fn record_failed(err: &Error) {
    // The same codes as the `error` field of the response.
    let outcome = match err {
        Error::TooLarge { .. } => "too_large",
        Error::EmptyUpload => "empty",
        Error::BadRequest(_) => "bad_request",
        Error::JobNotFound
        | Error::NoAudio(_)
        | Error::RangeNotSatisfiable { .. }
        | Error::Broker(_)
        | Error::Runtime(_) => return,
    };
    METRICS
        .uploads
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
}
