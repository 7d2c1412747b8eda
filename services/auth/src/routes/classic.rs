//! The original system's routes, byte-compatible: `POST /login` trades
//! HTTP Basic credentials for a raw token (text), `POST /validate` checks a
//! token and returns its claims; errors are the classic plain strings.

use axum::Json;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::accounts;
use crate::client_address::ClientAddress;
use crate::error::Error;
use crate::state::AppState;
use crate::token::Claims;
use contract::secret::Secret;

/// Base64 for Basic credentials, lenient about padding because some clients
/// leave it off.
const BASIC_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `POST /login` with `Authorization: Basic base64(email:password)`: 200 and
/// the raw token as text, 401, or 429 after too many failures.
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (email, password) = basic_credentials(&headers).ok_or(Error::MissingCredentials)?;
    let device = headers
        .get(DEVICE_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok());
    let signed_in = accounts::login(&state, &email, password, client, device).await?;
    let mut response = signed_in.token.token.into_response();
    // A credential: no cache may keep it.
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The body stays the raw token (the original contract); the device
    // token rides in a header.
    if let Ok(value) = HeaderValue::from_str(&signed_in.device_token) {
        response.headers_mut().insert(DEVICE_TOKEN_HEADER, value);
    }
    Ok(response)
}

/// The header a classic client sends its device token in, and gets it back.
pub const DEVICE_TOKEN_HEADER: &str = "x-device-token";

/// `POST /validate` with `Authorization: <scheme> <token>`: 200 and the
/// claims as JSON, 401 without a token, 403 for a bad one.
pub async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Claims>, Error> {
    let token = token_after_scheme(&headers).ok_or(Error::MissingCredentials)?;
    // A token that is not even text is as bad as a forged one.
    let token = std::str::from_utf8(token).map_err(|_| Error::NotAuthorized)?;
    let claims = state.tokens.verify(token)?;
    // Signed is not enough: its account must not have been disabled,
    // deleted or signed out everywhere since.
    accounts::check_not_revoked(&state, &claims).await?;
    Ok(Json(claims))
}

/// The email and password of an `Authorization: Basic ...` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Secret)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASIC_BASE64.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (email, password) = decoded.split_once(':')?;
    Some((email.to_owned(), Secret::new(password)))
}

/// What follows the first space of the `Authorization` header. The original
/// service accepted any scheme word (`Bearer`, `JWT`, ...), so this does too.
/// Bytes, not text: a header holding non-ASCII bytes still carries a
/// (garbage) token, which is a 403, not a missing one.
fn token_after_scheme(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|&byte| byte == b' ')?;
    let token = value[space + 1..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(value).expect("header value"),
        );
        headers
    }

    fn basic(value: &str) -> Option<(String, String)> {
        basic_credentials(&with_authorization(value))
            .map(|(email, password)| (email, password.expose().to_owned()))
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("a@b.c:pa:ss");
        assert_eq!(
            basic(&format!("Basic {encoded}")),
            Some(("a@b.c".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(
            basic(&format!("basic {}", encoded.trim_end_matches('='))),
            Some(("a@b.c".to_owned(), "pa:ss".to_owned()))
        );
    }

    #[test]
    fn malformed_basic_credentials_are_missing() {
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        for value in [
            "Basic",
            "Basic !!!",
            "Bearer abc",
            &format!("Basic {no_colon}"),
        ] {
            assert_eq!(basic(value), None, "{value}");
        }
        assert!(basic_credentials(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_token_is_whatever_follows_the_first_space() {
        assert_eq!(
            token_after_scheme(&with_authorization("Bearer abc.def")),
            Some(&b"abc.def"[..])
        );
        assert_eq!(
            token_after_scheme(&with_authorization("JWT  abc ")),
            Some(&b"abc"[..])
        );
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes("Bearer 🙂".as_bytes()).expect("header value"),
        );
        assert_eq!(token_after_scheme(&non_ascii), Some("🙂".as_bytes()));
        assert_eq!(token_after_scheme(&with_authorization("abc")), None);
        assert_eq!(token_after_scheme(&with_authorization("Bearer ")), None);
        assert_eq!(token_after_scheme(&HeaderMap::new()), None);
    }
}
