//! The behaviour every [`GcStore`] backend must show; each backend's tests call [`run`]
//! with a fresh database.

use berth_core::{Digest, ErrorKind, MediaType, Reference, RepoName, Tag, manifest};

use super::{GarbageBlob, GcKind, GcRun, GcStore, review_now};
use crate::{BlobInfo, MetadataStore, NewManifest};

async fn put(store: &dyn MetadataStore, repo: &RepoName, body: &[u8], tags: &[Tag]) -> Digest {
    let media_type =
        serde_json::from_slice::<serde_json::Value>(body).unwrap()["mediaType"].as_str().unwrap().to_owned();
    let parsed = manifest::parse(Some(&media_type), body).unwrap();
    let digest = Digest::of(body);
    store.put_manifest(NewManifest { repo, digest: &digest, parsed: &parsed, body, tags }).await.unwrap();
    digest
}

async fn doom<S: GcStore>(store: &S, digest: &Digest, before: i64) -> Option<BlobInfo> {
    store.doom_blobs(std::slice::from_ref(digest), before).await.unwrap().pop().unwrap()
}

fn marked(digest: &Digest, key: &str) -> GarbageBlob {
    GarbageBlob { digest: digest.clone(), key: key.to_owned(), size: 10 }
}

fn image(config: &Digest, layer: &Digest, subject: Option<&Digest>) -> Vec<u8> {
    crate::suite::image_manifest(config, layer, subject)
}

fn index(child: &Digest) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{child}","size":1}}]}}"#,
        MediaType::OCI_INDEX,
        MediaType::OCI_MANIFEST
    )
    .into_bytes()
}

pub async fn run<S: MetadataStore + GcStore>(store: &S) {
    let repo = RepoName::parse("team/app").unwrap();
    let info = |key: &str| BlobInfo { size: 10, key: key.to_owned() };
    let (config, layer, loose) = (Digest::of(b"config"), Digest::of(b"layer"), Digest::of(b"loose"));
    for (d, k) in [(&config, "k/config"), (&layer, "k/layer"), (&loose, "k/loose")] {
        store.link_blob(&repo, d, &info(k), None).await.unwrap();
    }
    let tag = Tag::parse("v1").unwrap();
    let image_digest = put(store, &repo, &image(&config, &layer, None), std::slice::from_ref(&tag)).await;
    // Everything queued so far is due with a cutoff in the future; nothing is with one in the past.
    let due = review_now();
    assert_eq!(store.due_count(review_now() - 60_000).await.unwrap(), 0);
    assert_eq!(store.due_count(due).await.unwrap(), 3, "the three uploaded blobs");

    // Blobs: only the unreferenced one is garbage.
    let garbage: Vec<_> = store.garbage_blobs(due, 100).await.unwrap().into_iter().map(|b| b.digest).collect();
    assert_eq!(garbage, vec![loose.clone()]);
    assert_eq!(store.garbage_blobs(review_now() - 60_000, 100).await.unwrap(), vec![], "not due before its grace");

    // A tagged manifest is kept; an untagged one only if untagged manifests are kept.
    assert!(store.garbage_manifests(due, true, 100).await.unwrap().is_empty());
    assert!(store.delete_tag(&repo, &tag, None).await.unwrap());
    // A cutoff taken after the delete that queued the manifest, however soon after, finds
    // it due (a grace of 0: review times are milliseconds, and due means queued by then).
    let due = review_now();
    assert!(store.garbage_manifests(due, false, 100).await.unwrap().is_empty(), "untagged are kept by default");
    let found = store.garbage_manifests(due, true, 100).await.unwrap();
    assert_eq!(found.iter().map(|m| &m.digest).collect::<Vec<_>>(), vec![&image_digest]);

    // A manifest an index references is in use, untagged or not; the index pushed by
    // digest is queued, and garbage when untagged manifests go.
    let index_digest = put(store, &repo, &index(&image_digest), &[]).await;
    let due = review_now();
    let found = store.garbage_manifests(due, true, 100).await.unwrap();
    assert_eq!(found.iter().map(|m| &m.digest).collect::<Vec<_>>(), vec![&index_digest]);

    // An artifact whose subject is not there is garbage even when untagged ones are kept.
    let orphan = put(store, &repo, &image(&config, &layer, Some(&Digest::of(b"gone"))), &[]).await;
    let referrer = put(store, &repo, &image(&config, &layer, Some(&index_digest)), &[]).await;
    let due = review_now();
    let found = store.garbage_manifests(due, false, 100).await.unwrap();
    assert_eq!(found.iter().map(|m| &m.digest).collect::<Vec<_>>(), vec![&orphan]);

    // Removing re-checks: a tagged manifest is not removed; the index is, and what it
    // referenced (its child, its referrer) is queued, then garbage in turn.
    assert!(!store.remove_manifest(&repo, &image_digest, true).await.unwrap(), "referenced by the index");
    assert!(store.remove_manifest(&repo, &index_digest, true).await.unwrap());
    assert!(!store.remove_manifest(&repo, &index_digest, true).await.unwrap(), "gone already");
    let due = review_now();
    let mut found: Vec<_> =
        store.garbage_manifests(due, false, 100).await.unwrap().into_iter().map(|m| m.digest).collect();
    found.sort();
    let mut expected = vec![orphan.clone(), referrer.clone()];
    expected.sort();
    assert_eq!(found, expected, "the referrer's subject is gone");
    for d in [&image_digest, &orphan, &referrer] {
        assert!(store.remove_manifest(&repo, d, true).await.unwrap());
    }
    let due = review_now();
    let mut garbage: Vec<_> = store.garbage_blobs(due, 100).await.unwrap().into_iter().map(|b| b.digest).collect();
    garbage.sort();
    let mut all = vec![config.clone(), layer.clone(), loose.clone()];
    all.sort();
    assert_eq!(garbage, all, "nothing references any blob now");

    // A blob queued again after the cutoff (uploaded again) is not doomed.
    let cutoff = review_now() - 1;
    store.link_blob(&repo, &layer, &info("k/layer"), None).await.unwrap();
    assert_eq!(doom(store, &layer, cutoff).await, None);

    // Doomed: marked deleting, unreadable, its links gone; a link of the same bytes fails
    // cleanly, one of new bytes brings it back.
    // A batch: each decided on its own (a blob never recorded is no garbage).
    let doomed = store.doom_blobs(&[config.clone(), Digest::of(b"never"), loose.clone()], due).await.unwrap();
    assert_eq!(doomed, vec![Some(info("k/config")), None, Some(info("k/loose"))]);
    assert_eq!(store.repo_blob(&repo, &config).await.unwrap(), None);
    assert_eq!(store.blob(&config).await.unwrap(), None);
    let doomed: Vec<_> = store.doomed_blobs(10).await.unwrap().into_iter().map(|b| b.digest).collect();
    let mut expected = vec![config.clone(), loose.clone()];
    expected.sort();
    assert_eq!(doomed, expected);
    let err = store.link_blob(&repo, &config, &info("k/config"), None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BlobUnknown);
    assert_eq!(store.link_blob(&repo, &loose, &info("k/loose2"), None).await.unwrap(), "k/loose2");
    assert!(store.blob_recorded(&config).await.unwrap());
    let forgotten = store.forget_blobs(&[marked(&loose, "k/loose"), marked(&config, "k/config")], false).await;
    assert_eq!(forgotten.unwrap(), vec![false, true], "the loose blob was revived: its record stays");
    assert_eq!(store.repo_blob(&repo, &loose).await.unwrap(), Some(info("k/loose2")));
    assert!(!store.blob_recorded(&config).await.unwrap());
    assert!(store.doomed_blobs(10).await.unwrap().is_empty());
    // A tombstone: the record stays, not doomed again, and its own bytes are never linked.
    store.link_blob(&repo, &config, &info("k/config2"), None).await.unwrap();
    assert_eq!(doom(store, &config, review_now()).await, Some(info("k/config2")));
    assert_eq!(store.forget_blobs(&[marked(&config, "k/config2")], true).await.unwrap(), vec![true]);
    assert!(store.doomed_blobs(10).await.unwrap().is_empty());
    let err = store.link_blob(&repo, &config, &info("k/config2"), None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BlobUnknown);
    assert_eq!(store.link_blob(&repo, &config, &info("k/config3"), None).await.unwrap(), "k/config3");
    assert_eq!(store.repo_blob(&repo, &config).await.unwrap(), Some(info("k/config3")), "size restored");

    // A manifest put naming a doomed blob fails cleanly.
    assert_eq!(doom(store, &layer, review_now()).await.map(|b| b.key), Some("k/layer".into()));
    let body = image(&loose, &layer, None);
    let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
    let digest = Digest::of(&body);
    let err = store
        .put_manifest(NewManifest { repo: &repo, digest: &digest, parsed: &parsed, body: &body, tags: &[] })
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ManifestBlobUnknown);

    // Clearing drops what was reviewed; the consistency check queues what is unreferenced.
    store.clear_reviewed(review_now(), true, true).await.unwrap();
    assert_eq!(store.due_count(review_now()).await.unwrap(), 0);
    assert_eq!(store.queue_unreferenced(false).await.unwrap(), 2, "the live, unreferenced loose and config blobs");
    let keys = store.blob_keys(None, 10).await.unwrap();
    assert_eq!(keys.len(), 3, "config, loose, and layer while deleting: {keys:?}");
    assert_eq!(store.blob_keys(Some(&keys[0].0), 10).await.unwrap(), keys[1..].to_vec());

    // Runs are recorded and listed newest first.
    let mut run = GcRun {
        id: 0,
        kind: GcKind::Full,
        dry_run: true,
        started_ms: 1_000,
        duration_ms: 5,
        candidates: 7,
        manifests_removed: 1,
        blobs_removed: 2,
        bytes_freed: 30,
        orphans_removed: 1,
        orphan_bytes: 4,
        error: None,
    };
    let first = store.record_run(&run).await.unwrap();
    run.kind = GcKind::Incremental;
    run.dry_run = false;
    run.error = Some("stopped".into());
    let second = store.record_run(&run).await.unwrap();
    assert!(second > first);
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0], GcRun { id: second, ..run.clone() });
    assert_eq!((runs[1].kind, runs[1].dry_run, runs[1].error.as_deref()), (GcKind::Full, true, None));
    assert_eq!(store.runs(Some(second), 10).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![first]);

    put_racing_doom(store).await;
    tag_moved_by_concurrent_puts(store).await;
    a_referrer_lives_as_long_as_its_subject(store).await;
}

/// Issue 17: with untagged manifests going, every referrer (a signature, an SBOM: untagged
/// by design) was garbage while its subject was tagged and live. A referrer is garbage only
/// once its subject is gone, whatever the setting; the subject's removal queues it.
async fn a_referrer_lives_as_long_as_its_subject<S: MetadataStore + GcStore>(store: &S) {
    let repo = RepoName::parse("signed/app").unwrap();
    let (config, layer, sig) = (Digest::of(b"signed-config"), Digest::of(b"signed-layer"), Digest::of(b"sig"));
    for d in [&config, &layer, &sig] {
        store.link_blob(&repo, d, &BlobInfo { size: 10, key: format!("k/{d}") }, None).await.unwrap();
    }
    let tag = Tag::parse("v1").unwrap();
    let subject = put(store, &repo, &image(&config, &layer, None), std::slice::from_ref(&tag)).await;
    let signature = put(store, &repo, &image(&config, &sig, Some(&subject)), &[]).await;
    // Of a referrer's referrer too (an attestation signed).
    let countersigned = put(store, &repo, &image(&sig, &layer, Some(&signature)), &[]).await;
    for untagged in [true, false] {
        assert_eq!(garbage_in(store, &repo, untagged).await, vec![], "delete_untagged {untagged}: the subject is live");
        for referrer in [&signature, &countersigned] {
            assert!(!store.remove_manifest(&repo, referrer, untagged).await.unwrap(), "its subject is live");
        }
    }
    store.queue_unreferenced(true).await.unwrap();
    assert_eq!(garbage_in(store, &repo, true).await, vec![], "the consistency check queues no live subject's referrer");

    // The subject untagged, and removed: then its referrer, then the referrer's.
    assert!(store.delete_tag(&repo, &tag, None).await.unwrap());
    assert_eq!(garbage_in(store, &repo, true).await, vec![subject.clone()]);
    assert!(store.remove_manifest(&repo, &subject, true).await.unwrap());
    assert_eq!(garbage_in(store, &repo, false).await, vec![signature.clone()], "its subject is gone");
    assert!(store.remove_manifest(&repo, &signature, false).await.unwrap());
    assert_eq!(garbage_in(store, &repo, false).await, vec![countersigned.clone()]);
    assert!(store.remove_manifest(&repo, &countersigned, false).await.unwrap());
}

/// Two puts moving one tag at once, or a put and a delete of the tag: whichever manifest
/// is left untagged is queued for review, and neither side fails. (On PostgreSQL each
/// once read where the tag pointed before the other committed, and neither queued the
/// manifest the other displaced.)
async fn tag_moved_by_concurrent_puts<S: MetadataStore + GcStore>(store: &S) {
    let repo = RepoName::parse("race/tags").unwrap();
    let config = Digest::of(b"tags-config");
    store.link_blob(&repo, &config, &BlobInfo { size: 10, key: "k/tags-config".into() }, None).await.unwrap();
    let tags = [Tag::parse("latest").unwrap()];
    for round in 0..40 {
        let mut sides = Vec::new();
        for side in ["a", "b"] {
            let layer = Digest::of(format!("tags-layer-{round}-{side}").as_bytes());
            store.link_blob(&repo, &layer, &BlobInfo { size: 10, key: format!("k/{layer}") }, None).await.unwrap();
            let body = image(&config, &layer, None);
            let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
            sides.push((Digest::of(&body), parsed, body));
        }
        let [(a_digest, a_parsed, a_body), (b_digest, b_parsed, b_body)] = &sides[..] else { unreachable!() };
        let put_a = NewManifest { repo: &repo, digest: a_digest, parsed: a_parsed, body: a_body, tags: &tags };
        let put_b = NewManifest { repo: &repo, digest: b_digest, parsed: b_parsed, body: b_body, tags: &tags };
        if round % 2 == 0 {
            let (a, b) = tokio::join!(store.put_manifest(put_a), store.put_manifest(put_b));
            a.unwrap();
            b.unwrap();
        } else {
            store.put_manifest(put_a).await.unwrap();
            let (b, deleted) = tokio::join!(store.put_manifest(put_b), store.delete_tag(&repo, &tags[0], None));
            b.unwrap();
            assert!(deleted.unwrap(), "round {round}: the tag was there to delete");
        }
        let tagged = store.manifest(&repo, &Reference::Tag(tags[0].clone())).await.unwrap().map(|m| m.digest);
        let due = review_now();
        let garbage: Vec<_> =
            store.garbage_manifests(due, true, 1000).await.unwrap().into_iter().map(|m| m.digest).collect();
        for (digest, _, _) in &sides {
            assert_eq!(
                garbage.contains(digest),
                tagged.as_ref() != Some(digest),
                "round {round}: {digest} is untagged and must be found, or tagged and kept"
            );
        }
    }
}

/// A manifest put racing GC dooming the blobs it names: the put either keeps them (and GC
/// leaves them) or fails with `MANIFEST_BLOB_UNKNOWN`; never a database error (on
/// PostgreSQL, locks taken in opposite orders made a deadlock the database broke by
/// failing one of the two), and never a manifest naming a doomed blob.
async fn put_racing_doom<S: MetadataStore + GcStore>(store: &S) {
    let repo = RepoName::parse("race/app").unwrap();
    let mut kept = 0;
    for round in 0..60 {
        let config = Digest::of(format!("race-config-{round}").as_bytes());
        let layer = Digest::of(format!("race-layer-{round}").as_bytes());
        for d in [&config, &layer] {
            store.link_blob(&repo, d, &BlobInfo { size: 10, key: format!("k/{d}") }, None).await.unwrap();
        }
        let body = image(&config, &layer, None);
        let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
        let digest = Digest::of(&body);
        let tags = [Tag::parse("latest").unwrap()];
        let due = review_now();
        // Each side starts first in turn, the other after a delay that grows with the round.
        let lag = |side: u64| async move {
            if round % 2 == side {
                tokio::time::sleep(std::time::Duration::from_micros(round / 2 * 100)).await;
            }
        };
        let (put, doomed_layer, doomed_config) = tokio::join!(
            async {
                lag(0).await;
                store
                    .put_manifest(NewManifest {
                        repo: &repo,
                        digest: &digest,
                        parsed: &parsed,
                        body: &body,
                        tags: &tags,
                    })
                    .await
            },
            async {
                lag(1).await;
                store.doom_blobs(std::slice::from_ref(&layer), due).await
            },
            async {
                lag(1).await;
                store.doom_blobs(std::slice::from_ref(&config), due).await
            },
        );
        let doomed = doomed_layer.unwrap()[0].is_some() || doomed_config.unwrap()[0].is_some();
        match put {
            Ok(()) => {
                assert!(!doomed, "round {round}: a blob of a stored manifest was doomed");
                kept += 1;
            }
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::ManifestBlobUnknown, "round {round}: {e}");
                assert!(doomed, "round {round}: refused though nothing was doomed");
            }
        }
    }
    eprintln!("put racing doom: {kept} of 60 puts kept their blobs");
}

/// The digests of `repo`'s manifests that are garbage now.
async fn garbage_in<S: GcStore>(store: &S, repo: &RepoName, untagged: bool) -> Vec<Digest> {
    let found = store.garbage_manifests(review_now(), untagged, 1000).await.unwrap();
    found.into_iter().filter(|m| m.repo == *repo).map(|m| m.digest).collect()
}

/// The `queue_in_seconds` of [`entries_an_older_node_queued_in_seconds_are_read_as_seconds`]
/// over a pool of either dialect: what a node before milliseconds wrote when it queued a
/// blob (Unix seconds).
macro_rules! queue_in_seconds {
    ($pool:expr) => {{
        let pool = $pool;
        move |digest: String, at: i64| {
            let pool = pool.clone();
            async move {
                let query = sqlx::query("UPDATE gc_blob_review SET queued_at = $2 WHERE digest = $1");
                query.bind(digest).bind(at).execute(&pool).await.unwrap();
            }
        }
    }};
}
pub(crate) use queue_in_seconds;

/// A rolling upgrade (issue 17): a node of a version before review times were milliseconds
/// queues in seconds. Its entries are read as seconds: due once their grace has passed,
/// neither at once (a blob it just uploaded would be doomed before its manifest arrives)
/// nor never. `queue_in_seconds(digest, at)` writes an entry as such a node does.
pub async fn entries_an_older_node_queued_in_seconds_are_read_as_seconds<S, F, Fut>(store: &S, queue_in_seconds: F)
where
    S: MetadataStore + GcStore,
    F: Fn(String, i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let repo = RepoName::parse("old/node").unwrap();
    let blob = Digest::of(b"queued by an older node");
    store.link_blob(&repo, &blob, &BlobInfo { size: 10, key: "k/old".into() }, None).await.unwrap();
    queue_in_seconds(blob.to_string(), crate::now() - 10).await;
    let a_minute_ago = review_now() - 60_000;
    assert_eq!(store.due_count(a_minute_ago).await.unwrap(), 0, "queued 10 s ago: not due with a grace of 60 s");
    assert_eq!(store.garbage_blobs(a_minute_ago, 10).await.unwrap(), vec![]);
    assert_eq!(doom(store, &blob, a_minute_ago).await, None);
    store.clear_reviewed(a_minute_ago, true, true).await.unwrap();
    assert_eq!(store.due_count(review_now()).await.unwrap(), 1, "still queued, and due with a grace of 0");
    let found: Vec<_> = store.garbage_blobs(review_now(), 10).await.unwrap().into_iter().map(|b| b.digest).collect();
    assert_eq!(found, vec![blob.clone()]);
    assert_eq!(doom(store, &blob, review_now()).await.map(|b| b.key), Some("k/old".into()));
}
