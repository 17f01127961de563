//! Client text checked at the edge: no control character (U+0000–U+001F, U+007F) in a
//! request's path, its query, a form or a JSON body reaches a store, a log or the audit
//! log.
//!
//! PostgreSQL's `TEXT` refuses U+0000 outright, so a NUL that got through would fail
//! whatever write carried it, and the audit writer's batch with it (issue 17); other
//! control characters forge lines in logs and terminals. Names are checked by their own
//! grammars too (`RepoName`, `check_name`); this is the one check in front of every
//! string that has no grammar of its own (a `last` cursor, a description, a Basic user
//! name, an `account`). Free text in a JSON body may hold tab, line feed and carriage
//! return; nothing else may hold any control character.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_core::text::{has_control, has_control_in_text};
use berth_core::{Error, ErrorKind};

use crate::response::ApiError;

/// The error for a control character in `what`: a 400 of the surface's own kind (the
/// registry API's codes for `/v2`, `BAD_REQUEST` elsewhere).
fn refused(v2: bool, path: bool, what: &str) -> Error {
    let kind = match (v2, path) {
        (true, true) => ErrorKind::NameInvalid,
        (true, false) => ErrorKind::PaginationInvalid,
        (false, _) => ErrorKind::BadRequest,
    };
    Error::new(kind).with_message(format!("{what} holds a control character"))
}

/// Refuses, before anything else happens, a request whose percent-decoded path or query
/// (names and values) holds a control character.
pub async fn refuse_control_characters(request: Request, next: Next) -> Response {
    match check_uri(request.uri()) {
        Ok(()) => next.run(request).await,
        Err(e) => ApiError(e).into_response(),
    }
}

fn check_uri(uri: &axum::http::Uri) -> Result<(), Error> {
    let path = uri.path();
    // A URI holds no raw control character (`http::Uri` refuses them), so only a
    // percent-escape can decode to one: a request without any costs one scan.
    if !path.contains('%') && !uri.query().is_some_and(|q| q.contains('%')) {
        return Ok(());
    }
    let v2 = path == "/v2" || path.starts_with("/v2/");
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    if has_control(&decoded) {
        return Err(refused(v2, true, "the request path"));
    }
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        if has_control(&key) || has_control(&value) {
            let name = if has_control(&key) {
                "a query parameter's name".to_owned()
            } else {
                format!("query parameter {key}")
            };
            return Err(refused(v2, false, &name));
        }
    }
    Ok(())
}

/// Checks a decoded form (`POST /token`): no control character in any name or value but
/// a `password`'s (a secret is only ever hashed, never stored or logged).
pub fn check_pairs(pairs: &[(String, String)]) -> Result<(), Error> {
    match pairs.iter().find(|(k, v)| has_control(k) || (k != "password" && has_control(v))) {
        Some((k, _)) if has_control(k) => Err(refused(false, false, "a form field's name")),
        Some((k, _)) => Err(refused(false, false, &format!("form field {k}"))),
        None => Ok(()),
    }
}

/// Checks every string of a JSON document (object keys too): no control character but
/// tab, line feed and carriage return. `field` names the first offending one.
pub fn check_json(value: &serde_json::Value) -> Result<(), Error> {
    fn walk<'a>(value: &'a serde_json::Value, field: &mut Vec<&'a str>) -> bool {
        match value {
            serde_json::Value::String(s) => has_control_in_text(s),
            serde_json::Value::Array(items) => items.iter().any(|v| walk(v, field)),
            serde_json::Value::Object(map) => map.iter().any(|(k, v)| {
                field.push(k);
                let bad = has_control_in_text(k) || walk(v, field);
                if !bad {
                    field.pop();
                }
                bad
            }),
            _ => false,
        }
    }
    let mut field = Vec::new();
    if walk(value, &mut field) {
        let what = if field.is_empty() { "the request body".to_owned() } else { format!("field {}", field.join(".")) };
        return Err(refused(false, false, &what));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> axum::http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn a_control_character_anywhere_in_the_path_or_query_is_refused_with_the_surfaces_code() {
        for (u, kind) in [
            ("/api/v1/projects/a%00b/members", ErrorKind::BadRequest),
            ("/api/v1/audit?actor=x%00", ErrorKind::BadRequest),
            ("/api/v1/audit?a%0Ab=1", ErrorKind::BadRequest),
            ("/token?account=%00admin", ErrorKind::BadRequest),
            ("/v2/library/a%00/tags/list", ErrorKind::NameInvalid),
            ("/v2/_catalog?last=a%00", ErrorKind::PaginationInvalid),
            ("/v2/x/referrers/sha256:00?artifactType=a%1Bb", ErrorKind::PaginationInvalid),
            ("/v2/_catalog?last=a%7F", ErrorKind::PaginationInvalid),
            ("/v2/_catalog?n=1&last=%0d", ErrorKind::PaginationInvalid),
        ] {
            assert_eq!(check_uri(&uri(u)).unwrap_err().kind, kind, "{u}");
        }
        // What the fast path relies on: no raw control character gets into a URI.
        for raw in ["/a\u{0}b", "/a?x=\u{1}", "/a\u{7f}"] {
            assert!(raw.parse::<axum::http::Uri>().is_err(), "{raw:?}");
        }
        for good in ["/api/v1/projects/team/members?n=10&last=bob", "/v2/_catalog?last=a%2Fb", "/v2/", "/token"] {
            assert!(check_uri(&uri(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn json_strings_may_hold_tabs_and_newlines_but_no_other_control_character() {
        let ok = serde_json::json!({"description": "line one\nline two\ttabbed\r", "n": [1, "x"]});
        assert!(check_json(&ok).is_ok());
        let bad = serde_json::json!({"grants": [{"project": "a\u{0}b"}]});
        let e = check_json(&bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(e.message().contains("field grants"), "{}", e.message());
        assert!(check_json(&serde_json::json!({"a\u{0}": 1})).is_err());
        assert!(check_json(&serde_json::json!(["\u{1b}[31m"])).is_err());
    }

    #[test]
    fn forms_are_checked_name_and_value() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert!(check_pairs(&[pair("username", "ann"), pair("password", "p\u{0}w")]).is_ok());
        assert!(check_pairs(&[pair("username", "\u{0}ann")]).is_err());
        assert!(check_pairs(&[pair("user\u{0}", "ann")]).is_err());
    }
}
