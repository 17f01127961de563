//! Manifests, tags, referrers and the catalog over HTTP: every kind round-trips, what
//! names missing content or is malformed is refused, deletes and pagination.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn every_manifest_kind_round_trips_by_tag_and_digest() {
    let (_s, api) = setup();
    for (i, media_type) in [OCI_MANIFEST, DOCKER_MANIFEST].into_iter().enumerate() {
        let repo = format!("kinds/{i}");
        let (d1, b1) = api.push_image(&repo, "amd64", media_type, 10 + i as u64).await;
        let (d2, b2) = api.push_image(&repo, "arm64", media_type, 20 + i as u64).await;
        let index_type = if media_type == OCI_MANIFEST { OCI_INDEX } else { DOCKER_LIST };
        let ib = index(index_type, &[(&d1, b1.len()), (&d2, b2.len())]);
        let r = api.put_manifest(&repo, "multi", index_type, &ib).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "docker-content-digest").unwrap(), sha256(&ib));
        assert_eq!(location(&r), format!("/v2/{repo}/manifests/{}", sha256(&ib)));

        for (reference, body, mt) in [("amd64", &b1, media_type), ("multi", &ib, index_type)] {
            let digest = sha256(body);
            for r in [reference.to_owned(), digest.clone()] {
                let resp = api
                    .req(Method::GET, &format!("/v2/{repo}/manifests/{r}"))
                    .header("accept", mt)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                assert_eq!(header(&resp, "content-type").unwrap(), mt);
                assert_eq!(header(&resp, "docker-content-digest").unwrap(), digest);
                assert_eq!(header(&resp, "etag").unwrap(), format!("\"{digest}\""));
                assert_eq!(resp.bytes().await.unwrap().as_ref(), &body[..], "stored byte for byte");
                let head = api
                    .req(Method::HEAD, &format!("/v2/{repo}/manifests/{r}"))
                    .header("accept", mt)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(head.status(), StatusCode::OK);
                assert_eq!(header(&head, "content-type").unwrap(), mt);
                assert_eq!(header(&head, "content-length").unwrap(), body.len().to_string());
                assert_eq!(header(&head, "docker-content-digest").unwrap(), digest);
                assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
            }
        }
        // A client that cannot read indexes gets the linux/amd64 manifest of a tagged
        // index; one that cannot read what is stored at all gets a 404.
        let only_image = api
            .req(Method::GET, &format!("/v2/{repo}/manifests/multi"))
            .header("accept", media_type)
            .send()
            .await
            .unwrap();
        assert_eq!(only_image.status(), StatusCode::OK);
        assert_eq!(header(&only_image, "docker-content-digest").unwrap(), d1);
        let by_digest = api
            .req(Method::GET, &format!("/v2/{repo}/manifests/{}", sha256(&ib)))
            .header("accept", media_type)
            .send()
            .await
            .unwrap();
        assert_error(by_digest, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let wrong = api
            .req(Method::GET, &format!("/v2/{repo}/manifests/amd64"))
            .header("accept", "application/x-other, text/plain")
            .send()
            .await
            .unwrap();
        assert_error(wrong, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let wild = api
            .req(Method::GET, &format!("/v2/{repo}/manifests/multi"))
            .header("accept", "application/*")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&wild, "content-type").unwrap(), index_type);

        // A conditional GET with the current ETag is answered 304.
        let r = api
            .req(Method::GET, &format!("/v2/{repo}/manifests/multi"))
            .header("if-none-match", format!("\"{}\"", sha256(&ib)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test]
async fn manifests_naming_missing_content_are_rejected() {
    let (_s, api) = setup();
    let config = api.push_blob("strict", b"{}").await;
    let missing = sha256(b"missing layer");
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[(&missing, 13)], None);
    let r = api.put_manifest("strict", "v1", OCI_MANIFEST, &body).await;
    let err = assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(err["errors"][0]["detail"][0], missing);
    assert_eq!(api.send(Method::GET, "/v2/strict/manifests/v1").await.status(), StatusCode::NOT_FOUND);

    // A blob present in another repository is not enough.
    let layer = api.push_blob("elsewhere", b"layer").await;
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[(&layer, 5)], None);
    let r = api.put_manifest("strict", "v1", OCI_MANIFEST, &body).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    // An index naming a child manifest the repository lacks.
    let ib = index(OCI_INDEX, &[(&missing, 100)]);
    let r = api.put_manifest("strict", "idx", OCI_INDEX, &ib).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn malformed_oversize_and_mismatched_manifests_are_rejected() {
    let (_s, api) = setup();
    let r = api.put_manifest("bad", "v1", OCI_MANIFEST, b"{\"schemaVersion\": 2, ").await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = api.put_manifest("bad", "v1", OCI_MANIFEST, b"[1,2,3]").await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = api
        .put_manifest("bad", "v1", "application/vnd.docker.distribution.manifest.v1+json", b"{\"schemaVersion\":1}")
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // Content-Type disagrees with the body's mediaType.
    let config = api.push_blob("bad", b"{}").await;
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[], None);
    let r = api.put_manifest("bad", "v1", DOCKER_MANIFEST, &body).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // Pushed by a digest it does not have.
    let r = api.put_manifest("bad", &sha256(b"other"), OCI_MANIFEST, &body).await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // Over 4 MiB.
    let mut big = body.clone();
    big.truncate(big.len() - 1);
    big.extend_from_slice(b",\"annotations\":{\"pad\":\"");
    big.extend(std::iter::repeat_n(b'x', 4 * 1024 * 1024));
    big.extend_from_slice(b"\"}}");
    let r = api.put_manifest("bad", "big", OCI_MANIFEST, &big).await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
    // An invalid tag.
    let r = api.put_manifest("bad", "-tag", OCI_MANIFEST, &body).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    // Nothing of all that is visible.
    let r = api.send(Method::GET, "/v2/bad/tags/list").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    // The valid one is accepted (OCI 1.1 allows an image manifest without layers).
    assert_eq!(api.put_manifest("bad", "v1", OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, "/v2/bad/manifests/v1").await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
}

#[tokio::test]
async fn manifest_put_by_digest_with_tag_parameters_creates_the_tags() {
    let (_s, api) = setup();
    let config = api.push_blob("multitag", b"{}").await;
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[], None);
    let digest = sha256(&body);
    let r = api
        .req(Method::PUT, &format!("/v2/multitag/manifests/{digest}?tag=1.2.3&tag=1.2&tag=latest"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/multitag/manifests/{digest}"));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), digest);
    let tags: Vec<_> = r.headers().get_all("oci-tag").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(tags, ["1.2.3", "1.2", "latest"]);
    let r = api.send(Method::GET, "/v2/multitag/tags/list").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["1.2", "1.2.3", "latest"]));
    for tag in ["1.2.3", "1.2", "latest"] {
        let r = api.send(Method::GET, &format!("/v2/multitag/manifests/{tag}")).await;
        assert_eq!(header(&r, "docker-content-digest").unwrap(), digest, "{tag}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..], "{tag}");
    }
}

#[tokio::test]
async fn referrers_list_manifests_with_a_subject() {
    let (_s, api) = setup();
    let (subject, sbody) = api.push_image("refs", "v1", OCI_MANIFEST, 30).await;
    let empty = api.push_blob("refs", b"{}").await;
    let sig_blob = api.push_blob("refs", b"signature").await;

    // An artifact manifest with artifactType and annotations, and an index referrer.
    let mut sig: Value = serde_json::from_slice(&image_manifest(
        OCI_MANIFEST,
        (&empty, 2),
        &[(&sig_blob, 9)],
        Some((&subject, sbody.len())),
    ))
    .unwrap();
    sig["config"]["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    sig["artifactType"] = json!("application/vnd.example.signature.v1");
    sig["annotations"] = json!({ "org.example.signer": "ci" });
    let sig = serde_json::to_vec(&sig).unwrap();
    let r = api.put_manifest("refs", &sha256(&sig), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject").unwrap(), subject);

    // A referrer without artifactType: its config media type stands in.
    let sbom = image_manifest(OCI_MANIFEST, (&empty, 2), &[(&sig_blob, 9)], Some((&subject, sbody.len())));
    assert_eq!(api.put_manifest("refs", &sha256(&sbom), OCI_MANIFEST, &sbom).await.status(), StatusCode::CREATED);

    let r = api.send(Method::GET, &format!("/v2/refs/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type").unwrap(), OCI_INDEX);
    assert!(header(&r, "oci-filters-applied").is_none());
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["schemaVersion"], 2);
    assert_eq!(idx["mediaType"], OCI_INDEX);
    let m = idx["manifests"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    let sig_desc = m.iter().find(|d| d["digest"] == sha256(&sig)).unwrap();
    assert_eq!(sig_desc["artifactType"], "application/vnd.example.signature.v1");
    assert_eq!(sig_desc["annotations"]["org.example.signer"], "ci");
    assert_eq!(sig_desc["size"], sig.len());
    assert_eq!(sig_desc["mediaType"], OCI_MANIFEST);
    let sbom_desc = m.iter().find(|d| d["digest"] == sha256(&sbom)).unwrap();
    assert_eq!(sbom_desc["artifactType"], "application/vnd.oci.image.config.v1+json");

    let r = api
        .send(Method::GET, &format!("/v2/refs/referrers/{subject}?artifactType=application/vnd.example.signature.v1"))
        .await;
    assert_eq!(header(&r, "oci-filters-applied").unwrap(), "artifactType");
    let idx: Value = r.json().await.unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 1);

    // Unknown subject, unknown repository: an empty index, never 404.
    for path in [format!("/v2/refs/referrers/{}", sha256(b"x")), format!("/v2/nowhere/referrers/{subject}")] {
        let r = api.send(Method::GET, &path).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap()["manifests"], json!([]));
    }
    assert_error(
        api.send(Method::GET, "/v2/refs/referrers/sha256:zzz").await,
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
    )
    .await;

    // A referrer may be pushed before its subject exists.
    let future = sha256(b"not yet pushed");
    let early = image_manifest(OCI_MANIFEST, (&empty, 2), &[], Some((&future, 10)));
    let r = api.put_manifest("refs", "early", OCI_MANIFEST, &early).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject").unwrap(), future);
}

#[tokio::test]
async fn deleting_tags_and_manifests() {
    let (_s, api) = setup();
    let (digest, a_body) = api.push_image("del", "a", OCI_MANIFEST, 40).await;
    let config = api.push_blob("del", b"{}").await;
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[], None);
    api.put_manifest("del", "b", OCI_MANIFEST, &body).await;
    let r = api
        .put_manifest(
            "del",
            "c",
            OCI_MANIFEST,
            &api.send(Method::GET, "/v2/del/manifests/a").await.bytes().await.unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Deleting a tag leaves the manifest and its other tags.
    assert_eq!(api.send(Method::DELETE, "/v2/del/manifests/a").await.status(), StatusCode::ACCEPTED);
    assert_error(api.send(Method::GET, "/v2/del/manifests/a").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    for reference in [digest.as_str(), "c"] {
        let r = api.send(Method::GET, &format!("/v2/del/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{reference}");
        assert_eq!(header(&r, "docker-content-digest").unwrap(), digest, "{reference}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &a_body[..], "{reference}");
    }
    assert_error(api.send(Method::DELETE, "/v2/del/manifests/a").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        .await;

    // Deleting the manifest takes every tag on it.
    assert_eq!(api.send(Method::DELETE, &format!("/v2/del/manifests/{digest}")).await.status(), StatusCode::ACCEPTED);
    for reference in ["c", digest.as_str()] {
        let r = api.send(Method::GET, &format!("/v2/del/manifests/{reference}")).await;
        assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let r = api.send(Method::GET, "/v2/del/tags/list").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["b"]));
    assert_error(
        api.send(Method::DELETE, &format!("/v2/del/manifests/{digest}")).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn tag_list_is_sorted_and_paginated() {
    let (_s, api) = setup();
    let config = api.push_blob("pages", b"{}").await;
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[], None);
    let digest = sha256(&body);
    let tags = ["b", "a", "C", "a1", "_x", "z", "10", "9"];
    let query: Vec<_> = tags.iter().map(|t| format!("tag={t}")).collect();
    let r = api
        .req(Method::PUT, &format!("/v2/pages/manifests/{digest}?{}", query.join("&")))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let mut sorted: Vec<_> = tags.iter().map(|t| t.to_string()).collect();
    sorted.sort();
    let r = api.send(Method::GET, "/v2/pages/tags/list").await;
    assert!(header(&r, "link").is_none());
    let all: Value = r.json().await.unwrap();
    assert_eq!(all, json!({ "name": "pages", "tags": sorted }));

    // Walk the pages by their Link headers.
    let mut got = Vec::new();
    let mut next = Some("/v2/pages/tags/list?n=3".to_owned());
    while let Some(path) = next {
        let r = api.send(Method::GET, &path).await;
        next = header(&r, "link").map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_owned());
        let page: Value = r.json().await.unwrap();
        let items = page["tags"].as_array().unwrap().clone();
        assert!(items.len() <= 3);
        assert!(next.is_none() || items.len() == 3);
        got.extend(items.into_iter().map(|v| v.as_str().unwrap().to_owned()));
    }
    assert_eq!(got, sorted);

    let r = api.send(Method::GET, "/v2/pages/tags/list?n=2&last=a").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["a1", "b"]));
    let r = api.send(Method::GET, "/v2/pages/tags/list?n=0").await;
    assert!(header(&r, "link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    assert_error(api.send(Method::GET, "/v2/pages/tags/list?n=-1").await, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert_error(api.send(Method::GET, "/v2/unknown/tags/list").await, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn catalog_lists_repositories_with_pagination() {
    let (_s, api) = setup();
    let names = ["zeta", "alpha/one", "alpha/two", "beta"];
    for name in names {
        api.push_blob(name, name.as_bytes()).await;
    }
    let r = api.send(Method::GET, "/v2/_catalog").await;
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["alpha/one", "alpha/two", "beta", "zeta"]));
    let r = api.send(Method::GET, "/v2/_catalog?n=2").await;
    assert_eq!(header(&r, "link").unwrap(), "</v2/_catalog?n=2&last=alpha%2Ftwo>; rel=\"next\"");
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["alpha/one", "alpha/two"]));
    let r = api.send(Method::GET, "/v2/_catalog?n=2&last=alpha%2Ftwo").await;
    assert!(header(&r, "link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!(["beta", "zeta"]));
}
