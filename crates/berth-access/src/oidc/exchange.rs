//! The OAuth2 token-exchange grant (RFC 8693) as `POST /token` accepts it from keyless
//! robots: an external ID token in, a registry token out.
//!
//! ```text
//! grant_type=urn:ietf:params:oauth:grant-type:token-exchange
//! subject_token=<ID token>
//! subject_token_type=urn:ietf:params:oauth:token-type:id_token   (or …:token-type:jwt)
//! robot=robot$acme+ci            (or client_id=…; one of them, or both the same)
//! service=…&scope=…              (as for the other grants; the token endpoint reads them)
//! ```
//!
//! This parses the grant's own parameters; the token endpoint verifies the ID token
//! against the named robot's trust ([`OidcVerifier`](super::OidcVerifier)) and issues.

use berth_core::{Error, ErrorKind};

/// The `grant_type` of a token exchange.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type`s accepted for an ID token.
const ID_TOKEN_TYPES: [&str; 2] = ["urn:ietf:params:oauth:token-type:id_token", "urn:ietf:params:oauth:token-type:jwt"];
/// The only `requested_token_type` Berth issues.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token-exchange request's own parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenExchange {
    /// The keyless robot to log in as.
    pub robot: String,
    /// The external ID token.
    pub id_token: String,
}

impl std::fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ID token is a credential until it expires: never in a log.
        f.debug_struct("TokenExchange").field("robot", &self.robot).finish_non_exhaustive()
    }
}

impl TokenExchange {
    /// Reads the grant's parameters from a decoded form body; other parameters (`scope`,
    /// `service`, `grant_type`) are the caller's. A parameter given twice is refused.
    pub fn from_form<'a>(form: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<TokenExchange, Error> {
        let (mut token, mut token_type, mut robot, mut client_id, mut requested) = (None, None, None, None, None);
        for (name, value) in form {
            let slot = match name {
                "subject_token" => &mut token,
                "subject_token_type" => &mut token_type,
                "robot" => &mut robot,
                "client_id" => &mut client_id,
                "requested_token_type" => &mut requested,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(bad(format!("the parameter `{name}` is given twice")));
            }
        }
        let id_token = token.filter(|t| !t.is_empty()).ok_or_else(|| bad("a token exchange needs `subject_token`"))?;
        match token_type {
            Some(t) if ID_TOKEN_TYPES.contains(&t) => {}
            _ => return Err(bad(format!("`subject_token_type` must be {}", ID_TOKEN_TYPES.join(" or ")))),
        }
        if requested.is_some_and(|r| r != ACCESS_TOKEN_TYPE) {
            return Err(bad(format!("`requested_token_type` can only be {ACCESS_TOKEN_TYPE}")));
        }
        let robot = match (robot, client_id) {
            (Some(r), Some(c)) if r != c => return Err(bad("`robot` and `client_id` name different robots")),
            (Some(name), _) | (None, Some(name)) if !name.is_empty() => name,
            _ => return Err(bad("a token exchange names its robot in `robot` (or `client_id`)")),
        };
        Ok(TokenExchange { robot: robot.to_owned(), id_token: id_token.to_owned() })
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

    fn parse(form: &[(&'static str, &'static str)]) -> Result<TokenExchange, Error> {
        TokenExchange::from_form(form.iter().copied())
    }

    #[test]
    fn a_token_exchange_names_its_robot_by_robot_or_client_id() {
        let base = [("grant_type", TOKEN_EXCHANGE_GRANT), ("subject_token", "a.b.c"), ("scope", "x")];
        for extra in [
            vec![("subject_token_type", ID_TOKEN_TYPE), ("robot", "robot$acme+ci")],
            vec![("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"), ("client_id", "robot$acme+ci")],
            vec![("subject_token_type", ID_TOKEN_TYPE), ("robot", "robot$acme+ci"), ("client_id", "robot$acme+ci")],
            vec![
                ("subject_token_type", ID_TOKEN_TYPE),
                ("robot", "robot$acme+ci"),
                ("requested_token_type", ACCESS_TOKEN_TYPE),
            ],
        ] {
            let form: Vec<_> = base.iter().copied().chain(extra).collect();
            let exchange = parse(&form).unwrap();
            assert_eq!(exchange, TokenExchange { robot: "robot$acme+ci".into(), id_token: "a.b.c".into() });
        }
    }

    #[test]
    fn a_malformed_token_exchange_is_refused_saying_why() {
        let ok = [("subject_token", "a.b.c"), ("subject_token_type", ID_TOKEN_TYPE), ("robot", "robot$r")];
        let without = |name: &str| ok.iter().copied().filter(|(n, _)| *n != name).collect::<Vec<_>>();
        let with = |pair: (&'static str, &'static str)| ok.iter().copied().chain([pair]).collect::<Vec<_>>();
        let cases = [
            (without("subject_token"), "needs `subject_token`"),
            (without("subject_token_type"), "`subject_token_type` must be"),
            (without("robot"), "names its robot"),
            (with(("client_id", "robot$other")), "different robots"),
            (with(("robot", "robot$r")), "`robot` is given twice"),
            (with(("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")), "requested_token_type"),
            (
                vec![("subject_token", "t"), ("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")],
                "`subject_token_type` must be",
            ),
        ];
        for (form, expected) in cases {
            let error = parse(&form).unwrap_err();
            assert_eq!(error.kind, ErrorKind::BadRequest);
            assert!(error.message().contains(expected), "{form:?}: {:?} lacks {expected:?}", error.message());
        }
    }

    #[test]
    fn a_token_exchange_never_prints_its_id_token() {
        let form = [("subject_token", "secret.id.token"), ("subject_token_type", ID_TOKEN_TYPE), ("robot", "robot$r")];
        let printed = format!("{:?}", parse(&form).unwrap());
        assert!(printed.contains("robot$r") && !printed.contains("secret.id.token"), "{printed}");
    }
}
