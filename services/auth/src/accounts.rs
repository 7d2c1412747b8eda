//! What the endpoints do, whichever route reaches them: logging in (rate
//! limited, timing-safe, counted in the metrics), registering, and reading
//! or changing one's own account; plus the start-up admin bootstrap.

use std::net::IpAddr;
use std::time::Instant;

use crate::error::Error;
use crate::password::{self, Passwords};
use crate::state::AppState;
use crate::store::{User, UserStore, normalize_email};
use crate::token::IssuedToken;
use contract::secret::Secret;

/// The longest email address SMTP can carry (RFC 5321 path limit).
const MAX_EMAIL_BYTES: usize = 254;
/// The longest local part (before the `@`) RFC 5321 allows.
const MAX_LOCAL_PART_BYTES: usize = 64;
/// The longest DNS label.
const MAX_LABEL_BYTES: usize = 63;

/// Checks `email`/`password` and returns a token, or
/// [`Error::InvalidCredentials`] (unknown email, wrong password and disabled
/// account look the same, and take the same time), or
/// [`Error::RateLimited`] after too many failures for this email or client.
pub async fn login(
    state: &AppState,
    email: &str,
    password: Secret,
    client: Option<IpAddr>,
    device: Option<&str>,
) -> Result<SignedIn, Error> {
    let started = Instant::now();
    let result = check_credentials(state, email, password, client, device).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Error::InvalidCredentials) => "failed",
        Err(Error::RateLimited { .. }) => "rate_limited",
        Err(_) => "error",
    };
    metrics::counter!("auth_logins_total", "outcome" => outcome).increment(1);
    metrics::histogram!("auth_login_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

/// A successful sign-in: the token, and the device token to keep.
pub struct SignedIn {
    pub token: IssuedToken,
    pub device_token: String,
}

async fn check_credentials(
    state: &AppState,
    email: &str,
    password: Secret,
    client: Option<IpAddr>,
    device: Option<&str>,
) -> Result<SignedIn, Error> {
    let email = normalize_email(email);
    let known_device = device.is_some_and(|token| state.devices.is_known(token, &email));
    let reservation = state
        .limits
        .reserve_login(&email, client, known_device)
        .inspect_err(|_| {
            tracing::warn!(user = ?email, client = ?client, "login refused: too many failures");
        })?;
    let user = state.store.find_by_email(&email).await?;
    // Verify even for an unknown or disabled user, so every refusal costs
    // the same time.
    let stored = user.as_ref().map(|user| user.password_hash.clone());
    let password_matches = state.passwords.verify(password, stored).await?;
    match user {
        Some(user) if password_matches && !user.disabled => {
            state.limits.release(reservation);
            tracing::info!(user = %user.email, known_device, "login");
            Ok(SignedIn {
                token: state.tokens.issue(&user)?,
                device_token: state.devices.issue(&user.email),
            })
        }
        _ => {
            tracing::info!(user = ?email, client = ?client, "login refused");
            Err(Error::InvalidCredentials)
        }
    }
}

/// Creates an ordinary (non-admin) account, when registration is on, with
/// its address unconfirmed, and mails the confirmation link (whether that
/// went out is the second value: an account is made even when mail is down).
pub async fn register(
    state: &AppState,
    email: &str,
    password: Secret,
    client: Option<IpAddr>,
) -> Result<(User, bool), Error> {
    let result = async {
        if !state.allow_registration {
            return Err(Error::RegistrationDisabled);
        }
        let email = validate_email(email)?;
        password::check_policy(password.expose())?;
        state.limits.reserve_registration(client)?;
        let hash = state.passwords.hash(password).await?;
        state.store.insert(&email, &hash, false, false).await
    }
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Error::EmailTaken) => "taken",
        Err(Error::RateLimited { .. }) => "rate_limited",
        Err(error) if error.status().is_client_error() => "refused",
        Err(_) => "error",
    };
    metrics::counter!("auth_registrations_total", "outcome" => outcome).increment(1);
    let user = result?;
    tracing::info!(user = %user.email, id = user.id, "registered");
    let sent = match crate::controls::send_confirmation(state, &user).await {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(user = %user.email, error = %err, "the confirmation link could not be mailed");
            false
        }
    };
    Ok((user, sent))
}

/// The account a token belongs to; [`Error::NotAuthorized`] when the token
/// is bad, or its account has since been disabled or removed, or signed
/// out everywhere (the token's version is below the account's).
pub async fn current_user(state: &AppState, token: &str) -> Result<User, Error> {
    let claims = state.tokens.verify(token)?;
    let id: i64 = claims.sub.parse().map_err(|_| Error::NotAuthorized)?;
    match state.store.find_by_id(id).await? {
        Some(user)
            if !user.disabled
                && user.email == claims.username
                && claims.ver >= user.token_version =>
        {
            Ok(user)
        }
        _ => Err(Error::NotAuthorized),
    }
}

/// [`Error::NotAuthorized`] when the account behind valid `claims` has
/// since been disabled, signed out everywhere or deleted.
pub async fn check_not_revoked(
    state: &AppState,
    claims: &crate::token::Claims,
) -> Result<(), Error> {
    let id: i64 = claims.sub.parse().map_err(|_| Error::NotAuthorized)?;
    match state.store.find_by_id(id).await? {
        Some(user) if user.disabled || claims.ver < user.token_version => Err(Error::NotAuthorized),
        Some(_) => Ok(()),
        // Gone: deleted (a revocation says so while any of its tokens can
        // still be unexpired).
        None if state
            .store
            .revoked_version(id)
            .await?
            .is_some_and(|v| claims.ver < v) =>
        {
            Err(Error::NotAuthorized)
        }
        None => Ok(()),
    }
}

/// Makes sure the `ADMIN_EMAIL` administrator exists: creates it with
/// `password` when absent, grants admin rights to an existing user, and
/// never changes an existing password.
pub async fn bootstrap_admin(
    store: &UserStore,
    passwords: &Passwords,
    email: &str,
    password: &Secret,
) -> anyhow::Result<()> {
    let email = validate_email(email)
        .map_err(|_| anyhow::anyhow!("ADMIN_EMAIL is not a valid email address"))?;
    match store.find_by_email(&email).await? {
        Some(user) => {
            if !user.is_admin {
                store.set_admin(&email, true).await?;
                tracing::warn!(user = %email, "ADMIN_EMAIL names an existing user: made it an administrator");
            }
            if user.disabled {
                tracing::warn!(user = %email, "the ADMIN_EMAIL user is disabled; left disabled");
            }
            tracing::info!(user = %email, "administrator present; ADMIN_PASSWORD not applied to an existing user");
        }
        None => {
            password::check_policy(password.expose())
                .map_err(|_| anyhow::anyhow!("ADMIN_PASSWORD is too short or too long"))?;
            let hash = passwords.hash(password.clone()).await?;
            match store.insert(&email, &hash, true, true).await {
                Ok(user) => {
                    tracing::info!(user = %user.email, id = user.id, "administrator created from ADMIN_EMAIL")
                }
                // Another replica created it at the same moment.
                Err(Error::EmailTaken) => {
                    store.set_admin(&email, true).await?;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(())
}

/// `email` in canonical form if it looks like a deliverable address:
/// `local@domain`, within the SMTP length limits, a dotted domain, no
/// spaces, control characters or the punctuation that would need quoting.
/// Non-ASCII letters are allowed (internationalised addresses).
pub fn validate_email(email: &str) -> Result<String, Error> {
    let email = normalize_email(email);
    let (local, domain) = email.split_once('@').ok_or(Error::InvalidEmail)?;
    let forbidden = |c: char| c.is_whitespace() || c.is_control() || "\"(),:;<>@[\\]".contains(c);
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_PART_BYTES
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !local.chars().any(forbidden);
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_BYTES
                && !label.starts_with('-')
                && !label.ends_with('-')
                && !label.chars().any(|c| {
                    forbidden(c)
                        || matches!(
                            c,
                            '!' | '#'
                                | '$'
                                | '%'
                                | '&'
                                | '\''
                                | '*'
                                | '+'
                                | '/'
                                | '='
                                | '?'
                                | '^'
                                | '`'
                                | '{'
                                | '|'
                                | '}'
                                | '~'
                                | '_'
                        )
                })
        });
    if email.len() <= MAX_EMAIL_BYTES && local_ok && domain_ok {
        Ok(email)
    } else {
        Err(Error::InvalidEmail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_are_accepted_in_canonical_form() {
        for (given, stored) in [
            ("alice@example.com", "alice@example.com"),
            (
                "  Bob.Smith+mp3@Mail.Example.ORG ",
                "bob.smith+mp3@mail.example.org",
            ),
            ("émile@exemple.fr", "émile@exemple.fr"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("x@a-b.co", "x@a-b.co"),
        ] {
            assert_eq!(
                validate_email(given).ok().as_deref(),
                Some(stored),
                "{given}"
            );
        }
    }

    #[test]
    fn implausible_addresses_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b.".repeat(130));
        for email in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@@example.com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@example..com",
            "alice@.example.com",
            "alice@-example.com",
            ".alice@example.com",
            "al..ice@example.com",
            "\"alice\"@example.com",
            "alice\u{0}@example.com",
            "' OR 1=1 --",
            "a@b.c'; DROP TABLE users; --",
            "<script>@example.com",
            &long_local,
            &long_total,
        ] {
            assert!(validate_email(email).is_err(), "{email:?} accepted");
        }
    }
}
