//! The notification service: consumes the `mp3` queue and emails each user
//! that their MP3 is ready, exactly once per job.

pub mod config;
pub mod error;
pub mod mailer;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::amqp::ConsumerSettings;

pub use config::Config;
use worker::Worker;

/// A notification worker with its operations port bound.
pub struct App {
    listener: tokio::net::TcpListener,
    worker: Worker,
    settings: ConsumerSettings,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let mongo = config
            .mongo
            .connect()
            .await
            .context("configuring MongoDB")?;
        let mailer = mailer::Mailer::new(&config.smtp_url, &config.mail_from, &config.public_url)
            .context("configuring SMTP")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        Ok(App {
            listener,
            worker: Worker {
                mailer,
                jobs: mongo.jobs,
            },
            settings: ConsumerSettings {
                url: config.amqp.amqp_url,
                queue: config.amqp.mp3_queue,
                name: "notification".into(),
                concurrency: config.concurrency,
                grace: Duration::from_secs(30),
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes until `shutdown` resolves, then finishes what is in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
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
