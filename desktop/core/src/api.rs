//! The gateway's JSON API as the desktop uses it: sign-in, streaming
//! uploads with progress, job lookups, the live event stream and resumable
//! MP3 downloads.

use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::Error;
use crate::sse::{SseEvent, SseParser};

use contract::ErrorBody;
pub use contract::account::Profile;
pub use contract::{JobEnvelope, JobView as Job};

/// A signed-in session.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Session {
    pub token: String,
    pub expires_at: serde_json::Value,
}

/// The longest a call that sends or receives little (sign-in, a job's
/// state, a retry) may take, answer included: a server that accepted the
/// connection and never answers must not hold the engine.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a download or the event stream may go without a byte (the
/// gateway sends a keep-alive every 15 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client for one server.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Result<ApiClient, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Long uploads and the event stream must not time out as a
            // whole; a stalled connection is caught by TCP keep-alive.
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("mp3converter-desktop/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::Invalid(format!("HTTP client: {err}")))?;
        Ok(ApiClient {
            http,
            base: base.trim().trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub fn with_token(&self, token: Option<String>) -> ApiClient {
        ApiClient {
            token,
            ..self.clone()
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, Error> {
        let token = self.token.as_deref().ok_or(Error::Unauthorized)?;
        Ok(request.bearer_auth(token))
    }

    /// A short call with the session's token: everything but the
    /// long-lived stream and the transfers is bounded by [`CALL_TIMEOUT`].
    fn call(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder, Error> {
        Ok(self
            .authed(self.http.request(method, self.url(path)))?
            .timeout(CALL_TIMEOUT))
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<Session, Error> {
        let response = self
            .http
            .post(self.url("/api/v1/login"))
            .timeout(CALL_TIMEOUT)
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(Error::Server {
                status: 401,
                code: "invalid_credentials".into(),
                message: "wrong email or password".into(),
            });
        }
        json(response).await
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<(), Error> {
        let response = self
            .http
            .post(self.url("/api/v1/register"))
            .timeout(CALL_TIMEOUT)
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await?;
        checked(response).await.map(drop)
    }

    /// Whether the server accepts new accounts. A server that does not say
    /// (older, or registration routed elsewhere) counts as closed, so the
    /// window never offers a link that ends in an error.
    pub async fn registration_open(&self) -> Result<bool, Error> {
        #[derive(Deserialize)]
        struct Status {
            enabled: bool,
        }
        let response = self
            .http
            .get(self.url("/api/v1/register"))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        if matches!(
            response.status(),
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Ok(false);
        }
        Ok(json::<Status>(response).await?.enabled)
    }

    /// Uploads `path` as a new job for the file `name`, streaming it from
    /// disk; `progress` receives the bytes sent so far. `source` describes
    /// the original video when `path` holds only its audio: its size and
    /// SHA-256, which the job keeps.
    pub async fn create_job(
        &self,
        path: &Path,
        name: &str,
        options: &contract::Options,
        source: Option<(u64, &str)>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<JobEnvelope, Error> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(Error::io(format!("opening {}", path.display())))?;
        let size = file
            .metadata()
            .await
            .map_err(Error::io(format!("reading {}", path.display())))?
            .len();
        let mut sent = 0u64;
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                if let Ok(bytes) = &chunk {
                    sent += bytes.len() as u64;
                    progress(sent);
                }
                chunk
            });
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), size)
                .file_name(name.to_owned())
                .mime_str("application/octet-stream")
                .map_err(|err| Error::Invalid(err.to_string()))?;
        let mut form =
            reqwest::multipart::Form::new().text("options", options.to_json().to_string());
        if let Some((size_bytes, sha256)) = source {
            let source = contract::SourceFile {
                size_bytes: i64::try_from(size_bytes).unwrap_or(i64::MAX),
                sha256: sha256.to_owned(),
            };
            form = form.text("source", serde_json::to_string(&source).unwrap_or_default());
        }
        let form = form.part("file", part);
        let response = self
            .authed(self.http.post(self.url("/api/v1/jobs")))?
            .multipart(form)
            .send()
            .await?;
        json(response).await
    }

    pub async fn job(&self, id: &str) -> Result<Job, Error> {
        let response = self
            .call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"))?
            .send()
            .await?;
        let body: serde_json::Value = json(response).await?;
        // Accept both `{job}` and a bare job.
        serde_json::from_value::<JobEnvelope>(body.clone())
            .map(|w| w.job)
            .or_else(|_| serde_json::from_value(body))
            .map_err(|err| Error::Invalid(format!("unexpected job JSON: {err}")))
    }

    pub async fn retry(&self, id: &str) -> Result<(), Error> {
        let response = self
            .call(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/retry"))?
            .send()
            .await?;
        checked(response).await.map(drop)
    }

    /// The account as the server sees it: whether its address is
    /// confirmed, and its quotas.
    pub async fn me(&self) -> Result<Profile, Error> {
        let response = self
            .call(reqwest::Method::GET, "/api/v1/me")?
            .send()
            .await?;
        json(response).await
    }

    /// Mails the confirmation link again.
    pub async fn resend_confirmation(&self) -> Result<(), Error> {
        let response = self
            .call(reqwest::Method::POST, "/api/v1/me/confirmation")?
            .send()
            .await?;
        checked(response).await.map(drop)
    }

    /// Changes the password; the answer is a fresh session (every other
    /// token of the account, this client's old one included, ends).
    pub async fn change_password(&self, current: &str, new: &str) -> Result<Session, Error> {
        let response = self
            .call(reqwest::Method::PUT, "/api/v1/me/password")?
            .json(&serde_json::json!({ "current_password": current, "new_password": new }))
            .send()
            .await?;
        json(response).await
    }

    /// Ends every session of the account, this one included.
    pub async fn sign_out_everywhere(&self) -> Result<(), Error> {
        let response = self
            .call(reqwest::Method::POST, "/api/v1/me/sign-out-everywhere")?
            .send()
            .await?;
        checked(response).await.map(drop)
    }

    /// Deletes the account with its jobs, videos and MP3s on the server.
    pub async fn delete_account(&self, password: &str) -> Result<(), Error> {
        let response = self
            .call(reqwest::Method::DELETE, "/api/v1/me")?
            .json(&serde_json::json!({ "password": password }))
            .send()
            .await?;
        checked(response).await.map(drop)
    }

    /// Opens the live stream of the caller's job updates.
    pub async fn events(
        &self,
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = Result<SseEvent, Error>> + use<>, Error> {
        let mut request = self
            .authed(self.http.get(self.url("/api/v1/events")))?
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        // The answer's head within the call timeout; the stream itself is
        // watched for silence by its reader (see IDLE_TIMEOUT).
        let response = tokio::time::timeout(CALL_TIMEOUT, request.send())
            .await
            .map_err(|_| Error::Offline("the event stream did not answer".into()))??;
        let response = checked(response).await?;
        let mut parser = SseParser::default();
        Ok(response
            .bytes_stream()
            .map(move |chunk| match chunk {
                Ok(bytes) => Ok(parser.push(&bytes)),
                Err(err) => Err(Error::from(err)),
            })
            .flat_map(|result| {
                futures::stream::iter(match result {
                    Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(err) => vec![Err(err)],
                })
            }))
    }

    /// Downloads a job's MP3 into `part`, continuing an earlier partial
    /// download with a Range request. Returns the total size.
    pub async fn download_mp3(
        &self,
        job_id: &str,
        part: &Path,
        progress: impl Fn(u64, u64),
    ) -> Result<u64, Error> {
        let have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut request = self.authed(
            self.http
                .get(self.url(&format!("/api/v1/jobs/{job_id}/mp3"))),
        )?;
        if have > 0 {
            request = request.header(header::RANGE, format!("bytes={have}-"));
        }
        let response = tokio::time::timeout(CALL_TIMEOUT, request.send())
            .await
            .map_err(|_| Error::Offline("the download did not start".into()))??;
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // What we have is already everything, or stale: start over.
            tokio::fs::remove_file(part).await.ok();
            return Box::pin(self.download_mp3(job_id, part, progress)).await;
        }
        let response = checked(response).await?;
        let resumed = response.status() == StatusCode::PARTIAL_CONTENT;
        let start = if resumed { have } else { 0 };
        let total = start + response.content_length().unwrap_or(0);
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(part)
            .await
            .map_err(Error::io(format!("writing {}", part.display())))?;
        let mut written = start;
        let mut body = response.bytes_stream();
        while let Some(chunk) = tokio::time::timeout(IDLE_TIMEOUT, body.next())
            .await
            .map_err(|_| Error::Offline("the download stalled".into()))?
        {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(Error::io(format!("writing {}", part.display())))?;
            written += chunk.len() as u64;
            progress(written, total);
        }
        file.flush()
            .await
            .map_err(Error::io(format!("writing {}", part.display())))?;
        file.sync_all()
            .await
            .map_err(Error::io(format!("writing {}", part.display())))?;
        if total > 0 && written != total {
            return Err(Error::Offline(format!(
                "the download stopped at {written} of {total} bytes"
            )));
        }
        Ok(written)
    }
}

/// The code of a 403 that means "the password typed is wrong", not "the
/// session ended".
pub const WRONG_PASSWORD: &str = "wrong_password";

/// Turns an error status into [`Error`], using the gateway's JSON body.
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::Unauthorized);
    }
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str::<ErrorBody>(&text);
    // A 403 is a token that stopped working, except the one answer that
    // is about the password typed, not the session.
    if status == StatusCode::FORBIDDEN {
        return Err(match body {
            Ok(body) if body.error.code == WRONG_PASSWORD => Error::Server {
                status: 403,
                code: body.error.code,
                message: "the current password is not right".into(),
            },
            _ => Error::Unauthorized,
        });
    }
    let (code, message) = match body {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (
            status.as_str().to_owned(),
            if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text.trim().to_owned()
            },
        ),
    };
    Err(Error::Server {
        status: status.as_u16(),
        code,
        message,
    })
}

async fn json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    let response = checked(response).await?;
    response
        .json()
        .await
        .map_err(|err| Error::Invalid(format!("unexpected answer from the server: {err}")))
}
