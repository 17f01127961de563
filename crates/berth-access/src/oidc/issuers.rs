//! Which issuers a keyless robot may trust, and which addresses Berth fetches their keys
//! from: the system administrator's [`IssuerPolicy`] (`[auth] oidc_issuers`,
//! `oidc_allow_private`).
//!
//! A trust's issuer must be an https URL matching an allowed entry, checked when the trust
//! is created or changed (400) and again before each fetch. Unless private addresses are
//! allowed, no fetch reaches a loopback, private, link-local or otherwise non-public
//! address: an address literal is refused by the URL check, a name by [`PublicResolver`],
//! which resolves it for the connection itself (so a name that resolves elsewhere on a
//! second lookup cannot smuggle a private address past the check). Plain http only to a
//! loopback address, and only with private addresses allowed (an issuer a test plays on
//! this machine). Without this, a project admin could make the server send requests to
//! any host it reaches (a blind request oracle).

use std::net::{IpAddr, SocketAddr};

pub use berth_core::net::is_public;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The issuers allowed unless the configuration says otherwise: GitHub Actions' and
/// GitLab.com's (whose tokens name a repository a trust then pins).
pub const DEFAULT_ISSUERS: [&str; 2] = ["https://token.actions.githubusercontent.com", "https://gitlab.com"];

/// Which issuers may be trusted and fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerPolicy {
    /// An issuer is allowed if it is an entry, or lies below one at a `/`
    /// (`https://gitlab.example.com` allows `https://gitlab.example.com/oidc`, never
    /// `https://gitlab.example.com.evil.example`).
    pub allowed: Vec<String>,
    /// Loopback, private and link-local addresses may be fetched (and plain http to a
    /// loopback address).
    pub allow_private: bool,
}

impl Default for IssuerPolicy {
    fn default() -> IssuerPolicy {
        IssuerPolicy { allowed: DEFAULT_ISSUERS.map(String::from).to_vec(), allow_private: false }
    }
}

impl IssuerPolicy {
    /// An issuer a trust may name: a URL [`check_url`](Self::check_url) accepts that an
    /// entry of the allowlist allows. The error says which rule it breaks.
    pub fn check_issuer(&self, issuer: &str) -> Result<Url, String> {
        let url = self.check_url(issuer)?;
        if !self.allowed.iter().any(|entry| allows(entry, issuer)) {
            let allowed = if self.allowed.is_empty() { "none".to_owned() } else { self.allowed.join(", ") };
            return Err(format!(
                "{issuer:?} is not an allowed issuer (the server's `auth.oidc_issuers` allows: {allowed})"
            ));
        }
        Ok(url)
    }

    /// A URL Berth may fetch (an issuer's, its `jwks_uri`): https (plain http only to a
    /// loopback address, with private addresses allowed), no credentials, query or
    /// fragment, and no address literal that is not public unless allowed. A name is
    /// checked once it is resolved, by [`PublicResolver`].
    pub fn check_url(&self, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let host = parsed.host_str().ok_or("the URL has no host")?;
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse::<IpAddr>();
        let loopback = literal.as_ref().is_ok_and(IpAddr::is_loopback);
        match parsed.scheme() {
            "https" => {}
            "http" if loopback && self.allow_private => {}
            "http" => {
                return Err(
                    "plain http is allowed only to a loopback address, with `auth.oidc_allow_private`; use https"
                        .into(),
                );
            }
            other => return Err(format!("the scheme `{other}` is not https")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("the URL may not carry credentials".into());
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err("the URL may not carry a query or a fragment".into());
        }
        let private = match literal {
            Ok(ip) => !is_public(ip),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        if private && !self.allow_private {
            return Err(format!(
                "{host} is a private address (loopback, private or link-local): allowed only with \
                 `auth.oidc_allow_private`"
            ));
        }
        Ok(parsed)
    }
}

/// Whether `entry` of the allowlist allows `issuer`: the same URL, or one below it.
fn allows(entry: &str, issuer: &str) -> bool {
    let entry = entry.trim_end_matches('/');
    issuer.trim_end_matches('/') == entry || issuer.strip_prefix(entry).is_some_and(|rest| rest.starts_with('/'))
}

/// The resolver of the client that fetches issuers: the system's, refusing a name any of
/// whose addresses is not public (unless private addresses are allowed). The connection
/// goes to the addresses checked here, so DNS cannot answer one thing to the check and
/// another to the connection.
pub(super) struct PublicResolver {
    pub allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (host, allow_private) = (name.as_str().to_owned(), self.allow_private);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            check_resolved(&host, &addrs, allow_private)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Refuses `addrs` of `host` if one is not public and private addresses are not allowed.
fn check_resolved(host: &str, addrs: &[SocketAddr], allow_private: bool) -> Result<(), String> {
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(private) if !allow_private => Err(format!(
            "{host} resolves to {}, a private address (loopback, private or link-local): allowed only with \
             `auth.oidc_allow_private`",
            private.ip()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], allow_private: bool) -> IssuerPolicy {
        IssuerPolicy { allowed: allowed.iter().map(|s| s.to_string()).collect(), allow_private }
    }

    #[test]
    fn an_issuer_is_allowed_by_its_entry_or_one_above_it_at_a_slash() {
        let p = policy(&["https://gitlab.example.com", "https://idp.example/tenant/"], false);
        for ok in ["https://gitlab.example.com", "https://gitlab.example.com/", "https://gitlab.example.com/oidc"] {
            assert!(p.check_issuer(ok).is_ok(), "{ok}");
        }
        assert!(p.check_issuer("https://idp.example/tenant/a").is_ok());
        for refused in [
            "https://gitlab.example.com.evil.example",
            "https://gitlab.example.community",
            "https://idp.example/tenant2",
            "https://idp.example",
            "https://token.actions.githubusercontent.com",
        ] {
            assert!(p.check_issuer(refused).unwrap_err().contains("not an allowed issuer"), "{refused}");
        }
        assert!(IssuerPolicy::default().check_issuer("https://token.actions.githubusercontent.com").is_ok());
    }

    #[test]
    fn private_addresses_and_plain_http_are_refused_unless_allowed() {
        let strict = policy(&["https://", "http://"], false);
        for url in [
            "https://127.0.0.1",
            "https://[::1]:8443",
            "https://10.0.0.1",
            "https://172.16.0.1",
            "https://192.168.0.1",
            "https://169.254.169.254",
            "https://100.64.0.1",
            "https://0.0.0.0",
            "https://[fd00::1]",
            "https://[fe80::1]",
            "https://[::ffff:127.0.0.1]",
            "https://[64:ff9b::a9fe:a9fe]",
            "https://localhost",
            "https://metadata.localhost",
        ] {
            assert!(strict.check_url(url).unwrap_err().contains("private"), "{url}");
        }
        assert!(strict.check_url("http://127.0.0.1:8080").unwrap_err().contains("plain http"));
        assert!(strict.check_url("https://8.8.8.8").is_ok());
        assert!(strict.check_url("https://[64:ff9b::808:808]").is_ok(), "NAT64 to a public address");
        let lax = policy(&[], true);
        assert!(lax.check_url("http://127.0.0.1:8080").is_ok());
        assert!(lax.check_url("https://10.0.0.1").is_ok());
        assert!(lax.check_url("http://10.0.0.1").unwrap_err().contains("plain http"), "http only to loopback");
        assert!(lax.check_url("http://issuer.example").unwrap_err().contains("plain http"));
    }

    #[test]
    fn a_name_resolving_to_a_private_address_is_refused_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let public: SocketAddr = "8.8.8.8:0".parse().unwrap();
        let error = check_resolved("issuer.example", &[public, loopback], false).unwrap_err();
        assert!(error.contains("resolves to 127.0.0.1, a private address"), "{error}");
        assert!(check_resolved("issuer.example", &[public], false).is_ok());
        assert!(check_resolved("issuer.example", &[loopback], true).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_by_what_it_resolves_to() {
        let strict = PublicResolver { allow_private: false };
        let error = strict.resolve("localhost".parse().unwrap()).await.err().expect("localhost is refused");
        assert!(error.to_string().contains("private address"), "{error}");
        let lax = PublicResolver { allow_private: true };
        assert!(lax.resolve("localhost".parse().unwrap()).await.is_ok());
    }
}
