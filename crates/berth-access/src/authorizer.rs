//! The real [`Authorizer`]: bearer tokens, Basic credentials and anonymous callers,
//! decided against the identity store's records through [`SubjectGrants`].
//!
//! - **Bearer**: the token is verified once and cached until it expires
//!   ([`TokenService::verify`]); a registry request it covers costs no store read. A
//!   request it does not cover is answered 403 `DENIED` (an anonymous token: 401 with
//!   the challenge a request without credentials gets),
//!   with a challenge naming the missing scope and `error="insufficient_scope"` (RFC
//!   6750) if the token's subject holds it, so a client asks for a token that carries it
//!   (oras-py does on a 403); without one if no token could.
//!   Management accesses (`Project`, `System`, `Authenticated`) and the catalog read the
//!   subject's records instead, so a disabled account loses them at once.
//! - **Basic**: the user or robot is read and its password or secret verified (on a
//!   blocking thread), then the result is cached for [`LOGIN_CACHE_TTL`] under the
//!   SHA-256 of (a per-process random salt, name, password): the cache never holds a
//!   password. A change to an account, its memberships or a project made through the
//!   management API drops the entries it affects ([`Authorizer::access_changed`]) on the
//!   node that made it at once; every other node clears its cache within
//!   `system::SYNC_INTERVAL` (a stored generation); a change made behind the server's
//!   back (offline commands) waits out the TTL. A password login takes its turn under
//!   the [`Limiter`] before the stripe lock (a wait past a limit holds up no other
//!   login); a keyless robot's ID token is not limited (nothing to guess).
//! - **Anonymous**: pull on public projects, nothing else; a refusal is 401 with the
//!   challenge naming the scope the request needs.
//!
//! A push into a project that does not exist is refused (403 `DENIED`, saying so) unless
//! the pusher is a system administrator and `auto_create_projects` is set; the project is
//! then created, private.
//!
//! A challenge names the scope a request needs and those it can use besides
//! ([`Authorizer::authorize_also`]: a mount's source), space-separated.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use berth_core::access::project_of;
use berth_core::{Error, ErrorKind};
use berth_meta::IdentityStore;

use super::cache::{Bounds, TtlCache, Weigh, digest};
use super::grants::{Holdings, ProjectCache, Projects, SubjectGrants};
use super::keys::KeyRing;
use super::limiter::{Limiter, Limits};
use super::oidc::{OidcConfig, OidcVerifier, Trust};
use super::password;
use super::tokens::{DEFAULT_REFRESH_TTL, DEFAULT_TOKEN_TTL, TokenGrants, TokenService};
use crate::auth::{Access, AccessChange, Action, Authorizer, Credentials, Grants, Principal, Subject};

/// How long verified Basic credentials are reused without a store read.
pub const LOGIN_CACHE_TTL: Duration = Duration::from_secs(30);
/// Verified Basic credentials kept at once.
pub const LOGIN_CACHE_ENTRIES: usize = 10_000;
/// Stripes of the lock logins wait on while their credentials are checked.
const LOGIN_STRIPES: usize = 64;

/// How tokens are issued and challenges written.
#[derive(Clone, Debug)]
pub struct AccessConfig {
    /// `service` of the challenge, `iss` and `aud` of tokens.
    pub service: String,
    /// The URL clients reach Berth at (`https://registry.example.com`); the token realm
    /// is under it. `None`: `http://` (`https://` when [`AccessConfig::https`]) and the
    /// request's `Host`.
    pub external_url: Option<String>,
    /// Berth serves TLS itself.
    pub https: bool,
    pub token_ttl: Duration,
    pub refresh_ttl: Duration,
    /// A system administrator's push into a missing project creates it (private).
    pub auto_create_projects: bool,
    pub limits: Limits,
    /// Keyless robots' ID tokens: which issuers, fetched how.
    pub oidc: OidcConfig,
}

impl Default for AccessConfig {
    fn default() -> AccessConfig {
        AccessConfig {
            service: "berth".into(),
            external_url: None,
            https: false,
            token_ttl: DEFAULT_TOKEN_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
            auto_create_projects: false,
            limits: Limits::default(),
            oidc: OidcConfig::default(),
        }
    }
}

/// What a request presents in `Authorization`.
pub enum Presented {
    Nothing,
    Basic(String, String),
    Bearer(String),
    Unreadable,
}

impl Presented {
    /// Reads an `Authorization` header's value (`None`: none was sent). A value that is
    /// not visible ASCII, a scheme other than Basic and Bearer, Basic that is not
    /// base64 of UTF-8 `name:password`, and a name holding a control character are
    /// [`Presented::Unreadable`].
    pub fn parse(authorization: Option<&[u8]>) -> Presented {
        let Some(value) = authorization else { return Presented::Nothing };
        // What HTTP's header values allow as text (`http::HeaderValue::to_str`).
        if !value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
            return Presented::Unreadable;
        }
        let Ok(value) = std::str::from_utf8(value) else { return Presented::Unreadable };
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            return Presented::Bearer(rest.trim().to_owned());
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Presented::Unreadable;
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok();
        match decoded.and_then(|d| String::from_utf8(d).ok()) {
            Some(pair) => match pair.split_once(':') {
                // A name with a control character names no account, and must reach no
                // store nor the audit log (the edge's `text` layer).
                Some((name, _)) if berth_core::text::has_control(name) => Presented::Unreadable,
                Some((name, password)) => Presented::Basic(name.to_owned(), password.to_owned()),
                None => Presented::Unreadable,
            },
            None => Presented::Unreadable,
        }
    }

    /// What `credentials` present.
    pub fn of(credentials: &Credentials<'_>) -> Presented {
        Presented::parse(credentials.authorization)
    }
}

/// The scope a request needs, as a challenge names it.
fn scope_of(access: Access<'_>) -> Option<String> {
    match access {
        Access::Repository(repo, Action::Pull) => Some(format!("repository:{repo}:pull")),
        Access::Repository(repo, Action::Push) => Some(format!("repository:{repo}:pull,push")),
        Access::Repository(repo, Action::Delete) => Some(format!("repository:{repo}:delete")),
        Access::Catalog => Some("registry:catalog:*".into()),
        Access::Base | Access::Project(..) | Access::Authenticated | Access::System => None,
    }
}

/// A `Host` header fit to go into a challenge: a name or address and a port, nothing else.
fn host(host: Option<&str>) -> &str {
    let host = host.unwrap_or("");
    let fits = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if fits { host } else { "localhost" }
}

/// Logins are bounded in number only: holdings come from the store's records, not from
/// what a client sent.
impl Weigh for Arc<Holdings> {
    fn weight(&self) -> usize {
        0
    }
}

/// Bearer tokens, Basic credentials and anonymous callers against the identity store.
pub struct TokenAuthorizer {
    pub config: AccessConfig,
    pub store: Arc<dyn IdentityStore>,
    pub tokens: TokenService,
    pub limiter: Limiter,
    logins: TtlCache<[u8; 32], Arc<Holdings>>,
    /// Logins not in the cache wait here by their key's stripe, so that a crowd sending
    /// the same credentials (64 connections of one CI job) checks the password once and
    /// the others find the result cached.
    checking: Vec<tokio::sync::Mutex<()>>,
    /// How many times the logins were cleared: a check that began before a clear read
    /// records the change may have altered, and its result is not cached.
    cleared: std::sync::atomic::AtomicU64,
    salt: [u8; 32],
    projects: ProjectCache,
    anonymous: Arc<Holdings>,
    /// Keyless robots' ID tokens.
    oidc: OidcVerifier,
    /// A hash to verify a password against when the account does not exist, so that an
    /// unknown name takes as long to refuse as a wrong password.
    decoy: OnceLock<String>,
}

impl TokenAuthorizer {
    /// Loads (or, on first start, creates) the signing keys.
    pub async fn open(store: Arc<dyn IdentityStore>, config: AccessConfig) -> Result<TokenAuthorizer, Error> {
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !visible(&config.service) || !config.external_url.as_deref().is_none_or(visible) {
            return Err(Error::new(ErrorKind::BadRequest)
                .with_message("the service name and external URL must be printable ASCII without quotes"));
        }
        let keys = KeyRing::open(Arc::clone(&store), config.token_ttl.max(config.refresh_ttl)).await?;
        let tokens = TokenService::new(keys, config.service.clone(), config.token_ttl, config.refresh_ttl);
        Ok(TokenAuthorizer {
            tokens,
            limiter: Limiter::new(config.limits),
            logins: TtlCache::new(Bounds::entries(LOGIN_CACHE_ENTRIES)),
            checking: (0..LOGIN_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            cleared: Default::default(),
            salt: password::random_bytes(),
            projects: ProjectCache::new(Arc::clone(&store)),
            anonymous: Arc::new(Holdings::anonymous()),
            decoy: OnceLock::new(),
            oidc: OidcVerifier::new(config.oidc.clone())?,
            store,
            config,
        })
    }

    pub fn keys(&self) -> &KeyRing {
        &self.tokens.keys
    }

    /// Where clients get tokens: `<external URL>/token`.
    pub fn realm(&self, host_header: Option<&str>) -> String {
        match &self.config.external_url {
            Some(url) => format!("{}/token", url.trim_end_matches('/')),
            None => format!("{}://{}/token", if self.config.https { "https" } else { "http" }, host(host_header)),
        }
    }

    /// `Bearer realm="…",service="…"[,scope="…"][,error="…"]`: the scope of `access` and
    /// of each of `also`, space-separated (as distribution writes several).
    pub fn challenge(
        &self,
        credentials: &Credentials<'_>,
        access: Access<'_>,
        also: &[Access<'_>],
        error: Option<&str>,
    ) -> String {
        let mut challenge =
            format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(credentials.host), self.config.service);
        let scopes: Vec<String> = std::iter::once(access).chain(also.iter().copied()).filter_map(scope_of).collect();
        if !scopes.is_empty() {
            challenge.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        challenge
    }

    fn unauthorized(
        &self,
        credentials: &Credentials<'_>,
        access: Access<'_>,
        also: &[Access<'_>],
        error: Option<&str>,
    ) -> Error {
        Error::new(ErrorKind::Unauthorized).with_challenge(self.challenge(credentials, access, also, error))
    }

    pub async fn projects(&self) -> Result<Arc<Projects>, Error> {
        self.projects.get().await
    }

    /// The holdings of `name` logging in with `password` from `peer`: cached, limited.
    /// A wrong password, an unknown name, a disabled or expired account are all the same
    /// 401 (without challenge; callers add theirs); past a failed-login limit, 429.
    pub async fn login(&self, name: &str, password: &str, peer: Option<IpAddr>) -> Result<Arc<Holdings>, Error> {
        let key = digest(&[&self.salt, name.as_bytes(), password.as_bytes()]);
        if let Some(holdings) = self.logins.get(&key) {
            return Ok(holdings);
        }
        let generation = self.cleared.load(std::sync::atomic::Ordering::SeqCst);
        let robot = if name.starts_with("robot$") { self.store.robot(name).await? } else { None };
        // A keyless robot's password is an ID token its issuer signed: there is nothing
        // to guess, so no failed-login limit applies (a bad one costs a signature check).
        // Every other login takes its turn under the limits before the stripe lock, so
        // that a wait past a limit holds up no other login.
        let turn = match &robot {
            Some(robot) if robot.trust.is_some() => None,
            _ => Some(self.limiter.turn(name, peer).await.map_err(too_many_failures)?),
        };
        // The key is a salted hash: its first byte picks a stripe evenly.
        let _checking = self.checking[usize::from(key[0]) % LOGIN_STRIPES].lock().await;
        if let Some(holdings) = self.logins.get(&key) {
            return Ok(holdings);
        }
        match self.check_password(name, password, robot).await? {
            Some((holdings, expires_at)) => {
                if let Some(turn) = turn {
                    turn.succeeded();
                }
                let holdings = Arc::new(holdings);
                // An ID token's login is not reused past the ID token's own expiry.
                let left = expires_at.map_or(LOGIN_CACHE_TTL, |at| {
                    LOGIN_CACHE_TTL.min(Duration::from_secs(u64::try_from(at - berth_meta::now()).unwrap_or(0)))
                });
                if self.cleared.load(std::sync::atomic::Ordering::SeqCst) == generation {
                    self.logins.insert(key, Arc::clone(&holdings), Instant::now() + left);
                }
                Ok(holdings)
            }
            None => {
                tracing::info!(account = name, peer = ?peer, "login failed");
                match turn.and_then(super::limiter::Turn::failed) {
                    Some(wait) => Err(too_many_failures(wait)),
                    None => Err(Error::new(ErrorKind::Unauthorized).with_message("invalid username or password")),
                }
            }
        }
    }

    /// The holdings `name` logs in to with `password`, and when that login ends if it
    /// ends before the cache would drop it (a keyless robot's ID token expiring). `robot`
    /// is `name`'s record if it names a robot.
    async fn check_password(
        &self,
        name: &str,
        password: &str,
        robot: Option<berth_meta::Robot>,
    ) -> Result<Option<(Holdings, Option<i64>)>, Error> {
        let now = berth_meta::now();
        let hash = if name.starts_with("robot$") {
            match robot {
                Some(robot) if usable_robot(&robot, now) => {
                    // A keyless robot's password is an ID token of the issuer it trusts.
                    if let Some(trust) = &robot.trust {
                        let verified = match Trust::parse(trust) {
                            Ok(trust) => self.oidc.verify(password, &trust).await,
                            Err(e) => Err(e),
                        };
                        return Ok(match verified {
                            Ok(identity) => Some((Holdings::robot(&robot), Some(identity.expires_at))),
                            Err(e) => {
                                tracing::info!(robot = name, why = e.message(), "keyless robot login refused");
                                None
                            }
                        });
                    }
                    robot.secret_hash.clone().map(|hash| (hash, Holdings::robot(&robot)))
                }
                _ => None,
            }
        } else {
            match self.store.user(name).await? {
                Some(user) if !user.disabled => {
                    let memberships = self.store.memberships(name).await?;
                    Some((user.password_hash.clone(), Holdings::user(&user, &memberships)))
                }
                _ => None,
            }
        };
        match hash {
            Some((hash, holdings)) => {
                Ok(password::verify_blocking(password.to_owned(), hash).await.then_some((holdings, None)))
            }
            None => {
                let decoy = match self.decoy.get() {
                    Some(decoy) => decoy.clone(),
                    None => self.decoy.get_or_init(|| password::hash("decoy").unwrap_or_default()).clone(),
                };
                password::verify_blocking(password.to_owned(), decoy).await;
                Ok(None)
            }
        }
    }

    /// The holdings of `subject` as its records say now; `None` if it is unknown,
    /// disabled, expired, or (with `issued_at`) changed after that time.
    pub async fn holdings_of(&self, subject: &Subject, issued_at: Option<i64>) -> Result<Option<Holdings>, Error> {
        let changed = |updated_at: i64| issued_at.is_some_and(|at| updated_at > at);
        Ok(match subject {
            Subject::Anonymous => Some(Holdings::anonymous()),
            Subject::User(name) => match self.store.user(name).await? {
                Some(user) if !user.disabled && !changed(user.updated_at) => {
                    Some(Holdings::user(&user, &self.store.memberships(name).await?))
                }
                _ => None,
            },
            Subject::Robot(name) => match self.store.robot(name).await? {
                Some(robot) if usable_robot(&robot, berth_meta::now()) && !changed(robot.updated_at) => {
                    Some(Holdings::robot(&robot))
                }
                _ => None,
            },
        })
    }

    /// Allows `access` to `holdings` or refuses it (401 with the challenge if anonymous,
    /// 403 otherwise).
    async fn decide(
        &self,
        credentials: &Credentials<'_>,
        access: Access<'_>,
        also: &[Access<'_>],
        holdings: Arc<Holdings>,
    ) -> Result<Principal, Error> {
        let projects = self.projects.get().await?;
        let grants = SubjectGrants { holdings: Arc::clone(&holdings), projects: Arc::clone(&projects) };
        if !grants.may(access) {
            return Err(match holdings.subject {
                Subject::Anonymous => self.unauthorized(credentials, access, also, None),
                _ => Error::new(ErrorKind::Denied),
            });
        }
        if let Access::Repository(repo, Action::Push) = access {
            self.ensure_project(project_of(repo), &projects, &holdings.subject, Some(holdings.admin)).await?;
        }
        Ok(Principal { subject: holdings.subject.clone(), admin: holdings.admin, grants: Arc::new(grants) })
    }

    async fn authorize_token(
        &self,
        credentials: &Credentials<'_>,
        access: Access<'_>,
        also: &[Access<'_>],
        token: &str,
    ) -> Result<Principal, Error> {
        let grants: Arc<TokenGrants> = self.tokens.verify(token).await.map_err(|e| match e.kind {
            ErrorKind::Unauthorized => {
                e.with_challenge(self.challenge(credentials, access, also, Some("invalid_token")))
            }
            _ => e,
        })?;
        let subject = grants.subject.clone();
        let registry_access = matches!(access, Access::Base | Access::Repository(..));
        if registry_access && grants.may(access) {
            if let Access::Repository(repo, Action::Push) = access {
                let projects = self.projects.get().await?;
                self.ensure_project(project_of(repo), &projects, &subject, None).await?;
            }
            return Ok(Principal { subject, admin: false, grants });
        }
        // Not in the token. Anonymous: 401 with the same challenge as without a token (log
        // in; clients read `insufficient_scope` as "denied"). Otherwise, as RFC 6750 says
        // of `insufficient_scope`: 403, with a challenge naming the scope if a new token
        // could carry it (the caller holds it), without one if nothing would help.
        if subject == Subject::Anonymous {
            return Err(self.unauthorized(credentials, access, also, None));
        }
        let insufficient = || {
            Error::new(ErrorKind::Denied).with_challenge(self.challenge(
                credentials,
                access,
                also,
                Some("insufficient_scope"),
            ))
        };
        if access == Access::Catalog && !grants.catalog() {
            return Err(insufficient());
        }
        let Some(holdings) = self.holdings_of(&subject, None).await? else {
            return Err(self.unauthorized(credentials, access, also, Some("invalid_token")));
        };
        if registry_access {
            let projects = self.projects.get().await?;
            let holds = SubjectGrants { holdings: Arc::new(holdings), projects }.may(access);
            return Err(if holds { insufficient() } else { Error::new(ErrorKind::Denied) });
        }
        self.decide(credentials, access, also, Arc::new(holdings)).await
    }

    /// Refuses a push into a project that does not exist, unless a system
    /// administrator's push may create it.
    async fn ensure_project(
        &self,
        project: &str,
        projects: &Projects,
        subject: &Subject,
        admin: Option<bool>,
    ) -> Result<(), Error> {
        if projects.exists(project) || self.store.project(project).await?.is_some() {
            return Ok(());
        }
        let admin = match admin {
            Some(admin) => admin,
            None => self.holdings_of(subject, None).await?.is_some_and(|h| h.admin),
        };
        if admin && self.config.auto_create_projects {
            match self.store.create_project(project, false).await {
                Ok(_) => tracing::info!(project, by = ?subject, "project created by a push"),
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        let hint = if admin { " (create it first, or start berth with --auto-create-projects)" } else { "" };
        Err(Error::new(ErrorKind::Denied).with_message(format!("project {project:?} does not exist{hint}")))
    }
}

fn usable_robot(robot: &berth_meta::Robot, now: i64) -> bool {
    !robot.disabled && robot.expires_at.is_none_or(|at| at > now)
}

/// 429 for a login past a failed-login limit, come back in `wait` seconds.
fn too_many_failures(wait: u64) -> Error {
    Error::new(ErrorKind::TooManyRequests)
        .with_message("too many failed logins; retry later")
        .with_retry_after(u32::try_from(wait).unwrap_or(u32::MAX))
}

#[async_trait]
impl Authorizer for TokenAuthorizer {
    async fn authorize(&self, credentials: Credentials<'_>, access: Access<'_>) -> Result<Principal, Error> {
        self.authorize_also(credentials, access, &[]).await
    }

    async fn authorize_also(
        &self,
        credentials: Credentials<'_>,
        access: Access<'_>,
        also: &[Access<'_>],
    ) -> Result<Principal, Error> {
        let credentials = &credentials;
        match Presented::of(credentials) {
            Presented::Nothing => self.decide(credentials, access, also, Arc::clone(&self.anonymous)).await,
            Presented::Bearer(token) => self.authorize_token(credentials, access, also, &token).await,
            Presented::Basic(name, password) => {
                let holdings = self.login(&name, &password, credentials.peer).await.map_err(|e| match e.kind {
                    ErrorKind::Unauthorized => e.with_challenge(self.challenge(credentials, access, also, None)),
                    _ => e,
                })?;
                self.decide(credentials, access, also, holdings).await
            }
            Presented::Unreadable => Err(self.unauthorized(credentials, access, also, None)),
        }
    }

    fn access_changed(&self, change: AccessChange<'_>) {
        self.cleared.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.logins.retain(|holdings| !holdings.affected_by(change));
        if !matches!(change, AccessChange::Account(_)) {
            self.projects.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(value: &str) -> Presented {
        Presented::parse(Some(value.as_bytes()))
    }

    #[test]
    fn authorization_headers_are_read_strictly() {
        let basic = presented("Basic YWxpY2U6czNjcjp0"); // alice:s3cr:t
        assert!(matches!(basic, Presented::Basic(n, p) if n == "alice" && p == "s3cr:t"));
        assert!(matches!(presented("Bearer abc.def.ghi"), Presented::Bearer(t) if t == "abc.def.ghi"));
        for bad in ["Basic !!!", "Basic YWxpY2U=", "Digest x", "Basic", "Bearer \u{e9}"] {
            assert!(matches!(presented(bad), Presented::Unreadable), "{bad}");
        }
        assert!(matches!(Presented::parse(Some(b"Bearer a\x7fb")), Presented::Unreadable));
        assert!(matches!(Presented::parse(None), Presented::Nothing));
    }

    #[test]
    fn a_host_header_goes_into_a_challenge_only_if_it_is_a_plain_host() {
        assert_eq!(host(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(host(Some("[::1]:80")), "[::1]:80");
        assert_eq!(host(Some("evil\",x=\"y")), "localhost");
        assert_eq!(host(None), "localhost");
    }
}
