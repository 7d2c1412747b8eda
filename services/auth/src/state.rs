//! What every handler shares, built once in [`crate::App::build`].

use std::sync::Arc;

use axum::extract::FromRef;

use crate::client_address::TrustedProxies;
use crate::devices::DeviceTokens;
use crate::mail::AccountMail;
use crate::password::Passwords;
use crate::rate_limit::Limits;
use crate::store::UserStore;
use crate::token::TokenKeys;

/// The application state behind every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The user table.
    pub store: UserStore,
    /// Hashes and verifies passwords off the async executor.
    pub passwords: Passwords,
    /// Signs and checks tokens.
    pub tokens: Arc<TokenKeys>,
    /// Failed-login and registration limits.
    pub limits: Arc<Limits>,
    /// Whose `X-Forwarded-For` is believed.
    pub proxies: TrustedProxies,
    /// `ALLOW_REGISTRATION`.
    pub allow_registration: bool,
    /// The confirmation and password-reset mails.
    pub mail: AccountMail,
    /// Known devices, whom strangers' failed guesses never slow.
    pub devices: Arc<DeviceTokens>,
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.proxies.clone()
    }
}
