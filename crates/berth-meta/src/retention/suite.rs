//! The behaviour every [`RetentionStore`] backend must show; each backend's tests call [`run`]
//! with the same database as a [`MetadataStore`] (to push what the retention store reads).

use berth_core::{Digest, MediaType, Reference, RepoName, Tag, manifest};

use super::{Pull, RetentionStore, TagState, TopManifest};
use crate::{BlobInfo, DeleteIf, MetadataStore, NewManifest, TagTarget};

async fn put(meta: &dyn MetadataStore, repo: &RepoName, media_type: &str, body: &[u8], tags: &[&str]) -> String {
    let parsed = manifest::parse(Some(media_type), body).unwrap();
    let digest = Digest::of(body);
    let tags: Vec<Tag> = tags.iter().map(|t| Tag::parse(t).unwrap()).collect();
    meta.put_manifest(NewManifest { repo, digest: &digest, parsed: &parsed, body, tags: &tags }).await.unwrap();
    digest.to_string()
}

fn image(layer: &Digest, subject: Option<&str>) -> Vec<u8> {
    let config = Digest::of(b"config");
    let subject = subject
        .map(|s| format!(r#","subject":{{"mediaType":"{}","digest":"{s}","size":1}}"#, MediaType::OCI_MANIFEST))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/x.cfg","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/x.layer","digest":"{layer}","size":1}}]{subject}}}"#,
        MediaType::OCI_MANIFEST
    )
    .into_bytes()
}

fn pull(repo: &str, digest: &str, tag: Option<&str>, at: i64) -> Pull {
    Pull { repo: repo.to_owned(), digest: digest.to_owned(), tag: tag.map(str::to_owned), at }
}

pub async fn run(meta: &dyn MetadataStore, store: &dyn RetentionStore) {
    let repo = RepoName::parse("keep/app").unwrap();
    let blob = |s: &str| BlobInfo { size: 1, key: format!("k/{s}") };
    let (config, l1, l2, l3) = (Digest::of(b"config"), Digest::of(b"l1"), Digest::of(b"l2"), Digest::of(b"l3"));
    for (d, name) in [(&config, "config"), (&l1, "l1"), (&l2, "l2"), (&l3, "l3")] {
        meta.link_blob(&repo, d, &blob(name), None).await.unwrap();
    }
    assert_eq!(store.repo_state(&repo).await.unwrap(), Default::default(), "nothing pushed yet");
    let before = crate::now();
    let m1 = put(meta, &repo, MediaType::OCI_MANIFEST, &image(&l1, None), &["v1"]).await;
    let m2 = put(meta, &repo, MediaType::OCI_MANIFEST, &image(&l2, None), &["v2", "v2-alias"]).await;
    let child = put(meta, &repo, MediaType::OCI_MANIFEST, &image(&l3, None), &[]).await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{child}","size":1}}]}}"#,
        MediaType::OCI_INDEX,
        MediaType::OCI_MANIFEST
    );
    let index = put(meta, &repo, MediaType::OCI_INDEX, index.as_bytes(), &["multi"]).await;
    let _referrer = put(meta, &repo, MediaType::OCI_MANIFEST, &image(&l3, Some(&m1)), &[]).await;

    // Tags by name; top-level manifests by digest: neither the index's child nor the referrer.
    let state = store.repo_state(&repo).await.unwrap();
    let pushed = state.tags[0].pushed_at;
    assert!(pushed >= before && pushed <= crate::now());
    let tag = |tag: &str, digest: &str, last: Option<i64>| TagState {
        tag: tag.to_owned(),
        digest: digest.to_owned(),
        pushed_at: state.tags.iter().find(|t| t.tag == tag).unwrap().pushed_at,
        last_pulled_at: last,
    };
    assert_eq!(
        state.tags,
        [tag("multi", &index, None), tag("v1", &m1, None), tag("v2", &m2, None), tag("v2-alias", &m2, None)]
    );
    let mut top: Vec<String> = vec![m1.clone(), m2.clone(), index.clone()];
    top.sort();
    assert_eq!(state.manifests.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(), top);
    assert!(state.manifests.iter().all(|m: &TopManifest| m.pushed_at >= before));

    // Pulls: the latest time wins, within a batch and across batches; a pull older than the
    // tag's last push does not count; a manifest's pull counts for every tag on it.
    let t = pushed + 100;
    store.record_pulls(&[], false).await.unwrap();
    store
        .record_pulls(
            &[
                pull("keep/app", &m1, Some("v1"), t + 10),
                pull("keep/app", &m1, Some("v1"), t + 5),
                pull("keep/app", &m2, None, t + 20),
                pull("keep/app", &index, Some("multi"), pushed - 1000),
            ],
            false,
        )
        .await
        .unwrap();
    store
        .record_pulls(&[pull("keep/app", &m1, Some("v1"), t + 1), pull("keep/app", &m2, None, t + 30)], false)
        .await
        .unwrap();
    let state = store.repo_state(&repo).await.unwrap();
    let last: Vec<(&str, Option<i64>)> = state.tags.iter().map(|t| (t.tag.as_str(), t.last_pulled_at)).collect();
    assert_eq!(last, [("multi", None), ("v1", Some(t + 10)), ("v2", Some(t + 30)), ("v2-alias", Some(t + 30))]);
    // Many pulls in one flush (more than one statement's rows).
    let many: Vec<Pull> = (0..250).map(|i| pull("keep/app", &m1, Some(&format!("t{i}")), t + i)).collect();
    store.record_pulls(&many, false).await.unwrap();

    // What a run deletes: a tag as the run saw it (checked by the delete), never one
    // pushed since.
    let seen = state.tags.iter().find(|t| t.tag == "v1").unwrap();
    let as_seen = TagTarget { digest: Digest::parse(&seen.digest).unwrap(), pushed_at: seen.pushed_at };
    let pushed_since = TagTarget { pushed_at: seen.pushed_at + 1, ..as_seen.clone() };
    let v1 = Tag::parse("v1").unwrap();
    assert!(!meta.delete_tag(&repo, &v1, Some(&pushed_since)).await.unwrap(), "a tag pushed since stays");
    assert!(meta.delete_tag(&repo, &v1, Some(&as_seen)).await.unwrap());
    assert!(!store.repo_state(&repo).await.unwrap().tags.iter().any(|t| t.tag == "v1"));

    // Policies: one per project, replaced, listed, removed.
    assert_eq!(store.policy("keep").await.unwrap(), None);
    store.set_policy("keep", Some(r#"{"rules":[]}"#)).await.unwrap();
    store.set_policy("other", Some(r#"{"rules":[1]}"#)).await.unwrap();
    store.set_policy("keep", Some(r#"{"rules":[2]}"#)).await.unwrap();
    assert_eq!(store.policy("keep").await.unwrap().as_deref(), Some(r#"{"rules":[2]}"#));
    let all = store.policies().await.unwrap();
    assert_eq!(
        all,
        [("keep".to_owned(), r#"{"rules":[2]}"#.to_owned()), ("other".to_owned(), r#"{"rules":[1]}"#.to_owned())]
    );
    store.set_policy("keep", None).await.unwrap();
    assert_eq!(store.policy("keep").await.unwrap(), None);
    assert_eq!(store.policies().await.unwrap().len(), 1);

    untagged_deletion_spares_a_child_an_index_named_since_the_run_looked(meta, store).await;
}

/// Issue 17: retention's untagged deletion checked tags but not references, so a child
/// pushed by digest (as buildx does) and seen untagged and top-level by a run was deleted
/// although the index naming it had been accepted since. The delete re-checks, in its
/// transaction, that nothing holds the manifest, and that it is older than the cutoff.
async fn untagged_deletion_spares_a_child_an_index_named_since_the_run_looked(
    meta: &dyn MetadataStore,
    store: &dyn RetentionStore,
) {
    let repo = RepoName::parse("keep/buildx").unwrap();
    let (amd64, arm64, young) = (Digest::of(b"amd64"), Digest::of(b"arm64"), Digest::of(b"young"));
    for d in [&Digest::of(b"config"), &amd64, &arm64, &young] {
        meta.link_blob(&repo, d, &BlobInfo { size: 1, key: format!("k/{d}") }, None).await.unwrap();
    }
    let children = [
        put(meta, &repo, MediaType::OCI_MANIFEST, &image(&amd64, None), &[]).await,
        put(meta, &repo, MediaType::OCI_MANIFEST, &image(&arm64, None), &[]).await,
    ];
    // The run's view: both children untagged and top-level.
    let seen = store.repo_state(&repo).await.unwrap();
    let mut top: Vec<&String> = seen.manifests.iter().map(|m| &m.digest).collect();
    top.sort();
    let mut expected: Vec<&String> = children.iter().collect();
    expected.sort();
    assert_eq!(top, expected);
    // The index is accepted (untagged too: a reference holds on its own).
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{m}","digest":"{}","size":1}},{{"mediaType":"{m}","digest":"{}","size":1}}]}}"#,
        MediaType::OCI_INDEX,
        children[0],
        children[1],
        m = MediaType::OCI_MANIFEST,
    );
    let index = put(meta, &repo, MediaType::OCI_INDEX, index.as_bytes(), &[]).await;
    let unheld = DeleteIf::Unheld { pushed_by: crate::now() + 60 };
    for child in &children {
        let digest = Digest::parse(child).unwrap();
        assert!(!meta.delete_manifest(&repo, &digest, unheld).await.unwrap(), "{child} is the index's child");
        assert!(meta.manifest(&repo, &Reference::Digest(digest)).await.unwrap().is_some());
    }
    // Not a referrer either; and a manifest younger than the cutoff stays, until it is not.
    let referrer = put(meta, &repo, MediaType::OCI_MANIFEST, &image(&young, Some(&index)), &[]).await;
    let referrer = Digest::parse(&referrer).unwrap();
    assert!(!meta.delete_manifest(&repo, &referrer, unheld).await.unwrap(), "a referrer");
    let fresh = put(meta, &repo, MediaType::OCI_MANIFEST, &image(&young, None), &[]).await;
    let fresh = Digest::parse(&fresh).unwrap();
    let too_young = DeleteIf::Unheld { pushed_by: crate::now() - 3600 };
    assert!(!meta.delete_manifest(&repo, &fresh, too_young).await.unwrap(), "pushed within the grace");
    assert!(meta.delete_manifest(&repo, &fresh, unheld).await.unwrap());
    // The index itself, untagged and top-level, goes; then its children are top-level.
    let index = Digest::parse(&index).unwrap();
    assert!(meta.delete_manifest(&repo, &index, unheld).await.unwrap());
    let child = Digest::parse(&children[0]).unwrap();
    assert!(meta.delete_manifest(&repo, &child, unheld).await.unwrap());
}
