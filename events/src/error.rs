/// Errors of the event layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is not a valid CloudEvent (missing attributes, bad encoding).
    #[error("invalid CloudEvent: {0}")]
    InvalidEvent(String),

    /// The event body is larger than the configured limit.
    #[error("CloudEvent body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },

    /// The event's data does not match the payload schema of its type.
    #[error("payload of {event_type} does not match its schema: {reason}")]
    InvalidPayload { event_type: String, reason: String },

    /// A Trigger manifest could not be read.
    #[error("invalid Trigger manifest: {0}")]
    InvalidTrigger(String),

    /// Delivering an event to a subscriber failed.
    #[error("delivery to {subscriber} failed: {reason}")]
    Delivery { subscriber: String, reason: String },

    /// A subscriber answered with a status other than 2xx.
    #[error("{subscriber} answered with status {status}")]
    Rejected { subscriber: String, status: u16 },

    /// The broker cannot accept events (shut down, or its connection is lost).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}
