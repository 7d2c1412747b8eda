//! Test support shared by the services' test suites (feature `test-support`):
//! real servers that run inside the test process, and where the real
//! broker and database of the machine are.

pub mod smtp;

use std::future::Future;

use tokio::sync::oneshot;

/// The broker the tests use: `AMQP_URL`, else the local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The MongoDB the tests use: `MONGODB_URI`, else the local one.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// A shutdown signal for a service run in a test, and the sender that
/// fires it (dropping the sender fires it too).
pub fn stopper() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}
