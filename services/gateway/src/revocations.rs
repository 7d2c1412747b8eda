//! Tokens that stopped working before they expired: signed out everywhere,
//! a new password, a disabled or deleted account. The gateway checks tokens
//! locally (no call to auth per request), so it follows auth's record of
//! such revocations instead, asking for what is new every [`POLL`]: a token
//! revoked on auth stops working on every gateway within that.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use crate::claims::Claims;

/// How often the gateway asks auth for new revocations.
pub const POLL: Duration = Duration::from_secs(2);
/// How far back each poll reaches before the last answer's clock, so a
/// revocation recorded in the same instant as the answer is not missed.
const OVERLAP_MS: i64 = 5_000;

/// The lowest token version still accepted, per user id.
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    floors: Arc<RwLock<HashMap<i64, i64>>>,
}

#[derive(Debug, Deserialize)]
struct Feed {
    revocations: Vec<Revoked>,
    now_ms: i64,
}

#[derive(Debug, Deserialize)]
struct Revoked {
    user_id: i64,
    version: i64,
}

impl Revocations {
    /// Whether the token behind `claims` was revoked (as far as the last
    /// poll knows).
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let Ok(id) = claims.sub.parse::<i64>() else {
            return false;
        };
        self.floors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .is_some_and(|floor| claims.ver < *floor)
    }

    /// Whether auth deleted the account `user_id` (its tokens are revoked
    /// up to the highest version).
    pub fn is_deleted(&self, user_id: &str) -> bool {
        let Ok(id) = user_id.parse::<i64>() else {
            return false;
        };
        self.floors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .is_some_and(|floor| *floor == i64::MAX)
    }

    fn learn(&self, feed: &Feed) {
        let mut floors = self
            .floors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for revoked in &feed.revocations {
            let floor = floors.entry(revoked.user_id).or_default();
            *floor = (*floor).max(revoked.version);
        }
    }

    /// Polls auth at `auth_url` until `stopping`; from nothing at first (auth
    /// answers what still matters: one token lifetime back).
    pub async fn follow(
        self,
        http: reqwest::Client,
        auth_url: String,
        stopping: common::shutdown::CancellationToken,
    ) {
        let mut since_ms = 0i64;
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let url = format!("{auth_url}/internal/token-revocations?since_ms={since_ms}");
            let feed = match http.get(&url).send().await {
                Ok(response) if response.status().is_success() => response.json::<Feed>().await,
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "auth refused the revocations poll");
                    metrics::counter!("gateway_revocation_polls_total", "outcome" => "failed")
                        .increment(1);
                    continue;
                }
                Err(err) => Err(err),
            };
            match feed {
                Ok(feed) => {
                    self.learn(&feed);
                    since_ms = feed.now_ms.saturating_sub(OVERLAP_MS);
                    metrics::counter!("gateway_revocation_polls_total", "outcome" => "ok")
                        .increment(1);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "could not ask auth for revocations");
                    metrics::counter!("gateway_revocation_polls_total", "outcome" => "failed")
                        .increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, ver: i64) -> Claims {
        Claims {
            username: "a@b.c".into(),
            admin: false,
            sub: sub.into(),
            ver,
            exp: None,
        }
    }

    #[test]
    fn a_token_below_its_users_floor_is_revoked_others_are_not() {
        let revocations = Revocations::default();
        revocations.learn(&Feed {
            revocations: vec![
                Revoked {
                    user_id: 7,
                    version: 2,
                },
                Revoked {
                    user_id: 7,
                    version: 1,
                },
                Revoked {
                    user_id: 9,
                    version: i64::MAX,
                },
            ],
            now_ms: 0,
        });
        assert!(revocations.is_revoked(&claims("7", 1)));
        assert!(!revocations.is_revoked(&claims("7", 2)));
        assert!(revocations.is_revoked(&claims("9", 100)));
        assert!(!revocations.is_revoked(&claims("8", 0)));
        // Tokens of the original system name no id: nothing to compare.
        assert!(!revocations.is_revoked(&claims("", 0)));
    }
}
