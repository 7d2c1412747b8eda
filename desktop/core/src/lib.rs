//! The desktop app without its window: everything it does lives here so it
//! is tested without a display, and the Tauri shell stays a thin layer of
//! commands over [`engine::Engine`].

pub mod api;
pub mod app;
pub mod credentials;
pub mod engine;
pub mod error;
pub mod extract;
pub mod filters;
pub mod headless;
pub mod names;
pub mod notices;
pub mod plain;
pub mod settings;
pub mod sse;
pub mod status;
pub mod store;
pub mod watcher;

pub use engine::{Engine, EngineEvent};
pub use error::{CommandError, Error};
pub use settings::Settings;
