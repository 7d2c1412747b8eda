//! A real (minimal) SMTP server for tests: it speaks enough of RFC 5321 for
//! lettre to deliver, keeps every message it receives, and can be told to
//! refuse recipients (a permanent 5xx), to keep a session waiting for its
//! greeting, or to take a message and hang up before confirming it, to
//! exercise the failure paths.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use tokio::sync::{Mutex, Notify};

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub recipients: Vec<String>,
    /// The raw message (headers and body) as received.
    pub data: String,
}

impl Mail {
    /// The message with every quoted-printable part decoded (lettre picks
    /// that encoding for long lines and HTML), so tests can look for links
    /// and ids. Other parts are left as they are.
    pub fn text(&self) -> String {
        let boundary = self
            .data
            .split("boundary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next());
        match boundary {
            Some(boundary) => self
                .data
                .split(&format!("--{boundary}"))
                .map(decode_part)
                .collect::<Vec<_>>()
                .join(&format!("--{boundary}")),
            None => decode_part(&self.data),
        }
    }
}

/// Decodes one MIME entity's body when its header says quoted-printable.
fn decode_part(part: &str) -> String {
    let Some((head, body)) = part.split_once("\r\n\r\n") else {
        return part.to_owned();
    };
    if !head.contains("Content-Transfer-Encoding: quoted-printable") {
        return part.to_owned();
    }
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&out))
}

/// The server's mailbox, shared with the test.
#[derive(Clone, Default)]
pub struct MailSink {
    mails: Arc<Mutex<Vec<Mail>>>,
    arrived: Arc<Notify>,
    /// Answer every RCPT TO with this line (e.g. `550 5.1.1 no such user`).
    reject_recipients: Option<&'static str>,
    /// RCPT TO commands seen, accepted or not.
    attempts: Arc<AtomicUsize>,
    /// The next this many sessions never get their greeting (a server that
    /// hangs); they end when the client gives up.
    stall: Arc<AtomicUsize>,
    /// The next this many messages are kept, then the connection is closed
    /// instead of the "250" that confirms them.
    drop_after_data: Arc<AtomicUsize>,
    /// The next this many messages are kept, then confirmed only after
    /// `confirm_delay_ms` (a server slow to answer the end of the data).
    confirm_late: Arc<AtomicUsize>,
    confirm_delay_ms: Arc<AtomicU64>,
    /// Sessions opened, stalled or not.
    sessions: Arc<AtomicUsize>,
}

/// Takes one from a counter of "the next N" unless it is at zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl MailSink {
    /// Starts the server on a free port; returns the sink and the port.
    pub async fn start() -> (MailSink, u16) {
        Self::start_with(0, None).await
    }

    /// Starts a server that refuses every recipient with `reply`.
    pub async fn start_rejecting(reply: &'static str) -> (MailSink, u16) {
        Self::start_with(0, Some(reply)).await
    }

    /// Starts the server on `port` (0: any free one).
    pub async fn start_with(port: u16, reject_recipients: Option<&'static str>) -> (MailSink, u16) {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind smtp");
        let port = listener.local_addr().expect("addr").port();
        let sink = MailSink {
            reject_recipients,
            ..MailSink::default()
        };
        let server = sink.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = server.session(socket).await;
                });
            }
        });
        (sink, port)
    }

    /// The next `sessions` connections get no greeting: the client waits
    /// until its own timeout (or until it is cancelled).
    pub fn stall_next(&self, sessions: usize) {
        self.stall.store(sessions, Ordering::SeqCst);
    }

    /// The next `messages` are taken and kept, then the connection closes
    /// before the reply that confirms them: the client cannot know whether
    /// the mail went.
    pub fn drop_after_data_next(&self, messages: usize) {
        self.drop_after_data.store(messages, Ordering::SeqCst);
    }

    /// The next `messages` are taken and kept, and confirmed only `delay`
    /// later: the mail is on the server while its sender still waits.
    pub fn confirm_late_next(&self, messages: usize, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.confirm_delay_ms.store(millis, Ordering::SeqCst);
        self.confirm_late.store(messages, Ordering::SeqCst);
    }

    /// Sessions opened so far (stalled ones included).
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    async fn session(&self, socket: tokio::net::TcpStream) -> std::io::Result<()> {
        self.sessions.fetch_add(1, Ordering::SeqCst);
        let (read, mut write) = socket.into_split();
        let mut lines = BufReader::new(read);
        if take_one(&self.stall) {
            // Silent until the client hangs up.
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut lines, &mut rest).await;
            return Ok(());
        }
        write.write_all(b"220 test-smtp ready\r\n").await?;
        let mut recipients = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end().to_ascii_uppercase();
            if command.starts_with("EHLO") {
                write
                    .write_all(b"250-test-smtp\r\n250 8BITMIME\r\n")
                    .await?;
            } else if command.starts_with("HELO") || command.starts_with("MAIL FROM") {
                write.write_all(b"250 ok\r\n").await?;
            } else if command.starts_with("RCPT TO") {
                self.attempts.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = self.reject_recipients {
                    write.write_all(format!("{reply}\r\n").as_bytes()).await?;
                    continue;
                }
                let address = line.trim_end()[8..]
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned();
                recipients.push(address);
                write.write_all(b"250 ok\r\n").await?;
            } else if command == "DATA" {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                self.mails.lock().await.push(Mail {
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                self.arrived.notify_waiters();
                if take_one(&self.drop_after_data) {
                    return Ok(());
                }
                if take_one(&self.confirm_late) {
                    let delay = self.confirm_delay_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                write.write_all(b"250 queued\r\n").await?;
            } else if command == "QUIT" {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            } else {
                // RSET, NOOP and anything else lettre may send.
                write.write_all(b"250 ok\r\n").await?;
            }
        }
    }

    /// Waits (up to `timeout`) for a mail whose raw text contains `needle`.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> Mail {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.arrived.notified();
            if let Some(mail) = self.find(needle).await {
                return mail;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no mail containing {needle:?} within {timeout:?}");
            }
        }
    }

    pub async fn find(&self, needle: &str) -> Option<Mail> {
        self.mails
            .lock()
            .await
            .iter()
            .find(|m| m.text().contains(needle))
            .cloned()
    }

    pub async fn count(&self) -> usize {
        self.mails.lock().await.len()
    }

    /// All mails received so far.
    pub async fn all(&self) -> Vec<Mail> {
        self.mails.lock().await.clone()
    }

    /// How many recipients clients tried to send to (accepted or refused).
    pub fn recipient_attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}
