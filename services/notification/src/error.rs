//! The notification service's one error type; it knows whether a failure is
//! worth another attempt.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid message: {0}")]
    BadMessage(String),
    #[error("invalid email address {0:?}")]
    BadAddress(String),
    #[error("could not build the email: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("email template: {0}")]
    Template(#[from] minijinja::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The SMTP server took the connection and did not finish the exchange
    /// in time (it may have the mail: a retry sends it again, with the
    /// same Message-ID).
    #[error("SMTP: no answer within {0}s")]
    SmtpTimedOut(u64),
    #[error(transparent)]
    Common(#[from] common::Error),
    /// The message does not speak of a job as it is recorded (unknown,
    /// deleted, someone else's, not in the state the email is about).
    #[error("refused: {0}")]
    Mismatch(String),
    /// Another delivery of the same message holds this email's claim (it is
    /// sending, or it died and its lease has not lapsed yet).
    #[error("another delivery is sending this email (its claim ends by {until})")]
    InFlight { until: mongodb::bson::DateTime },
    /// The task sending the mail ended without an answer (it panicked, or
    /// the runtime is shutting down): whether the mail went is unknown.
    #[error("the send was interrupted: {0}")]
    Interrupted(String),
}

impl Error {
    /// Permanent failures fail the same way on every attempt: a bad message,
    /// an address the server refuses (5xx). Connection problems, timeouts
    /// and 4xx answers are transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::BadMessage(_)
            | Self::BadAddress(_)
            | Self::Build(_)
            | Self::Template(_)
            | Self::Mismatch(_) => true,
            Self::Smtp(err) => err.is_permanent(),
            Self::Common(common::Error::Json(_)) => true,
            Self::Common(_)
            | Self::InFlight { .. }
            | Self::Interrupted(_)
            | Self::SmtpTimedOut(_) => false,
        }
    }
}
