//! Bounds on what clients can make the server hold in memory: the embedded manifest
//! cache (measured on the real `berth` binary), and referrers listed a bounded page at a
//! time with `Link` headers.

use std::collections::HashSet;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, sha256};
use crate::support::{BerthProcess, TestServer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MIB: usize = 1 << 20;

/// Resident memory of a process, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS line");
    kib.trim().trim_end_matches("kB").trim().parse::<usize>().unwrap() * 1024
}

/// An image manifest with no layers, `pad` bytes of annotation, and maybe a subject.
fn padded_manifest(config: &str, pad: usize, annotations: Value, subject: Option<(&str, usize)>) -> Vec<u8> {
    let mut annotations = annotations;
    annotations["pad"] = json!("p".repeat(pad));
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2 },
        "layers": [],
        "annotations": annotations,
    });
    if let Some((digest, size)) = subject {
        m["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size });
    }
    serde_json::to_vec(&m).unwrap()
}

/// The measurement: one 3 MiB manifest stored under 300 tags, each tag read
/// once, left the server at 1,027 MB resident (a cached copy per tag). Embedded mode on
/// purpose: the cache exists only there (scale-out nodes cache nothing).
#[tokio::test]
async fn a_3_mib_manifest_under_300_tags_read_once_each_leaves_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = BerthProcess::spawn(dir.path());
    let api = Api::new(server.url());
    let config = api.push_blob("big/manifest", b"{}").await;
    let body = padded_manifest(&config, 3 * MIB, json!({}), None);
    let digest = sha256(&body);
    let tags: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    // 50 at a time: the response names each tag in a header of its own.
    for batch in tags.chunks(50) {
        let query: Vec<String> = batch.iter().map(|t| format!("tag={t}")).collect();
        let r = api.put_manifest("big/manifest", &format!("{digest}?{}", query.join("&")), OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let before = rss_bytes(server.pid());
    for tag in &tags {
        let r = api
            .req(Method::GET, &format!("/v2/big/manifest/manifests/{tag}"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), digest);
        assert_eq!(r.bytes().await.unwrap().len(), body.len());
    }
    let after = rss_bytes(server.pid());
    eprintln!("resident: {} MiB after the pushes, {} MiB after 300 reads", before / MIB, after / MIB);
    assert!(after < 200 * MIB, "the server holds {} MiB after reading one 3 MiB manifest by 300 tags", after / MIB);
}

/// The `Link` target of a response, if it names a next page.
fn next_link(r: &Response) -> Option<String> {
    let link = r.headers().get("link")?.to_str().unwrap();
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    Some(link.strip_prefix('<')?.split_once('>')?.0.to_owned())
}

/// Follows a referrers listing from `first` to its end: the digests of every page,
/// page by page, and each page's body length.
async fn follow(api: &Api, first: &str) -> Vec<(Vec<String>, usize)> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(url) = next {
        let r = api.send(Method::GET, &url).await;
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        assert_eq!(r.headers()["content-type"], OCI_INDEX);
        if url.contains("artifactType=") {
            assert_eq!(r.headers()["oci-filters-applied"], "artifactType", "{url}");
        }
        next = next_link(&r);
        let body = r.bytes().await.unwrap();
        let index: Value = serde_json::from_slice(&body).unwrap();
        let digests = index["manifests"].as_array().unwrap().iter().map(|d| d["digest"].as_str().unwrap().to_owned());
        pages.push((digests.collect(), body.len()));
        assert!(pages.len() <= 100, "the pages never end");
    }
    pages
}

/// Pushes `count` referrers of `subject` in `repo`, every other one of artifact type
/// `application/x.sig` (else `application/x.sbom`), each with `pad` bytes of annotation;
/// returns `(digest, artifact type)` of each.
async fn push_referrers(api: &Api, repo: &str, count: usize, pad: usize) -> (String, Vec<(String, &'static str)>) {
    let (subject, sbody) = api.push_image(repo, "v1", OCI_MANIFEST, 40).await;
    let config = api.push_blob(repo, b"{}").await;
    let mut pushed = Vec::new();
    for i in 0..count {
        let artifact = if i % 2 == 0 { "application/x.sig" } else { "application/x.sbom" };
        let mut m: Value = serde_json::from_slice(&padded_manifest(
            &config,
            pad,
            json!({ "i": i.to_string() }),
            Some((&subject, sbody.len())),
        ))
        .unwrap();
        m["artifactType"] = json!(artifact);
        let body = serde_json::to_vec(&m).unwrap();
        let r = api.put_manifest(repo, &sha256(&body), OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        pushed.push((sha256(&body), artifact));
    }
    (subject, pushed)
}

#[tokio::test]
async fn referrers_are_paged_with_link_headers_none_lost_or_repeated() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    let (subject, pushed) = push_referrers(&api, "paged", 30, 10).await;

    let pages = follow(&api, &format!("/v2/paged/referrers/{subject}?n=10")).await;
    let sizes: Vec<usize> = pages.iter().map(|(p, _)| p.len()).collect();
    assert_eq!(sizes, [10, 10, 10]);
    let seen: Vec<String> = pages.into_iter().flat_map(|(p, _)| p).collect();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 30, "a referrer was repeated");
    assert_eq!(unique, pushed.iter().map(|(d, _)| d).collect::<HashSet<_>>(), "a referrer was lost");

    // The filter holds across pages: the Link carries it.
    let pages = follow(&api, &format!("/v2/paged/referrers/{subject}?n=4&artifactType=application/x.sig")).await;
    let sizes: Vec<usize> = pages.iter().map(|(p, _)| p.len()).collect();
    assert_eq!(sizes, [4, 4, 4, 3]);
    let seen: HashSet<String> = pages.into_iter().flat_map(|(p, _)| p).collect();
    let signatures: HashSet<String> =
        pushed.iter().filter(|(_, t)| *t == "application/x.sig").map(|(d, _)| d.clone()).collect();
    assert_eq!(seen, signatures);

    // Without `n`, one page holds them all and no Link follows.
    let pages = follow(&api, &format!("/v2/paged/referrers/{subject}")).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].0.len(), 30);
    let r = api.send(Method::GET, &format!("/v2/paged/referrers/{subject}?n=lots")).await;
    crate::api::assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
}

#[tokio::test]
async fn referrers_pages_are_bounded_in_bytes() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    // Ten referrers of 1 MiB each (annotations are part of each descriptor): a response
    // holding them all would be 10 MiB.
    let (subject, pushed) = push_referrers(&api, "heavy", 10, MIB).await;
    let pages = follow(&api, &format!("/v2/heavy/referrers/{subject}")).await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    for (digests, bytes) in &pages {
        assert!(*bytes <= 4 * MIB, "a page of {} referrers is {bytes} bytes", digests.len());
    }
    let seen: Vec<String> = pages.into_iter().flat_map(|(p, _)| p).collect();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen.iter().collect::<HashSet<_>>(), pushed.iter().map(|(d, _)| d).collect::<HashSet<_>>());
}

/// Password hashes take 19 MiB each (argon2id). On the real binary, 24 accounts created
/// and then logging in from 4 connections each at once left the server at 714 MiB
/// resident (the benchmark's logins: 200–330 MB), because every malloc arena kept a freed
/// 19 MiB block; and each connection checked the same password again. Now memory stays
/// bounded (28 MiB measured), and every login works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_of_accounts_and_logins_leaves_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = BerthProcess::spawn(dir.path());
    let admin = Api::new(server.url());
    let names: Vec<String> = (0..24).map(|i| format!("crowd{i}")).collect();
    let created = names.iter().map(|name| {
        let admin = &admin;
        async move {
            let user = json!({ "name": name, "password": format!("{name}-secret-password") });
            let r = admin.req(Method::POST, "/api/v1/users").json(&user).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "creating {name}");
        }
    });
    futures_util::future::join_all(created).await;
    let logins = names.iter().flat_map(|name| (0..4).map(move |_| name)).map(|name| {
        let base = server.url();
        async move {
            // A client (a connection) of its own per login.
            let creds = crate::support::Creds::new(name, &format!("{name}-secret-password"));
            let r = Api::as_user(base, Some(&creds)).send(Method::GET, "/v2/").await;
            assert_eq!(r.status(), StatusCode::OK, "{name} logging in");
        }
    });
    futures_util::future::join_all(logins).await;
    let after = rss_bytes(server.pid());
    eprintln!("resident: {} MiB after 24 accounts and 96 logins", after / MIB);
    assert!(after < 100 * MIB, "the server holds {} MiB after a crowd of logins", after / MIB);
}
