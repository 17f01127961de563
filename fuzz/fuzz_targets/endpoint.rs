//! Fuzz target: `Endpoint::parse` (request paths) and `Endpoint::allows` (the method table).
//!
//! Two inputs in one: the whole input as a path, and, split at its first newline, a
//! repository name and a reference from which every endpoint's canonical path is built.
//! Checks: whatever parses is under `/v2`, re-parses from its canonical path to the same
//! endpoint, and answers GET and HEAD alike (but for an upload's status, GET
//! only, as the spec lists it), never OPTIONS, and POST only to start an upload;
//! refusals carry a routing, name, tag or digest error code; a manifest reference kept as
//! invalid (answered 404 to reads) really is neither tag nor digest; and a path built from
//! a valid name and reference parses back to exactly that name and reference.
#![no_main]

use axum::http::Method;
use berth_core::{ErrorKind, Reference, RepoName};
use berth_fuzz::endpoint::Endpoint;
use libfuzzer_sys::fuzz_target;

/// The path a client would send for `endpoint`.
fn path(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Base => "/v2/".to_owned(),
        Endpoint::Catalog => "/v2/_catalog".to_owned(),
        Endpoint::Tags(name) => format!("/v2/{name}/tags/list"),
        Endpoint::Manifest(name, reference) => format!("/v2/{name}/manifests/{reference}"),
        Endpoint::InvalidReference(name, reference, _) => format!("/v2/{name}/manifests/{reference}"),
        Endpoint::Blob(name, digest) => format!("/v2/{name}/blobs/{digest}"),
        Endpoint::UploadStart(name) => format!("/v2/{name}/blobs/uploads/"),
        Endpoint::Upload(name, id) => format!("/v2/{name}/blobs/uploads/{id}"),
        Endpoint::Referrers(name, digest) => format!("/v2/{name}/referrers/{digest}"),
    }
}

fn check(endpoint: &Endpoint) {
    let canonical = path(endpoint);
    match Endpoint::parse(&canonical) {
        Ok(again) => assert_eq!(&again, endpoint, "{canonical:?}"),
        Err(e) => panic!("{endpoint:?}: its path {canonical:?} does not parse: {:?}", e.kind),
    }
    // The spec lists an upload's status as GET only; everything else readable has HEAD too.
    if !matches!(endpoint, Endpoint::Upload(..)) {
        assert_eq!(endpoint.allows(&Method::GET), endpoint.allows(&Method::HEAD), "{endpoint:?}");
    }
    assert!(!endpoint.allows(&Method::OPTIONS), "{endpoint:?}");
    assert_eq!(endpoint.allows(&Method::POST), matches!(endpoint, Endpoint::UploadStart(_)), "{endpoint:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match Endpoint::parse(s) {
        Ok(endpoint) => {
            assert!(s.starts_with("/v2"), "{s:?} parsed as {endpoint:?}");
            if let Endpoint::Upload(_, id) = &endpoint {
                assert!(!id.is_empty() && !id.contains('/'), "upload id {id:?} from {s:?}");
            }
            // A reference kept as invalid is one that really is neither tag nor digest,
            // refused for the reason recorded, and one path segment.
            if let Endpoint::InvalidReference(_, reference, why) = &endpoint {
                let parsed = Reference::parse(reference);
                assert!(parsed.as_ref().is_err_and(|e| e.kind == *why), "{s:?}: {reference:?}");
                assert!(!reference.contains('/'), "{s:?}");
            }
            check(&endpoint);
        }
        Err(e) => {
            let expected = [
                ErrorKind::NotFound,
                ErrorKind::NameInvalid,
                ErrorKind::TagInvalid,
                ErrorKind::DigestInvalid,
                ErrorKind::DigestUnsupported,
            ];
            assert!(expected.contains(&e.kind), "{s:?}: {:?}", e.kind);
        }
    }

    let Some((name, reference)) = s.split_once('\n') else { return };
    let (Ok(name), Ok(reference)) = (RepoName::parse(name), Reference::parse(reference)) else { return };
    let mut endpoints = vec![
        Endpoint::Tags(name.clone()),
        Endpoint::UploadStart(name.clone()),
        Endpoint::Upload(name.clone(), reference.to_string()),
        Endpoint::Manifest(name.clone(), reference.clone()),
    ];
    if let Reference::Digest(digest) = reference {
        endpoints.push(Endpoint::Blob(name.clone(), digest.clone()));
        endpoints.push(Endpoint::Referrers(name, digest));
    }
    endpoints.iter().for_each(check);
});
