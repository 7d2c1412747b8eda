//! `GET /.well-known/jwks.json`: the public key gateways verify tokens with
//! (an empty set for HS256 deployments, whose secret is never published).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::CACHE_CONTROL;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// How long verifiers may cache the key set. Short, so a rotated key is
/// picked up within minutes.
const CACHE_FOR: &str = "public, max-age=300";

pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.tokens.jwks().clone()).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_FOR));
    response
}
