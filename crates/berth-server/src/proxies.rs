//! Trusted reverse proxies: which peers may say, in `X-Forwarded-For`, who the client is.
//! Not the accept loop (`listen.rs` asks this module once per request, and not at all when
//! no proxy is trusted).
//!
//! A request's client address is its peer's, unless the peer is a trusted proxy: then it
//! is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (each
//! proxy appends the address it received from, so entries left of an untrusted one may
//! be the client's own inventions). Nothing is trusted by default.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// An address block, `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix) == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(net.into(), 128, self.prefix) == masked(ip.into(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of a `width`-bit number.
fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let host_bits = width - u32::from(prefix);
    if host_bits >= 128 { 0 } else { bits >> host_bits }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("invalid address block {s:?} (expected e.g. 10.0.0.0/8)");
        let (address, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width).ok_or_else(bad)?,
            None => width,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose forwarding headers are believed (`trusted_proxies`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` carrying `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For field, in order, as one list, read from the right.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in entries.iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }

    /// Whether the request came through a trusted proxy that says the client used HTTPS.
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.trusts(peer)
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
    }
}

impl Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| c.to_string()))
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustedProxies, D::Error> {
        let blocks = Vec::<String>::deserialize(d)?;
        let parsed = blocks.iter().map(|b| b.parse()).collect::<Result<_, _>>().map_err(serde::de::Error::custom)?;
        Ok(TrustedProxies(parsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(blocks: &[&str]) -> TrustedProxies {
        TrustedProxies(blocks.iter().map(|b| b.parse().unwrap()).collect())
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(p.client(peer, &forwarded("203.0.113.9")), peer);
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_address() {
        let p = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let headers = forwarded("198.51.100.1, 203.0.113.9, 10.9.9.9");
        assert_eq!(p.client(peer, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(
            p.client("fd12::1".parse().unwrap(), &forwarded("2001:db8::5")),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_garbled_entry_stops_the_walk_at_the_last_good_address() {
        let p = proxies(&["127.0.0.1"]);
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(p.client(peer, &forwarded("nonsense")), peer);
    }

    #[test]
    fn blocks_parse_and_refuse_nonsense() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("::ffff:192.0.2.1".parse().unwrap()));
    }
}
