//! What a receiver gets: an event rendered as Harbor's webhook JSON or as a CloudEvent
//! (1.0, structured mode), once, when the event is fanned out.
//!
//! Harbor's shape (`type`, `occur_at`, `event_data.resources[]`, `event_data.repository`)
//! is kept field for field, so receivers written for Harbor work unchanged; `operator` is
//! `berth` (the outbox does not record who made the change) and `repo_type` is left out.
//! Both formats carry the event's id (`id` in a CloudEvent, `event_id` beside Harbor's
//! fields, and the `X-Berth-Event-Id` header either way).

use berth_meta::{EventKind, NewEvent};
use serde_json::{Value, json};

/// Harbor's name of an event type.
fn harbor_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ArtifactPushed => "PUSH_ARTIFACT",
        EventKind::ArtifactPulled => "PULL_ARTIFACT",
        EventKind::ArtifactDeleted | EventKind::TagDeleted | EventKind::RepositoryDeleted => "DELETE_ARTIFACT",
        EventKind::QuotaExceeded => "QUOTA_EXCEED",
        EventKind::ReplicationFinished => "REPLICATION",
    }
}

/// Where the registry is, for `resource_url`s and a CloudEvent's `source`: its external
/// host (`registry.example.com`), if configured.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub host: Option<String>,
}

impl Origin {
    fn resource(&self, repo: &str, reference: &str) -> String {
        match &self.host {
            Some(host) => format!("{host}/{repo}{reference}"),
            None => format!("{repo}{reference}"),
        }
    }
}

/// `event` as `format` (`harbor` or `cloudevents`) renders it.
pub fn render(format: &str, event: &NewEvent, id: &str, origin: &Origin) -> Vec<u8> {
    if event.kind == EventKind::ReplicationFinished {
        return render_replication(format, event, id, origin);
    }
    let (namespace, name) = event.repo.split_once('/').unwrap_or(("library", event.repo.as_str()));
    let resources: Vec<Value> = {
        let digest = event.digest.as_deref();
        let at_digest = digest.map(|d| format!("@{d}")).unwrap_or_default();
        if event.tags.is_empty() {
            vec![json!({ "digest": digest, "resource_url": origin.resource(&event.repo, &at_digest) })]
        } else {
            event
                .tags
                .iter()
                .map(|t| json!({ "digest": digest, "tag": t, "resource_url": origin.resource(&event.repo, &format!(":{t}")) }))
                .collect()
        }
    };
    let seconds = event.at_ms.div_euclid(1000);
    let value = if format == "cloudevents" {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.at_ms.max(0) as u64);
        let source = match &origin.host {
            Some(host) => format!("https://{host}/api/v1/projects/{}", namespace),
            None => format!("/api/v1/projects/{}", namespace),
        };
        let subject = match (event.tags.first(), &event.digest) {
            (Some(tag), _) => format!("{}:{tag}", event.repo),
            (None, Some(digest)) => format!("{}@{digest}", event.repo),
            (None, None) => event.repo.clone(),
        };
        json!({
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": format!("io.berth.{}", event.kind.as_str()),
            "subject": subject,
            "time": humantime::format_rfc3339_millis(time).to_string(),
            "datacontenttype": "application/json",
            "data": {
                "repository": event.repo,
                "digest": event.digest,
                "media_type": event.media_type,
                "size": event.size,
                "tags": event.tags,
                "resources": resources,
                "detail": event.detail,
            },
        })
    } else {
        let mut data = json!({
            "resources": resources,
            "repository": {
                "date_created": seconds,
                "name": name,
                "namespace": namespace,
                "repo_full_name": event.repo,
            },
        });
        if let Some(detail) = &event.detail {
            data["custom_attributes"] = json!({ "details": detail });
        }
        json!({
            "type": harbor_type(event.kind),
            "occur_at": seconds,
            "operator": "berth",
            "event_id": id,
            "berth_event": event.kind.as_str(),
            "event_data": data,
        })
    };
    serde_json::to_vec(&value).expect("JSON of JSON values")
}

/// A finished replication execution: its summary (the event's detail, JSON) as Harbor's
/// `event_data.replication`, or as a CloudEvent's data with the rule as its subject.
fn render_replication(format: &str, event: &NewEvent, id: &str, origin: &Origin) -> Vec<u8> {
    let summary: Value = event.detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
    let project = event.repo.as_str();
    let value = if format == "cloudevents" {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.at_ms.max(0) as u64);
        let source = match &origin.host {
            Some(host) => format!("https://{host}/api/v1/projects/{project}"),
            None => format!("/api/v1/projects/{project}"),
        };
        json!({
            "specversion": "1.0",
            "id": id,
            "source": source,
            "type": "io.berth.replication.finished",
            "subject": format!("replication/rules/{}", summary["rule"].as_str().unwrap_or_default()),
            "time": humantime::format_rfc3339_millis(time).to_string(),
            "datacontenttype": "application/json",
            "data": summary,
        })
    } else {
        json!({
            "type": harbor_type(event.kind),
            "occur_at": event.at_ms.div_euclid(1000),
            "operator": "berth",
            "event_id": id,
            "berth_event": event.kind.as_str(),
            "event_data": { "replication": summary },
        })
    };
    serde_json::to_vec(&value).expect("JSON of JSON values")
}

/// A test delivery's body: Harbor's shape with type `PING`, or a CloudEvent of type
/// `io.berth.ping`, naming the project and the webhook.
pub fn render_ping(format: &str, project: &str, webhook: &str, id: &str, origin: &Origin) -> Vec<u8> {
    let now = std::time::SystemTime::now();
    let seconds = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let value = if format == "cloudevents" {
        let source = match &origin.host {
            Some(host) => format!("https://{host}/api/v1/projects/{project}"),
            None => format!("/api/v1/projects/{project}"),
        };
        json!({
            "specversion": "1.0", "id": id, "source": source, "type": "io.berth.ping",
            "time": humantime::format_rfc3339_millis(now).to_string(), "datacontenttype": "application/json",
            "data": { "project": project, "webhook": webhook },
        })
    } else {
        json!({
            "type": "PING", "occur_at": seconds, "operator": "berth", "event_id": id, "berth_event": "ping",
            "event_data": { "project": project, "webhook": webhook },
        })
    };
    serde_json::to_vec(&value).expect("JSON of JSON values")
}

/// The `Content-Type` of a body in `format`.
pub fn content_type(format: &str) -> &'static str {
    if format == "cloudevents" { "application/cloudevents+json; charset=utf-8" } else { "application/json" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed() -> NewEvent {
        NewEvent {
            kind: EventKind::ArtifactPushed,
            repo: "team/app".into(),
            digest: Some("sha256:ab".into()),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            tags: vec!["v1".into()],
            size: Some(321),
            detail: None,
            at_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn harbor_json_keeps_harbors_fields() {
        let origin = Origin { host: Some("reg.example".into()) };
        let v: Value = serde_json::from_slice(&render("harbor", &pushed(), "e-1", &origin)).unwrap();
        assert_eq!(v["type"], "PUSH_ARTIFACT");
        assert_eq!(v["occur_at"], 1_700_000_000);
        assert_eq!(v["event_id"], "e-1");
        assert_eq!(
            v["event_data"]["resources"][0],
            json!({"digest": "sha256:ab", "tag": "v1", "resource_url": "reg.example/team/app:v1"})
        );
        assert_eq!(
            v["event_data"]["repository"],
            json!({"date_created": 1_700_000_000, "name": "app", "namespace": "team", "repo_full_name": "team/app"})
        );
        let untagged = NewEvent { tags: vec![], repo: "alpine".into(), ..pushed() };
        let v: Value = serde_json::from_slice(&render("harbor", &untagged, "e-2", &Origin::default())).unwrap();
        assert_eq!(v["event_data"]["resources"][0]["resource_url"], "alpine@sha256:ab");
        assert_eq!(v["event_data"]["repository"]["namespace"], "library");
    }

    #[test]
    fn a_finished_replication_carries_its_summary_in_both_formats() {
        let event = NewEvent {
            kind: EventKind::ReplicationFinished,
            repo: "team".into(),
            digest: None,
            media_type: None,
            tags: vec![],
            size: Some(10),
            detail: Some(r#"{"rule":"to-dr","state":"partial","failed":1}"#.into()),
            at_ms: 1_700_000_000_123,
        };
        let h: Value = serde_json::from_slice(&render("harbor", &event, "e-3", &Origin::default())).unwrap();
        assert_eq!(
            (h["type"].as_str(), h["event_data"]["replication"]["state"].as_str()),
            (Some("REPLICATION"), Some("partial"))
        );
        let c: Value = serde_json::from_slice(&render("cloudevents", &event, "e-3", &Origin::default())).unwrap();
        assert_eq!(c["type"], "io.berth.replication.finished");
        assert_eq!(c["source"], "/api/v1/projects/team");
        assert_eq!(c["subject"], "replication/rules/to-dr");
        assert_eq!(c["data"]["failed"], 1);
    }

    #[test]
    fn a_cloudevent_has_the_required_attributes() {
        let v: Value = serde_json::from_slice(&render("cloudevents", &pushed(), "e-1", &Origin::default())).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "e-1");
        assert_eq!(v["type"], "io.berth.artifact.pushed");
        assert_eq!(v["source"], "/api/v1/projects/team");
        assert_eq!(v["subject"], "team/app:v1");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["data"]["size"], 321);
    }
}
