//! Fuzz target: `manifest::parse` (image manifests and indexes) with the `Content-Type`
//! it was pushed with, plus the index and content-negotiation helpers beside it
//! (`default_child`, `essence`, `accepts`).
//!
//! Input: the first line is the `Content-Type` (no newline at all: none sent), the rest
//! the body. Checks on every manifest that parses: its media type is one Berth serves and
//! the one declared, if one was; an index names no blobs, an image manifest no children
//! and at least its config; the digest lists are sorted and without duplicates; no empty
//! artifact type; the bytes have a digest; pushing the same bytes under the media type
//! found gives the same result; an index's default child is one of its children; a
//! client accepting that media type (or anything) accepts it. Refusals carry a manifest
//! error code. `essence` of any string is trimmed, parameter-free and idempotent.
#![no_main]

use berth_core::manifest::{self, MAX_MANIFEST_SIZE, accepts, default_child, essence};
use berth_core::{Digest, ErrorKind, MediaType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    if let Some(ct) = content_type {
        let e = essence(ct);
        assert!(!e.contains(';') && e.trim() == e && essence(e) == e, "essence({ct:?}) = {e:?}");
        assert!(accepts(&[e], e) && accepts(&[], e) && accepts(&["*/*"], e));
    }

    let m = match manifest::parse(content_type, body) {
        Ok(m) => m,
        Err(e) => {
            let expected = [ErrorKind::ManifestInvalid, ErrorKind::ManifestTooLarge, ErrorKind::ManifestBlobUnknown];
            assert!(expected.contains(&e.kind), "{:?}", e.kind);
            return;
        }
    };
    assert!(body.len() <= MAX_MANIFEST_SIZE);
    assert!(MediaType::SUPPORTED.contains(&m.media_type.as_str()), "{}", m.media_type);
    let declared =
        content_type.map(essence).filter(|ct| !matches!(*ct, "" | "application/json" | "application/octet-stream"));
    if let Some(ct) = declared {
        assert_eq!(ct, m.media_type);
    }
    assert!(m.blobs.windows(2).all(|w| w[0] < w[1]), "blobs not sorted and unique: {:?}", m.blobs);
    assert!(m.manifests.windows(2).all(|w| w[0] < w[1]), "manifests not sorted and unique: {:?}", m.manifests);
    assert_ne!(m.artifact_type.as_deref(), Some(""));
    let digest = Digest::of(body);
    assert_eq!(Digest::parse(digest.as_str()).expect("the body's digest parses"), digest);

    let again = manifest::parse(Some(&m.media_type), body).expect("the same bytes under the type found parse");
    assert_eq!(again, m);
    assert!(accepts(&[&m.media_type], &m.media_type) && accepts(&["application/*"], &m.media_type));

    if MediaType::is_index(&m.media_type) {
        assert!(m.blobs.is_empty(), "an index names blobs: {:?}", m.blobs);
        match default_child(body) {
            Some((child, _)) => assert!(m.manifests.contains(&child), "default child {child} is not a child"),
            None => assert!(m.manifests.is_empty(), "an index with children has no default child"),
        }
    } else {
        assert!(m.manifests.is_empty(), "an image manifest names children: {:?}", m.manifests);
        assert!(!m.blobs.is_empty(), "an image manifest without its config");
    }
});
