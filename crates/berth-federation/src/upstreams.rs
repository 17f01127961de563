//! Managing upstreams: what an administrator sends ([`UpstreamSpec`]), checked and sealed
//! before it is stored, and what the API shows of one ([`UpstreamView`]: never the
//! password, only whether there is one).

use berth_core::{Error, ErrorKind};
use berth_meta::Upstream;
use serde::{Deserialize, Serialize};

/// Docker Hub's API host, and the names registries and clients know it by.
const DOCKER_HUB_HOSTS: [&str; 3] = ["docker.io", "registry-1.docker.io", "index.docker.io"];

/// Longest tag TTL: a week. A tag checked less often than that is better pulled by digest.
const MAX_TAG_TTL_SECS: i64 = 7 * 24 * 3600;

/// An upstream as an administrator describes it (the management API's body, the config
/// file's entry).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    /// `https://registry-1.docker.io`; `http://` only for loopback or a trusted network.
    pub url: String,
    /// The proxy project (it must exist).
    pub project: String,
    #[serde(default)]
    pub username: Option<String>,
    /// On a replace, leaving it out keeps the stored one; `""` removes it.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Seconds a cached tag is served before it is checked again (default 300).
    #[serde(default)]
    pub tag_ttl_secs: Option<i64>,
    /// Registry host names a mirror request's `ns` names it by (default: the URL's host,
    /// and for Docker Hub every name it goes by).
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Map one-component names to `library/…` (default: on for Docker Hub).
    #[serde(default)]
    pub short_names: Option<bool>,
    /// Mirror requests without `ns` come here.
    #[serde(default)]
    pub default: bool,
}

/// An upstream as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UpstreamView {
    pub name: String,
    pub url: String,
    pub project: String,
    pub username: Option<String>,
    /// Whether a password is stored (it is never shown).
    pub has_password: bool,
    pub ca_pem: Option<String>,
    pub tag_ttl_secs: i64,
    pub hosts: Vec<String>,
    pub short_names: bool,
    pub default: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&Upstream> for UpstreamView {
    fn from(u: &Upstream) -> UpstreamView {
        UpstreamView {
            name: u.name.clone(),
            url: u.url.clone(),
            project: u.project.clone(),
            username: u.username.clone(),
            has_password: u.sealed_password.is_some(),
            ca_pem: u.ca_pem.clone(),
            tag_ttl_secs: u.tag_ttl_secs,
            hosts: u.hosts.clone(),
            short_names: u.short_names,
            default: u.is_default,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

/// The password to store: `given` sealed by `seal`, none for `""`, the `kept` one when
/// none is given (a replace that leaves it out); a password needs a `username`.
pub(crate) fn sealed_password(
    given: Option<&str>,
    kept: Option<&Vec<u8>>,
    username: Option<&str>,
    seal: impl FnOnce(&str) -> Result<Vec<u8>, Error>,
) -> Result<Option<Vec<u8>>, Error> {
    let sealed = match given {
        Some("") => None,
        Some(password) if password.len() > 4096 => return Err(bad("the password is too long".to_owned())),
        Some(password) => Some(seal(password)?),
        None => kept.cloned(),
    };
    if sealed.is_some() && username.is_none() {
        return Err(bad("a password needs a username".to_owned()));
    }
    Ok(sealed)
}

/// An upstream's or a host's name as given: `[a-z0-9]`, inner `-`, at most 64.
fn check_name(name: &str) -> Result<(), Error> {
    check_name_of("upstream", name)
}

/// A name of `what` (an upstream, a webhook): `[a-z0-9]`, inner `-`, at most 64.
pub(crate) fn check_name_of(what: &str, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok { Ok(()) } else { Err(bad(format!("{what} name {name:?}: use a-z, 0-9 and inner '-', at most 64"))) }
}

/// The host (and port, if not the scheme's) of `what`'s (an upstream's, a replication
/// registry's) `http(s)://` base URL: no path, query or credentials.
pub(crate) fn authority(what: &str, url: &str) -> Result<String, Error> {
    // Credentials first, and no URL in a message before they are ruled out: it may hold them.
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{what} URL: {e}")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(format!("give the {what}'s credentials as username and password, not in its URL")));
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!("{what} URL {url:?}: the scheme must be http or https")));
    }
    if !parsed.path().trim_end_matches('/').is_empty() || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(format!("{what} URL {url:?}: give the registry's base URL, without a path")));
    }
    let host = parsed.host_str().ok_or_else(|| bad(format!("{what} URL {url:?} has no host")))?;
    Ok(match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// A mirror host name: a registry host as containerd's `ns` gives it.
fn check_host(host: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok { Ok(()) } else { Err(bad(format!("mirror host {host:?} is not a host name"))) }
}

impl UpstreamSpec {
    /// The record to store: checked, with the defaults filled in and the password sealed
    /// by `seal` (the stored record's sealed password kept when the spec gives none).
    pub(crate) fn into_upstream(
        self,
        stored: Option<&Upstream>,
        seal: impl FnOnce(&str, &str) -> Result<Vec<u8>, Error>,
    ) -> Result<Upstream, Error> {
        check_name(&self.name)?;
        let authority = authority("upstream", &self.url)?;
        if self.project.is_empty() || self.project.len() > 64 || self.project.contains('/') {
            return Err(bad(format!("project {:?} is not a project name", self.project)));
        }
        let hub = DOCKER_HUB_HOSTS.iter().any(|h| authority == *h);
        let hosts = match self.hosts {
            Some(hosts) => hosts,
            None if hub => DOCKER_HUB_HOSTS.iter().map(|h| (*h).to_owned()).collect(),
            None => vec![authority],
        };
        if hosts.len() > 16 {
            return Err(bad("at most 16 mirror hosts per upstream".to_owned()));
        }
        for host in &hosts {
            check_host(host)?;
        }
        let tag_ttl_secs = self.tag_ttl_secs.unwrap_or(300);
        if !(0..=MAX_TAG_TTL_SECS).contains(&tag_ttl_secs) {
            return Err(bad(format!("tag_ttl_secs must be between 0 and {MAX_TAG_TTL_SECS}")));
        }
        if let Some(user) = &self.username
            && (user.is_empty() || user.contains(':') || user.len() > 255)
        {
            return Err(bad("an upstream's username is 1 to 255 characters without ':'".to_owned()));
        }
        if let Some(pem) = &self.ca_pem
            && reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_or(true, |c| c.is_empty())
        {
            return Err(bad(format!("ca_pem of upstream {} holds no PEM certificate", self.name)));
        }
        let kept = stored.and_then(|s| s.sealed_password.as_ref());
        let name = self.name.clone();
        let sealed_password =
            sealed_password(self.password.as_deref(), kept, self.username.as_deref(), |p| seal(&name, p))?;
        Ok(Upstream {
            name: self.name,
            url: self.url.trim_end_matches('/').to_owned(),
            project: self.project,
            username: self.username,
            sealed_password,
            ca_pem: self.ca_pem,
            tag_ttl_secs,
            hosts,
            short_names: self.short_names.unwrap_or(hub),
            is_default: self.default,
            created_at: 0,
            updated_at: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> UpstreamSpec {
        serde_json::from_value(serde_json::json!({ "name": "hub", "url": url, "project": "hub" })).unwrap()
    }

    fn never(_: &str, _: &str) -> Result<Vec<u8>, Error> {
        panic!("nothing to seal")
    }

    #[test]
    fn docker_hub_gets_its_host_names_and_short_names() {
        let u = spec("https://registry-1.docker.io/").into_upstream(None, never).unwrap();
        assert_eq!(u.url, "https://registry-1.docker.io");
        assert!(u.hosts.contains(&"docker.io".to_owned()));
        assert!(u.short_names);
        assert_eq!(u.tag_ttl_secs, 300);
        let other = spec("http://127.0.0.1:5001").into_upstream(None, never).unwrap();
        assert_eq!(other.hosts, ["127.0.0.1:5001"]);
        assert!(!other.short_names);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        for (url, why) in [
            ("ftp://x", "scheme"),
            ("https://u:p@x", "credentials"),
            ("https://x/v2/", "without a path"),
            ("not a url", "upstream URL"),
        ] {
            let e = spec(url).into_upstream(None, never).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message().contains(why), "{url}: {}", e.message());
        }
        let mut s = spec("https://x");
        s.name = "Hub".into();
        assert!(s.into_upstream(None, never).is_err());
        let mut s = spec("https://x");
        s.password = Some("pw".into());
        let e = s.into_upstream(None, |_, p| Ok(p.as_bytes().to_vec())).unwrap_err();
        assert!(e.message().contains("needs a username"));
    }

    #[test]
    fn a_replace_keeps_the_stored_password_unless_told() {
        let mut s = spec("https://x");
        s.username = Some("u".into());
        s.password = Some("pw".into());
        let stored = s.clone().into_upstream(None, |name, p| Ok(format!("{name}:{p}").into_bytes())).unwrap();
        assert_eq!(stored.sealed_password.as_deref(), Some(&b"hub:pw"[..]));
        let mut keep = s.clone();
        keep.password = None;
        assert_eq!(keep.into_upstream(Some(&stored), never).unwrap().sealed_password, stored.sealed_password);
        let mut clear = s;
        clear.password = Some(String::new());
        assert_eq!(clear.into_upstream(Some(&stored), never).unwrap().sealed_password, None);
        let view = UpstreamView::from(&stored);
        let json = serde_json::to_string(&view).unwrap();
        assert!(json.contains("\"has_password\":true") && !json.contains("pw"), "{json}");
    }
}
