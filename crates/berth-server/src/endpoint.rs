//! Request routing: a path and method become a typed [`Endpoint`] before anything else
//! happens. Nothing downstream looks at the path string again.
//!
//! Repository names contain slashes, so paths are split from the right: the last
//! segments say what is addressed, everything before them is the name.

use axum::http::Method;
use berth_core::{Digest, Error, ErrorKind, Reference, RepoName};

#[derive(Debug, PartialEq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<reference>` where the reference is neither a tag nor a
    /// digest (why: the kind of error parsing it gave). Nothing can be stored there.
    InvalidReference(RepoName, String, ErrorKind),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`; the id is a UUID, anything else is unknown.
    Upload(RepoName, String),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Endpoint {
    pub fn parse(path: &str) -> Result<Endpoint, Error> {
        let not_found = || Error::new(ErrorKind::NotFound);
        let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
        if rest.is_empty() || rest == "/" {
            return Ok(Endpoint::Base);
        }
        let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
        if rest == "_catalog" {
            return Ok(Endpoint::Catalog);
        }
        let name = |s: &str| RepoName::parse(s);
        if let Some(repo) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name(repo)?));
        }
        if let Some(repo) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
            return Ok(Endpoint::UploadStart(name(repo)?));
        }
        let (head, last) = rest.rsplit_once('/').ok_or_else(not_found)?;
        let (repo, kind) = head.rsplit_once('/').ok_or_else(not_found)?;
        match kind {
            "manifests" => {
                let repo = name(repo)?;
                Ok(match Reference::parse(last) {
                    Ok(reference) => Endpoint::Manifest(repo, reference),
                    Err(e) => Endpoint::InvalidReference(repo, last.to_owned(), e.kind),
                })
            }
            "blobs" => Ok(Endpoint::Blob(name(repo)?, Digest::parse(last)?)),
            "referrers" => Ok(Endpoint::Referrers(name(repo)?, Digest::parse(last)?)),
            "uploads" => {
                let repo = repo.strip_suffix("/blobs").ok_or_else(not_found)?;
                Ok(Endpoint::Upload(name(repo)?, last.to_owned()))
            }
            _ => Err(not_found()),
        }
    }

    /// Whether the endpoint answers `method`; the spec's method table.
    pub fn allows(&self, method: &Method) -> bool {
        let read = *method == Method::GET || *method == Method::HEAD;
        match self {
            Endpoint::Base | Endpoint::Catalog | Endpoint::Tags(_) | Endpoint::Referrers(..) => read,
            Endpoint::Manifest(..) | Endpoint::InvalidReference(..) => {
                read || *method == Method::PUT || *method == Method::DELETE
            }
            Endpoint::Blob(..) => read || *method == Method::DELETE,
            Endpoint::UploadStart(_) => *method == Method::POST,
            Endpoint::Upload(..) => {
                *method == Method::GET
                    || *method == Method::PATCH
                    || *method == Method::PUT
                    || *method == Method::DELETE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> String {
        format!("sha256:{}", "a".repeat(64))
    }

    #[test]
    fn paths_parse_from_the_right() {
        let repo = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(Endpoint::parse("/v2/").unwrap(), Endpoint::Base);
        assert_eq!(Endpoint::parse("/v2").unwrap(), Endpoint::Base);
        assert_eq!(Endpoint::parse("/v2/_catalog").unwrap(), Endpoint::Catalog);
        assert_eq!(Endpoint::parse("/v2/a/b/tags/list").unwrap(), Endpoint::Tags(repo("a/b")));
        assert_eq!(Endpoint::parse("/v2/blobs/blobs/uploads/").unwrap(), Endpoint::UploadStart(repo("blobs")));
        assert_eq!(
            Endpoint::parse("/v2/x/manifests/manifests/latest").unwrap(),
            Endpoint::Manifest(repo("x/manifests"), Reference::parse("latest").unwrap())
        );
        assert_eq!(
            Endpoint::parse(&format!("/v2/a/blobs/{}", digest())).unwrap(),
            Endpoint::Blob(repo("a"), Digest::parse(&digest()).unwrap())
        );
        assert_eq!(Endpoint::parse("/v2/a/blobs/uploads/123").unwrap(), Endpoint::Upload(repo("a"), "123".into()));
        assert_eq!(
            Endpoint::parse(&format!("/v2/a/referrers/{}", digest())).unwrap(),
            Endpoint::Referrers(repo("a"), Digest::parse(&digest()).unwrap())
        );
    }

    #[test]
    fn references_that_are_neither_tag_nor_digest_are_told_apart() {
        let repo = RepoName::parse("a").unwrap();
        for (reference, why) in [
            ("Bad:ref", ErrorKind::DigestInvalid),
            ("sha512:abc", ErrorKind::DigestUnsupported),
            (".INVALID_MANIFEST_NAME", ErrorKind::TagInvalid),
        ] {
            assert_eq!(
                Endpoint::parse(&format!("/v2/a/manifests/{reference}")).unwrap(),
                Endpoint::InvalidReference(repo.clone(), reference.to_owned(), why)
            );
        }
    }

    #[test]
    fn bad_names_and_unknown_paths_are_refused() {
        let kind = |p: &str| Endpoint::parse(p).unwrap_err().kind;
        assert_eq!(kind("/v2/Upper/tags/list"), ErrorKind::NameInvalid);
        assert_eq!(kind("/v2/a/../b/tags/list"), ErrorKind::NameInvalid);
        assert_eq!(kind("/v2//a/tags/list"), ErrorKind::NameInvalid);
        assert_eq!(kind("/v2/A/manifests/.bad"), ErrorKind::NameInvalid, "the name is checked first");
        assert_eq!(kind("/v2/a/unknown/x"), ErrorKind::NotFound);
        assert_eq!(kind("/v3/"), ErrorKind::NotFound);
        assert_eq!(kind("/v2x"), ErrorKind::NotFound);
    }
}
