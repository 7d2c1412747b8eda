//! The request id an upload was given travels with its job: the `video`
//! message's `x-request-id` header comes back on the `mp3` message, whose
//! body is the job's result.

use std::time::Duration;

use lapin::options::BasicGetOptions;

use common::jobs::JobState;
use contract::Mp3Result;

use crate::harness::{World, make_audio, mongodb_uri, start_converter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_of_a_video_message_comes_back_on_its_mp3_message() {
    let world = World::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let job = world
        .store(
            &make_audio(dir.path(), "traced.m4a", 1),
            "ana@example.com",
            serde_json::json!({}),
        )
        .await;
    let converter = start_converter(world.converter_args(&mongodb_uri(), &[])).await;
    world
        .publisher
        .publish(
            &world.video_queue(),
            &job.video_message().to_vec(),
            common::amqp::request_id_headers("req-7f3a"),
        )
        .await
        .expect("publish");
    let done = world
        .wait_for_job(job.id, Duration::from_secs(60), |j| {
            j.state == JobState::Done
        })
        .await;

    let conn = common::amqp::connect(&common::testing::amqp_url(), "mp3-reader")
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let mp3_queue = format!("{}.mp3", world.prefix);
    let message = channel
        .basic_get(mp3_queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the mp3 message");
    let headers = message.delivery.properties.headers().as_ref();
    assert_eq!(
        common::amqp::header_text(headers, common::amqp::REQUEST_ID_HEADER),
        "req-7f3a",
        "{headers:?}"
    );
    let result = Mp3Result::from_slice(&message.delivery.data).expect("an mp3 result");
    assert_eq!(result.job_id, job.id.to_hex());
    assert_eq!(Some(result.mp3_fid), done.mp3_fid.map(|fid| fid.to_hex()));
    let _ = conn.close(200, "done".into()).await;
    converter.stop().await;
    world.clean_up(&[]).await;
}
