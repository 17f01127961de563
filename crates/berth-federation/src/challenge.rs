//! Reading a registry's `WWW-Authenticate` challenge: `Bearer realm="…",service="…",scope="…"`
//! (the Docker token flow) or `Basic realm="…"`.

/// What a `401` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Get a token from `realm` for `service` (and the scope the request needs).
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
}

/// The first challenge Berth can answer in a `WWW-Authenticate` value, if any.
pub(crate) fn parse(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = params_of(params);
    let get = |key: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone());
    Some(Challenge::Bearer { realm: get("realm")?, service: get("service") })
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn params_of(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            v.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        out.push((key, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hubs_challenge_is_read() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#;
        assert_eq!(
            parse(hub),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        let quoted = r#"bearer service="a\"b, c", realm=https://x/token"#;
        assert_eq!(
            parse(quoted),
            Some(Challenge::Bearer { realm: "https://x/token".into(), service: Some("a\"b, c".into()) })
        );
        assert_eq!(parse(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(parse("Bearer service=x"), None, "no realm, no token flow");
        assert_eq!(parse("Negotiate abc"), None);
    }
}
