//! The contract every part of the system shares, defined once: where a job
//! is ([`JobState`]), how it converts ([`Options`]), how the API shows it
//! ([`JobView`]), what travels on the queues ([`VideoRequest`] on `video`,
//! [`Mp3Result`] on `mp3`, [`JobEvent`] on `events`), the one error body
//! ([`ErrorBody`]), the account API's bodies ([`account`]) and the MP3
//! name rule ([`names::mp3_name`]).
//!
//! Only serde: the services and the desktop app depend on it without
//! pulling in a runtime, a database driver or a broker client.

pub mod account;
pub mod error;
pub mod job;
pub mod messages;
pub mod names;
pub mod options;
pub mod secret;
pub mod state;

pub use error::{ErrorBody, ErrorDetail};
pub use job::{JobEnvelope, JobList, JobView, SourceFile};
pub use messages::{JobEvent, Mp3Result, VideoRequest};
pub use options::{Options, OptionsError};
pub use state::JobState;
