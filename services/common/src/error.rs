//! The one error type of this crate.

/// Failures of the shared infrastructure helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("message broker: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    #[error("the broker did not confirm the message (nack)")]
    NotConfirmed,
    #[error(
        "the broker did not answer {what} within {after:?} (blocked by a disk or memory alarm, or unreachable)"
    )]
    Unresponsive {
        what: &'static str,
        after: std::time::Duration,
    },
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// The connection settings are unusable (a bad URI, an unknown option).
    #[error("configuring MongoDB: {0}")]
    MongoConfig(mongodb::error::Error),
    #[error("invalid message JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A write refused by a unique index.
    pub fn is_duplicate_key(&self) -> bool {
        matches!(self, Error::Mongo(err) if crate::jobs::is_duplicate_key(err))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
