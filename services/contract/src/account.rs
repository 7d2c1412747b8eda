//! The account API's bodies (auth serves them, the gateway proxies them
//! and documents them, the desktop app sends them).

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The shortest password accepted for new accounts, in characters (not
/// bytes: `pässwörd` is eight). NIST SP 800-63B's minimum.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The longest: generous for passphrases and password managers, and a bound
/// on what one request can make the hasher chew on.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// `POST /api/v1/login`'s body. The password is a [`Secret`] from the
/// moment it is parsed.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[cfg_attr(feature = "openapi", schema(example = "alice@example.com"))]
    pub email: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: Secret,
    /// The `device_token` an earlier sign-in of this account gave this
    /// client: strangers' failed guesses at the account never slow it down.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub device_token: Option<Secret>,
}

/// `POST /api/v1/register`'s body: as [`Credentials`], with the rules a new
/// account must meet (auth checks them; the schema states them).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// A deliverable address, compared without case: `local@domain.tld`,
    /// the local part at most 64 bytes without spaces, quoting or dots at
    /// its ends, the domain two or more labels of letters, digits and
    /// inner hyphens. Auth also takes internationalised addresses; the
    /// schema states the ASCII ones, whose lengths it can count in bytes.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "alice@example.com",
            max_length = 254,
            pattern = r"^\s*(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\s*$"
        )
    )]
    pub email: String,
    /// 8 to 1024 characters; nothing else is imposed.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = Password, min_length = 8, max_length = 1024)
    )]
    pub password: Secret,
}

/// `POST /api/v1/login`'s answer (and a password change's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The JWT, for `Authorization: Bearer ...`.
    pub token: String,
    /// When it stops being accepted (RFC 3339, UTC).
    pub expires_at: String,
    /// Keep it and send it with the next sign-ins of this account (90 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// A user as they may see themselves (`/api/v1/me`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    pub email: String,
    pub admin: bool,
    /// Whether "your MP3 is ready" emails are wanted.
    pub email_notifications: bool,
    /// Whether the address is confirmed: until it is, no mail is sent to it
    /// (`POST /api/v1/me/confirmation` mails the link again).
    #[serde(default)]
    pub email_confirmed: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The account's limits and how much of each is used (the gateway
    /// fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
}

/// Per-user limits and what is used of them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quotas {
    /// Jobs queued or converting at once.
    pub jobs_in_flight: Quota,
    /// Jobs created in the last hour.
    pub jobs_per_hour: Quota,
    /// Bytes stored: videos and MP3s.
    pub stored_bytes: Quota,
}

/// One limit and its use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quota {
    pub used: u64,
    pub limit: u64,
}

/// `POST /api/v1/register`'s answer: the new profile, and whether the
/// confirmation link was mailed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    #[serde(flatten)]
    pub profile: Profile,
    /// False when no mail could go (try `POST /api/v1/me/confirmation`).
    pub confirmation_sent: bool,
}

/// `POST /api/v1/confirm`'s body: the token of a mailed link.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkToken {
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub token: String,
}

/// `PUT /api/v1/me/password`'s body.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub current_password: Secret,
    /// 8 to 1024 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = Password, min_length = 8, max_length = 1024)
    )]
    pub new_password: Secret,
}

/// `DELETE /api/v1/me`'s body: the password, so a stolen token alone
/// cannot remove an account.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountDeletion {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Password))]
    pub password: Secret,
}

/// `POST /api/v1/password-reset`'s body.
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// A deliverable address, as [`NewAccount::email`] states it.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "alice@example.com",
            max_length = 254,
            pattern = r"^\s*(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+\s*$"
        )
    )]
    pub email: String,
}

/// `POST /api/v1/password-reset/complete`'s body.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetCompletion {
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub token: String,
    /// 8 to 1024 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, format = Password, min_length = 8, max_length = 1024)
    )]
    pub new_password: Secret,
}

/// `PUT /api/v1/me/preferences`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    pub email_notifications: bool,
}

/// `GET /api/v1/register`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationStatus {
    /// Whether `POST /api/v1/register` accepts new accounts.
    pub enabled: bool,
}
