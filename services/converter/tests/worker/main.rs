//! The converter worker against the real RabbitMQ and MongoDB-compatible
//! server: retries, dead letters and a crash mid-conversion. One binary.

mod crash;
mod harness;
mod retries;
