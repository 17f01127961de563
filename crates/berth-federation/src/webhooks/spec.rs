//! Managing webhooks: what a project's manager sends ([`WebhookSpec`]), checked and sealed
//! before it is stored, and what the API shows ([`WebhookView`]: never the secret or the
//! header's value, only whether there is one; [`DeliveryView`], a line of the log).

use berth_core::{Error, ErrorKind};
use berth_meta::{Delivery, EventKind, Webhook};
use serde::{Deserialize, Serialize};

/// Failed attempts in a row that disable a webhook, unless its spec says otherwise.
pub const DEFAULT_DISABLE_AFTER: u32 = 20;

/// A webhook as its project's manager describes it.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `[a-z0-9]`, inner `-`, at most 64.
    pub name: String,
    /// Where events are `POST`ed: `https://…` (`http://` too; a private address only if the
    /// server allows it: `webhooks.allow_private`).
    pub url: String,
    /// Any of `artifact.pushed`, `artifact.pulled`, `artifact.deleted`, `tag.deleted`,
    /// `repository.deleted`, `quota.exceeded`, `replication.finished`.
    pub events: Vec<String>,
    /// `harbor` (Harbor's JSON, the default) or `cloudevents` (CloudEvents 1.0, structured).
    #[serde(default)]
    pub format: Option<String>,
    /// The key of the `X-Berth-Signature-256` header (HMAC-SHA256 of the body). On a
    /// replace, leaving it out keeps the stored one; `""` removes it.
    #[serde(default)]
    pub secret: Option<String>,
    /// An extra header sent with each delivery, `Name: value` (an `Authorization` the
    /// receiver wants). Kept like the secret.
    #[serde(default)]
    pub auth_header: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Failed attempts in a row that disable it (0: never; default 20).
    #[serde(default)]
    pub disable_after: Option<u32>,
}

fn enabled() -> bool {
    true
}

/// A webhook as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct WebhookView {
    pub project: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub format: String,
    /// Whether a signing secret is stored (it is never shown).
    pub has_secret: bool,
    /// The extra header's name, if there is one (its value is never shown).
    pub auth_header_name: Option<String>,
    pub enabled: bool,
    /// Failed attempts in a row.
    pub failures: u32,
    pub disable_after: u32,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One delivery, as the log shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    /// The same for every attempt: receivers deduplicate by it (`X-Berth-Event-Id`).
    pub event_id: String,
    pub event: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    pub attempts: u32,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// When a pending one is tried next.
    pub next_attempt_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
    /// The receiver's answer to the latest attempt (none if it gave none).
    pub status_code: Option<u16>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> DeliveryView {
        let pending = d.state == berth_meta::DeliveryState::Pending;
        DeliveryView {
            id: d.id,
            event_id: d.event_id,
            event: d.kind,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            created_ms: d.created_ms,
            next_attempt_ms: pending.then_some(d.due_ms),
            last_attempt_ms: d.last_ms,
            status_code: d.status_code,
            duration_ms: d.duration_ms,
            error: d.error,
        }
    }
}

/// The name of an `auth_header` (`Name: value`), checked.
pub(crate) fn header_name(header: &str) -> Result<(&str, &str), Error> {
    let (name, value) = header.split_once(':').ok_or_else(|| bad("auth_header is `Name: value`".to_owned()))?;
    let (name, value) = (name.trim(), value.trim());
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| bad(format!("auth_header: {name:?} is not a header name")))?;
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| bad("auth_header: the value is not a header value".into()))?;
    let reserved = ["content-type", "content-length", "host", "user-agent"];
    if reserved.contains(&name.to_ascii_lowercase().as_str()) || name.to_ascii_lowercase().starts_with("x-berth-") {
        return Err(bad(format!("auth_header: {name} is set by Berth itself")));
    }
    Ok((name, value))
}

impl WebhookSpec {
    /// The record to store for `project`: checked, defaults filled in, secrets sealed by
    /// `seal` (a stored record's kept when the spec leaves them out).
    pub(crate) fn into_webhook(
        self,
        project: &str,
        stored: Option<&Webhook>,
        check_url: impl FnOnce(&str) -> Result<(), String>,
        seal: impl Fn(&str, &str) -> Result<Vec<u8>, Error>,
    ) -> Result<Webhook, Error> {
        crate::upstreams::check_name_of("webhook", &self.name)?;
        // Not the URL itself: it may hold credentials, which are refused, not echoed.
        check_url(&self.url).map_err(|e| bad(format!("webhook URL: {e}")))?;
        if self.events.is_empty() {
            return Err(bad("a webhook needs at least one event".to_owned()));
        }
        let mut events = Vec::new();
        for e in &self.events {
            let known = EventKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ");
            events.push(EventKind::parse(e).ok_or_else(|| bad(format!("unknown event {e:?} (known: {known})")))?);
        }
        events.sort();
        events.dedup();
        let format = self.format.unwrap_or_else(|| "harbor".to_owned());
        if !matches!(format.as_str(), "harbor" | "cloudevents") {
            return Err(bad(format!("format {format:?}: harbor or cloudevents")));
        }
        let sealed = |given: Option<&str>, what: &str, kept: Option<&Vec<u8>>| -> Result<Option<Vec<u8>>, Error> {
            Ok(match given {
                Some("") => None,
                Some(v) if v.len() > 4096 => return Err(bad(format!("the {what} is too long"))),
                Some(v) => Some(seal(&format!("webhook {project}/{} {what}", self.name), v)?),
                None => kept.cloned(),
            })
        };
        if let Some(h) = self.auth_header.as_deref().filter(|h| !h.is_empty()) {
            header_name(h)?;
        }
        let sealed_secret = sealed(self.secret.as_deref(), "secret", stored.and_then(|s| s.sealed_secret.as_ref()))?;
        let sealed_header =
            sealed(self.auth_header.as_deref(), "header", stored.and_then(|s| s.sealed_header.as_ref()))?;
        Ok(Webhook {
            project: project.to_owned(),
            name: self.name,
            url: self.url,
            events,
            format,
            sealed_secret,
            sealed_header,
            enabled: self.enabled,
            failures: 0,
            disable_after: self.disable_after.unwrap_or(DEFAULT_DISABLE_AFTER),
            created_at: 0,
            updated_at: 0,
        })
    }
}

pub(crate) fn bad(message: String) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> WebhookSpec {
        serde_json::from_value(v).unwrap()
    }

    fn fake_seal(what: &str, value: &str) -> Result<Vec<u8>, Error> {
        Ok(format!("{what}={value}").into_bytes())
    }

    #[test]
    fn a_spec_is_checked_and_its_secrets_sealed_and_kept() {
        let ok = |_: &str| Ok(());
        let base = serde_json::json!({
            "name": "ci", "url": "https://hooks.example/in", "events": ["artifact.pushed", "artifact.deleted", "artifact.pushed"],
            "secret": "s3cret", "auth_header": "Authorization: Bearer t",
        });
        let w = spec(base.clone()).into_webhook("team", None, ok, fake_seal).unwrap();
        assert_eq!(w.events, [EventKind::ArtifactPushed, EventKind::ArtifactDeleted], "sorted, once each");
        assert_eq!((w.format.as_str(), w.disable_after, w.enabled), ("harbor", DEFAULT_DISABLE_AFTER, true));
        assert_eq!(w.sealed_secret.as_deref(), Some(&b"webhook team/ci secret=s3cret"[..]));
        // A replace that leaves the secrets out keeps them; "" removes one.
        let kept = spec(serde_json::json!({"name": "ci", "url": "https://hooks.example/in", "events": ["tag.deleted"], "auth_header": ""}))
            .into_webhook("team", Some(&w), ok, fake_seal)
            .unwrap();
        assert_eq!((kept.sealed_secret, kept.sealed_header), (w.sealed_secret.clone(), None));

        for (field, value, says) in [
            ("name", serde_json::json!("CI"), "webhook name"),
            ("events", serde_json::json!([]), "at least one event"),
            ("events", serde_json::json!(["image.pushed"]), "unknown event \"image.pushed\""),
            ("format", serde_json::json!("xml"), "harbor or cloudevents"),
            ("auth_header", serde_json::json!("no colon"), "Name: value"),
            ("auth_header", serde_json::json!("X-Berth-Event: x"), "set by Berth itself"),
        ] {
            let mut v = base.clone();
            v[field] = value;
            let err = spec(v).into_webhook("team", None, ok, fake_seal).unwrap_err();
            assert!(err.message().contains(says), "{field}: {}", err.message());
        }
        let err = spec(base).into_webhook("team", None, |_| Err("private".into()), fake_seal).unwrap_err();
        assert_eq!(err.message(), "webhook URL: private");
    }
}
