//! The desktop core against the real local stack: auth, gateway and
//! converter built in this process on port 0, the real RabbitMQ, the
//! MongoDB-compatible server and FFmpeg.

mod account;
mod audio_only;
mod harness;
mod offline;
mod watching;
