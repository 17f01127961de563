//! The behaviour every [`ScrubStore`] backend must show, and that a damaged blob is no
//! longer live to the registry; each backend's tests call [`run`].

use berth_core::{Digest, ErrorKind, MediaType, RepoName, manifest};

use super::{Finding, ScrubStore};
use crate::{BlobInfo, MetadataStore, NewManifest};

pub async fn run(meta: &dyn MetadataStore, scrub: &dyn ScrubStore) {
    let repo = RepoName::parse("scrub/app").unwrap();
    let (good, bad) = (Digest::of(b"scrub-good"), Digest::of(b"scrub-bad"));
    meta.link_blob(&repo, &good, &BlobInfo { size: 4, key: "kg".into() }, None).await.unwrap();
    meta.link_blob(&repo, &bad, &BlobInfo { size: 3, key: "kb".into() }, None).await.unwrap();

    let interrupted = scrub.start_run("node-a").await.unwrap();
    let run = scrub.start_run("node-b").await.unwrap();
    assert_eq!(scrub.run(interrupted.id).await.unwrap().unwrap().state, "failed");
    assert_eq!((run.state.as_str(), run.node.as_str()), ("running", "node-b"));
    assert!(run.blobs_total >= 2);
    let blobs = scrub.blobs_after(None, 10_000).await.unwrap();
    assert!(blobs.windows(2).all(|w| w[0].digest.as_str() < w[1].digest.as_str()), "sorted by digest");
    let first = scrub.blobs_after(None, 1).await.unwrap();
    assert_eq!(scrub.blobs_after(Some(first[0].digest.as_str()), 1).await.unwrap()[0], blobs[1]);

    assert!(meta.repo_blob(&repo, &bad).await.unwrap().is_some(), "live (and cached, if the store caches)");
    let finding = Finding { digest: bad.to_string(), reason: "truncated: 1 of 3 bytes".into() };
    scrub.record_finding(run.id, &finding).await.unwrap();
    meta.uncache_blob(&bad);
    let unreadable = Finding { digest: good.to_string(), reason: "unreadable: I/O error".into() };
    scrub.record_finding(run.id, &unreadable).await.unwrap();
    let mut findings = vec![finding.clone(), unreadable];
    findings.sort_by(|a, b| a.digest.cmp(&b.digest));
    assert_eq!(scrub.findings(run.id, None, 10).await.unwrap(), findings);
    assert_eq!(scrub.findings(run.id, None, 1).await.unwrap(), findings[..1]);
    assert_eq!(scrub.findings(run.id, Some(&findings[0].digest), 10).await.unwrap(), findings[1..]);

    // Damaged: not live to the registry; unreadable only: still served.
    assert_eq!(meta.repo_blob(&repo, &bad).await.unwrap(), None);
    assert_eq!(meta.blob(&bad).await.unwrap(), None);
    assert!(meta.repos_with_blob(&bad, 10).await.unwrap().is_empty());
    assert!(meta.repo_blob(&repo, &good).await.unwrap().is_some());
    let listed = scrub.blobs_after(None, 10_000).await.unwrap();
    assert!(listed.iter().any(|b| b.digest == bad && b.damaged), "a damaged blob is checked again");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/x.cfg","digest":"{bad}","size":3}},"layers":[]}}"#,
        MediaType::OCI_MANIFEST
    )
    .into_bytes();
    let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
    let manifest = NewManifest { repo: &repo, digest: &Digest::of(&body), parsed: &parsed, body: &body, tags: &[] };
    assert_eq!(meta.put_manifest(manifest).await.unwrap_err().kind, ErrorKind::ManifestBlobUnknown);

    let done =
        super::ScrubRun { state: "finished".into(), checked: 2, bytes: 7, damaged: 1, finished_at: Some(1), ..run };
    scrub.update_run(&done).await.unwrap();
    assert_eq!(scrub.run(done.id).await.unwrap(), Some(done.clone()));
    assert_eq!(scrub.runs(1).await.unwrap(), vec![done]);

    // Sound again (bytes restored): live again.
    scrub.clear_damage(&bad).await.unwrap();
    meta.uncache_blob(&bad);
    assert!(meta.repo_blob(&repo, &bad).await.unwrap().is_some());

    // Damaged again, then pushed again: the new bytes' key wins, and it is live.
    scrub.record_finding(run.id, &finding).await.unwrap();
    meta.uncache_blob(&bad);
    assert_eq!(meta.repo_blob(&repo, &bad).await.unwrap(), None);
    let fresh = BlobInfo { size: 3, key: "kb-fresh".into() };
    assert_eq!(meta.link_blob(&repo, &bad, &fresh, None).await.unwrap(), "kb-fresh");
    assert_eq!(meta.repo_blob(&repo, &bad).await.unwrap(), Some(fresh));
    assert!(!scrub.blobs_after(None, 10_000).await.unwrap().iter().any(|b| b.damaged));
}
