//! What an account's owner can do with it besides signing in: confirm the
//! address (and have the link mailed again), change the password, sign out
//! everywhere, reset a forgotten password through the confirmed address,
//! and delete the account.

use std::net::IpAddr;

use crate::accounts::{SignedIn, current_user};
use crate::error::Error;
use crate::links::Purpose;
use crate::password;
use crate::state::AppState;
use crate::store::User;
use contract::secret::Secret;

/// Links of one kind mailed to one account: at most one a minute, and
/// [`MAX_LINKS_PER_DAY`] a day (a stranger's address cannot be flooded).
const MIN_SECS_BETWEEN_LINKS: i64 = 60;
const MAX_LINKS_PER_DAY: i64 = 5;
const DAY_SECS: i64 = 24 * 3600;

/// Mails `user` a fresh link of `purpose`, within the mail limits
/// ([`Error::RateLimited`] with the wait, else).
async fn mail_link(state: &AppState, user: &User, purpose: Purpose) -> Result<(), Error> {
    if !state.mail.is_configured() {
        return Err(Error::MailUnavailable);
    }
    let (made, newest_age) = state.store.recent_links(user.id, purpose, DAY_SECS).await?;
    if let Some(age) = newest_age
        && age < MIN_SECS_BETWEEN_LINKS
    {
        return Err(limited(MIN_SECS_BETWEEN_LINKS - age));
    }
    if made >= MAX_LINKS_PER_DAY {
        return Err(limited(DAY_SECS / MAX_LINKS_PER_DAY));
    }
    let token = state.store.create_link(user.id, purpose).await?;
    state.mail.send_link(&user.email, purpose, &token).await
}

fn limited(secs: i64) -> Error {
    Error::RateLimited {
        retry_after: std::time::Duration::from_secs(u64::try_from(secs.max(1)).unwrap_or(60)),
    }
}

/// The confirmation link, mailed to an unconfirmed address (nothing to do
/// for a confirmed one).
pub async fn send_confirmation(state: &AppState, user: &User) -> Result<(), Error> {
    if user.email_confirmed {
        return Ok(());
    }
    mail_link(state, user, Purpose::Confirm).await
}

/// `POST /api/v1/me/confirmation`: the link again, for the signed-in owner.
pub async fn resend_confirmation(state: &AppState, token: &str) -> Result<User, Error> {
    let user = current_user(state, token).await?;
    send_confirmation(state, &user).await?;
    Ok(user)
}

/// `POST /api/v1/confirm`: the mailed link used; the address is proven.
pub async fn confirm(state: &AppState, link: &str) -> Result<User, Error> {
    let id = state
        .store
        .use_link(link, Purpose::Confirm)
        .await?
        .ok_or(Error::InvalidLink)?;
    let user = state.store.set_confirmed(id).await?;
    tracing::info!(user = %user.email, "address confirmed");
    Ok(user)
}

/// `PUT /api/v1/me/password`: a new password, given the current one. Every
/// other token of the account ends; the caller gets a fresh one.
pub async fn change_password(
    state: &AppState,
    token: &str,
    current: Secret,
    new: Secret,
    client: Option<IpAddr>,
) -> Result<SignedIn, Error> {
    let user = current_user(state, token).await?;
    check_password(state, &user, current, client).await?;
    let user = set_password(state, &user, new).await?;
    tracing::info!(user = %user.email, "password changed; other sessions signed out");
    Ok(SignedIn {
        token: state.tokens.issue(&user)?,
        device_token: state.devices.issue(&user.email),
    })
}

/// The account's password, asked again before a change that a stolen
/// token alone must not make. Wrong guesses count as failed logins of the
/// account at `client` (the token holder's own budget: strangers guessing
/// elsewhere do not slow the owner), so a token cannot be used to guess
/// the password faster than the sign-in form allows.
async fn check_password(
    state: &AppState,
    user: &User,
    password: Secret,
    client: Option<IpAddr>,
) -> Result<(), Error> {
    let reservation = state.limits.reserve_login(&user.email, client, true)?;
    if state
        .passwords
        .verify(password, Some(user.password_hash.clone()))
        .await?
    {
        state.limits.release(reservation);
        Ok(())
    } else {
        tracing::warn!(user = %user.email, client = ?client, "wrong current password");
        Err(Error::WrongPassword)
    }
}

async fn set_password(state: &AppState, user: &User, new: Secret) -> Result<User, Error> {
    password::check_policy(new.expose())?;
    let hash = state.passwords.hash(new).await?;
    state.store.set_password(user.id, &hash).await
}

/// `POST /api/v1/me/sign-out-everywhere`: every token of the account,
/// the caller's included, stops working (here at once, on the gateways
/// within their poll of [`crate::store::UserStore::revocations_since`]).
pub async fn sign_out_everywhere(state: &AppState, token: &str) -> Result<(), Error> {
    let user = current_user(state, token).await?;
    state.store.raise_token_version(user.id).await?;
    tracing::info!(user = %user.email, "signed out everywhere");
    Ok(())
}

/// `DELETE /api/v1/me`: the account goes, given its password (its jobs
/// and files are the gateway's to remove).
pub async fn delete(
    state: &AppState,
    token: &str,
    password: Secret,
    client: Option<IpAddr>,
) -> Result<User, Error> {
    let user = current_user(state, token).await?;
    check_password(state, &user, password, client).await?;
    state.store.delete(user.id).await?;
    tracing::info!(user = %user.email, id = user.id, "account deleted");
    Ok(user)
}

/// `POST /api/v1/password-reset`: mails a reset link when `email` is a
/// confirmed, enabled account. The answer is the same either way, so it
/// tells nobody which addresses have accounts; mail limits still apply.
pub async fn request_reset(state: &AppState, email: &str) -> Result<(), Error> {
    // Not an address at all: said, as it tells nothing about accounts.
    let email = crate::accounts::validate_email(email)?;
    let Some(user) = state.store.find_by_email(&email).await? else {
        return Ok(());
    };
    if !user.email_confirmed || user.disabled {
        return Ok(());
    }
    match mail_link(state, &user, Purpose::Reset).await {
        // Silent: a limit reached for someone else's address says nothing.
        Ok(()) | Err(Error::RateLimited { .. }) => Ok(()),
        Err(other) => Err(other),
    }
}

/// `POST /api/v1/password-reset/complete`: the mailed link and a new
/// password. Every token of the account ends, and the other reset links
/// with them; the address is proven by the link.
pub async fn complete_reset(state: &AppState, link: &str, new: Secret) -> Result<User, Error> {
    password::check_policy(new.expose())?;
    let id = state
        .store
        .use_link(link, Purpose::Reset)
        .await?
        .ok_or(Error::InvalidLink)?;
    let user = state
        .store
        .find_by_id(id)
        .await?
        .ok_or(Error::InvalidLink)?;
    let user = set_password(state, &user, new).await?;
    state.store.void_links(user.id, Purpose::Reset).await?;
    let user = state.store.set_confirmed(user.id).await?;
    tracing::info!(user = %user.email, "password reset through a mailed link");
    Ok(user)
}
