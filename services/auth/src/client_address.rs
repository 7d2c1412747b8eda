//! Who is on the other end: the TCP peer, or, when the peer is a trusted
//! reverse proxy (the gateway), the client it names in `X-Forwarded-For`.
//! Only used as a rate-limit key.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The client's address, `None` when a trusted proxy forwarded the request
/// without saying for whom (it is then limited per email only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

/// The proxies whose `X-Forwarded-For` is believed (part of the app state).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub std::sync::Arc<Vec<IpNet>>);

impl TrustedProxies {
    fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client behind `peer`: the peer itself unless it is trusted; for a
    /// trusted peer, the right-most `X-Forwarded-For` entry that is not
    /// itself a trusted proxy (entries further left are whatever the client
    /// claimed, and worthless as a key).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return Some(peer);
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        hops.reverse();
        for hop in hops {
            match hop.parse::<IpAddr>() {
                Ok(address) if self.contains(address) => continue,
                Ok(address) => return Some(canonical(address)),
                // Something we cannot read stands where the client should
                // be: treat the client as unknown rather than guess.
                Err(_) => return None,
            }
        }
        None
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's view of an IPv4 peer)
/// as plain IPv4, so `127.0.0.0/8` matches them.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(address, std::convert::Into::into),
        IpAddr::V4(_) => address,
    }
}

impl<S> FromRequestParts<S> for ClientAddress
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            // Served without a socket (router tests): nobody to limit.
            return Ok(Self(None));
        };
        let proxies = TrustedProxies::from_ref(state);
        Ok(Self(proxies.client(peer.ip(), &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies(std::sync::Arc::new(
            networks
                .iter()
                .map(|n| n.parse().expect("network"))
                .collect(),
        ))
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &forwarded(&["198.51.100.1"])),
            Some(ip("203.0.113.9"))
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client_in_x_forwarded_for() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &forwarded(&["198.51.100.1"])),
            Some(ip("198.51.100.1"))
        );
        // The client's own claims (left) are skipped past; trusted hops
        // (right) too.
        assert_eq!(
            trusted.client(
                ip("127.0.0.1"),
                &forwarded(&["6.6.6.6, 198.51.100.1", "10.9.9.9"])
            ),
            Some(ip("198.51.100.1"))
        );
    }

    #[test]
    fn a_trusted_peer_without_the_header_leaves_the_client_unknown() {
        let trusted = proxies(&["127.0.0.0/8"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &HeaderMap::new()), None);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &forwarded(&["unknown"])),
            None
        );
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &HeaderMap::new()),
            None,
            "IPv4-mapped loopback is loopback"
        );
    }

    #[test]
    fn with_nothing_trusted_the_peer_is_always_the_client() {
        let trusted = proxies(&[]);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &forwarded(&["198.51.100.1"])),
            Some(ip("127.0.0.1"))
        );
    }
}
