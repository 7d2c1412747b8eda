//! The converter: consumes the `video` queue and turns each video's audio
//! into an MP3 with the FFmpeg libraries, in-process.

pub mod config;
pub mod error;
pub mod source;
pub mod transcode;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::amqp::{ConsumerSettings, Publisher, RetryPolicy};

pub use config::Config;
use worker::Worker;

/// A converter with its operations port bound.
pub struct App {
    listener: tokio::net::TcpListener,
    worker: Worker,
    settings: ConsumerSettings,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        transcode::init();
        let mongo = config.mongo.connect().await?;
        let publisher = Publisher::connect(
            &config.amqp.amqp_url,
            "converter",
            &[&config.amqp.mp3_queue],
            &[&config.amqp.events_exchange],
        )
        .await
        .context("connecting to RabbitMQ")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let concurrency = config.concurrency();
        let time_limit = config.time_limit()?;
        Ok(App {
            listener,
            worker: Worker {
                mongo,
                publisher: Arc::new(publisher),
                mp3_queue: config.amqp.mp3_queue.clone(),
                events_exchange: config.amqp.events_exchange.clone(),
                temp_dir: config.temp_dir.clone(),
                time_limit,
            },
            settings: ConsumerSettings {
                url: config.amqp.amqp_url,
                queue: config.amqp.video_queue,
                name: "converter".into(),
                concurrency,
                retry: RetryPolicy {
                    max_attempts: 5,
                    base_delay: Duration::from_millis(config.retry_base_ms),
                },
                grace: Duration::from_secs(config.shutdown_grace_secs),
                // The converter never waits for another delivery.
                wait: Duration::from_millis(config.retry_base_ms),
                bind: None,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes until `shutdown` is cancelled, then lets running conversions finish.
    pub async fn run(self, shutdown: common::shutdown::CancellationToken) -> anyhow::Result<()> {
        let (mongo, publisher) = (self.worker.mongo.clone(), self.worker.publisher.clone());
        let ready: common::ops::ReadinessCheck = Arc::new(move || {
            let (mongo, publisher) = (mongo.clone(), publisher.clone());
            Box::pin(async move {
                if !mongo.is_reachable().await {
                    return Err("MongoDB".to_owned());
                }
                if !publisher.is_connected().await {
                    return Err("RabbitMQ".to_owned());
                }
                Ok(())
            })
        });
        let worker = self.worker;
        let work = common::amqp::consume(
            self.settings,
            move |incoming| {
                let worker = worker.clone();
                async move { worker.process(incoming).await }
            },
            shutdown,
        );
        common::ops::serve_while(self.listener, ready, work)
            .await
            .context("operations server")?;
        Ok(())
    }
}
