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

/// `POST /api/v1/login`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// The JWT, for `Authorization: Bearer ...`.
    pub token: String,
    /// When it stops being accepted (RFC 3339, UTC).
    pub expires_at: String,
}

/// A user as they may see themselves (`/api/v1/me`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Profile {
    pub email: String,
    pub admin: bool,
    /// Whether "your MP3 is ready" emails are sent.
    pub email_notifications: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
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
