//! The behaviour every [`MetadataStore`] backend must show; each backend's tests call [`run`].

use berth_core::{Digest, ErrorKind, MediaType, Reference, RepoName, Tag, manifest};

use crate::{BlobInfo, MetadataStore, NewManifest, PageSpec};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

pub(crate) fn image_manifest(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Vec<u8> {
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
    core(store).await;
    referrers_are_paged(store).await;
    uploads_are_bounded_and_expire_in_batches(store).await;
}

async fn core(store: &dyn MetadataStore) {
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
    assert!(store.create_upload("u1", &b, "s0", 10).await.unwrap());
    assert_eq!(store.upload(&a, "u1").await.unwrap(), None, "uploads belong to one repository");
    let up = store.upload(&b, "u1").await.unwrap().unwrap();
    assert_eq!((up.size, up.hash_state, up.state.as_str()), (0, None, "s0"));
    assert!(store.advance_upload("u1", 0, 10, b"hash10", "s10").await.unwrap());
    assert!(!store.advance_upload("u1", 0, 20, b"hash20", "s20").await.unwrap());
    let up = store.upload(&b, "u1").await.unwrap().unwrap();
    assert_eq!((up.size, up.hash_state.as_deref(), up.state.as_str()), (10, Some(&b"hash10"[..]), "s10"));
    assert_eq!(store.known_uploads(&["u1".into(), "nope".into()]).await.unwrap(), vec![true, false]);
    assert!(store.expire_uploads(crate::now() - 3600, 100).await.unwrap().is_empty());
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
        .put_manifest(NewManifest {
            repo: &b,
            digest: &digest,
            parsed: &parsed,
            body: &body,
            tags: std::slice::from_ref(&latest),
        })
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

    // Artifacts: each manifest with its size, media type and tags, paged by digest.
    let arts = store.artifacts(&a, None, 10).await.unwrap().unwrap();
    assert!(!arts.more);
    assert_eq!(arts.items.len(), 1);
    let art = &arts.items[0];
    assert_eq!((&art.digest, art.media_type.as_str(), art.size), (&digest, MediaType::OCI_MANIFEST, body.len() as u64));
    assert_eq!(art.tags, vec!["latest".to_owned(), "v1".to_owned()]);
    assert!(art.pushed_at > 0);
    assert!(store.artifacts(&a, Some(digest.as_str()), 10).await.unwrap().unwrap().items.is_empty());
    assert!(store.artifacts(&repo("nope"), None, 10).await.unwrap().is_none());

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
    assert!(store.delete_tag(&a, &moving, None).await.unwrap());
    assert!(store.manifest(&a, &Reference::Tag(moving)).await.unwrap().is_none());

    let all = PageSpec { last: None, limit: 100, max_bytes: 1 << 20 };
    let refs = store.referrers(&a, &digest, None, all).await.unwrap();
    assert!(!refs.more);
    let refs = refs.descriptors;
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].digest, referrer_digest.to_string());
    assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x.cfg"));
    assert_eq!(refs[0].annotations.as_ref().unwrap()["a"], "b");
    assert!(store.referrers(&a, &digest, Some("application/other"), all).await.unwrap().descriptors.is_empty());
    assert_eq!(store.referrers(&a, &digest, Some("application/x.cfg"), all).await.unwrap().descriptors.len(), 1);
    assert!(store.referrers(&b, &digest, None, all).await.unwrap().descriptors.is_empty());

    // Deletes: a tag alone, then a manifest with its remaining tags.
    // A delete conditioned on what the tag named leaves a tag that moved since; one of
    // untagged manifests only leaves a tagged one.
    let moved = crate::TagTarget { digest: referrer_digest.clone(), pushed_at: 0 };
    assert!(!store.delete_tag(&a, &latest, Some(&moved)).await.unwrap(), "a tag that moved stays");
    let unheld = crate::DeleteIf::Unheld { pushed_by: crate::now() };
    assert!(!store.delete_manifest(&a, &digest, unheld).await.unwrap(), "a tagged manifest stays");
    assert_eq!(store.manifest(&a, &Reference::Tag(latest.clone())).await.unwrap().unwrap().digest, digest);
    assert!(store.delete_tag(&a, &latest, None).await.unwrap());
    assert!(!store.delete_tag(&a, &latest, None).await.unwrap());
    assert!(store.manifest(&a, &Reference::Digest(digest.clone())).await.unwrap().is_some());
    assert!(store.delete_manifest(&a, &digest, crate::DeleteIf::Any).await.unwrap());
    assert!(store.manifest(&a, &Reference::Tag(v1)).await.unwrap().is_none());
    assert!(store.tags(&a, None, 10).await.unwrap().unwrap().items.is_empty());
    assert!(!store.delete_manifest(&a, &digest, crate::DeleteIf::Any).await.unwrap());

    assert!(store.unlink_blob(&a, &layer).await.unwrap());
    assert_eq!(store.repo_blob(&a, &layer).await.unwrap(), None);
    assert_eq!(store.repo_blob(&b, &layer).await.unwrap().map(|i| i.size), Some(5));

    // A whole repository: its manifests, tags and links go, and its name; other
    // repositories keep theirs; deleting it again finds nothing.
    store.link_blob(&b, &config, &info(6, "k/config"), None).await.unwrap();
    let gone = [Tag::parse("gone").unwrap()];
    store
        .put_manifest(NewManifest { repo: &b, digest: &digest, parsed: &parsed, body: &body, tags: &gone })
        .await
        .unwrap();
    assert!(store.catalog(None, 100).await.unwrap().items.contains(&b.to_string()));
    assert_eq!(store.delete_repository(&b).await.unwrap(), Some(1));
    assert!(!store.repo_exists(&b).await.unwrap());
    assert!(store.tags(&b, None, 10).await.unwrap().is_none());
    assert_eq!(store.repo_blob(&b, &layer).await.unwrap(), None);
    assert!(store.manifest(&b, &Reference::Digest(digest.clone())).await.unwrap().is_none());
    assert!(!store.catalog(None, 100).await.unwrap().items.contains(&b.to_string()));
    assert_eq!(store.delete_repository(&b).await.unwrap(), None);
    assert!(store.repo_exists(&a).await.unwrap());
}

/// Referrers come a page at a time, by digest, bounded by count and by bytes.
pub async fn referrers_are_paged(store: &dyn MetadataStore) {
    let r = repo("paged/refs");
    let config = Digest::of(b"paged config");
    store.link_blob(&r, &config, &BlobInfo { size: 12, key: "k/pc".into() }, None).await.unwrap();
    let subject = Digest::of(b"the subject");
    let mut expected = Vec::new();
    for i in 0..25 {
        // Every third one of another artifact type; every fifth with a large annotation.
        let artifact = if i % 3 == 0 { "application/x.sig" } else { "application/x.sbom" };
        let note = format!("{i}-{}", if i % 5 == 0 { "x".repeat(10_000) } else { String::new() });
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"{artifact}",
            "config":{{"mediaType":"application/x.cfg","digest":"{config}","size":12}},"layers":[],
            "annotations":{{"n":"{note}"}},"subject":{{"mediaType":"{}","digest":"{subject}","size":1}}}}"#,
            MediaType::OCI_MANIFEST,
            MediaType::OCI_MANIFEST,
        );
        let parsed = manifest::parse(None, body.as_bytes()).unwrap();
        let digest = Digest::of(body.as_bytes());
        let m = NewManifest { repo: &r, digest: &digest, parsed: &parsed, body: body.as_bytes(), tags: &[] };
        store.put_manifest(m).await.unwrap();
        expected.push((digest.to_string(), artifact));
    }
    expected.sort();

    // Every page holds at most `limit` and about `max_bytes`, at least one; together they
    // hold each referrer once, in digest order.
    for (filter, limit, max_bytes) in [(None, 10, 1 << 20), (None, 7, 15_000), (Some("application/x.sig"), 3, 1 << 20)]
    {
        let want: Vec<&String> =
            expected.iter().filter(|(_, t)| filter.is_none_or(|f| f == *t)).map(|(d, _)| d).collect();
        let mut got = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let spec = PageSpec { last: last.as_deref(), limit, max_bytes };
            let page = store.referrers(&r, &subject, filter, spec).await.unwrap();
            let n = page.descriptors.len();
            assert!((1..=limit as usize).contains(&n), "page of {n}");
            let bytes: usize = page.descriptors.iter().map(|d| serde_json::to_vec(d).unwrap().len()).sum();
            assert!(n == 1 || bytes <= max_bytes, "{n} referrers in {bytes} bytes > {max_bytes}");
            got.extend(page.descriptors.iter().map(|d| d.digest.clone()));
            last = got.last().cloned();
            if !page.more {
                break;
            }
            assert!(got.len() <= want.len(), "more pages than referrers");
        }
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "filter {filter:?}, limit {limit}, {max_bytes} bytes");
    }
    let tiny = PageSpec { last: None, limit: 100, max_bytes: 1 };
    assert_eq!(store.referrers(&r, &subject, None, tiny).await.unwrap().descriptors.len(), 1, "always one");
}

/// Open uploads are bounded per repository, atomically; expiry deletes in batches.
pub async fn uploads_are_bounded_and_expire_in_batches(store: &dyn MetadataStore) {
    let (r, other) = (repo("bounded/uploads"), repo("bounded/other"));
    // Concurrent creations never pass the bound (several rounds: the first ones also
    // open the pool's connections, which staggers them).
    for round in 0..4 {
        let r = repo(&format!("bounded/round{round}"));
        let creations = (0..20).map(|i| {
            let r = r.clone();
            async move { store.create_upload(&format!("r{round}-{i:02}"), &r, "", 5).await.unwrap() }
        });
        let created = futures_util::future::join_all(creations).await;
        assert_eq!(created.iter().filter(|c| **c).count(), 5, "round {round}: {created:?}");
        assert_eq!(store.expire_uploads(crate::now() + 10, 100).await.unwrap().len(), 5);
    }
    let creations = (0..20).map(|i| {
        let r = r.clone();
        async move { store.create_upload(&format!("b{i:02}"), &r, "", 5).await.unwrap() }
    });
    let created = futures_util::future::join_all(creations).await;
    assert_eq!(created.iter().filter(|c| **c).count(), 5, "{created:?}");
    assert!(store.create_upload("o1", &other, "", 5).await.unwrap(), "the bound is per repository");
    let first = created.iter().position(|c| *c).unwrap();
    assert!(store.delete_upload(&format!("b{first:02}")).await.unwrap());
    assert!(store.create_upload("b99", &r, "", 5).await.unwrap(), "a freed slot is reused");
    assert!(!store.create_upload("b98", &r, "", 5).await.unwrap());

    // Seven uploads in all; expired three at a time, each once.
    let before = crate::now() + 10;
    let mut expired = Vec::new();
    loop {
        let batch = store.expire_uploads(before, 3).await.unwrap();
        assert!(batch.len() <= 3);
        let done = batch.len() < 3;
        expired.extend(batch.into_iter().map(|(id, _)| id));
        if done {
            break;
        }
    }
    expired.sort();
    let mut want: Vec<String> =
        created.iter().enumerate().filter(|(i, c)| **c && *i != first).map(|(i, _)| format!("b{i:02}")).collect();
    want.extend(["b99".to_owned(), "o1".to_owned()]);
    want.sort();
    assert_eq!(expired, want);
    let ids: Vec<String> = (0..1200).map(|i| format!("none-{i}")).chain(["b99".to_owned()]).collect();
    assert!(store.known_uploads(&ids).await.unwrap().iter().all(|k| !k));
}
