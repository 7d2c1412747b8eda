//! Errors in plain words: what happened and what to do, in a sentence the
//! window shows, with the technical text kept as a detail behind a
//! "Details" toggle (and in the log).

use serde::Serialize;

use crate::error::Error;

/// A message for people, and what lies behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plain {
    pub message: String,
    /// The technical text, when it adds something.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Plain {
    fn new(message: impl Into<String>, detail: impl Into<String>) -> Plain {
        let message = message.into();
        let detail = detail.into();
        Plain {
            detail: (!detail.is_empty() && detail != message).then_some(detail),
            message,
        }
    }
}

/// `err` as the window says it.
pub fn explain(err: &Error) -> Plain {
    let detail = err.to_string();
    match err {
        Error::Offline(cause) => Plain::new(offline(cause), detail),
        Error::Unauthorized => Plain::new(
            "Your session ended. Please sign in again; your files are kept.",
            "",
        ),
        Error::Server {
            status,
            code,
            message,
            ..
        } => Plain::new(server(*status, code, message), detail),
        Error::Io { source, .. } => {
            let message = match source.kind() {
                std::io::ErrorKind::NotFound => {
                    "The file or folder is not there any more.".to_owned()
                }
                std::io::ErrorKind::PermissionDenied => {
                    "This app may not read or write there: check the folder's permissions."
                        .to_owned()
                }
                std::io::ErrorKind::StorageFull => {
                    "The disk is full: free some space, then try again.".to_owned()
                }
                _ => "Reading or writing a file failed.".to_owned(),
            };
            Plain::new(message, detail)
        }
        Error::Store(_) | Error::Migrate(_) => Plain::new(
            "The app's own list of files could not be read or written. Restart the app; if it \
             happens again, check the disk.",
            detail,
        ),
        Error::Watch(_) => Plain::new(
            "The watched folder cannot be watched for changes; new videos are still found \
             every half minute.",
            detail,
        ),
        Error::Invalid(text) => Plain::new(sentence(text), ""),
        Error::MissingFolder(path) => {
            Plain::new(format!("The folder {} does not exist.", path.display()), "")
        }
    }
}

/// Why a conversion failed on the server, from the job's `error`.
pub fn job_failure(reason: &str) -> Plain {
    let lower = reason.to_lowercase();
    let message = if lower.contains("no audio track") || lower.contains("no audio frames") {
        "This video has no sound to turn into an MP3."
    } else if lower.contains("not a video or audio file") {
        "This file is not a video or audio file that can be read. It may be damaged or \
         incomplete."
    } else if lower.contains("took longer than") || lower.contains("time limit") {
        "The conversion took too long and was stopped. Try again, or a shorter video."
    } else {
        return Plain::new(sentence(reason), "");
    };
    Plain::new(message, reason)
}

fn offline(cause: &str) -> String {
    let lower = cause.to_lowercase();
    if lower.contains("dns") || lower.contains("failed to lookup") || lower.contains("resolve") {
        "The server's name is not known. Check the server address for typing mistakes.".into()
    } else if lower.contains("refused") {
        "Nothing answers at the server address. Check the address, or whether the server is \
         running."
            .into()
    } else if lower.contains("certificate") || lower.contains("tls") {
        "The server's security certificate is not valid, so the app will not talk to it.".into()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "The server takes too long to answer. Check your connection; the app tries again.".into()
    } else {
        "The server cannot be reached. Check your connection; the app tries again.".into()
    }
}

fn server(status: u16, code: &str, message: &str) -> String {
    match (status, code) {
        (415, _) | (_, "unsupported_media_type") => {
            "This file is not a video or audio file the server can convert.".into()
        }
        (413, _) => "This file is larger than the server accepts.".into(),
        (507, _) | (_, "over_storage_quota") => {
            "Your space on the server is full. Converted files are removed after a while; try \
             again later."
                .into()
        }
        (429, _) | (_, "quota") => sentence(message),
        (500..=599, _) => "The server has a problem right now; the app tries again.".into(),
        _ => sentence(message),
    }
}

/// `text` as a sentence: a capital first letter and a full stop.
pub fn sentence(text: &str) -> String {
    let text = text.trim();
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!', '?', ':', ')']) {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_said_in_words_with_the_cause_as_detail() {
        let err = Error::Offline(
            "error sending request for url (http://127.0.0.1:9/api/v1/login): client error \
             (Connect): tcp connect error: Connection refused (os error 111)"
                .into(),
        );
        let plain = explain(&err);
        assert!(plain.message.starts_with("Nothing answers"), "{plain:?}");
        assert!(plain.detail.expect("detail").contains("os error 111"));
    }

    #[test]
    fn server_and_job_failures_read_as_sentences() {
        let refused = Error::Server {
            status: 415,
            code: "unsupported_media_type".into(),
            message: "unsupported media type: text".into(),
        };
        assert_eq!(
            explain(&refused).message,
            "This file is not a video or audio file the server can convert."
        );
        let plain =
            job_failure("the file is not a video or audio file FFmpeg can read: End of file");
        assert!(plain.message.starts_with("This file is not"), "{plain:?}");
        assert!(plain.detail.expect("detail").contains("End of file"));
        assert_eq!(
            job_failure("the file has no audio track").message,
            "This video has no sound to turn into an MP3."
        );
        assert_eq!(
            explain(&Error::Invalid("choose an output folder first".into())).message,
            "Choose an output folder first."
        );
    }
}
