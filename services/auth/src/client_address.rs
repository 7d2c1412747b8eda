//! The client's address as auth's rate limits key it: the TCP peer, or
//! the client a trusted proxy (the gateway) names (see
//! [`common::client_address`]).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;

pub use common::client_address::TrustedProxies;

/// The client's address; `None` only when served without a socket (router
/// tests), where there is nobody to limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

impl<S> FromRequestParts<S> for ClientAddress
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Ok(Self(None));
        };
        let proxies = TrustedProxies::from_ref(state);
        Ok(Self(Some(proxies.client(peer.ip(), &parts.headers))))
    }
}
