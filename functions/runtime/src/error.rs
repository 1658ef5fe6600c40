/// Errors of the shared runtime: stores, blobs, tokens and configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    #[error("blob store error: {0}")]
    Blob(#[from] std::io::Error),

    /// A MongoDB operation of the GridFS blob store failed.
    #[error("blob store error: {0}")]
    Mongo(#[from] mongodb::error::Error),

    /// A blob, job or user that does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),

    /// A unique value that is already taken, such as an email address.
    #[error("{0} already exists")]
    Conflict(&'static str),

    /// A stream was longer than the limit it was written under.
    #[error("the data exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },

    /// The bearer token is missing, malformed, expired or not ours.
    #[error("invalid token: {0}")]
    InvalidToken(String),

    /// Password hashing failed (not a wrong password, which is `Ok(false)`).
    #[error("password hashing failed: {0}")]
    Password(String),

    /// A stored value that this version cannot read.
    #[error("corrupt record: {0}")]
    Corrupt(String),

    /// One or more environment variables are missing or invalid.
    #[error("invalid configuration:\n{0}")]
    Config(String),

    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
