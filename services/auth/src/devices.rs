//! Device tokens: what a successful login leaves with the client (the
//! desktop app keeps it; a browser would keep it as a cookie), so that
//! strangers' failed guesses at the account never slow its owner on a
//! device they signed in from before. A token names the email it was
//! issued to and when, under a MAC keyed from the signing key, and is good
//! for [`LIFETIME`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// How long a device stays known without signing in again.
pub const LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Issues and checks device tokens. Not `Debug`: it holds a key.
pub struct DeviceTokens {
    key: hmac::Key,
}

impl DeviceTokens {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        }
    }

    /// A token for `email` (normalised), issued now.
    pub fn issue(&self, email: &str) -> String {
        self.issue_at(email, unix_now())
    }

    fn issue_at(&self, email: &str, issued: u64) -> String {
        let tag = hmac::sign(&self.key, &message(email, issued));
        format!("d1.{issued}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `token` was issued by this deployment to `email` (normalised)
    /// within [`LIFETIME`].
    pub fn is_known(&self, token: &str, email: &str) -> bool {
        let mut parts = token.splitn(3, '.');
        let (Some("d1"), Some(issued), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(issued), Ok(tag)) = (issued.parse::<u64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        let fresh =
            unix_now().saturating_sub(issued) <= LIFETIME.as_secs() && issued <= unix_now() + 60;
        fresh && hmac::verify(&self.key, &message(email, issued), &tag).is_ok()
    }
}

fn message(email: &str, issued: u64) -> Vec<u8> {
    format!("device\0{email}\0{issued}").into_bytes()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_token_is_known_only_for_its_email_its_key_and_its_lifetime() {
        let devices = DeviceTokens::new([7; 32]);
        let token = devices.issue("a@b.c");
        assert!(devices.is_known(&token, "a@b.c"));
        assert!(!devices.is_known(&token, "other@b.c"));
        assert!(!DeviceTokens::new([8; 32]).is_known(&token, "a@b.c"));
        let old = devices.issue_at("a@b.c", unix_now() - LIFETIME.as_secs() - 1);
        assert!(!devices.is_known(&old, "a@b.c"));
        for forged in [
            "",
            "d1",
            "d1.1.x",
            "d2.1.AAAA",
            &token.replace("d1.", "d1.1"),
        ] {
            assert!(!devices.is_known(forged, "a@b.c"), "{forged}");
        }
    }
}
