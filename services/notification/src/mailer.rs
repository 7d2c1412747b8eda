//! Builds and sends the "your MP3 is ready" email.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use common::messages::ConversionMessage;

use crate::error::Error;

/// An SMTP connection pool plus what every email needs.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
}

impl Mailer {
    pub fn new(smtp_url: &str, from: &str, public_url: &str) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        Ok(Self {
            transport,
            from: from.parse()?,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// The email for a finished conversion.
    pub fn ready_email(&self, message: &ConversionMessage) -> Result<Message, Error> {
        let mp3_fid = message
            .mp3_fid
            .as_deref()
            .ok_or_else(|| Error::BadMessage("mp3_fid is missing".into()))?;
        let to: Mailbox = message
            .username
            .parse()
            .map_err(|_| Error::BadAddress(message.username.clone()))?;
        let link = format!("{}/download?fid={mp3_fid}", self.public_url);
        let duration = message
            .duration_s
            .map(|s| format!("Duration: {}\n", format_duration(s)))
            .unwrap_or_default();
        let body = format!(
            "Hello,\n\n\
             your file \"{file}\" has been converted to MP3.\n\n\
             {duration}\
             MP3 id: {mp3_fid}\n\
             Download: {link}\n\n\
             The download needs your login token, for example:\n\
             curl -H \"Authorization: Bearer $TOKEN\" -o \"{stem}.mp3\" \\\n  \"{link}\"\n",
            file = message.filename,
            stem = file_stem(&message.filename),
        );
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(None)
            .subject(format!("Your MP3 is ready: {}", message.filename))
            .header(ContentType::TEXT_PLAIN)
            .body(readable_body(body))?)
    }

    pub async fn send(&self, email: Message) -> Result<(), Error> {
        self.transport.send(email).await?;
        Ok(())
    }

    /// True when the SMTP server answers (for `/readyz`).
    pub async fn is_reachable(&self) -> bool {
        self.transport.test_connection().await.unwrap_or(false)
    }
}

/// 8bit keeps the text readable in the raw mail; lettre falls back to
/// quoted-printable when a line is too long for it (a very long file name).
fn readable_body(text: String) -> Body {
    Body::new_with_encoding(text, ContentTransferEncoding::EightBit).unwrap_or_else(Body::new)
}

fn file_stem(name: &str) -> &str {
    std::path::Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audio")
}

fn format_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    format!("{}:{:02}", total / 60, total % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ConversionMessage {
        ConversionMessage {
            video_fid: "v".into(),
            mp3_fid: Some("65f0c0ffee00000000000001".into()),
            username: "ana@example.com".into(),
            job_id: "j".into(),
            filename: "holiday clip.mp4".into(),
            options: serde_json::json!({}),
            notify_email: true,
            duration_s: Some(75.4),
        }
    }

    fn mailer() -> Mailer {
        Mailer::new(
            "smtp://127.0.0.1:1",
            "MP3 <noreply@example.com>",
            "http://gw.example/",
        )
        .expect("valid settings")
    }

    // The SMTP pool spawns its reaper task, so these need a runtime.
    #[tokio::test]
    async fn ready_email_names_file_id_and_link() {
        let email = mailer().ready_email(&message()).expect("builds");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        assert!(
            text.contains("Subject: Your MP3 is ready: holiday clip.mp4"),
            "{text}"
        );
        assert!(text.contains("To: ana@example.com"), "{text}");
        assert!(text.contains("MP3 id: 65f0c0ffee00000000000001"), "{text}");
        assert!(
            text.contains("http://gw.example/download?fid=65f0c0ffee00000000000001"),
            "{text}"
        );
        assert!(text.contains("Duration: 1:15"), "{text}");
        assert!(text.contains("Content-Transfer-Encoding: 8bit"), "{text}");
        assert!(text.contains("Message-ID: <"), "{text}");
    }

    #[tokio::test]
    async fn missing_mp3_id_and_bad_address_are_permanent() {
        let mut no_fid = message();
        no_fid.mp3_fid = None;
        let err = mailer().ready_email(&no_fid).expect_err("no fid");
        assert!(err.is_permanent());
        let mut bad = message();
        bad.username = "not an address".into();
        let err = mailer().ready_email(&bad).expect_err("bad address");
        assert!(err.is_permanent());
    }
}
