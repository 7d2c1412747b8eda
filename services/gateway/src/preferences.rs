//! The users' email preference, remembered from auth's own answers, so an
//! upload asks auth at most once a [`TTL`] per user instead of every time.
//! Every profile that passes through the gateway (`GET /api/v1/me`, `PUT
//! /api/v1/me/preferences`) refreshes it, so a change made through this
//! gateway holds at once; one made through another replica (or on auth
//! directly) within [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a remembered preference is trusted.
pub const TTL: Duration = Duration::from_secs(60);

/// Most users remembered; past it the expired ones are dropped, and if that
/// is not enough, all (they are asked again).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Default)]
pub struct EmailPreferences {
    entries: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

impl EmailPreferences {
    /// The remembered preference of `user`, if it is recent enough.
    pub fn get(&self, user: &str) -> Option<bool> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(user)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(wants, _)| *wants)
    }

    pub fn remember(&self, user: &str, wants_email: bool) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(user.to_owned(), (wants_email, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_remembered_is_what_is_known() {
        let preferences = EmailPreferences::default();
        assert_eq!(preferences.get("a@example.com"), None);
        preferences.remember("a@example.com", false);
        assert_eq!(preferences.get("a@example.com"), Some(false));
        preferences.remember("a@example.com", true);
        assert_eq!(preferences.get("a@example.com"), Some(true));
        assert_eq!(preferences.get("b@example.com"), None);
    }
}
