//! Manifest parsing and validation: Docker schema 2, Docker manifest lists, OCI image
//! manifests, OCI image indexes and OCI artifacts.
//!
//! Parsing extracts what the registry must know (the blobs and child manifests a manifest
//! names, its subject, its artifact type); the bytes themselves are stored untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind};

/// Largest manifest accepted, as the spec recommends registries accept at least 4 MB.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

pub struct MediaType;

impl MediaType {
    pub const OCI_MANIFEST: &'static str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &'static str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &'static str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &'static str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &'static str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &'static str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Every manifest media type Berth stores and serves.
    pub const SUPPORTED: [&'static str; 4] =
        [Self::OCI_MANIFEST, Self::OCI_INDEX, Self::DOCKER_MANIFEST, Self::DOCKER_LIST];

    pub fn is_index(media_type: &str) -> bool {
        media_type == Self::OCI_INDEX || media_type == Self::DOCKER_LIST
    }
}

/// A content descriptor as it appears in manifests and in the referrers response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

/// What the registry learns from a manifest it accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    /// For referrers: `artifactType`, else the config's media type (image manifests only).
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// Config and layers (or blobs): must be readable in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index: must exist in the repository.
    pub manifests: Vec<Digest>,
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    blobs: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ManifestInvalid).with_message(message)
}

/// Strips parameters and whitespace from a `Content-Type` value.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Whether an `Accept` list (media types, parameters already stripped) allows
/// `media_type`. No list at all allows everything.
pub fn accepts(accept: &[&str], media_type: &str) -> bool {
    accept.is_empty()
        || accept.iter().any(|a| {
            *a == media_type
                || *a == "*/*"
                || a.strip_suffix("/*").is_some_and(|t| media_type.split('/').next() == Some(t))
        })
}

/// The child of an index a client that cannot read indexes gets instead (what
/// distribution does for old clients): linux/amd64, else the first entry.
pub fn default_child(index_body: &[u8]) -> Option<(Digest, String)> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let index: Index = serde_json::from_slice(index_body).ok()?;
    let is_default =
        |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| p["os"] == "linux" && p["architecture"] == "amd64");
    let child = index.manifests.iter().find(is_default).or(index.manifests.first())?;
    Some((Digest::parse(&child.digest).ok()?, child.media_type.clone()))
}

/// Parses and validates a manifest pushed with the given `Content-Type`.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, Error> {
    if body.len() > MAX_MANIFEST_SIZE {
        return Err(Error::new(ErrorKind::ManifestTooLarge));
    }
    let raw: RawManifest =
        serde_json::from_slice(body).map_err(|e| invalid(format!("malformed manifest JSON: {e}")))?;
    match raw.schema_version {
        Some(Value::Number(n)) if n.as_u64() == Some(2) => {}
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {
            return Err(invalid("Docker schema 1 manifests are not supported"));
        }
        _ => return Err(invalid("schemaVersion must be 2")),
    }

    let declared = content_type.map(essence).filter(|ct| {
        // Generic or absent types carry no information; fall back to the body.
        !ct.is_empty() && *ct != "application/json" && *ct != "application/octet-stream"
    });
    if let (Some(ct), Some(mt)) = (declared, raw.media_type.as_deref())
        && ct != mt
    {
        return Err(invalid(format!("Content-Type {ct} does not match mediaType {mt}")));
    }
    let media_type = match declared.or(raw.media_type.as_deref()) {
        Some(mt) => mt.to_owned(),
        None if raw.manifests.is_some() => MediaType::OCI_INDEX.to_owned(),
        None if raw.config.is_some() => MediaType::OCI_MANIFEST.to_owned(),
        None => return Err(invalid("cannot determine the manifest media type")),
    };
    if media_type == MediaType::DOCKER_SCHEMA1 || media_type == MediaType::DOCKER_SCHEMA1_SIGNED {
        return Err(invalid("Docker schema 1 manifests are not supported"));
    }
    if !MediaType::SUPPORTED.contains(&media_type.as_str()) {
        return Err(invalid(format!("unsupported manifest media type {media_type}")));
    }

    let subject = raw.subject.as_ref().map(|d| descriptor_digest(d, "subject")).transpose()?;
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let artifact_type = if MediaType::is_index(&media_type) {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(invalid("an index has no config or layers"));
        }
        let children = raw.manifests.ok_or_else(|| invalid("an index needs a manifests array"))?;
        for child in &children {
            manifests.push(descriptor_digest(child, "manifests")?);
        }
        raw.artifact_type
    } else {
        if raw.manifests.is_some() {
            return Err(invalid("an image manifest has no manifests array"));
        }
        let config = raw.config.ok_or_else(|| invalid("an image manifest needs a config"))?;
        blobs.push(descriptor_digest(&config, "config")?);
        let layers = raw.layers.unwrap_or_default();
        for layer in layers.iter().chain(raw.blobs.iter().flatten()) {
            let digest = descriptor_digest(layer, "layers")?;
            // Foreign layers live elsewhere (their `urls`); the registry need not hold them.
            if layer.urls.as_ref().is_none_or(|u| u.is_empty()) {
                blobs.push(digest);
            }
        }
        raw.artifact_type.or(Some(config.media_type))
    };
    blobs.sort();
    blobs.dedup();
    manifests.sort();
    manifests.dedup();
    Ok(ParsedManifest {
        media_type,
        artifact_type: artifact_type.filter(|t| !t.is_empty()),
        subject,
        blobs,
        manifests,
        annotations: raw.annotations,
    })
}

fn descriptor_digest(descriptor: &Descriptor, field: &str) -> Result<Digest, Error> {
    if descriptor.media_type.is_empty() {
        return Err(invalid(format!("{field}: descriptor without mediaType")));
    }
    Digest::parse(&descriptor.digest).map_err(|e| match e.kind {
        // A descriptor naming content by another algorithm is well-formed but can't be held.
        ErrorKind::DigestUnsupported => Error::new(ErrorKind::ManifestBlobUnknown)
            .with_message(format!("{field}: unsupported digest algorithm"))
            .with_detail(descriptor.digest.clone()),
        _ => invalid(format!("{field}: invalid digest {}", descriptor.digest)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image(media_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        )
    }

    #[test]
    fn oci_image_manifest_names_config_and_layers() {
        let m = parse(Some(MediaType::OCI_MANIFEST), image(MediaType::OCI_MANIFEST).as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::OCI_MANIFEST);
        assert_eq!(m.blobs.iter().map(|b| b.to_string()).collect::<Vec<_>>(), vec![d('a'), d('b')]);
        assert_eq!(m.artifact_type.as_deref(), Some("application/vnd.oci.image.config.v1+json"));
        assert!(m.manifests.is_empty());
    }

    #[test]
    fn content_type_must_agree_with_media_type_field() {
        let err = parse(Some(MediaType::DOCKER_MANIFEST), image(MediaType::OCI_MANIFEST).as_bytes()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ManifestInvalid);
    }

    #[test]
    fn index_with_subject_and_artifact_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/x.sig",
            "manifests":[{{"mediaType":"{}","digest":"{}","size":1}}],
            "subject":{{"mediaType":"{}","digest":"{}","size":1}},
            "annotations":{{"k":"v"}}}}"#,
            MediaType::OCI_INDEX,
            MediaType::OCI_MANIFEST,
            d('c'),
            MediaType::OCI_MANIFEST,
            d('e')
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, MediaType::OCI_INDEX);
        assert_eq!(m.manifests[0].to_string(), d('c'));
        assert_eq!(m.subject.unwrap().to_string(), d('e'));
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.annotations.unwrap()["k"], "v");
    }

    #[test]
    fn malformed_and_unsupported_manifests_are_rejected() {
        let kind = |ct: Option<&str>, body: &str| parse(ct, body.as_bytes()).unwrap_err().kind;
        assert_eq!(kind(None, "{not json"), ErrorKind::ManifestInvalid);
        assert_eq!(kind(None, r#"{"schemaVersion":1,"fsLayers":[]}"#), ErrorKind::ManifestInvalid);
        assert_eq!(kind(None, r#"{"schemaVersion":2}"#), ErrorKind::ManifestInvalid);
        assert_eq!(kind(Some("application/x-weird"), &image("application/x-weird")), ErrorKind::ManifestInvalid);
        let bad_digest = image(MediaType::OCI_MANIFEST).replace(&d('b'), "sha256:nope");
        assert_eq!(kind(None, &bad_digest), ErrorKind::ManifestInvalid);
        let big = " ".repeat(MAX_MANIFEST_SIZE + 1);
        assert_eq!(kind(None, &big), ErrorKind::ManifestTooLarge);
    }

    #[test]
    fn accept_lists_and_wildcards() {
        assert!(accepts(&[], MediaType::OCI_INDEX));
        assert!(accepts(&["*/*"], MediaType::OCI_INDEX));
        assert!(accepts(&["application/*"], MediaType::OCI_INDEX));
        assert!(accepts(&[MediaType::DOCKER_MANIFEST, MediaType::OCI_INDEX], MediaType::OCI_INDEX));
        assert!(!accepts(&[MediaType::DOCKER_MANIFEST], MediaType::OCI_INDEX));
        assert!(!accepts(&["text/*"], MediaType::OCI_INDEX));
    }

    #[test]
    fn default_child_prefers_linux_amd64() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
              {{"mediaType":"{m}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d('a'),
            d('b'),
            m = MediaType::DOCKER_MANIFEST
        );
        let (digest, media_type) = default_child(body.as_bytes()).unwrap();
        assert_eq!((digest.to_string(), media_type.as_str()), (d('b'), MediaType::DOCKER_MANIFEST));
    }

    #[test]
    fn foreign_layers_are_not_required_locally() {
        let body = image(MediaType::DOCKER_MANIFEST)
            .replace(r#""size":3}"#, r#""size":3,"urls":["https://example.invalid/layer"]}"#);
        let m = parse(Some(MediaType::DOCKER_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 1);
    }
}
