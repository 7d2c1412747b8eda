//! Code every service shares (the wire contract itself is the `contract`
//! crate): the job records in MongoDB, the AMQP topology with publisher confirms, GridFS helpers, telemetry, the
//! shutdown signal, the HTTP server loop with bounded headers and graceful
//! shutdown, and the small operations HTTP server (`/healthz`, `/readyz`,
//! `/metrics`).

pub mod amqp;
pub mod client_address;
pub mod config;
pub mod error;
pub mod gridfs;
pub mod jobs;
pub mod ops;
pub mod server;
pub mod shutdown;
pub mod telemetry;
/// Helpers for the services' tests (a real SMTP server, clean-up, the
/// FFmpeg CLI). Always built: a feature for it made `cargo build` and
/// `cargo test` compile every crate twice.
pub mod testing;

pub use error::Error;
