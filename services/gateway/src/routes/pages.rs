//! The two pages a mailed link opens: "confirm your address" and "choose a
//! new password". Opening a link changes nothing (mail scanners open links
//! too): the page holds a button (and, to reset, the new password twice),
//! and only pressing it acts, through the JSON API's own routes on auth.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use crate::state::AppState;

#[derive(Deserialize)]
pub struct Link {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub struct NewPassword {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// A link's token as it may appear in a page: base64url, bounded.
fn plain_token(token: &str) -> Option<&str> {
    (!token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(token)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} - MP3 Converter</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}\
         input,button{{font:inherit;padding:.4rem .6rem;margin:.3rem 0;display:block;width:100%;box-sizing:border-box}}\
         button{{cursor:pointer}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    // The page carries a one-use token: nobody caches it, nothing frames it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn broken_link() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This link does not work",
        "<p>The link is incomplete. Open it again from the mail, or ask for a new one in the app.</p>",
    )
}

/// `GET /account/confirm?token=...`: a button that confirms.
pub async fn confirm_page(Query(link): Query<Link>) -> Response {
    let Some(token) = plain_token(&link.token) else {
        return broken_link();
    };
    page(
        StatusCode::OK,
        "Confirm your address",
        &format!(
            "<p>Press the button to confirm that this address is yours. From then on, MP3 \
             Converter mails you when your MP3s are ready.</p>\
             <form method=\"post\" action=\"/account/confirm\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <button type=\"submit\">Confirm my address</button></form>"
        ),
    )
}

/// `POST /account/confirm`: confirms, and says so.
pub async fn confirm(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(link): Form<Link>,
) -> Response {
    let Some(token) = plain_token(&link.token) else {
        return broken_link();
    };
    let body = serde_json::json!({ "token": token }).to_string();
    match call_auth(&state, peer, &headers, "/api/v1/confirm", body).await {
        Some(status) if status.is_success() => page(
            StatusCode::OK,
            "Your address is confirmed",
            "<p>Thank you. You will get a mail when each of your MP3s is ready (turn it off in \
             the app's settings). You can close this page.</p>",
        ),
        Some(status) if status.is_client_error() => page(
            StatusCode::BAD_REQUEST,
            "This link does not work any more",
            "<p>It was used already, or it is older than a day. Ask for a new one in the app \
             (\"Send the link again\").</p>",
        ),
        _ => unavailable(),
    }
}

/// `GET /account/reset?token=...`: the new password, twice.
pub async fn reset_page(Query(link): Query<Link>) -> Response {
    let Some(token) = plain_token(&link.token) else {
        return broken_link();
    };
    reset_form(token, None)
}

fn reset_form(token: &str, problem: Option<&str>) -> Response {
    let problem = problem.map_or_else(String::new, |text| {
        format!("<p role=\"alert\"><strong>{text}</strong></p>")
    });
    page(
        if problem.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        "Choose a new password",
        &format!(
            "{problem}<form method=\"post\" action=\"/account/reset\">\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <label>New password (at least 8 characters)\
             <input type=\"password\" name=\"password\" autocomplete=\"new-password\" minlength=\"8\" required></label>\
             <label>The same again\
             <input type=\"password\" name=\"again\" autocomplete=\"new-password\" minlength=\"8\" required></label>\
             <button type=\"submit\">Set the new password</button></form>\
             <p>Every device signed in to your account will have to sign in again.</p>"
        ),
    )
}

/// `POST /account/reset`: sets the new password, and says so.
pub async fn reset(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<NewPassword>,
) -> Response {
    let Some(token) = plain_token(&form.token) else {
        return broken_link();
    };
    if form.password != form.again {
        return reset_form(
            token,
            Some("The two passwords differ: type the same one twice."),
        );
    }
    if form.password.chars().count() < contract::account::MIN_PASSWORD_CHARS {
        return reset_form(token, Some("The password needs at least 8 characters."));
    }
    let body = serde_json::json!({ "token": token, "new_password": form.password }).to_string();
    match call_auth(
        &state,
        peer,
        &headers,
        "/api/v1/password-reset/complete",
        body,
    )
    .await
    {
        Some(status) if status.is_success() => page(
            StatusCode::OK,
            "Your new password is set",
            "<p>Sign in with it in the app. Every other device was signed out.</p>",
        ),
        Some(status) if status.is_client_error() => page(
            StatusCode::BAD_REQUEST,
            "This link does not work any more",
            "<p>It was used already, or it is older than an hour. Ask for a new one from the \
             app's sign-in screen (\"Forgot your password?\").</p>",
        ),
        _ => unavailable(),
    }
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again in a moment",
        "<p>The service cannot do this right now. The link still works: open it again later.</p>",
    )
}

/// Posts a JSON body to auth's `path`; its status, or `None` when auth
/// could not be asked.
async fn call_auth(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    body: String,
) -> Option<StatusCode> {
    let forwarded_for = state.forwarded_for(peer, headers);
    let mut json = HeaderMap::new();
    json.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    state
        .auth
        .forward(Method::POST, path, &json, &forwarded_for, body.into())
        .await
        .ok()
        .map(|response| response.status())
}
