//! The registry's error table: every condition a client can meet, with the spec's error
//! code and the HTTP status it is answered with. Call sites name a condition; they never
//! choose a status.

use std::fmt;

/// A condition, mapped exhaustively to a wire code and an HTTP status by [`ErrorKind::wire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    /// A chunk that does not start where the upload ends.
    UploadRangeInvalid,
    /// A `Range` on a blob GET that the blob cannot satisfy.
    BlobRangeInvalid,
    DigestInvalid,
    DigestUnsupported,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestTooLarge,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    TagInvalid,
    SizeInvalid,
    Unauthorized,
    Denied,
    /// The endpoint exists but not with this method.
    MethodNotAllowed,
    /// A push, delete or management write while the registry is read-only.
    ReadOnly,
    /// No such endpoint.
    NotFound,
    TooManyRequests,
    /// A malformed `n` or `last` on a listing.
    PaginationInvalid,
    /// Storage is full; the client may retry later.
    StorageFull,
    /// The thing to create exists already, or is in a state that forbids the change (a
    /// project that still has repositories).
    Conflict,
    /// A management API request that is malformed (bad JSON, an invalid field).
    BadRequest,
    /// A management API object (user, project, member, robot) that does not exist.
    ResourceUnknown,
    /// A store the node needs does not answer (`/readyz`); the client may retry later.
    Unavailable,
    /// Anything else. The message never reaches the client.
    Internal,
}

impl ErrorKind {
    /// `(code, HTTP status, default message)`.
    pub const fn wire(self) -> (&'static str, u16, &'static str) {
        use ErrorKind::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", 404, "blob unknown to registry"),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid"),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"),
            UploadRangeInvalid => ("BLOB_UPLOAD_INVALID", 416, "chunk does not start at the end of the upload"),
            BlobRangeInvalid => ("BLOB_UNKNOWN", 416, "requested range not satisfiable"),
            DigestInvalid => ("DIGEST_INVALID", 400, "provided digest did not match uploaded content"),
            DigestUnsupported => ("DIGEST_INVALID", 400, "unsupported digest algorithm"),
            ManifestBlobUnknown => {
                ("MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry")
            }
            ManifestInvalid => ("MANIFEST_INVALID", 400, "manifest invalid"),
            ManifestTooLarge => ("SIZE_INVALID", 413, "manifest exceeds the size limit"),
            ManifestUnknown => ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry"),
            NameInvalid => ("NAME_INVALID", 400, "invalid repository name"),
            NameUnknown => ("NAME_UNKNOWN", 404, "repository name not known to registry"),
            TagInvalid => ("MANIFEST_INVALID", 400, "invalid tag"),
            SizeInvalid => ("SIZE_INVALID", 400, "provided length did not match content length"),
            Unauthorized => ("UNAUTHORIZED", 401, "authentication required"),
            Denied => ("DENIED", 403, "requested access to the resource is denied"),
            MethodNotAllowed => ("UNSUPPORTED", 405, "the operation is unsupported"),
            ReadOnly => ("UNSUPPORTED", 405, "the registry is read-only: pushes and deletes are refused"),
            NotFound => ("UNSUPPORTED", 404, "no such endpoint"),
            TooManyRequests => ("TOOMANYREQUESTS", 429, "too many requests"),
            PaginationInvalid => ("UNSUPPORTED", 400, "invalid pagination parameter"),
            StorageFull => ("UNKNOWN", 507, "insufficient storage"),
            Conflict => ("CONFLICT", 409, "conflict"),
            BadRequest => ("BAD_REQUEST", 400, "bad request"),
            ResourceUnknown => ("NOT_FOUND", 404, "no such resource"),
            Unavailable => ("UNKNOWN", 503, "service unavailable"),
            Internal => ("UNKNOWN", 500, "internal error"),
        }
    }
}

/// A registry error: a condition plus what the client may be told about it.
#[derive(Clone, Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// Replaces the default message; never set for [`ErrorKind::Internal`].
    pub message: Option<String>,
    /// Unstructured detail for the client (the offending digest, name, …).
    pub detail: Option<serde_json::Value>,
    /// For logs only: the cause of an internal error.
    pub source: Option<String>,
    /// What a 401 tells the client to authenticate with (rendered as `WWW-Authenticate`):
    /// `Bearer realm="…",service="…",scope="…"`.
    pub challenge: Option<Box<str>>,
    /// Seconds a client should wait before retrying a 429 (rendered as `Retry-After`);
    /// `None` for the default.
    pub retry_after: Option<u32>,
}

impl Error {
    pub fn new(kind: ErrorKind) -> Error {
        Error { kind, message: None, detail: None, source: None, challenge: None, retry_after: None }
    }

    /// An internal error; `cause` is logged and never sent to the client.
    pub fn internal(cause: impl fmt::Display) -> Error {
        Error { source: Some(cause.to_string()), ..Error::new(ErrorKind::Internal) }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Error {
        self.message = Some(message.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<serde_json::Value>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Error {
        self.challenge = Some(challenge.into().into_boxed_str());
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Error {
        self.retry_after = Some(seconds);
        self
    }

    pub fn message(&self) -> &str {
        self.message.as_deref().unwrap_or(self.kind.wire().2)
    }

    pub fn status(&self) -> u16 {
        self.kind.wire().1
    }

    pub fn code(&self) -> &'static str {
        self.kind.wire().0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_code_is_a_spec_code() {
        // The spec allows only these codes in 4xx bodies.
        const SPEC: [&str; 14] = [
            "BLOB_UNKNOWN",
            "BLOB_UPLOAD_INVALID",
            "BLOB_UPLOAD_UNKNOWN",
            "DIGEST_INVALID",
            "MANIFEST_BLOB_UNKNOWN",
            "MANIFEST_INVALID",
            "MANIFEST_UNKNOWN",
            "NAME_INVALID",
            "NAME_UNKNOWN",
            "SIZE_INVALID",
            "UNAUTHORIZED",
            "DENIED",
            "UNSUPPORTED",
            "TOOMANYREQUESTS",
        ];
        use ErrorKind::*;
        for kind in [
            BlobUnknown,
            BlobUploadInvalid,
            BlobUploadUnknown,
            UploadRangeInvalid,
            BlobRangeInvalid,
            DigestInvalid,
            DigestUnsupported,
            ManifestBlobUnknown,
            ManifestInvalid,
            ManifestTooLarge,
            ManifestUnknown,
            NameInvalid,
            NameUnknown,
            TagInvalid,
            SizeInvalid,
            Unauthorized,
            Denied,
            MethodNotAllowed,
            ReadOnly,
            NotFound,
            TooManyRequests,
            PaginationInvalid,
        ] {
            let (code, status, _) = kind.wire();
            assert!((400..500).contains(&status), "{kind:?}");
            assert!(SPEC.contains(&code), "{kind:?} has non-spec code {code}");
        }
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_message() {
        let e = Error::internal("disk on fire at /var/lib/x");
        assert_eq!(e.message(), "internal error");
        assert_eq!(e.status(), 500);
    }
}
