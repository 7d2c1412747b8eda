//! The JSON messages on the queues. Field names and order (`video_fid`,
//! `mp3_fid`, `username`, ...) come from the original system and are a
//! contract with every consumer: `tests/wire.rs` pins them byte for byte.
//!
//! A conversion request ([`VideoRequest`], queue `video`) and its result
//! ([`Mp3Result`], queue `mp3`) are two types, so a result without its MP3
//! cannot be built or read; both keep the one JSON shape the queues have
//! always carried (the request with `"mp3_fid": null`).

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::options::Options;
use crate::state::JobState;

/// A job to convert, on queue `video`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VideoRequest {
    /// GridFS id (hex ObjectId) of the uploaded video in database `videos`.
    pub video_fid: String,
    /// The owner's email address; also where the notification goes.
    pub username: String,
    /// The job this message belongs to (hex ObjectId).
    pub job_id: String,
    /// The original upload's file name, for the MP3's name and the email.
    pub filename: String,
    /// Per-job conversion options; absent or `{}` means defaults.
    #[serde(default)]
    pub options: Options,
    /// Whether the user wants an email when the MP3 is ready.
    #[serde(default = "default_true")]
    pub notify_email: bool,
}

/// A converted job, on queue `mp3`: the request and where its MP3 is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mp3Result {
    pub video_fid: String,
    /// GridFS id of the MP3 in database `mp3s`.
    pub mp3_fid: String,
    pub username: String,
    pub job_id: String,
    pub filename: String,
    #[serde(default)]
    pub options: Options,
    #[serde(default = "default_true")]
    pub notify_email: bool,
    /// Duration of the MP3 in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

impl Serialize for VideoRequest {
    /// The fields in the queue's order, with the `"mp3_fid": null` every
    /// `video` message has carried since the original system.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut message = serializer.serialize_struct("VideoRequest", 7)?;
        message.serialize_field("video_fid", &self.video_fid)?;
        message.serialize_field("mp3_fid", &None::<String>)?;
        message.serialize_field("username", &self.username)?;
        message.serialize_field("job_id", &self.job_id)?;
        message.serialize_field("filename", &self.filename)?;
        message.serialize_field("options", &self.options)?;
        message.serialize_field("notify_email", &self.notify_email)?;
        message.end()
    }
}

impl VideoRequest {
    /// Decodes a message body; errors are permanent (the bytes will never parse).
    pub fn from_slice(body: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(body)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Plain strings, numbers and options cannot fail to serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The result of converting this request into `mp3_fid`.
    pub fn converted(&self, mp3_fid: String, duration_s: Option<f64>) -> Mp3Result {
        Mp3Result {
            video_fid: self.video_fid.clone(),
            mp3_fid,
            username: self.username.clone(),
            job_id: self.job_id.clone(),
            filename: self.filename.clone(),
            options: self.options.clone(),
            notify_email: self.notify_email,
            duration_s,
        }
    }
}

impl Mp3Result {
    /// Decodes a message body; errors are permanent. A body without an
    /// `mp3_fid` (a request sent to the wrong queue) is one of them.
    pub fn from_slice(body: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(body)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A job state change, published to the `events` topic exchange with
/// routing key `job.<state>` (the gateway's live events, failure emails).
/// Whether to mail is the job record's to say, not the event's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: String,
    pub state: JobState,
    /// The owner's email address.
    pub username: String,
    pub filename: String,
    #[serde(default)]
    pub progress: f64,
    /// Why the job failed, in plain words.
    #[serde(default)]
    pub error: Option<String>,
    /// The MP3, on `job.done`.
    #[serde(default)]
    pub mp3_fid: Option<String>,
}

impl JobEvent {
    /// The job of `request` reaching `state`: progress 1 when done, else 0;
    /// no error and no MP3 until the caller says so.
    pub fn of(request: &VideoRequest, state: JobState) -> JobEvent {
        JobEvent {
            job_id: request.job_id.clone(),
            state,
            username: request.username.clone(),
            filename: request.filename.clone(),
            progress: if state == JobState::Done { 1.0 } else { 0.0 },
            error: None,
            mp3_fid: None,
        }
    }

    /// The routing key on the events exchange.
    pub fn routing_key(&self) -> String {
        format!("job.{}", self.state.as_str())
    }

    pub fn from_slice(body: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(body)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> VideoRequest {
        VideoRequest {
            video_fid: "v".into(),
            username: "u@example.com".into(),
            job_id: "j".into(),
            filename: "clip.mkv".into(),
            options: Options::from_json(&serde_json::json!({"quality": "V6"})).expect("valid"),
            notify_email: false,
        }
    }

    #[test]
    fn seed_shaped_message_without_new_fields_parses_with_defaults() {
        let body = br#"{"video_fid":"65a1","mp3_fid":null,"username":"a@b.c","job_id":"j1","filename":"x.mp4"}"#;
        let msg = VideoRequest::from_slice(body).expect("parses");
        assert!(msg.notify_email);
        assert_eq!(msg.options, Options::default());
    }

    #[test]
    fn round_trips_keep_every_field() {
        let msg = request();
        assert_eq!(
            VideoRequest::from_slice(&msg.to_vec()).expect("parses"),
            msg
        );
        let result = msg.converted("m".into(), Some(1.5));
        assert_eq!(
            Mp3Result::from_slice(&result.to_vec()).expect("parses"),
            result
        );
    }

    #[test]
    fn a_request_is_no_result() {
        assert!(Mp3Result::from_slice(&request().to_vec()).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(VideoRequest::from_slice(b"not json").is_err());
        assert!(VideoRequest::from_slice(br#"{"video_fid": 1}"#).is_err());
        assert!(
            JobEvent::from_slice(br#"{"job_id":"j","state":"lost","username":"u","filename":"f"}"#)
                .is_err()
        );
    }

    #[test]
    fn an_event_is_routed_by_its_state() {
        let event = JobEvent::of(&request(), JobState::Done);
        assert_eq!(event.routing_key(), "job.done");
        assert_eq!(event.progress, 1.0);
    }
}
