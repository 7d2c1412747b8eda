//! Builds the emails (plain text + HTML from the templates) and sends them
//! through a pooled SMTP connection.

use std::time::{Duration, Instant};

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::context;

use contract::{JobEvent, Mp3Result};

use crate::config::Config;
use crate::error::Error;
use crate::templates::Templates;

/// The longest subject sent, in characters.
const SUBJECT_CHARS: usize = 150;

/// An upload that held only the audio of a video: what was sent, and what
/// it came from.
pub struct AudioOnly<'a> {
    pub uploaded_bytes: u64,
    pub source: &'a common::jobs::SourceFile,
}

/// An SMTP connection pool plus what every email needs.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// The most one exchange with the SMTP server may take. lettre's own
    /// timeout covers the connect, not a server that accepts the connection
    /// and then says nothing: that send would wait for ever, holding its
    /// email's claim.
    timeout: Duration,
    from: Mailbox,
    public_url: String,
    templates: Templates,
}

impl Mailer {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)?
            .timeout(Some(Duration::from_secs(config.smtp_timeout_secs)));
        if let Some(user) = &config.smtp_username {
            let password = config.smtp_password()?.unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Self {
            transport: builder.build(),
            timeout: Duration::from_secs(config.smtp_timeout_secs),
            from: config.mail_from.parse()?,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            templates: Templates::load(config.template_dir.as_deref())?,
        })
    }

    /// "Your MP3 is ready": the file, its duration and size, the MP3 id and
    /// the classic and JSON download links; for an audio-only upload, what
    /// was sent and the original's size and SHA-256.
    pub fn ready_email(
        &self,
        message: &Mp3Result,
        mp3_size: Option<u64>,
        audio_only: Option<AudioOnly<'_>>,
    ) -> Result<Message, Error> {
        let mp3_fid = &message.mp3_fid;
        let rendered = self.templates.render(
            "ready",
            context! {
                filename => shown_name(&message.filename),
                short_filename => subject_name(&message.filename),
                mp3_name => contract::names::mp3_name(&message.filename),
                // For the suggested curl command: nothing a shell acts on.
                mp3_file => contract::names::shell_safe(&contract::names::mp3_name(&message.filename)),
                mp3_fid => mp3_fid,
                duration => message.duration_s.map(format_duration),
                size => mp3_size.map(format_size),
                sent => audio_only.as_ref().map(|a| format_size(a.uploaded_bytes)),
                original => audio_only
                    .as_ref()
                    .map(|a| format_size(u64::try_from(a.source.size_bytes).unwrap_or(0))),
                original_sha256 => audio_only.as_ref().map(|a| a.source.sha256.as_str()),
                download_url => format!("{}/download?fid={mp3_fid}", self.public_url),
                api_url => format!("{}/api/v1/jobs/{}/mp3", self.public_url, message.job_id),
            },
        )?;
        let id = self.message_id(&format!("ready.{}", message.job_id));
        self.build(&message.username, rendered, id)
    }

    /// "We could not convert <file>", with the reason in plain words.
    /// `retries` tells this failure of the job from earlier ones.
    pub fn failed_email(&self, event: &JobEvent, retries: u32) -> Result<Message, Error> {
        let reason = event
            .error
            .as_deref()
            .unwrap_or("the conversion failed for an unknown reason");
        let rendered = self.templates.render(
            "failed",
            context! {
                filename => shown_name(&event.filename),
                short_filename => subject_name(&event.filename),
                reason => reason,
                job_id => &event.job_id,
                advice => failure_advice(&event.filename, reason),
            },
        )?;
        let id = self.message_id(&format!("failed.{retries}.{}", event.job_id));
        self.build(&event.username, rendered, id)
    }

    /// The Message-ID of one email about one job: the same for every copy
    /// of it, so a copy sent again (an SMTP server that took the mail but
    /// whose answer was lost) can be recognised and dropped by the
    /// receiving side.
    fn message_id(&self, what: &str) -> String {
        format!("<{what}@{}>", self.from.email.domain())
    }

    fn build(
        &self,
        to: &str,
        rendered: crate::templates::Rendered,
        message_id: String,
    ) -> Result<Message, Error> {
        let to: Mailbox = to.parse().map_err(|_| Error::BadAddress(to.to_owned()))?;
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to)
            .message_id(Some(message_id))
            // The subject carries the user's file name: one line, capped,
            // no encoded-word of theirs.
            .subject(contract::names::header_text(
                &rendered.subject,
                SUBJECT_CHARS,
            ))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))?)
    }

    pub async fn send(&self, email: Message) -> Result<(), Error> {
        let started = Instant::now();
        let sent = tokio::time::timeout(self.timeout, self.transport.send(email)).await;
        metrics::histogram!("notification_smtp_seconds").record(started.elapsed().as_secs_f64());
        sent.map_err(|_| Error::SmtpTimedOut(self.timeout.as_secs()))??;
        Ok(())
    }

    /// True when the SMTP server answers in time (for `/readyz`).
    pub async fn is_reachable(&self) -> bool {
        tokio::time::timeout(self.timeout, self.transport.test_connection())
            .await
            .is_ok_and(|answer| answer.unwrap_or(false))
    }
}

/// What the failure mail suggests, for this file and this reason (the same
/// words in the text and the HTML part).
fn failure_advice(filename: &str, reason: &str) -> String {
    if reason.contains("no audio track") {
        return "The file has no sound to convert: check that you sent the video you meant."
            .to_owned();
    }
    if reason.contains("time limit") {
        return "The file took too long to convert: try again with a shorter part of it."
            .to_owned();
    }
    let own = std::path::Path::new(filename)
        .extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_uppercase)
        .unwrap_or_default();
    let others: Vec<&str> = ["MP4", "MKV", "WebM"]
        .into_iter()
        .filter(|format| !format.eq_ignore_ascii_case(&own))
        .collect();
    format!(
        "You can try again with another copy of the file, or save it as {} first.",
        others.join(" or ")
    )
}

/// A user's file name as the mails show it: one line, at most 200
/// characters (it may say anything; the HTML part escapes it too).
/// A file name in a mail's text: one line, capped, and with nothing a mail
/// program would make a link of.
fn shown_name(name: &str) -> String {
    contract::names::defanged(&contract::names::header_text(name, 200))
}

/// The longest file name a Subject shows, in characters: which file it
/// is, and no room for a message of someone else's.
const SUBJECT_NAME_CHARS: usize = 40;

/// A file name in a Subject: shortened and defused.
fn subject_name(name: &str) -> String {
    contract::names::defanged(&contract::names::header_text(name, SUBJECT_NAME_CHARS))
}

fn format_duration(seconds: f64) -> String {
    let total = seconds.round() as u64;
    if total >= 3600 {
        format!("{}:{:02}:{:02}", total / 3600, total / 60 % 60, total % 60)
    } else {
        format!("{}:{:02}", total / 60, total % 60)
    }
}

fn format_size(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn message() -> Mp3Result {
        Mp3Result {
            video_fid: "v".into(),
            mp3_fid: "65f0c0ffee00000000000001".into(),
            username: "ana@example.com".into(),
            job_id: "65f0c0ffee00000000000002".into(),
            filename: "holiday clip.mp4".into(),
            options: contract::Options::default(),
            notify_email: true,
            duration_s: Some(75.4),
        }
    }

    fn mailer() -> Mailer {
        let config = Config::try_parse_from([
            "notification",
            "--smtp-url",
            "smtp://127.0.0.1:1",
            "--mail-from",
            "MP3 <noreply@example.com>",
            "--public-url",
            "http://gw.example/",
        ])
        .expect("config");
        Mailer::new(&config).expect("valid settings")
    }

    // The SMTP pool spawns its reaper task, so these need a runtime.
    #[tokio::test]
    async fn ready_email_has_both_parts_the_links_the_id_and_the_facts() {
        let email = mailer()
            .ready_email(&message(), Some(1_234_567), None)
            .expect("builds");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        assert!(
            text.contains("Subject: Your MP3 is ready: holiday clip.mp4"),
            "{text}"
        );
        assert!(text.contains("To: ana@example.com"), "{text}");
        assert!(text.contains("Message-ID: <"), "{text}");
        assert!(text.contains("Date: "), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("Content-Type: text/plain"), "{text}");
        assert!(text.contains("Content-Type: text/html"), "{text}");
        assert!(text.contains("MP3 id: 65f0c0ffee00000000000001"), "{text}");
        assert!(
            text.contains("http://gw.example/download?fid=65f0c0ffee00000000000001"),
            "{text}"
        );
        assert!(
            text.contains("http://gw.example/api/v1/jobs/65f0c0ffee00000000000002/mp3"),
            "{text}"
        );
        assert!(text.contains("Duration: 1:15"), "{text}");
        assert!(text.contains("Size: 1.2 MiB"), "{text}");
        assert!(!text.contains("audio only"), "a whole upload: {text}");
    }

    #[tokio::test]
    async fn an_audio_only_upload_says_what_was_sent_and_what_it_came_from() {
        let source = common::jobs::SourceFile {
            size_bytes: 358 * 1024 * 1024,
            sha256: "ab".repeat(32),
        };
        let audio_only = AudioOnly {
            uploaded_bytes: 10 * 1024 * 1024,
            source: &source,
        };
        let email = mailer()
            .ready_email(&message(), Some(1_234_567), Some(audio_only))
            .expect("builds");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        // Both parts (quoted-printable may fold the lines: unfold them).
        let text = text.replace("=\r\n", "");
        for part in [
            "Sent: the audio only, 10.0 MiB of the video's 358.0 MiB",
            "<td>the audio only, 10.0 MiB of the video's 358.0 MiB</td>",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert_eq!(text.matches(&source.sha256).count(), 2, "{text}");
    }

    /// The plain-text part, decoded (quoted-printable soft breaks joined).
    fn text_part(email: &Message) -> String {
        let raw = String::from_utf8(email.formatted()).expect("utf-8");
        let start = raw.find("Content-Type: text/plain").expect("a text part");
        let body = &raw[start..];
        let body = &body[body.find("\r\n\r\n").expect("part headers end") + 4..];
        let body = &body[..body.find("\r\n--").unwrap_or(body.len())];
        body.replace("=\r\n", "")
            .replace("=3D", "=")
            .replace("=22", "\"")
    }

    #[tokio::test]
    async fn the_suggested_command_is_safe_to_paste_whatever_the_file_name() {
        for (name, wanted) in [
            ("`id`.mp4", "_id_.mp3"),
            ("a\".mp4", "a_.mp3"),
            ("$(touch x) ; rm -rf ~.mp4", "__touch_x____rm_-rf__.mp3"),
        ] {
            let mut msg = message();
            msg.filename = name.into();
            let email = mailer().ready_email(&msg, None, None).expect("builds");
            let text = text_part(&email);
            let line = text
                .lines()
                .find(|l| l.starts_with("curl "))
                .unwrap_or_else(|| panic!("no curl line in {text}"));
            assert!(line.contains(&format!("-o \"{wanted}\"")), "{name}: {line}");
            assert!(
                !line.contains('`') && !line.contains("$("),
                "{name}: {line}"
            );
        }
    }

    #[tokio::test]
    async fn the_subject_is_one_capped_line_without_the_senders_encoded_words() {
        let mut msg = message();
        msg.filename = format!(
            "=?UTF-8?B?SGFja2Vk?= {}\r\nBcc: x@evil.example.mp4",
            "y".repeat(500)
        );
        let email = mailer().ready_email(&msg, None, None).expect("builds");
        let raw = email
            .headers()
            .get_raw("Subject")
            .expect("a subject")
            .to_owned();
        assert!(!raw.contains("=?"), "{raw}");
        assert!(!raw.contains('\n') && !raw.contains('\r'), "{raw}");
        assert!(
            raw.chars().count() <= 151,
            "{} characters",
            raw.chars().count()
        );
        let formatted = String::from_utf8(email.formatted()).expect("utf-8");
        let head = &formatted[..formatted.find("\r\n\r\n").expect("headers end")];
        assert!(!head.contains("\r\nBcc:"), "a header was injected: {head}");
        assert!(
            !text_part(&email).contains("\nBcc:"),
            "a line was forged in the text"
        );
    }

    #[tokio::test]
    async fn the_failure_advice_fits_the_file_and_both_parts_say_it() {
        let cases = [
            ("clip.mkv", "the file could not be read", "MP4 or WebM"),
            ("clip.mp4", "the file could not be read", "MKV or WebM"),
            ("clip.webm", "the file could not be read", "MP4 or MKV"),
            ("silent.mp4", "the file has no audio track", "no sound"),
        ];
        for (filename, reason, wanted) in cases {
            let event = JobEvent {
                job_id: "65f0c0ffee00000000000002".into(),
                state: contract::JobState::Failed,
                username: "ana@example.com".into(),
                filename: filename.into(),
                progress: 0.0,
                error: Some(reason.into()),
                mp3_fid: None,
            };
            let email = mailer().failed_email(&event, 0).expect("builds");
            let text = text_part(&email);
            let raw = String::from_utf8(email.formatted()).expect("utf-8");
            let html = &raw[raw.find("Content-Type: text/html").expect("an HTML part")..];
            let advice = failure_advice(filename, reason);
            assert!(advice.contains(wanted), "{filename}: {advice}");
            assert!(text.contains(&advice), "{filename}: text part: {text}");
            assert!(
                html.replace("=\r\n", "").contains(&advice),
                "{filename}: HTML part: {html}"
            );
            if filename.ends_with(".mkv") {
                assert!(!advice.contains("MKV"), "{advice}");
            }
        }
    }

    #[tokio::test]
    async fn non_ascii_file_names_are_encoded_in_the_subject() {
        let mut msg = message();
        msg.filename = "Grüße aus Köln.mp4".into();
        let email = mailer().ready_email(&msg, None, None).expect("builds");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        let subject = text
            .lines()
            .find(|l| l.starts_with("Subject: "))
            .expect("subject");
        assert!(
            subject.is_ascii() && subject.contains("=?utf-8?"),
            "RFC 2047: {subject}"
        );
    }

    #[tokio::test]
    async fn failed_email_gives_the_reason() {
        let event = JobEvent {
            job_id: "j".into(),
            state: contract::JobState::Failed,
            username: "ana@example.com".into(),
            filename: "silent.mp4".into(),
            progress: 0.0,
            error: Some("the file has no audio track".into()),
            mp3_fid: None,
        };
        let email = mailer().failed_email(&event, 0).expect("builds");
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        assert!(
            text.contains("Subject: We could not convert silent.mp4"),
            "{text}"
        );
        assert!(
            text.contains("Reason: the file has no audio track"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn missing_mp3_id_and_bad_address_are_permanent() {
        // A result without its MP3 cannot be built, and does not decode.
        let no_fid = serde_json::to_vec(&serde_json::json!({
            "video_fid": "v", "mp3_fid": null, "username": "ana@example.com",
            "job_id": "j", "filename": "a.mp4"
        }))
        .expect("json");
        let err = Error::from(common::Error::from(
            Mp3Result::from_slice(&no_fid).expect_err("no fid"),
        ));
        assert!(err.is_permanent());
        let mut bad = message();
        bad.username = "not an address".into();
        let err = mailer()
            .ready_email(&bad, None, None)
            .expect_err("bad address");
        assert!(err.is_permanent());
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(format_duration(3725.0), "1:02:05");
        assert_eq!(format_duration(59.6), "1:00");
        assert_eq!(format_size(1000), "1 KiB");
        assert_eq!(format_size(5 * 1024 * 1024), "5.0 MiB");
    }
}
