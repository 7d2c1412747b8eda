//! Who is on the other end of a request: the TCP peer, or, when the peer
//! is a trusted reverse proxy, the client it names in `X-Forwarded-For`.
//! The gateway uses it to build the chain it forwards to auth, auth to key
//! its rate limits; neither believes a client that names itself.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub std::sync::Arc<Vec<IpNet>>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(std::sync::Arc::new(networks))
    }

    fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The `X-Forwarded-For` entries of a request, nearest hop last.
    fn hops(headers: &HeaderMap) -> Vec<&str> {
        headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect()
    }

    /// The client behind `peer`: the peer itself unless it is trusted; for
    /// a trusted peer, the right-most `X-Forwarded-For` entry that is not
    /// itself a trusted proxy (entries further left are whatever the client
    /// claimed, and worthless as a key). When every entry is a trusted
    /// address (a client on the proxy's own network, loopback on one
    /// machine), the first one, the origin; with no usable entry, the peer.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let hops = Self::hops(headers);
        let mut origin = None;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(address) if self.contains(address) => origin = Some(canonical(address)),
                Ok(address) => return canonical(address),
                // Something unreadable stands where the client should be:
                // the peer is the only address worth a key.
                Err(_) => return peer,
            }
        }
        origin.unwrap_or(peer)
    }

    /// The `X-Forwarded-For` chain to send upstream for a request from
    /// `peer`: the chain it carried plus the peer when the peer is a
    /// trusted proxy, else the peer alone (a client's own chain is dropped).
    pub fn forwarded_for(&self, peer: IpAddr, headers: &HeaderMap) -> String {
        let peer = canonical(peer);
        let hops = Self::hops(headers);
        if self.contains(peer) && !hops.is_empty() {
            format!("{}, {peer}", hops.join(", "))
        } else {
            peer.to_string()
        }
    }
}

/// A comma-separated list of addresses and CIDR ranges, as a setting
/// gives it (`TRUSTED_PROXIES`); an empty one (or only commas) is no
/// network at all, which is what "trust nobody" looks like in a manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

/// Reads a [`Networks`] list, for a clap value parser.
pub fn parse_networks(value: &str) -> Result<Networks, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(parse_network)
        .collect::<Result<Vec<_>, _>>()
        .map(Networks)
}

/// An address (`10.0.0.7`, a single host) or a CIDR range (`10.0.0.0/8`),
/// for a clap value parser.
pub fn parse_network(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    if let Ok(network) = value.parse::<IpNet>() {
        return Ok(network);
    }
    value
        .parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{value}` is neither an IP address nor a CIDR range"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            networks
                .iter()
                .map(|n| n.parse().expect("network"))
                .collect(),
        )
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                X_FORWARDED_FOR,
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
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client_in_x_forwarded_for() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &forwarded(&["198.51.100.1"])),
            ip("198.51.100.1")
        );
        // The client's own claims (left) are skipped past; trusted hops
        // (right) too.
        assert_eq!(
            trusted.client(
                ip("127.0.0.1"),
                &forwarded(&["6.6.6.6, 198.51.100.1", "10.9.9.9"])
            ),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn without_a_usable_entry_the_client_is_the_origin_or_the_peer() {
        let trusted = proxies(&["127.0.0.0/8"]);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("127.0.0.2"), &forwarded(&["unknown"])),
            ip("127.0.0.2")
        );
        // A client on loopback, forwarded by a gateway on loopback.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &forwarded(&["127.0.0.9"])),
            ip("127.0.0.9")
        );
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1"),
            "IPv4-mapped loopback is loopback"
        );
    }

    #[test]
    fn with_nothing_trusted_the_peer_is_always_the_client() {
        let trusted = proxies(&[]);
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &forwarded(&["198.51.100.1"])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_clients_own_chain_is_dropped_a_trusted_proxys_is_extended() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let claims = forwarded(&["203.0.113.7, 127.0.0.1"]);
        assert_eq!(
            trusted.forwarded_for(ip("198.51.100.4"), &claims),
            "198.51.100.4"
        );
        assert_eq!(
            trusted.forwarded_for(ip("198.51.100.4"), &HeaderMap::new()),
            "198.51.100.4"
        );
        assert_eq!(
            trusted.forwarded_for(ip("10.0.0.5"), &forwarded(&["198.51.100.4"])),
            "198.51.100.4, 10.0.0.5"
        );
        assert_eq!(
            trusted.forwarded_for(ip("10.0.0.5"), &HeaderMap::new()),
            "10.0.0.5"
        );
    }

    #[test]
    fn networks_and_single_addresses_parse() {
        assert!(parse_network("10.0.0.0/8").is_ok());
        assert!(parse_network(" ::1 ").is_ok());
        assert!(parse_network("example.com").is_err());
    }
}
