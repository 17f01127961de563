//! The behaviour every [`MetadataStore`] backend must show; each backend's tests call [`run`].

use berth_core::{Digest, ErrorKind, MediaType, Reference, RepoName, Tag, manifest};

use crate::{BlobInfo, MetadataStore, NewManifest};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn image_manifest(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Vec<u8> {
    let subject = subject
        .map(|s| format!(r#","subject":{{"mediaType":"{}","digest":"{s}","size":1}}"#, MediaType::OCI_MANIFEST))
        .unwrap_or_default();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/x.cfg","digest":"{config}","size":1}},
        "layers":[{{"mediaType":"application/x.layer","digest":"{layer}","size":1}}],"annotations":{{"a":"b"}}{subject}}}"#,
        MediaType::OCI_MANIFEST
    )
    .into_bytes()
}

pub async fn run(store: &dyn MetadataStore) {
    let (a, b) = (repo("team/a"), repo("team/b"));
    let config = Digest::of(b"config");
    let layer = Digest::of(b"layer");

    // Blobs: linked per repository, stored once.
    let info = |size, key: &str| BlobInfo { size, key: key.to_owned() };
    assert_eq!(store.repo_blob(&a, &layer).await.unwrap(), None);
    store.link_blob(&a, &config, &info(6, "k/config"), None).await.unwrap();
    assert_eq!(store.link_blob(&a, &layer, &info(5, "k/layer"), None).await.unwrap(), "k/layer");
    assert_eq!(store.repo_blob(&a, &layer).await.unwrap(), Some(info(5, "k/layer")));
    assert_eq!(store.repo_blob(&b, &layer).await.unwrap(), None);
    assert_eq!(store.blob(&layer).await.unwrap(), Some(info(5, "k/layer")));
    assert_eq!(store.repos_with_blob(&layer, 10).await.unwrap(), vec![a.clone()]);

    // Uploads: created, advanced only from the expected offset, completed by link_blob.
    store.create_upload("u1", &b, "s0").await.unwrap();
    assert_eq!(store.upload(&a, "u1").await.unwrap(), None, "uploads belong to one repository");
    let up = store.upload(&b, "u1").await.unwrap().unwrap();
    assert_eq!((up.size, up.hash_state, up.state.as_str()), (0, None, "s0"));
    assert!(store.advance_upload("u1", 0, 10, b"hash10", "s10").await.unwrap());
    assert!(!store.advance_upload("u1", 0, 20, b"hash20", "s20").await.unwrap());
    let up = store.upload(&b, "u1").await.unwrap().unwrap();
    assert_eq!((up.size, up.hash_state.as_deref(), up.state.as_str()), (10, Some(&b"hash10"[..]), "s10"));
    assert_eq!(store.known_uploads(&["u1".into(), "nope".into()]).await.unwrap(), vec![true, false]);
    assert!(store.stale_uploads(crate::now() + 10).await.unwrap().contains(&("u1".to_owned(), "s10".to_owned())));
    assert!(store.stale_uploads(crate::now() - 3600).await.unwrap().is_empty());
    // The same content committed again under another key: the recorded key wins.
    assert_eq!(store.link_blob(&b, &layer, &info(5, "k/other"), Some("u1")).await.unwrap(), "k/layer");
    assert_eq!(store.upload(&b, "u1").await.unwrap(), None);
    assert_eq!(store.repo_blob(&b, &layer).await.unwrap().map(|i| i.size), Some(5));

    // Leases: one holder at a time, renewable by its holder, free once expired.
    assert!(store.try_lease("gc", "node-1", 60).await.unwrap());
    assert!(!store.try_lease("gc", "node-2", 60).await.unwrap());
    assert!(store.try_lease("gc", "node-1", 60).await.unwrap());
    assert!(store.try_lease("janitor", "node-2", -1).await.unwrap());
    assert!(store.try_lease("janitor", "node-1", 60).await.unwrap(), "an expired lease is free");

    // A manifest naming a blob the repository can't read is refused, whole.
    let body = image_manifest(&config, &layer, None);
    let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
    let digest = Digest::of(&body);
    let latest = Tag::parse("latest").unwrap();
    let err = store
        .put_manifest(NewManifest { repo: &b, digest: &digest, parsed: &parsed, body: &body, tags: &[latest.clone()] })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ManifestBlobUnknown);
    assert!(store.manifest(&b, &Reference::Tag(latest.clone())).await.unwrap().is_none());

    let v1 = Tag::parse("v1").unwrap();
    store
        .put_manifest(NewManifest {
            repo: &a,
            digest: &digest,
            parsed: &parsed,
            body: &body,
            tags: &[latest.clone(), v1.clone()],
        })
        .await
        .unwrap();
    let got = store.manifest(&a, &Reference::Tag(latest.clone())).await.unwrap().unwrap();
    assert_eq!((got.digest.clone(), got.body.to_vec()), (digest.clone(), body.clone()));
    assert_eq!(got.media_type, MediaType::OCI_MANIFEST);
    assert!(store.manifest(&a, &Reference::Digest(digest.clone())).await.unwrap().is_some());

    // Tags and catalog: sorted bytewise, paginated.
    let page = store.tags(&a, None, 1).await.unwrap().unwrap();
    assert_eq!((page.items.clone(), page.more), (vec!["latest".to_owned()], true));
    let page = store.tags(&a, Some("latest"), 10).await.unwrap().unwrap();
    assert_eq!((page.items.clone(), page.more), (vec!["v1".to_owned()], false));
    assert!(store.tags(&repo("nope"), None, 10).await.unwrap().is_none());
    let cat = store.catalog(None, 100).await.unwrap();
    assert_eq!(cat.items, vec!["team/a".to_owned(), "team/b".to_owned()]);

    // Referrers: by subject, filtered by artifact type.
    let referrer = image_manifest(&config, &layer, Some(&digest));
    let parsed_ref = manifest::parse(None, &referrer).unwrap();
    let referrer_digest = Digest::of(&referrer);
    store
        .put_manifest(NewManifest {
            repo: &a,
            digest: &referrer_digest,
            parsed: &parsed_ref,
            body: &referrer,
            tags: &[],
        })
        .await
        .unwrap();
    // A tag moved to another manifest is seen moved at once.
    let moving = Tag::parse("moving").unwrap();
    let moving_tags = [moving.clone()];
    let put = |d, p, b| NewManifest { repo: &a, digest: d, parsed: p, body: b, tags: &moving_tags };
    store.put_manifest(put(&digest, &parsed, &body)).await.unwrap();
    let seen = store.manifest(&a, &Reference::Tag(moving.clone())).await.unwrap().unwrap();
    assert_eq!(seen.digest, digest);
    store.put_manifest(put(&referrer_digest, &parsed_ref, &referrer)).await.unwrap();
    let seen = store.manifest(&a, &Reference::Tag(moving.clone())).await.unwrap().unwrap();
    assert_eq!(seen.digest, referrer_digest);
    assert!(store.delete_tag(&a, &moving).await.unwrap());
    assert!(store.manifest(&a, &Reference::Tag(moving)).await.unwrap().is_none());

    let refs = store.referrers(&a, &digest, None).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest, referrer_digest.to_string());
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x.cfg"));
    assert_eq!(refs[0].annotations.as_ref().unwrap()["a"], "b");
    assert!(store.referrers(&a, &digest, Some("application/other")).await.unwrap().is_empty());
    assert_eq!(store.referrers(&a, &digest, Some("application/x.cfg")).await.unwrap().len(), 1);
    assert!(store.referrers(&b, &digest, None).await.unwrap().is_empty());

    // Deletes: a tag alone, then a manifest with its remaining tags.
    assert!(store.delete_tag(&a, &latest).await.unwrap());
    assert!(!store.delete_tag(&a, &latest).await.unwrap());
    assert!(store.manifest(&a, &Reference::Digest(digest.clone())).await.unwrap().is_some());
    assert!(store.delete_manifest(&a, &digest).await.unwrap());
    assert!(store.manifest(&a, &Reference::Tag(v1)).await.unwrap().is_none());
    assert!(store.tags(&a, None, 10).await.unwrap().unwrap().items.is_empty());
    assert!(!store.delete_manifest(&a, &digest).await.unwrap());

    assert!(store.unlink_blob(&a, &layer).await.unwrap());
    assert_eq!(store.repo_blob(&a, &layer).await.unwrap(), None);
    assert_eq!(store.repo_blob(&b, &layer).await.unwrap().map(|i| i.size), Some(5));
}
