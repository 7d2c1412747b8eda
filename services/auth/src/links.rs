//! One-use links mailed to the owner of an address: "confirm your address"
//! and "choose a new password". The link carries a random token; only its
//! SHA-256 is stored, with what it is for, when it expires and whether it
//! was used, so a copy of the database opens no account.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::error::Error;
use crate::store::{UserStore, unix_now};

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proves the address: mail may be sent to it from then on.
    Confirm,
    /// Lets its holder choose a new password (confirmed addresses only).
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Confirm => "confirm",
            Purpose::Reset => "reset",
        }
    }

    /// How long a link stays good: a day to confirm an address, an hour to
    /// reset a password.
    pub fn lifetime_secs(self) -> i64 {
        match self {
            Purpose::Confirm => 24 * 3600,
            Purpose::Reset => 3600,
        }
    }
}

fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl UserStore {
    /// A new link for `user_id`: the token to mail (256 random bits).
    pub async fn create_link(&self, user_id: i64, purpose: Purpose) -> Result<String, Error> {
        let mut bytes = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| Error::Internal("no random source".into()))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = unix_now();
        let sql = self.backend.sql(
            "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&sql)
            .bind(digest(&token))
            .bind(user_id)
            .bind(purpose.as_str())
            .bind(now)
            .bind(now + purpose.lifetime_secs())
            .execute(self.pool())
            .await?;
        Ok(token)
    }

    /// Uses a link: the user it was made for, once, while it has not
    /// expired; `None` for an unknown, used, expired or wrong-purpose one.
    pub async fn use_link(&self, token: &str, purpose: Purpose) -> Result<Option<i64>, Error> {
        let hash = digest(token);
        let now = unix_now();
        // The update is the check: two uses at once, one wins.
        let sql = self.backend.sql(
            "UPDATE account_tokens SET used_at = ? \
             WHERE token_hash = ? AND purpose = ? AND used_at IS NULL AND expires_at > ?",
        );
        let used = sqlx::query(&sql)
            .bind(now)
            .bind(&hash)
            .bind(purpose.as_str())
            .bind(now)
            .execute(self.pool())
            .await?;
        if used.rows_affected() != 1 {
            return Ok(None);
        }
        let sql = self
            .backend
            .sql("SELECT user_id FROM account_tokens WHERE token_hash = ?");
        let row = sqlx::query(&sql)
            .bind(&hash)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| row.try_get("user_id")).transpose()?)
    }

    /// How many links of `purpose` were made for `user_id` in the last
    /// `window_secs` (the mail's own rate limit), and the newest one's age.
    pub async fn recent_links(
        &self,
        user_id: i64,
        purpose: Purpose,
        window_secs: i64,
    ) -> Result<(i64, Option<i64>), Error> {
        let since = unix_now() - window_secs;
        let sql = self.backend.sql(
            "SELECT COUNT(*) AS made, MAX(created_at) AS newest FROM account_tokens \
             WHERE user_id = ? AND purpose = ? AND created_at >= ?",
        );
        let row = sqlx::query(&sql)
            .bind(user_id)
            .bind(purpose.as_str())
            .bind(since)
            .fetch_one(self.pool())
            .await?;
        let made: i64 = row.try_get("made")?;
        let newest: Option<i64> = row.try_get("newest").ok();
        Ok((made, newest.map(|at| unix_now() - at)))
    }

    /// Ends every unused link of `purpose` for `user_id` (a password was
    /// reset: the other reset links must not work any more).
    pub async fn void_links(&self, user_id: i64, purpose: Purpose) -> Result<(), Error> {
        let sql = self.backend.sql(
            "UPDATE account_tokens SET used_at = ? WHERE user_id = ? AND purpose = ? AND used_at IS NULL",
        );
        sqlx::query(&sql)
            .bind(unix_now())
            .bind(user_id)
            .bind(purpose.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
