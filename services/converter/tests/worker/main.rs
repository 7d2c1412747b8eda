//! The converter worker against the real RabbitMQ and MongoDB-compatible
//! server: the input corpus, time limits and metrics, retries, dead letters
//! and a crash mid-conversion. One binary.

mod corpus;
mod crash;
mod forged;
mod harness;
mod limits;
mod logs;
mod reader;
mod retries;
mod streaming;
mod tracing_ids;
