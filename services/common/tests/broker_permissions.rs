//! Each service's broker user (scripts/broker-users) may do what the
//! service does and nothing else, on the real RabbitMQ: a vhost and users
//! made for this test (with rabbitmqctl, as scripts/up does), then what
//! each can and cannot declare, publish and consume.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .status()
        .expect("rabbitmqctl runs (the broker is local)");
    assert!(status.success(), "rabbitmqctl {args:?}");
}

/// A vhost and the three users in it; removed on drop.
struct Broker {
    vhost: String,
    prefix: String,
    passwords: tempfile::TempDir,
}

impl Broker {
    fn new() -> Broker {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let broker = Broker {
            vhost: format!("perm-{tag}"),
            prefix: format!("p{tag}-"),
            passwords: tempfile::tempdir().expect("tempdir"),
        };
        rabbitmqctl(&["add_vhost", &broker.vhost]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/broker-users");
        let status = Command::new(script)
            .args([
                "apply",
                "--vhost",
                &broker.vhost,
                "--prefix",
                &broker.prefix,
                "--password-dir",
            ])
            .arg(broker.passwords.path())
            .status()
            .expect("scripts/broker-users runs");
        assert!(status.success(), "broker-users apply");
        broker
    }

    async fn channel_of(&self, user: &str) -> (Connection, Channel) {
        let password =
            std::fs::read_to_string(self.passwords.path().join(format!("{user}.password")))
                .expect("password");
        let url = format!(
            "amqp://{}{user}:{}@127.0.0.1:5672/{}",
            self.prefix,
            password.trim(),
            self.vhost
        );
        let conn = common::amqp::connect(&url, user)
            .await
            .expect("the user logs in");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        (conn, channel)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.vhost])
            .status();
        for user in ["gateway", "converter", "notification"] {
            let name = format!("{}{user}", self.prefix);
            let _ = Command::new("rabbitmqctl")
                .args(["-q", "delete_user", &name])
                .status();
        }
    }
}

/// Whether `user` may do `what` (each try on a fresh channel: a refusal
/// closes the channel).
fn amqp_error(err: common::Error) -> lapin::Error {
    match err {
        common::Error::Amqp(err) => err,
        other => panic!("{other}"),
    }
}

/// A `basic.get` from `queue` (declared first by whoever may).
async fn read(channel: &Channel, queue: &str) -> Result<(), lapin::Error> {
    channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
        .await
        .map(|_| ())
}

async fn allowed(broker: &Broker, user: &str, what: &str) -> bool {
    let (conn, channel) = broker.channel_of(user).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let publish = |exchange: &'static str, key: &'static str| {
        let channel = channel.clone();
        async move {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default(),
                )
                .await?;
            confirm.await.map(|_| ())
        }
    };
    let result: Result<(), lapin::Error> = async {
        match what {
            "declare video" => channel
                .queue_declare("video".into(), durable, FieldTable::default())
                .await
                .map(|_| ()),
            "declare mp3" => channel
                .queue_declare("mp3".into(), durable, FieldTable::default())
                .await
                .map(|_| ()),
            "declare video.dlq" => common::amqp::declare_queue(&channel, "video.dlq")
                .await
                .map_err(amqp_error),
            "declare mp3.dlq" => common::amqp::declare_queue(&channel, "mp3.dlq")
                .await
                .map_err(amqp_error),
            "declare other" => channel
                .queue_declare("other".into(), durable, FieldTable::default())
                .await
                .map(|_| ()),
            "declare events" => common::amqp::declare_topic_exchange(&channel, "events")
                .await
                .map_err(amqp_error),
            "consume video" => channel
                .basic_consume(
                    "video".into(),
                    "test".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
            "consume mp3" => channel
                .basic_consume(
                    "mp3".into(),
                    "test".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
            // A retry parks the message in a delay queue that returns it
            // to its queue: its declaration needs more than configure.
            "declare video delay" => common::amqp::declare_delay_queue(
                &channel,
                "video.delay.2000ms",
                "video",
                Duration::from_secs(2),
            )
            .await
            .map_err(amqp_error),
            "declare mp3 delay" => common::amqp::declare_delay_queue(
                &channel,
                "mp3.delay.2000ms",
                "mp3",
                Duration::from_secs(2),
            )
            .await
            .map_err(amqp_error),
            "read mp3.dlq" => read(&channel, "mp3.dlq").await,
            "read video.dlq" => read(&channel, "video.dlq").await,
            "publish to video" => publish("", "video").await,
            "publish job.queued" => publish("events", "job.queued").await,
            "publish job.done" => publish("events", "job.done").await,
            other => panic!("unknown action {other}"),
        }
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.close(200, "done".into())).await;
    result.is_ok()
}

#[tokio::test]
async fn each_service_may_do_what_it_does_and_nothing_else() {
    let broker = Broker::new();
    // What exists before anyone consumes (the gateway and the converter
    // declare them in production too).
    for (user, what) in [
        ("gateway", "declare video"),
        ("converter", "declare mp3"),
        ("gateway", "declare events"),
        ("converter", "declare video.dlq"),
        ("notification", "declare mp3.dlq"),
    ] {
        assert!(allowed(&broker, user, what).await, "{user}: {what}");
    }

    let expectations = [
        ("gateway", "publish to video", true),
        ("gateway", "publish job.queued", true),
        ("gateway", "publish job.done", false),
        ("gateway", "consume video", false),
        ("gateway", "consume mp3", false),
        ("gateway", "declare mp3", false),
        ("gateway", "declare other", false),
        ("converter", "consume video", true),
        ("converter", "declare video delay", true),
        ("converter", "declare mp3 delay", false),
        ("converter", "publish job.done", true),
        ("converter", "publish job.queued", false),
        ("converter", "consume mp3", false),
        ("converter", "declare other", false),
        ("notification", "consume mp3", true),
        ("notification", "declare mp3 delay", true),
        ("notification", "declare video delay", false),
        ("notification", "consume video", false),
        ("notification", "declare video", false),
        ("notification", "publish job.done", false),
        // Replaying its own dead letters, and nobody else's.
        ("notification", "read mp3.dlq", true),
        ("notification", "read video.dlq", false),
        ("converter", "read mp3.dlq", false),
        ("gateway", "read mp3.dlq", false),
    ];
    let mut wrong = Vec::new();
    for (user, what, expected) in expectations {
        if allowed(&broker, user, what).await != expected {
            wrong.push(format!(
                "{user} {what}: expected {}",
                if expected { "allowed" } else { "refused" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
