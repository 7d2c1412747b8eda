//! The user table, over sqlx's `Any` driver so SQLite, PostgreSQL and
//! MySQL/MariaDB share one code path. What differs per backend lives here
//! and nowhere else: the migrations folder, the placeholder style (`$1` for
//! PostgreSQL, `?` otherwise) and how a boolean column decodes.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use crate::error::Error;
use contract::secret::Secret;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");

/// How long a request waits for a pooled connection before failing (so a
/// dead database turns into a quick 500 / not-ready instead of a hang).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

const USER_COLUMNS: &str = "id, email, password_hash, is_admin, disabled, email_notifications, \
     email_confirmed, token_version, created_at";

/// The database product behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// Picks the backend from the URL's scheme.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let scheme = url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(Error::UnsupportedDatabase(scheme)),
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self {
            Self::Sqlite => &SQLITE_MIGRATIONS,
            Self::Postgres => &POSTGRES_MIGRATIONS,
            Self::MySql => &MYSQL_MIGRATIONS,
        }
    }

    /// Adapts a query written with `?` placeholders to this backend:
    /// PostgreSQL numbers them (`$1`, `$2`, ...). Our queries hold no `?`
    /// inside string literals, so a plain scan is enough.
    pub fn sql(self, query: &str) -> Cow<'_, str> {
        if self != Self::Postgres {
            return Cow::Borrowed(query);
        }
        let mut numbered = String::with_capacity(query.len() + 8);
        let mut next = 1;
        for c in query.chars() {
            if c == '?' {
                numbered.push('$');
                numbered.push_str(&next.to_string());
                next += 1;
            } else {
                numbered.push(c);
            }
        }
        Cow::Owned(numbered)
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    /// Lower-cased; the login name and where notifications go.
    pub email: String,
    /// Argon2id PHC string; redacted in `Debug` since it can be attacked
    /// offline.
    pub password_hash: Secret,
    /// Copied into the token's `admin` claim (admins may download any MP3).
    pub is_admin: bool,
    /// A disabled user cannot log in; the row stays for its history.
    pub disabled: bool,
    /// Whether the user wants an email when an MP3 is ready (the gateway
    /// copies it into each job).
    pub email_notifications: bool,
    /// Whether the owner of the address proved it (a mailed link): nothing
    /// but that link is mailed to an unconfirmed address.
    pub email_confirmed: bool,
    /// Every token carries the version it was issued under; raising it
    /// (sign out everywhere, a new password, disabling) ends older ones.
    pub token_version: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// The canonical form of an email: trimmed and lower-cased, so lookups and
/// the unique constraint are case-insensitive on every backend.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Access to the user table.
#[derive(Debug, Clone)]
pub struct UserStore {
    pool: AnyPool,
    pub(crate) backend: Backend,
}

impl UserStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(database_url: &str) -> Result<Self, Error> {
        let backend = Backend::from_url(database_url)?;
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(database_url)
            .await?;
        backend.migrator().run(&pool).await?;
        tracing::info!(?backend, "user database ready");
        Ok(Self { pool, backend })
    }

    /// Like [`UserStore::connect`], but while the database does not answer
    /// yet (refused, unreachable, timed out) it tries again for up to
    /// `wait`: on a cluster the database may start after this service.
    pub async fn connect_waiting(database_url: &str, wait: Duration) -> Result<Self, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(500);
        loop {
            match Self::connect(database_url).await {
                Err(Error::Database(err @ (sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)))
                    if tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::warn!(error = %err, retry_in = ?pause, "the user database does not answer yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                result => return result,
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Adds a user and returns it as stored. A taken email (in any case) is
    /// [`Error::EmailTaken`]. `confirmed`: whoever adds it vouches for the
    /// address (an operator's `user add`); a registration does not.
    pub async fn insert(
        &self,
        email: &str,
        password_hash: &str,
        is_admin: bool,
        confirmed: bool,
    ) -> Result<User, Error> {
        let email = normalize_email(email);
        let sql = self.backend.sql(
            "INSERT INTO users (email, password_hash, is_admin, disabled, email_confirmed, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        let inserted = sqlx::query(&sql)
            .bind(&email)
            .bind(password_hash)
            .bind(is_admin)
            .bind(false)
            .bind(confirmed)
            .bind(unix_now())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                return Err(Error::EmailTaken);
            }
            Err(err) => return Err(err.into()),
        }
        // Read it back rather than use RETURNING, which MySQL lacks.
        self.find_by_email(&email)
            .await?
            .ok_or(Error::Database(sqlx::Error::RowNotFound))
    }

    /// The user with this email (in any case), if there is one.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<User>, Error> {
        let query = format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?");
        let sql = self.backend.sql(&query);
        let row = sqlx::query(&sql)
            .bind(normalize_email(email))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| user_from_row(&row)).transpose()
    }

    /// The user with this id, if there is one.
    pub async fn find_by_id(&self, id: i64) -> Result<Option<User>, Error> {
        let query = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?");
        let sql = self.backend.sql(&query);
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| user_from_row(&row)).transpose()
    }

    /// Grants or revokes administrator rights; [`Error::UnknownUser`] when
    /// no user has this email.
    pub async fn set_admin(&self, email: &str, is_admin: bool) -> Result<User, Error> {
        self.set_flag_by_email(email, "is_admin", is_admin).await
    }

    /// Disables (or re-enables) logging in; [`Error::UnknownUser`] when no
    /// user has this email. Disabling also ends every token the user holds.
    pub async fn set_disabled(&self, email: &str, disabled: bool) -> Result<User, Error> {
        let user = self.set_flag_by_email(email, "disabled", disabled).await?;
        if disabled {
            return self.raise_token_version(user.id).await;
        }
        Ok(user)
    }

    /// Stores the user's notification preference and returns the user as
    /// now stored; [`Error::UnknownUser`] when the id is gone.
    pub async fn set_email_notifications(&self, id: i64, enabled: bool) -> Result<User, Error> {
        let sql = self
            .backend
            .sql("UPDATE users SET email_notifications = ? WHERE id = ?");
        sqlx::query(&sql)
            .bind(enabled)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.find_by_id(id).await?.ok_or(Error::UnknownUser)
    }

    /// `column` is one of our own flag names, never user input.
    async fn set_flag_by_email(
        &self,
        email: &str,
        column: &'static str,
        value: bool,
    ) -> Result<User, Error> {
        let email = normalize_email(email);
        // Look up first: MySQL reports 0 affected rows when the value does
        // not change, so the update's count cannot tell "unknown user".
        if self.find_by_email(&email).await?.is_none() {
            return Err(Error::UnknownUser);
        }
        let query = format!("UPDATE users SET {column} = ? WHERE email = ?");
        let sql = self.backend.sql(&query);
        sqlx::query(&sql)
            .bind(value)
            .bind(&email)
            .execute(&self.pool)
            .await?;
        self.find_by_email(&email).await?.ok_or(Error::UnknownUser)
    }

    /// Marks the user's address as proven by its owner.
    pub async fn set_confirmed(&self, id: i64) -> Result<User, Error> {
        let sql = self
            .backend
            .sql("UPDATE users SET email_confirmed = ? WHERE id = ?");
        sqlx::query(&sql)
            .bind(true)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.find_by_id(id).await?.ok_or(Error::UnknownUser)
    }

    /// Replaces the password hash and raises the token version (every token
    /// issued before ends), in one transaction with its revocation record.
    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<User, Error> {
        let mut tx = self.pool.begin().await?;
        let sql = self
            .backend
            .sql("UPDATE users SET password_hash = ? WHERE id = ?");
        sqlx::query(&sql)
            .bind(password_hash)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.raise_version_in(&mut tx, id).await?;
        tx.commit().await?;
        self.find_by_id(id).await?.ok_or(Error::UnknownUser)
    }

    /// Raises the user's token version: every token issued before stops
    /// working (here at once, on the gateways within their poll interval).
    pub async fn raise_token_version(&self, id: i64) -> Result<User, Error> {
        let mut tx = self.pool.begin().await?;
        self.raise_version_in(&mut tx, id).await?;
        tx.commit().await?;
        self.find_by_id(id).await?.ok_or(Error::UnknownUser)
    }

    async fn raise_version_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
    ) -> Result<i64, Error> {
        let sql = self
            .backend
            .sql("UPDATE users SET token_version = token_version + 1 WHERE id = ?");
        sqlx::query(&sql).bind(id).execute(&mut **tx).await?;
        let sql = self
            .backend
            .sql("SELECT token_version FROM users WHERE id = ?");
        let version: i64 = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(Error::UnknownUser)?
            .try_get("token_version")?;
        self.record_revocation(tx, id, version).await?;
        Ok(version)
    }

    /// Notes that tokens of `id` below `version` are void, for the gateways'
    /// poll ([`UserStore::revocations_since`]).
    async fn record_revocation(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
        version: i64,
    ) -> Result<(), Error> {
        let sql = self
            .backend
            .sql("INSERT INTO token_revocations (user_id, version, revoked_at) VALUES (?, ?, ?)");
        sqlx::query(&sql)
            .bind(id)
            .bind(version)
            .bind(unix_now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Removes the user, its mailed links, and every token it holds (a
    /// revocation to the highest version, which no token can carry).
    pub async fn delete(&self, id: i64) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        for statement in [
            "DELETE FROM account_tokens WHERE user_id = ?",
            "DELETE FROM users WHERE id = ?",
        ] {
            let sql = self.backend.sql(statement);
            sqlx::query(&sql).bind(id).execute(&mut *tx).await?;
        }
        self.record_revocation(&mut tx, id, i64::MAX).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Token revocations recorded at or after `since_ms` (unix ms), oldest
    /// first, with the moment of each; older ones than a token's lifetime
    /// are pruned as this is asked.
    pub async fn revocations_since(
        &self,
        since_ms: i64,
        keep_ms: i64,
    ) -> Result<Vec<Revocation>, Error> {
        let sql = self
            .backend
            .sql("DELETE FROM token_revocations WHERE revoked_at < ?");
        sqlx::query(&sql)
            .bind(unix_now_ms().saturating_sub(keep_ms))
            .execute(&self.pool)
            .await?;
        let sql = self.backend.sql(
            "SELECT user_id, version, revoked_at FROM token_revocations \
             WHERE revoked_at >= ? ORDER BY revoked_at, id",
        );
        let rows = sqlx::query(&sql)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Revocation {
                    user_id: row.try_get("user_id")?,
                    version: row.try_get("version")?,
                    revoked_at_ms: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// The highest version recorded as revoked for `user_id`, if any.
    pub async fn revoked_version(&self, user_id: i64) -> Result<Option<i64>, Error> {
        let sql = self
            .backend
            .sql("SELECT MAX(version) AS version FROM token_revocations WHERE user_id = ?");
        let row = sqlx::query(&sql)
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("version").ok().flatten())
    }

    /// The pool, for the account links' store.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every pooled connection (at shutdown, so SQLite checkpoints
    /// its write-ahead log and servers see a clean disconnect).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn user_from_row(row: &AnyRow) -> Result<User, Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: Secret::new(row.try_get::<String, _>("password_hash")?),
        is_admin: flag(row, "is_admin")?,
        disabled: flag(row, "disabled")?,
        email_notifications: flag(row, "email_notifications")?,
        email_confirmed: flag(row, "email_confirmed")?,
        token_version: row.try_get("token_version")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Decodes a boolean column: a native BOOLEAN on PostgreSQL, an integer 0/1
/// on SQLite and MySQL (whose TINYINT(1) "BOOLEAN" the Any driver rejects).
fn flag(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    row.try_get::<bool, _>(column)
        .or_else(|_| row.try_get::<i64, _>(column).map(|value| value != 0))
}

/// Tokens of `user_id` below `version` are void since `revoked_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    pub user_id: i64,
    pub version: i64,
    pub revoked_at_ms: i64,
}

pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_backend() {
        assert_eq!(
            Backend::from_url("sqlite://auth.db?mode=rwc").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("mysql://root@h/db").ok(),
            Some(Backend::MySql)
        );
        assert_eq!(
            Backend::from_url("MariaDB://root@h/db").ok(),
            Some(Backend::MySql)
        );
    }

    #[test]
    fn an_unknown_scheme_is_reported_without_the_rest_of_the_url() {
        let err = Backend::from_url("mongodb://user:hunter2@host/db").expect_err("unsupported");
        let message = err.to_string();
        assert!(message.contains("`mongodb`"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(Backend::from_url("auth.db").is_err());
    }

    #[test]
    fn postgres_placeholders_are_numbered() {
        let query = "INSERT INTO t (a, b) VALUES (?, ?)";
        assert_eq!(
            Backend::Postgres.sql(query),
            "INSERT INTO t (a, b) VALUES ($1, $2)"
        );
        assert_eq!(Backend::Sqlite.sql(query), query);
        assert_eq!(Backend::MySql.sql(query), query);
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(normalize_email("  Alice@Example.COM "), "alice@example.com");
        assert_eq!(normalize_email("ÉLODIE@exemple.fr"), "élodie@exemple.fr");
    }
}
