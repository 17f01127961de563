//! A keyless robot's trust document: which external OIDC issuer it believes, for which
//! audiences, and the glob rules an ID token's subject and other claims must match.
//!
//! Parsed and validated once, when a robot is created or changed ([`Trust::parse`], and
//! [`Trust::check_allowed`] against the server's [`IssuerPolicy`]); kept in the identity
//! store as the JSON the caller gave. Not the signature check: that is
//! [`OidcVerifier`](super::OidcVerifier)'s.

use std::collections::BTreeMap;

use berth_core::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::issuers::IssuerPolicy;

/// Largest trust document accepted.
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// Most audiences and claim rules in one document.
const MAX_AUDIENCES: usize = 16;
const MAX_CLAIM_RULES: usize = 32;
/// Claims that have their own field (or are checked by the verifier) and so may not be
/// given as a claim rule.
const RESERVED_CLAIMS: [&str; 7] = ["iss", "aud", "sub", "exp", "nbf", "iat", "jti"];

/// What a keyless robot trusts. Every rule must match for an ID token to log in as it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// The issuer's URL, compared exactly with the token's `iss` and with the `issuer` of
    /// its discovery document. `https://` (or `http://` on a loopback address, which only
    /// an [`IssuerPolicy`] allowing private addresses accepts).
    pub issuer: String,
    /// The token's `aud` (a string or an array) must contain one of these.
    pub audiences: Vec<String>,
    /// A glob the token's `sub` must match, e.g. `repo:acme/app:ref:refs/heads/main`.
    pub subject: String,
    /// Claim name → glob; the claim must be a string matching it.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

impl Trust {
    /// Parses and validates a trust document; the error says what is wrong with it.
    pub fn parse(json: &str) -> Result<Trust, Error> {
        if json.len() > MAX_DOCUMENT_BYTES {
            return Err(invalid(format!("a trust document is at most {MAX_DOCUMENT_BYTES} bytes")));
        }
        let trust: Trust = serde_json::from_str(json).map_err(|e| invalid(format!("a trust document: {e}")))?;
        // The URL's shape here; whether this server may trust and fetch it, in
        // `check_allowed` (the policy can change while the document is kept).
        let shape = IssuerPolicy { allowed: Vec::new(), allow_private: true };
        shape.check_url(&trust.issuer).map_err(|why| invalid(format!("trust `issuer`: {why}")))?;
        if trust.audiences.is_empty() || trust.audiences.len() > MAX_AUDIENCES {
            return Err(invalid(format!("trust `audiences` holds 1 to {MAX_AUDIENCES} audiences")));
        }
        if trust.audiences.iter().any(|a| a.is_empty()) {
            return Err(invalid("trust `audiences` may not hold an empty audience"));
        }
        if !has_literal(&trust.subject) {
            return Err(invalid(
                "trust `subject` must name something: a pattern of only `*` and `?` would trust every \
                 identity of the issuer",
            ));
        }
        if trust.claims.len() > MAX_CLAIM_RULES {
            return Err(invalid(format!("trust `claims` holds at most {MAX_CLAIM_RULES} rules")));
        }
        for (name, pattern) in &trust.claims {
            if name.is_empty() || RESERVED_CLAIMS.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "trust `claims` may not name `{name}` (issuer, audience and subject have their own fields)"
                )));
            }
            if pattern.is_empty() {
                return Err(invalid(format!("trust `claims`: the pattern for `{name}` is empty")));
            }
        }
        Ok(trust)
    }

    /// Checks that `policy` lets this server trust and fetch the issuer (400, saying which
    /// rule the issuer breaks).
    pub fn check_allowed(&self, policy: &IssuerPolicy) -> Result<(), Error> {
        policy.check_issuer(&self.issuer).map(drop).map_err(|why| invalid(format!("trust `issuer`: {why}")))
    }

    /// Checks the subject and claim rules against verified claims; the error names the
    /// rule that failed, never a claim's value.
    pub(super) fn check_rules(&self, claims: &Map<String, Value>) -> Result<(), Error> {
        match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if glob_matches(&self.subject, sub) => {}
            _ => return Err(refused("the ID token's subject does not match the robot's trust")),
        }
        for (name, pattern) in &self.claims {
            match claims.get(name).and_then(Value::as_str) {
                Some(value) if glob_matches(pattern, value) => {}
                Some(_) => return Err(refused(format!("the ID token's claim `{name}` does not match"))),
                None => return Err(refused(format!("the ID token has no string claim `{name}`"))),
            }
        }
        Ok(())
    }
}

pub use berth_core::glob::glob_matches;

fn has_literal(pattern: &str) -> bool {
    pattern.chars().any(|c| c != '*' && c != '?')
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

/// An ID token refused: always 401, with a message that says why.
pub(super) fn refused(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unauthorized).with_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(issuer: &str, subject: &str, claims: &str) -> String {
        format!(r#"{{"issuer":"{issuer}","audiences":["berth"],"subject":"{subject}","claims":{claims}}}"#)
    }

    #[test]
    fn a_valid_trust_document_parses() {
        let trust = Trust::parse(&doc(
            "https://token.actions.githubusercontent.com",
            "repo:acme/app:*",
            r#"{"repository_owner":"acme"}"#,
        ))
        .unwrap();
        assert_eq!(trust.issuer, "https://token.actions.githubusercontent.com");
        assert_eq!(trust.audiences, ["berth"]);
        assert_eq!(trust.claims["repository_owner"], "acme");
        assert!(Trust::parse(&doc("http://127.0.0.1:8080/issuer", "x", "{}")).is_ok());
        assert!(Trust::parse(&doc("http://[::1]:8080", "x", "{}")).is_ok());
    }

    #[test]
    fn an_invalid_trust_document_is_refused_saying_why() {
        let cases = [
            (doc("http://issuer.example", "x", "{}"), "loopback"),
            (doc("http://localhost:8080", "x", "{}"), "loopback"),
            (doc("ftp://issuer.example", "x", "{}"), "scheme"),
            (doc("issuer.example", "x", "{}"), "not a URL"),
            (doc("https://u:p@issuer.example", "x", "{}"), "credentials"),
            (doc("https://issuer.example?x=1", "x", "{}"), "query"),
            (doc("https://issuer.example", "*", "{}"), "subject"),
            (doc("https://issuer.example", "", "{}"), "subject"),
            (doc("https://issuer.example", "x", r#"{"sub":"x"}"#), "may not name `sub`"),
            (doc("https://issuer.example", "x", r#"{"ref":""}"#), "empty"),
            (r#"{"issuer":"https://i.example","audiences":[],"subject":"x"}"#.into(), "audiences"),
            (r#"{"issuer":"https://i.example","audiences":[""],"subject":"x"}"#.into(), "empty audience"),
            (r#"{"issuer":"https://i.example","audiences":["a"],"subject":"x","extra":1}"#.into(), "unknown field"),
            (r#"{"issuer":"https://i.example","subject":"x"}"#.into(), "missing field"),
            (r#"{"issuer":"https://i.example","audiences":"a","subject":"x"}"#.into(), "trust document"),
        ];
        for (json, expected) in cases {
            let error = Trust::parse(&json).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest, "{json}");
            assert!(error.message().contains(expected), "{json}: {:?} lacks {expected:?}", error.message());
        }
    }

    #[test]
    fn claim_rules_need_string_claims_that_match() {
        let trust = Trust::parse(&doc("https://i.example", "repo:acme/*", r#"{"job_workflow_ref":"acme/*"}"#)).unwrap();
        let claims = |value: Value| -> Map<String, Value> {
            let mut map = Map::new();
            map.insert("sub".into(), "repo:acme/app:ref:refs/heads/main".into());
            map.insert("job_workflow_ref".into(), value);
            map
        };
        assert!(trust.check_rules(&claims("acme/ci/.github/workflows/push.yml@refs/heads/main".into())).is_ok());
        let mismatch = trust.check_rules(&claims("evil/ci".into())).unwrap_err();
        assert_eq!(mismatch.message(), "the ID token's claim `job_workflow_ref` does not match");
        let not_a_string = trust.check_rules(&claims(Value::from(7))).unwrap_err();
        assert_eq!(not_a_string.message(), "the ID token has no string claim `job_workflow_ref`");
        let mut no_sub = claims("acme/x".into());
        no_sub.remove("sub");
        assert_eq!(trust.check_rules(&no_sub).unwrap_err().kind, ErrorKind::Unauthorized);
    }
}
