//! The notification service against the real RabbitMQ, the MongoDB-compatible
//! server and an SMTP server inside the test. One test binary.

mod claims;
mod delivery;
mod forged;
mod harness;
mod reliability;
