//! Configuration shared by several services, flattened into each service's
//! clap struct so `--help` documents every variable in one place.

use clap::Args;

/// Where the broker is and which queues carry the work. The queue names are
/// overridable so tests can run in parallel on one broker.
#[derive(Debug, Clone, Args)]
pub struct AmqpConfig {
    /// AMQP URL of the RabbitMQ broker.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Queue that carries uploaded videos to the converter.
    #[arg(long, env = "VIDEO_QUEUE", default_value = "video")]
    pub video_queue: String,
    /// Queue that carries finished MP3s to the notification service.
    #[arg(long, env = "MP3_QUEUE", default_value = "mp3")]
    pub mp3_queue: String,
    /// Topic exchange for job state changes (routing key `job.<state>`).
    #[arg(long, env = "EVENTS_EXCHANGE", default_value = "events")]
    pub events_exchange: String,
}

/// Where MongoDB is and which databases hold videos, MP3s and jobs.
#[derive(Debug, Clone, Args)]
pub struct MongoConfig {
    /// MongoDB connection string.
    #[arg(long, env = "MONGODB_URI", default_value = "mongodb://127.0.0.1:27017")]
    pub mongodb_uri: String,
    /// Database whose GridFS bucket `fs` holds uploaded videos (and the `jobs` collection).
    #[arg(long, env = "VIDEOS_DB", default_value = "videos")]
    pub videos_db: String,
    /// Database whose GridFS bucket `fs` holds converted MP3s.
    #[arg(long, env = "MP3S_DB", default_value = "mp3s")]
    pub mp3s_db: String,
}

impl MongoConfig {
    /// Connects (lazily: the driver dials on first use) and names the databases.
    pub async fn connect(&self) -> crate::error::Result<MongoStores> {
        let mut options = mongodb::options::ClientOptions::parse(&self.mongodb_uri)
            .await
            .map_err(crate::Error::MongoConfig)?;
        options.app_name = Some("mp3converter".into());
        // Fail fast instead of hanging 30 s when the server is down; callers
        // turn this into a 503 or a retry.
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let client = mongodb::Client::with_options(options).map_err(crate::Error::MongoConfig)?;
        let videos = client.database(&self.videos_db);
        let mp3s = client.database(&self.mp3s_db);
        Ok(MongoStores {
            jobs: crate::jobs::JobStore::new(&videos),
            client,
            videos,
            mp3s,
        })
    }
}

/// Handles to the databases every service uses.
#[derive(Debug, Clone)]
pub struct MongoStores {
    pub client: mongodb::Client,
    pub videos: mongodb::Database,
    pub mp3s: mongodb::Database,
    pub jobs: crate::jobs::JobStore,
}

impl MongoStores {
    /// True when the server answers a ping (for `/readyz`).
    pub async fn is_reachable(&self) -> bool {
        self.videos
            .run_command(mongodb::bson::doc! { "ping": 1 })
            .await
            .is_ok()
    }
}
