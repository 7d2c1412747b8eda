//! The one error type of the desktop core, and the `{code, message,
//! detail}` shape the window receives when a command fails.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached (or the connection broke): worth
    /// retrying later, never a reason to give up on a file.
    #[error("the server is unreachable: {0}")]
    Offline(String),
    /// The token is missing, expired or revoked: the user signs in again.
    #[error("please sign in again")]
    Unauthorized,
    /// The server answered with an error it explained.
    #[error("{message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("local state: {0}")]
    Store(#[from] sqlx::Error),
    #[error("local state: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("watching the folder: {0}")]
    Watch(#[from] notify::Error),
    /// A folder the user chose is not there (the window offers to create
    /// it).
    #[error("the folder {} does not exist", .0.display())]
    MissingFolder(std::path::PathBuf),
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// A failure that goes away by itself (network, server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Offline(_) => true,
            Error::Server { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }

    /// A short machine-readable name for the window.
    pub fn code(&self) -> String {
        match self {
            Error::Offline(_) => "offline".into(),
            Error::Unauthorized => "unauthorized".into(),
            Error::Server { code, .. } => code.clone(),
            Error::Invalid(_) => "invalid".into(),
            Error::Io { .. } => "io".into(),
            Error::Store(_) | Error::Migrate(_) => "local_state".into(),
            Error::Watch(_) => "watch".into(),
            Error::MissingFolder(_) => "missing_folder".into(),
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(err: reqwest::Error) -> Self {
        // reqwest hides the cause in its source chain; show it.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Offline(text)
    }
}

/// What a Tauri command returns on failure: `{code, message, detail?}`,
/// the message in plain words ([`crate::plain`]), the technical text as
/// its detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandError {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<Error> for CommandError {
    fn from(err: Error) -> Self {
        let plain = crate::plain::explain(&err);
        CommandError {
            code: err.code(),
            message: plain.message,
            detail: plain.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_errors_serialise_to_code_and_message() {
        let server = Error::Server {
            status: 415,
            code: "unsupported_media_type".into(),
            message: "this file is not a video".into(),
        };
        let json = serde_json::to_value(CommandError::from(server)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "code": "unsupported_media_type",
                "message": "This file is not a video or audio file the server can convert.",
                "detail": "this file is not a video",
            })
        );
        let json = serde_json::to_value(CommandError::from(Error::Unauthorized)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "code": "unauthorized",
                "message": "Your session ended. Please sign in again; your files are kept.",
            })
        );
    }

    #[test]
    fn only_network_and_server_side_failures_are_transient() {
        assert!(Error::Offline("refused".into()).is_transient());
        let status = |status| Error::Server {
            status,
            code: "x".into(),
            message: "y".into(),
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(415).is_transient());
        assert!(!Error::Unauthorized.is_transient());
    }
}
