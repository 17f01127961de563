//! The behaviour every [`OutboxStore`] backend must show; each backend's tests call [`run`]
//! with the same database as a [`MetadataStore`] (whose writes fill the outbox), a
//! [`RetentionStore`](crate::RetentionStore) (whose pull flushes announce pulls) and a
//! [`WebhookStore`] (which the fan-out fills).

use berth_core::{Digest, MediaType, RepoName, Tag, manifest};

use super::{EventKind, NewEvent, OutboxStore};
use crate::webhooks::{NewDelivery, Webhook, WebhookStore};
use crate::{BlobInfo, DeleteIf, IdentityStore, MetadataStore, NewManifest, Pull, RetentionStore};

/// Every event pending, as `(kind, repo, digest, tags)`; the ids fanned out to nothing.
async fn drain(outbox: &dyn OutboxStore) -> Vec<(EventKind, String, Option<String>, Vec<String>)> {
    let pending = outbox.pending(1000).await.unwrap();
    let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "the oldest first");
    assert!(outbox.fan_out(&ids, &[], &[]).await.unwrap());
    pending
        .into_iter()
        .map(|e| {
            let e = e.event.unwrap();
            (e.kind, e.repo, e.digest, e.tags)
        })
        .collect()
}

/// A webhook of `project` the suites make.
pub(crate) fn suite_webhook(project: &str, name: &str) -> Webhook {
    Webhook {
        project: project.to_owned(),
        name: name.to_owned(),
        url: "https://hooks.example/in".to_owned(),
        events: vec![EventKind::ArtifactPushed, EventKind::ArtifactDeleted],
        format: "harbor".to_owned(),
        sealed_secret: Some(vec![1, 2, 3]),
        sealed_header: None,
        enabled: true,
        failures: 0,
        disable_after: 3,
        created_at: 0,
        updated_at: 0,
    }
}

pub async fn run(
    meta: &dyn MetadataStore,
    outbox: &dyn OutboxStore,
    retention: &dyn RetentionStore,
    hooks: &dyn WebhookStore,
    identity: &dyn IdentityStore,
) {
    writes_announce_themselves_in_their_transaction(meta, outbox, retention).await;
    a_fan_out_happens_once(outbox, hooks, identity).await;
}

async fn writes_announce_themselves_in_their_transaction(
    meta: &dyn MetadataStore,
    outbox: &dyn OutboxStore,
    retention: &dyn RetentionStore,
) {
    drain(outbox).await;
    let repo = RepoName::parse("events/app").unwrap();
    let (config, layer) = (Digest::of(b"ev-config"), Digest::of(b"ev-layer"));
    let body = crate::suite::image_manifest(&config, &layer, None);
    let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
    let digest = Digest::of(&body);
    let tags = [Tag::parse("v1").unwrap(), Tag::parse("latest").unwrap()];
    let put = |tags| NewManifest { repo: &repo, digest: &digest, parsed: &parsed, body: &body, tags };

    // A refused push announces nothing.
    assert!(meta.put_manifest(put(&tags)).await.is_err(), "its blobs are not there");
    assert_eq!(drain(outbox).await, []);
    for d in [&config, &layer] {
        meta.link_blob(&repo, d, &BlobInfo { size: 1, key: format!("k/{d}") }, None).await.unwrap();
    }
    meta.put_manifest(put(&tags)).await.unwrap();
    let sha = Some(digest.to_string());
    let names = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let event = outbox.pending(10).await.unwrap().remove(0).event.unwrap();
    assert_eq!(
        (event.media_type.as_deref(), event.size, event.at_ms > 0),
        (Some(MediaType::OCI_MANIFEST), Some(body.len() as u64), true)
    );
    assert_eq!(
        drain(outbox).await,
        [(EventKind::ArtifactPushed, repo.to_string(), sha.clone(), names(&["v1", "latest"]))]
    );

    // A proxy's cached copy is no push.
    let cached = RepoName::parse("events/cached").unwrap();
    meta.cache_manifest(NewManifest { repo: &cached, digest: &digest, parsed: &parsed, body: &body, tags: &tags })
        .await
        .unwrap();
    assert_eq!(drain(outbox).await, []);

    // Pulls: announced once per manifest and flush, only when asked.
    let pull = |tag: Option<&str>, at| Pull {
        repo: repo.to_string(),
        digest: digest.to_string(),
        tag: tag.map(Into::into),
        at,
    };
    retention.record_pulls(&[pull(Some("v1"), 10)], false).await.unwrap();
    assert_eq!(drain(outbox).await, []);
    retention.record_pulls(&[pull(Some("v1"), 10), pull(None, 30), pull(Some("latest"), 20)], true).await.unwrap();
    let pulled = outbox.pending(10).await.unwrap();
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].event.as_ref().unwrap().at_ms, 30_000, "the latest pull's time");
    assert_eq!(
        drain(outbox).await,
        [(EventKind::ArtifactPulled, repo.to_string(), sha.clone(), names(&["latest", "v1"]))]
    );

    // Deletes: a tag, then the manifest with the tag left on it, then the repository.
    assert!(meta.delete_tag(&repo, &tags[0], None).await.unwrap());
    assert!(meta.delete_manifest(&repo, &digest, DeleteIf::Any).await.unwrap());
    assert!(!meta.delete_manifest(&repo, &digest, DeleteIf::Any).await.unwrap(), "gone: nothing to announce");
    assert_eq!(meta.delete_repository(&repo).await.unwrap(), Some(0));
    assert_eq!(
        drain(outbox).await,
        [
            (EventKind::TagDeleted, repo.to_string(), sha.clone(), names(&["v1"])),
            (EventKind::ArtifactDeleted, repo.to_string(), sha, names(&["latest"])),
            (EventKind::RepositoryDeleted, repo.to_string(), None, vec![]),
        ]
    );

    // Appended events (a quota refusal) round-trip whole.
    let quota = NewEvent {
        kind: EventKind::QuotaExceeded,
        repo: "events/app".into(),
        digest: Some(Digest::of(b"big").to_string()),
        media_type: None,
        tags: vec![],
        size: Some(7),
        detail: Some("quota of 1 KiB exceeded".into()),
        at_ms: 1234,
    };
    outbox.append(std::slice::from_ref(&quota)).await.unwrap();
    assert_eq!(outbox.pending(10).await.unwrap().remove(0).event, Some(quota));
    drain(outbox).await;
}

async fn a_fan_out_happens_once(outbox: &dyn OutboxStore, hooks: &dyn WebhookStore, identity: &dyn IdentityStore) {
    identity.create_project("outbox-team", false).await.unwrap();
    hooks.put_webhook(&suite_webhook("outbox-team", "ci"), true).await.unwrap();
    hooks.put_webhook(&suite_webhook("outbox-team", "gone"), true).await.unwrap();
    let event = |n: u8| NewEvent {
        kind: EventKind::ArtifactPushed,
        repo: "outbox-team/app".into(),
        digest: Some(Digest::of(&[n]).to_string()),
        media_type: None,
        tags: vec![],
        size: None,
        detail: None,
        at_ms: 1,
    };
    outbox.append(&[event(1), event(2)]).await.unwrap();
    let pending = outbox.pending(10).await.unwrap();
    let ids: Vec<i64> = pending.iter().map(|e| e.id).collect();
    let delivery = |hook: &str, id: &str| NewDelivery {
        project: "outbox-team".into(),
        webhook: hook.into(),
        event_id: id.into(),
        kind: "artifact.pushed".into(),
        body: b"{}".to_vec(),
        created_ms: 5,
    };
    // A webhook deleted after the dispatcher read them gets nothing.
    assert!(hooks.delete_webhook("outbox-team", "gone").await.unwrap());
    let made = [delivery("ci", "e1"), delivery("ci", "e2"), delivery("gone", "e1")];
    assert!(outbox.fan_out(&ids, &made, &[]).await.unwrap());
    assert!(outbox.pending(10).await.unwrap().is_empty());
    let log = hooks.deliveries("outbox-team", "ci", None, 10).await.unwrap();
    assert_eq!(log.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(), ["e2", "e1"], "newest first");

    // A second dispatcher fanning out the same events writes nothing.
    outbox.append(&[event(3)]).await.unwrap();
    let mut ids = ids;
    ids.extend(outbox.pending(10).await.unwrap().iter().map(|e| e.id));
    assert!(!outbox.fan_out(&ids, &[delivery("ci", "again")], &[]).await.unwrap());
    assert_eq!(hooks.deliveries("outbox-team", "ci", None, 10).await.unwrap().len(), 2);
    assert_eq!(outbox.pending(10).await.unwrap().len(), 1, "the new event is still there");
    drain(outbox).await;
}
