//! The JSON on the wire, pinned byte for byte: a `video` and an `mp3`
//! message as the original system's consumers read them, an event, and the
//! error body every JSON API answers with.

use contract::{ErrorBody, JobEvent, JobState, Mp3Result, Options, VideoRequest};

fn request() -> VideoRequest {
    VideoRequest {
        video_fid: "65a1b2c3d4e5f60718293a4b".into(),
        username: "ana@example.com".into(),
        job_id: "65a1b2c3d4e5f60718293a4c".into(),
        filename: "talk.mp4".into(),
        options: Options::from_json(&serde_json::json!({
            "quality": "cbr", "bitrate_kbps": 128, "channels": "mono", "trim_start_s": 1.5
        }))
        .expect("valid options"),
        notify_email: true,
    }
}

#[test]
fn a_video_message_is_the_json_it_always_was() {
    assert_eq!(
        String::from_utf8(request().to_vec()).expect("utf-8"),
        r#"{"video_fid":"65a1b2c3d4e5f60718293a4b","mp3_fid":null,"username":"ana@example.com","job_id":"65a1b2c3d4e5f60718293a4c","filename":"talk.mp4","options":{"quality":"cbr","bitrate_kbps":128,"channels":"mono","trim_start_s":1.5},"notify_email":true}"#
    );
    let defaults = VideoRequest {
        options: Options::default(),
        ..request()
    };
    assert!(
        String::from_utf8(defaults.to_vec())
            .expect("utf-8")
            .contains(r#""options":{},"#)
    );
}

#[test]
fn an_mp3_message_is_the_json_it_always_was() {
    let result = request().converted("65a1b2c3d4e5f60718293a4d".into(), Some(42.25));
    assert_eq!(
        String::from_utf8(result.to_vec()).expect("utf-8"),
        r#"{"video_fid":"65a1b2c3d4e5f60718293a4b","mp3_fid":"65a1b2c3d4e5f60718293a4d","username":"ana@example.com","job_id":"65a1b2c3d4e5f60718293a4c","filename":"talk.mp4","options":{"quality":"cbr","bitrate_kbps":128,"channels":"mono","trim_start_s":1.5},"notify_email":true,"duration_s":42.25}"#
    );
    let unknown_length = Mp3Result {
        duration_s: None,
        ..result
    };
    assert!(
        String::from_utf8(unknown_length.to_vec())
            .expect("utf-8")
            .ends_with(r#""notify_email":true}"#)
    );
}

#[test]
fn an_event_is_the_json_it_always_was() {
    let mut event = JobEvent::of(&request(), JobState::Failed);
    event.error = Some("no audio".into());
    assert_eq!(
        String::from_utf8(event.to_vec()).expect("utf-8"),
        r#"{"job_id":"65a1b2c3d4e5f60718293a4c","state":"failed","username":"ana@example.com","filename":"talk.mp4","progress":0.0,"error":"no audio","mp3_fid":null}"#
    );
}

#[test]
fn the_error_body_is_the_json_it_always_was() {
    assert_eq!(
        serde_json::to_string(&ErrorBody::new("not_found", "no such job")).expect("json"),
        r#"{"error":{"code":"not_found","message":"no such job"}}"#
    );
}
