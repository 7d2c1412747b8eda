//! The converter's one error type. Whether a failure is permanent decides
//! between "job failed, ack" and "requeue for another attempt".

use crate::transcode::TranscodeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid message: {0}")]
    BadMessage(String),
    /// The message does not speak of a job as it is recorded (unknown,
    /// deleted, someone else's video or owner, not waiting for a
    /// conversion): it changes nothing and goes to the dead-letter queue.
    #[error("refused: {0}")]
    Mismatch(String),
    #[error("the uploaded video no longer exists")]
    VideoMissing,
    /// A chunk of the stored video is missing or damaged.
    #[error("the stored video is damaged: {0}")]
    VideoDamaged(String),
    /// Reading the video from MongoDB failed mid-conversion: retried.
    #[error("reading the video: {0}")]
    Fetch(String),
    #[error("{0}")]
    Transcode(#[from] TranscodeError),
    #[error(transparent)]
    Common(#[from] common::Error),
    #[error("temporary files: {0}")]
    Io(#[from] std::io::Error),
    #[error("the conversion task stopped unexpectedly")]
    Join(#[from] tokio::task::JoinError),
}

/// Invalid job options are a permanent [`TranscodeError::InvalidOptions`].
impl From<contract::options::OptionsError> for Error {
    fn from(err: contract::options::OptionsError) -> Self {
        Self::Transcode(err.into())
    }
}

impl Error {
    /// Permanent failures fail the same way on every attempt.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::BadMessage(_)
            | Self::VideoMissing
            | Self::VideoDamaged(_)
            | Self::Mismatch(_) => true,
            Self::Transcode(err) => err.is_permanent(),
            Self::Common(common::Error::Json(_)) => true,
            // A panic inside FFmpeg glue would repeat on every attempt.
            Self::Join(_) => true,
            Self::Common(_) | Self::Io(_) | Self::Fetch(_) => false,
        }
    }
}
