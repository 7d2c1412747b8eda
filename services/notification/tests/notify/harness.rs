//! Starts the real notification `App` with per-test queue, exchange and
//! database names, an SMTP server in the test, and helpers to publish and
//! to look into the dead-letter queue.

use std::time::Duration;

use clap::Parser;
use lapin::options::BasicGetOptions;
use lapin::types::FieldTable;
use mongodb::bson::oid::ObjectId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::amqp::Publisher;
use common::config::MongoStores;
use common::jobs::{Job, JobState};
use contract::{JobEvent, Mp3Result};

pub use common::testing::{amqp_url, free_port};

/// How a test's notification service is set up.
pub struct Options {
    pub smtp_port: u16,
    pub retry_base_ms: u64,
    /// How long an email claim outlives a holder that died.
    pub claim_lease_ms: u64,
    /// The broker as the service reaches it (a proxy the test can cut);
    /// the test itself always talks to the broker directly.
    pub service_amqp_url: String,
}

impl Options {
    pub fn new(smtp_port: u16, retry_base_ms: u64) -> Options {
        Options {
            smtp_port,
            retry_base_ms,
            claim_lease_ms: 30_000,
            service_amqp_url: amqp_url(),
        }
    }
}

pub struct Harness {
    pub prefix: String,
    /// The service's configuration, for one-off commands.
    pub config: notification::Config,
    retry_base_ms: u64,
    claim_lease_ms: u64,
    pub mongo: MongoStores,
    pub publisher: Publisher,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    pub fn mp3_queue(&self) -> String {
        format!("{}.mp3", self.prefix)
    }

    fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Starts the service sending to `smtp_port`, retrying after `retry_base_ms`.
    pub async fn start(smtp_port: u16, retry_base_ms: u64) -> Harness {
        Self::start_with(Options::new(smtp_port, retry_base_ms)).await
    }

    pub async fn start_with(options: Options) -> Harness {
        let Options {
            smtp_port,
            retry_base_ms,
            claim_lease_ms,
            service_amqp_url,
        } = options;
        common::telemetry::init();
        let prefix = format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mongo_uri = common::testing::mongodb_uri();
        let config = notification::Config::try_parse_from([
            "notification".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--smtp-url".into(),
            format!("smtp://127.0.0.1:{smtp_port}"),
            "--smtp-timeout-secs".into(),
            "5".into(),
            "--public-url".into(),
            "http://gateway.test".into(),
            "--retry-base-ms".into(),
            retry_base_ms.to_string(),
            "--claim-lease-ms".into(),
            claim_lease_ms.to_string(),
            "--amqp-url".into(),
            service_amqp_url,
            "--mp3-queue".into(),
            format!("{prefix}.mp3"),
            "--events-exchange".into(),
            format!("{prefix}.events"),
            "--failed-events-queue".into(),
            format!("{prefix}.job-failed"),
            "--mongodb-uri".into(),
            mongo_uri,
            "--videos-db".into(),
            format!("{prefix}_videos"),
            "--mp3s-db".into(),
            format!("{prefix}_mp3s"),
        ])
        .expect("config");
        let mongo = config.mongo.connect().await.expect("mongo");
        let publisher = Publisher::connect(
            &amqp_url(),
            "notification-test",
            &[&format!("{prefix}.mp3")],
            &[&format!("{prefix}.events")],
        )
        .await
        .expect("broker");
        let app = notification::App::build(config.clone())
            .await
            .expect("builds");
        let (stop, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(common::testing::cancelled_by(signal)));
        let harness = Harness {
            prefix,
            config,
            retry_base_ms,
            claim_lease_ms,
            mongo,
            publisher,
            stop: Some(stop),
            task: Some(task),
        };
        harness.wait_until_bound().await;
        harness
    }

    /// Waits until the failure-events queue exists and is bound (the
    /// service declares it when its consumer starts).
    async fn wait_until_bound(&self) {
        let conn = common::amqp::connect(&amqp_url(), "probe")
            .await
            .expect("connect");
        for _ in 0..100 {
            let channel = conn.create_channel().await.expect("channel");
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if let Ok(queue) = channel
                .queue_declare(
                    format!("{}.job-failed", self.prefix).as_str().into(),
                    passive,
                    FieldTable::default(),
                )
                .await
                && queue.consumer_count() > 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service never started consuming its failure events");
    }

    /// A job document as the converter leaves it: done, with its MP3.
    pub async fn insert_job(&self, filename: &str) -> ObjectId {
        self.insert(Job {
            state: JobState::Done,
            progress: 1.0,
            mp3_fid: Some(ObjectId::new()),
            duration_s: Some(61.0),
            size_bytes: 1,
            ..Job::queued(
                ObjectId::new(),
                "ana@example.com",
                filename,
                ObjectId::new(),
            )
        })
        .await
    }

    pub async fn insert(&self, job: Job) -> ObjectId {
        self.mongo.jobs.insert(&job).await.expect("insert job");
        job.id
    }

    /// The `mp3` message the converter publishes for a job, from its record.
    /// (A job without an MP3 yet gets an empty `mp3_fid`.)
    pub async fn ready_message(&self, job_id: ObjectId) -> Mp3Result {
        let job = self.job(job_id).await;
        job.video_message().converted(
            job.mp3_fid.map(|fid| fid.to_hex()).unwrap_or_default(),
            job.duration_s,
        )
    }

    pub async fn publish_ready(&self, message: &Mp3Result) {
        self.publish_raw(&message.to_vec()).await;
    }

    pub async fn publish_raw(&self, body: &[u8]) {
        self.publisher
            .publish(&self.mp3_queue(), body, FieldTable::default())
            .await
            .expect("publish");
    }

    /// Fails the job with `reason` and publishes its `job.failed` event, as
    /// the converter does.
    pub async fn publish_failed(&self, job_id: ObjectId, filename: &str, reason: &str) {
        self.mongo
            .jobs
            .mark_failed(job_id, reason)
            .await
            .expect("fail the job");
        self.publish_event(&JobEvent {
            job_id: job_id.to_hex(),
            state: contract::JobState::Failed,
            username: "ana@example.com".into(),
            filename: filename.into(),
            progress: 0.0,
            error: Some(reason.into()),
            mp3_fid: None,
        })
        .await;
    }

    /// Publishes a job event, whatever it says.
    pub async fn publish_event(&self, event: &JobEvent) {
        self.publisher
            .publish_event(
                &self.events_exchange(),
                &event.routing_key(),
                &event.to_vec(),
            )
            .await
            .expect("publish event");
    }

    /// Waits for one message on the `mp3` dead-letter queue; returns its body
    /// and the failure reason header.
    pub async fn next_dead_letter(&self, timeout: Duration) -> (Vec<u8>, String) {
        let conn = common::amqp::connect(&amqp_url(), "dlq-reader")
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        let queue = common::amqp::dead_letter_queue(&self.mp3_queue());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(message) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get")
            {
                let headers = message
                    .delivery
                    .properties
                    .headers()
                    .clone()
                    .unwrap_or_default();
                let reason = match headers.inner().get(common::amqp::REASON_HEADER) {
                    Some(lapin::types::AMQPValue::LongString(r)) => r.to_string(),
                    other => format!("{other:?}"),
                };
                return (message.delivery.data.clone(), reason);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing dead-lettered within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Both dead-letter queues are empty.
    pub async fn assert_no_dead_letter(&self) {
        assert_eq!(self.dead_letter_count().await, 0, "dead letters");
    }

    /// Messages in the service's two dead-letter queues.
    pub async fn dead_letter_count(&self) -> u32 {
        let conn = common::amqp::connect(&amqp_url(), "dlq-reader")
            .await
            .expect("connect");
        let channel = conn.create_channel().await.expect("channel");
        let mut count = 0;
        for queue in [self.mp3_queue(), format!("{}.job-failed", self.prefix)] {
            let dlq = common::amqp::dead_letter_queue(&queue);
            count += common::amqp::message_count(&channel, &dlq)
                .await
                .expect("the dead-letter queue exists");
        }
        let _ = conn.close(200, "done".into()).await;
        count
    }

    /// Waits until the job satisfies `done` (the mark is written right after
    /// the mail went out, so it may trail the mail by a moment).
    pub async fn wait_for_job(&self, id: ObjectId, done: impl Fn(&Job) -> bool) -> Job {
        for _ in 0..100 {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never reached the expected state");
    }

    pub async fn job(&self, id: ObjectId) -> Job {
        self.mongo
            .jobs
            .get(id)
            .await
            .expect("read")
            .expect("job exists")
    }

    /// Stops the service and removes the test's queues and databases.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(30), task).await;
            assert!(
                matches!(stopped, Ok(Ok(Ok(())))),
                "service did not stop cleanly: {stopped:?}"
            );
        }
        // The delay queues of this test's own (short) retry base.
        let mp3 = self.mp3_queue();
        let policy = common::amqp::RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(self.retry_base_ms),
        };
        let lease = notification::claim::Lease(Duration::from_millis(self.claim_lease_ms));
        let failed = format!("{}.job-failed", self.prefix);
        let mut delays: Vec<String> = (1..8)
            .flat_map(|attempt| {
                [&mp3, &failed]
                    .map(|queue| common::amqp::delay_queue(queue, policy.delay_after(attempt)))
            })
            .collect();
        // Where messages wait for another delivery's claim.
        for queue in [&mp3, &failed] {
            delays.push(common::amqp::delay_queue(queue, lease.renew_every()));
        }
        common::testing::clean_up(&self.prefix, &delays).await;
    }
}
