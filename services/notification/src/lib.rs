//! The notification service: emails each user once when their MP3 is ready
//! (queue `mp3`) and once when their conversion failed (`job.failed` events).

pub mod claim;
pub mod config;
pub mod error;
pub mod mailer;
pub mod templates;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::amqp::{ConsumerSettings, RetryPolicy};

pub use config::Config;
use worker::Worker;

/// Attempts per email (the first included) before the dead-letter queue.
const MAX_ATTEMPTS: u32 = 8;

/// Runs a one-off [`config::Command`] and prints what it did.
pub async fn run_command(command: config::Command, config: &Config) -> anyhow::Result<()> {
    match command {
        config::Command::ReplayDeadLetters => {
            for queue in [&config.amqp.mp3_queue, &config.failed_events_queue] {
                let moved = common::amqp::replay_dead_letters(
                    &config.amqp.amqp_url,
                    "notification-replay",
                    queue,
                )
                .await
                .with_context(|| format!("replaying {}", common::amqp::dead_letter_queue(queue)))?;
                println!(
                    "{moved} messages moved from {} back to {queue}",
                    common::amqp::dead_letter_queue(queue)
                );
            }
            Ok(())
        }
    }
}

/// A notification worker with its operations port bound.
pub struct App {
    listener: tokio::net::TcpListener,
    worker: Worker,
    ready: ConsumerSettings,
    failed: ConsumerSettings,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let mongo = config.mongo.connect().await?;
        let mailer = mailer::Mailer::new(&config).context("configuring email")?;
        let lease = claim::Lease(Duration::from_millis(config.claim_lease_ms));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let ready = ConsumerSettings {
            url: config.amqp.amqp_url.clone(),
            queue: config.amqp.mp3_queue.clone(),
            name: "notification".into(),
            concurrency: config.concurrency,
            grace: Duration::from_secs(30),
            retry: RetryPolicy {
                max_attempts: MAX_ATTEMPTS,
                base_delay: Duration::from_millis(config.retry_base_ms),
            },
            // A delivery that finds another one sending comes back after
            // the holder's next renewal.
            wait: lease.renew_every(),
            bind: None,
        };
        let failed = ConsumerSettings {
            queue: config.failed_events_queue.clone(),
            name: "notification-failures".into(),
            bind: Some((config.amqp.events_exchange.clone(), "job.failed".into())),
            ..ready.clone()
        };
        Ok(App {
            listener,
            worker: Worker {
                mailer,
                mongo,
                lease,
            },
            ready,
            failed,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes until `shutdown` is cancelled, then finishes what is in flight.
    pub async fn run(self, shutdown: common::shutdown::CancellationToken) -> anyhow::Result<()> {
        let mailer = self.worker.mailer.clone();
        let ready: common::ops::ReadinessCheck = Arc::new(move || {
            let mailer = mailer.clone();
            Box::pin(async move {
                if mailer.is_reachable().await {
                    Ok(())
                } else {
                    Err("SMTP server".to_owned())
                }
            })
        });
        let (ready_worker, failed_worker) = (self.worker.clone(), self.worker);
        let work = async move {
            tokio::join!(
                common::amqp::consume(
                    self.ready,
                    move |incoming| {
                        let worker = ready_worker.clone();
                        async move { worker.process_ready(incoming).await }
                    },
                    shutdown.clone(),
                ),
                common::amqp::consume(
                    self.failed,
                    move |incoming| {
                        let worker = failed_worker.clone();
                        async move { worker.process_failed(incoming).await }
                    },
                    shutdown,
                ),
            );
        };
        common::ops::serve_while(self.listener, ready, work)
            .await
            .context("operations server")?;
        Ok(())
    }
}
