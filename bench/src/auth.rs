//! Credentials for Berth under load: the admin password the harness starts it with, the
//! Basic header every request to it carries, and registry tokens from its `/token`
//! endpoint (Docker's token protocol) for the authenticated manifest row.

use std::io::Read;

use base64::Engine as _;
use hyper::{Method, StatusCode};

use crate::http::{BoxError, Conn, empty};

/// The system administrator Berth creates on first start.
pub const ADMIN: &str = "admin";

/// A fresh random password (128 bits, hex) for one run's admin.
pub fn random_password() -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Basic …` for `user` and `password`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A bearer token for `scope`, asked for on `conn` (which sends the admin's Basic
/// credentials): `GET /token?service=berth&scope=…`. A server without a token endpoint
/// answers 404, and the row that needs it fails saying so.
pub async fn token(conn: &mut Conn, scope: &str) -> Result<String, BoxError> {
    let path = format!("/token?service=berth&scope={}", scope.replace(':', "%3A").replace('/', "%2F"));
    let r = conn.send(Method::GET, &path, &[], empty()).await?;
    let body = String::from_utf8_lossy(&r.head);
    if r.status == StatusCode::NOT_FOUND {
        return Err(format!(
            "GET /token answered 404: this Berth has no token endpoint, so the authenticated manifest row \
             cannot run (`--only big,small,manifest,head,get,list` measures the rest): {body}"
        )
        .into());
    }
    if r.status != StatusCode::OK {
        return Err(format!("GET {path}: {} {body}", r.status).into());
    }
    let answer: serde_json::Value = serde_json::from_slice(&r.head)?;
    let token = answer["token"].as_str().or(answer["access_token"].as_str());
    Ok(token.ok_or_else(|| format!("GET {path}: no token in {body}"))?.to_owned())
}
