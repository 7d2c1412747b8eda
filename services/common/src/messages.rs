//! The JSON messages on the `video` and `mp3` queues. Field names
//! (`video_fid`, `mp3_fid`, `username`) come from the original system and are
//! a contract with every consumer.

use serde::{Deserialize, Serialize};

/// One conversion request (queue `video`) or its result (queue `mp3`, with
/// `mp3_fid` and `duration_s` filled in).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversionMessage {
    /// GridFS id (hex ObjectId) of the uploaded video in database `videos`.
    pub video_fid: String,
    /// GridFS id of the MP3 in database `mp3s`; `None` until converted.
    pub mp3_fid: Option<String>,
    /// The owner's email address; also where the notification goes.
    pub username: String,
    /// The job this message belongs to (hex ObjectId).
    pub job_id: String,
    /// The original upload's file name, for the MP3's name and the email.
    pub filename: String,
    /// Per-job conversion options; an empty object means defaults.
    #[serde(default = "empty_object")]
    pub options: serde_json::Value,
    /// Whether the user wants an email when the MP3 is ready.
    #[serde(default = "default_true")]
    pub notify_email: bool,
    /// Duration of the MP3 in seconds (set by the converter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// A job state change, published to the `events` topic exchange with
/// routing key `job.<state>` (the gateway's live events, failure emails).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: String,
    /// `queued`, `converting`, `done` or `failed`.
    pub state: String,
    /// The owner's email address.
    pub username: String,
    pub filename: String,
    #[serde(default)]
    pub progress: f64,
    /// Why the job failed, in plain words.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub mp3_fid: Option<String>,
    #[serde(default = "default_true")]
    pub notify_email: bool,
}

impl JobEvent {
    /// The routing key on the events exchange.
    pub fn routing_key(&self) -> String {
        format!("job.{}", self.state)
    }

    pub fn from_slice(body: &[u8]) -> crate::error::Result<Self> {
        Ok(serde_json::from_slice(body)?)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn default_true() -> bool {
    true
}

impl ConversionMessage {
    /// Decodes a message body; errors are permanent (the bytes will never parse).
    pub fn from_slice(body: &[u8]) -> crate::error::Result<Self> {
        Ok(serde_json::from_slice(body)?)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and a JSON value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_shaped_message_without_new_fields_parses_with_defaults() {
        let body = br#"{"video_fid":"65a1","mp3_fid":null,"username":"a@b.c","job_id":"j1","filename":"x.mp4"}"#;
        let msg = ConversionMessage::from_slice(body).expect("parses");
        assert_eq!(msg.mp3_fid, None);
        assert!(msg.notify_email);
        assert_eq!(msg.options, serde_json::json!({}));
        assert_eq!(msg.duration_s, None);
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let msg = ConversionMessage {
            video_fid: "v".into(),
            mp3_fid: Some("m".into()),
            username: "u@example.com".into(),
            job_id: "j".into(),
            filename: "clip.mkv".into(),
            options: serde_json::json!({"quality": "V2"}),
            notify_email: false,
            duration_s: Some(1.5),
        };
        assert_eq!(
            ConversionMessage::from_slice(&msg.to_vec()).expect("parses"),
            msg
        );
    }

    #[test]
    fn mp3_fid_is_serialised_as_null_not_omitted() {
        let msg = ConversionMessage {
            video_fid: "v".into(),
            mp3_fid: None,
            username: "u".into(),
            job_id: "j".into(),
            filename: "f".into(),
            options: serde_json::json!({}),
            notify_email: true,
            duration_s: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&msg.to_vec()).expect("json");
        assert!(json.get("mp3_fid").is_some_and(|v| v.is_null()));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ConversionMessage::from_slice(b"not json").is_err());
        assert!(ConversionMessage::from_slice(br#"{"video_fid": 1}"#).is_err());
    }
}
