//! Sending one delivery: a `POST` of its body with the signature and event headers, within
//! a timeout, to an address the policy allows ([`Sender`]).
//!
//! Unless private addresses are allowed (`webhooks.allow_private`), no delivery reaches a
//! loopback, private or link-local address: a literal is refused when the webhook is made,
//! a name when it is resolved for the connection itself (so DNS cannot answer one thing to
//! a check and another to the connection). Without this a project's manager could make the
//! server send requests into the network it runs in. Redirects are not followed (a
//! receiver that redirects has failed the attempt).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use berth_core::net::is_public;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Characters of a receiver's answer or a transport error kept in the log.
const MAX_ERROR: usize = 300;

/// What to send.
pub struct Outgoing<'a> {
    pub url: &'a str,
    pub body: &'a [u8],
    pub content_type: &'static str,
    pub kind: &'a str,
    pub event_id: &'a str,
    pub delivery: i64,
    pub secret: Option<&'a str>,
    /// `(name, value)`.
    pub header: Option<(&'a str, &'a str)>,
}

/// How an attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status_code: Option<u16>,
    pub duration: Duration,
    /// `None`: delivered (a 2xx).
    pub error: Option<String>,
}

/// The HTTP client deliveries go out with.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    allow_private: bool,
}

/// The `X-Berth-Signature-256` value of `body` under `secret`: `sha256=` and the
/// HMAC-SHA256 in lowercase hex (GitHub's convention).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Sender, berth_core::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("berth-webhook/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(PublicResolver { allow_private }))
            .build()
            .map_err(|e| berth_core::Error::internal(format!("building the webhook client: {e}")))?;
        Ok(Sender { http, allow_private })
    }

    /// Whether a webhook may name `url`: http or https, no credentials in it, and no
    /// address literal that is not public unless private addresses are allowed (a name is
    /// checked when resolved, at each delivery).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("the scheme must be http or https".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("give credentials as auth_header, not in the URL".into());
        }
        let host = parsed.host_str().ok_or("the URL has no host")?;
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let private = match bare.parse::<IpAddr>() {
            Ok(ip) => !is_public(ip),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        if private && !self.allow_private {
            return Err(format!(
                "{host} is a private address (loopback, private or link-local): allowed only with \
                 `webhooks.allow_private`"
            ));
        }
        Ok(())
    }

    /// Sends `out` once.
    pub async fn send(&self, out: &Outgoing<'_>) -> Outcome {
        let started = Instant::now();
        let mut request = self
            .http
            .post(out.url)
            .header("content-type", out.content_type)
            .header("x-berth-event", out.kind)
            .header("x-berth-event-id", out.event_id)
            .header("x-berth-delivery", out.delivery.to_string())
            .body(out.body.to_vec());
        if let Some(secret) = out.secret {
            request = request.header("x-berth-signature-256", signature(secret, out.body));
        }
        if let Some((name, value)) = out.header {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let error = if (200..300).contains(&status) {
                    None
                } else {
                    let text = response.text().await.unwrap_or_default();
                    Some(cut(&format!("the receiver answered {status}: {}", text.trim())))
                };
                Outcome { status_code: Some(status), duration: started.elapsed(), error }
            }
            Err(e) => {
                let what = if e.is_timeout() { "timed out" } else { "failed" };
                let mut chain = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                Outcome {
                    status_code: None,
                    duration: started.elapsed(),
                    error: Some(cut(&format!("{what}: {chain}"))),
                }
            }
        }
    }
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_ERROR) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The system's resolver, refusing a name any of whose addresses is not public (unless
/// private addresses are allowed).
struct PublicResolver {
    allow_private: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (host, allow_private) = (name.as_str().to_owned(), self.allow_private);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(private) = addrs.iter().find(|a| !is_public(a.ip()))
                && !allow_private
            {
                let message = format!(
                    "{host} resolves to {}, a private address: allowed only with `webhooks.allow_private`",
                    private.ip()
                );
                return Err(message.into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn private_literals_are_refused_unless_allowed() {
        let strict = Sender::new(Duration::from_secs(1), false).unwrap();
        for url in ["http://127.0.0.1:8080/in", "https://10.1.2.3/", "http://[::1]/", "http://localhost/"] {
            assert!(strict.check_url(url).unwrap_err().contains("webhooks.allow_private"), "{url}");
        }
        assert!(strict.check_url("https://hooks.example/in").is_ok());
        assert!(strict.check_url("ftp://hooks.example/").is_err());
        assert!(strict.check_url("https://u:p@hooks.example/").is_err());
        assert!(Sender::new(Duration::from_secs(1), true).unwrap().check_url("http://127.0.0.1:8080/in").is_ok());
    }
}
