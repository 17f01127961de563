//! The behaviour every [`IdentityStore`] backend must show; each backend's tests call [`run`].

use berth_core::access::{Permission, Role};
use berth_core::{Digest, ErrorKind, RepoName};

use super::{IdentityStore, Robot, RobotGrant, RobotUpdate, SigningKey, UserUpdate};
use crate::{BlobInfo, MetadataStore, PageSpec};

/// Everything a test here lists.
const ALL: PageSpec<'static> = PageSpec { last: None, limit: 1000, max_bytes: usize::MAX };

fn page(last: Option<&str>, limit: u32) -> PageSpec<'_> {
    PageSpec { last, limit, max_bytes: usize::MAX }
}

/// `store` and `meta` are the same database (`meta` makes repositories).
pub async fn run(store: &dyn IdentityStore, meta: &dyn MetadataStore) {
    users(store).await;
    projects_and_members(store).await;
    robots(store).await;
    signing_keys(store).await;
    delete_project(store, meta).await;
}

async fn users(store: &dyn IdentityStore) {
    assert!(!store.any_admin().await.unwrap());
    let alice = store.create_user("alice", "$argon2id$a", false).await.unwrap();
    assert_eq!((alice.name.as_str(), alice.admin, alice.disabled), ("alice", false, false));
    assert!(!store.any_admin().await.unwrap(), "alice is no administrator");
    let err = store.create_user("alice", "$argon2id$other", true).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(store.user("alice").await.unwrap().unwrap().password_hash, "$argon2id$a", "the first one stays");
    store.create_user("bob", "$2y$b", true).await.unwrap();
    assert!(store.any_admin().await.unwrap());
    store.create_user("Bob", "$2y$c", false).await.unwrap();
    assert_eq!(store.user("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user("nobody").await.unwrap(), None);

    // Sorted bytewise ("Bob" before "alice"), paged after a name.
    let names = |users: Vec<super::User>| users.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(names(store.users(page(None, 10)).await.unwrap()), ["Bob", "alice", "bob"]);
    assert_eq!(names(store.users(page(None, 2)).await.unwrap()), ["Bob", "alice"]);
    assert_eq!(names(store.users(page(Some("alice"), 2)).await.unwrap()), ["bob"]);
    let tight = PageSpec { last: None, limit: 10, max_bytes: 1 };
    assert_eq!(names(store.users(tight).await.unwrap()), ["Bob"], "a page holds one user however small");

    // Updates change what they name and move `updated_at` forward, even twice a second.
    let changed = store
        .update_user("alice", &UserUpdate { password_hash: Some("$argon2id$new".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((changed.password_hash.as_str(), changed.admin, changed.disabled), ("$argon2id$new", false, false));
    assert!(changed.updated_at > alice.updated_at);
    let again = store
        .update_user("alice", &UserUpdate { admin: Some(true), disabled: Some(true), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((again.password_hash.as_str(), again.admin, again.disabled), ("$argon2id$new", true, true));
    assert!(again.updated_at > changed.updated_at);
    assert_eq!(again.created_at, alice.created_at);
    assert_eq!(store.user("alice").await.unwrap(), Some(again));
    let err = store.update_user("nobody", &UserUpdate { admin: Some(true), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceUnknown);
    assert_eq!(store.user("nobody").await.unwrap(), None);
}

async fn projects_and_members(store: &dyn IdentityStore) {
    let library = store.project("library").await.unwrap().expect("library exists from the start");
    assert!(library.public);
    let team = store.create_project("team", false).await.unwrap();
    assert_eq!((team.name.as_str(), team.public), ("team", false));
    assert_eq!(store.create_project("team", true).await.unwrap_err().kind, ErrorKind::Conflict);
    store.create_project("tools", true).await.unwrap();
    let names = |p: Vec<super::Project>| p.into_iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(store.projects(page(None, 10)).await.unwrap()), ["library", "team", "tools"]);
    assert_eq!(names(store.projects(page(Some("library"), 1)).await.unwrap()), ["team"]);
    assert!(store.set_project_public("team", true).await.unwrap().public);
    assert!(!store.set_project_public("team", false).await.unwrap().public);
    assert!(!store.project("team").await.unwrap().unwrap().public);
    assert_eq!(store.set_project_public("nope", true).await.unwrap_err().kind, ErrorKind::ResourceUnknown);
    assert_eq!(store.project("nope").await.unwrap(), None);

    // Members: set, changed in place, listed both ways, removed.
    store.set_member("team", "bob", Role::Developer).await.unwrap();
    let m = store.set_member("team", "alice", Role::Guest).await.unwrap();
    assert_eq!((m.project.as_str(), m.user.as_str(), m.role), ("team", "alice", Role::Guest));
    store.set_member("team", "alice", Role::ProjectAdmin).await.unwrap();
    store.set_member("tools", "alice", Role::LimitedGuest).await.unwrap();
    let members = store.members("team", ALL).await.unwrap();
    let pairs: Vec<_> = members.iter().map(|m| (m.user.as_str(), m.role)).collect();
    assert_eq!(pairs, [("alice", Role::ProjectAdmin), ("bob", Role::Developer)]);
    let page = store.members("team", PageSpec { last: Some("alice"), limit: 5, max_bytes: usize::MAX }).await;
    assert_eq!(page.unwrap().iter().map(|m| m.user.as_str()).collect::<Vec<_>>(), ["bob"], "paged by user");
    let page = store.members("team", PageSpec { last: None, limit: 1, max_bytes: usize::MAX }).await;
    assert_eq!(page.unwrap().iter().map(|m| m.user.as_str()).collect::<Vec<_>>(), ["alice"]);
    let memberships = store.memberships("alice").await.unwrap();
    let pairs: Vec<_> = memberships.iter().map(|m| (m.project.as_str(), m.role)).collect();
    assert_eq!(pairs, [("team", Role::ProjectAdmin), ("tools", Role::LimitedGuest)]);
    assert!(store.memberships("Bob").await.unwrap().is_empty());
    let err = store.set_member("nope", "alice", Role::Guest).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceUnknown, "an unknown project");
    let err = store.set_member("team", "nobody", Role::Guest).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceUnknown, "an unknown user");
    assert!(store.remove_member("team", "bob").await.unwrap());
    assert!(!store.remove_member("team", "bob").await.unwrap());
    assert_eq!(store.members("team", ALL).await.unwrap().len(), 1);
}

fn robot(name: &str, grants: &[(&str, &[Permission])]) -> Robot {
    Robot {
        name: name.to_owned(),
        description: format!("{name} for CI"),
        secret_hash: Some("$argon2id$secret".to_owned()),
        disabled: false,
        expires_at: Some(4_000_000_000),
        grants: grants
            .iter()
            .map(|(project, permissions)| RobotGrant {
                project: (*project).to_owned(),
                permissions: permissions.to_vec(),
            })
            .collect(),
        trust: None,
        created_by: "alice".to_owned(),
        created_at: 0,
        updated_at: 0,
    }
}

async fn robots(store: &dyn IdentityStore) {
    use Permission::*;
    // Permissions come back sorted without duplicates, grants sorted by project.
    let ci = store.create_robot(&robot("robot$team+ci", &[("team", &[Push, Pull, Push])])).await.unwrap();
    assert_eq!(ci.grants, [RobotGrant { project: "team".into(), permissions: vec![Pull, Push] }]);
    assert_eq!(
        (ci.description.as_str(), ci.expires_at, ci.created_by.as_str()),
        ("robot$team+ci for CI", Some(4_000_000_000), "alice")
    );
    assert!(ci.created_at > 0 && ci.updated_at == ci.created_at, "the store sets the times");
    let sys = store
        .create_robot(&robot("robot$sync", &[("tools", &[Pull]), ("team", &[Delete, Pull]), ("library", &[])]))
        .await
        .unwrap();
    let projects: Vec<_> = sys.grants.iter().map(|g| g.project.as_str()).collect();
    assert_eq!(projects, ["library", "team", "tools"]);
    assert_eq!(sys.grants[0].permissions, [], "a grant with no permission is kept");
    assert_eq!(sys.grants[1].permissions, [Pull, Delete]);
    let keyless =
        Robot { secret_hash: None, trust: Some(r#"{"issuer":"https://ci"}"#.into()), ..robot("robot$gha", &[]) };
    let keyless = store.create_robot(&keyless).await.unwrap();
    assert_eq!((keyless.secret_hash, keyless.grants.len()), (None, 0));
    assert_eq!(store.robot("robot$sync").await.unwrap(), Some(sys.clone()));
    assert_eq!(store.robot("robot$none").await.unwrap(), None);

    let err = store.create_robot(&robot("robot$team+ci", &[])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    let err = store.create_robot(&robot("robot$lost", &[("team", &[Pull]), ("nope", &[Pull])])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceUnknown, "a grant in an unknown project");
    assert_eq!(store.robot("robot$lost").await.unwrap(), None, "nothing of it stays");
    let err = store.create_robot(&robot("robot$twice", &[("team", &[Pull]), ("team", &[Push])])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest, "one grant per project");

    let names = |r: Vec<Robot>| r.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(names(store.robots(None, ALL).await.unwrap()), ["robot$gha", "robot$sync", "robot$team+ci"]);
    assert_eq!(names(store.robots(Some("team"), ALL).await.unwrap()), ["robot$sync", "robot$team+ci"]);
    assert_eq!(names(store.robots(Some("tools"), ALL).await.unwrap()), ["robot$sync"]);
    assert!(store.robots(Some("nope"), ALL).await.unwrap().is_empty());
    let listed = store.robots(Some("tools"), ALL).await.unwrap();
    assert_eq!(listed[0], sys, "a listed robot carries every grant, not only the project's");
    // Paged by name, in the database: a page of one robot holds all its grants.
    let page = store.robots(None, PageSpec { last: Some("robot$gha"), limit: 1, max_bytes: usize::MAX }).await;
    assert_eq!(page.unwrap(), std::slice::from_ref(&sys));
    let page = store.robots(Some("team"), PageSpec { last: Some("robot$sync"), limit: 5, max_bytes: usize::MAX });
    assert_eq!(names(page.await.unwrap()), ["robot$team+ci"]);

    // Updates: each field set, optional ones set back to None, grants replaced.
    let update = RobotUpdate {
        description: Some("rotated".into()),
        secret_hash: Some(Some("$argon2id$rotated".into())),
        disabled: Some(true),
        expires_at: Some(None),
        grants: Some(vec![RobotGrant { project: "tools".into(), permissions: vec![Push, Pull] }]),
        trust: Some(Some("{}".into())),
    };
    let updated = store.update_robot("robot$sync", &update).await.unwrap();
    let expected = Robot {
        description: "rotated".into(),
        secret_hash: Some("$argon2id$rotated".into()),
        disabled: true,
        expires_at: None,
        grants: vec![RobotGrant { project: "tools".into(), permissions: vec![Pull, Push] }],
        trust: Some("{}".into()),
        updated_at: updated.updated_at,
        ..sys.clone()
    };
    assert_eq!(updated, expected);
    assert!(updated.updated_at > sys.updated_at);
    assert_eq!(names(store.robots(Some("team"), ALL).await.unwrap()), ["robot$team+ci"], "the team grant is gone");
    // Nothing set: nothing changes but the time.
    let same = store.update_robot("robot$sync", &RobotUpdate::default()).await.unwrap();
    assert_eq!(same, Robot { updated_at: same.updated_at, ..updated.clone() });
    let cleared = RobotUpdate {
        secret_hash: Some(None),
        expires_at: Some(Some(5)),
        trust: Some(None),
        grants: Some(vec![]),
        ..Default::default()
    };
    let cleared = store.update_robot("robot$sync", &cleared).await.unwrap();
    assert_eq!((cleared.secret_hash, cleared.expires_at, cleared.trust), (None, Some(5), None));
    assert_eq!((cleared.description.as_str(), cleared.disabled, cleared.grants.len()), ("rotated", true, 0));
    let err = store
        .update_robot(
            "robot$sync",
            &RobotUpdate {
                grants: Some(vec![RobotGrant { project: "nope".into(), permissions: vec![] }]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceUnknown);
    assert_eq!(store.update_robot("robot$none", &update).await.unwrap_err().kind, ErrorKind::ResourceUnknown);

    assert!(store.delete_robot("robot$gha").await.unwrap());
    assert!(!store.delete_robot("robot$gha").await.unwrap());
    assert_eq!(store.robot("robot$gha").await.unwrap(), None);
}

fn key(kid: &str, created_at: i64) -> SigningKey {
    SigningKey {
        kid: kid.to_owned(),
        algorithm: "ES256".to_owned(),
        private_pem: format!("private {kid}"),
        public_pem: format!("public {kid}"),
        created_at,
        retired_at: None,
    }
}

async fn signing_keys(store: &dyn IdentityStore) {
    assert!(store.signing_keys(0).await.unwrap().is_empty());
    store.rotate_signing_key(&key("k1", 100)).await.unwrap();
    assert_eq!(store.signing_keys(0).await.unwrap(), [key("k1", 100)]);
    store.rotate_signing_key(&key("k2", 200)).await.unwrap();
    store.rotate_signing_key(&key("k3", 300)).await.unwrap();
    let retired = |kid, created_at, at| SigningKey { retired_at: Some(at), ..key(kid, created_at) };
    // Newest first; each retired when the next was added; exactly one signs.
    assert_eq!(
        store.signing_keys(0).await.unwrap(),
        [key("k3", 300), retired("k2", 200, 300), retired("k1", 100, 200)]
    );
    assert_eq!(
        store.signing_keys(200).await.unwrap(),
        [key("k3", 300), retired("k2", 200, 300), retired("k1", 100, 200)]
    );
    assert_eq!(store.signing_keys(201).await.unwrap(), [key("k3", 300), retired("k2", 200, 300)]);
    assert_eq!(store.signing_keys(301).await.unwrap(), [key("k3", 300)], "the signing key is always listed");
    let err = store.rotate_signing_key(&key("k2", 400)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(store.signing_keys(301).await.unwrap(), [key("k3", 300)], "a refused rotation retires nothing");
    // Nodes rotating at once (two starting together): one after the other, one signs.
    let (k4, k5) = (key("k4", 400), key("k5", 400));
    let (a, b) = tokio::join!(store.rotate_signing_key(&k4), store.rotate_signing_key(&k5));
    a.unwrap();
    b.unwrap();
    let keys = store.signing_keys(0).await.unwrap();
    assert_eq!(keys.len(), 5);
    assert_eq!(keys.iter().filter(|k| k.retired_at.is_none()).count(), 1, "{keys:?}");
    // Revoking removes a retired key, never the one that signs, and nothing twice.
    let signing = keys.iter().find(|k| k.retired_at.is_none()).unwrap().kid.clone();
    assert!(!store.revoke_signing_key(&signing).await.unwrap(), "the key that signs is not revoked");
    assert!(store.revoke_signing_key("k2").await.unwrap());
    assert!(!store.revoke_signing_key("k2").await.unwrap());
    assert!(!store.revoke_signing_key("unknown").await.unwrap());
    let kids: Vec<String> = store.signing_keys(0).await.unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(kids.len(), 4, "{kids:?}");
    assert!(!kids.contains(&"k2".to_owned()) && kids.contains(&signing), "{kids:?}");
}

async fn delete_project(store: &dyn IdentityStore, meta: &dyn MetadataStore) {
    let link = |repo: &str| {
        let repo = RepoName::parse(repo).unwrap();
        async move {
            let digest = Digest::of(repo.as_str().as_bytes());
            meta.link_blob(&repo, &digest, &BlobInfo { size: 1, key: repo.to_string() }, None).await.unwrap();
        }
    };
    // A repository of the project blocks its deletion; one of a project whose name
    // merely starts the same does not.
    link("team/app").await;
    store.create_project("tea", false).await.unwrap();
    store.create_project("team-b", false).await.unwrap();
    let err = store.delete_project("team").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(store.project("team").await.unwrap().is_some());
    assert_eq!(store.members("team", ALL).await.unwrap().len(), 1, "a refused delete leaves the members");
    store.delete_project("tea").await.unwrap();
    store.delete_project("team-b").await.unwrap();
    assert_eq!(store.project("tea").await.unwrap(), None);
    // One-component names belong to `library`.
    link("solo").await;
    assert_eq!(store.delete_project("library").await.unwrap_err().kind, ErrorKind::Conflict);

    // An empty project goes with its members and its own robots; other robots lose
    // their grant in it.
    use Permission::*;
    store.create_project("empty", false).await.unwrap();
    store.set_member("empty", "bob", Role::Maintainer).await.unwrap();
    store.create_robot(&robot("robot$empty+ci", &[("empty", &[Pull])])).await.unwrap();
    store.create_robot(&robot("robot$wide", &[("empty", &[Pull]), ("tools", &[Pull])])).await.unwrap();
    store.create_robot(&robot("robot$empty", &[("tools", &[Pull])])).await.unwrap();
    store.delete_project("empty").await.unwrap();
    assert_eq!(store.project("empty").await.unwrap(), None);
    assert!(store.members("empty", ALL).await.unwrap().is_empty());
    assert!(store.memberships("bob").await.unwrap().iter().all(|m| m.project != "empty"));
    assert_eq!(store.robot("robot$empty+ci").await.unwrap(), None);
    let wide = store.robot("robot$wide").await.unwrap().unwrap();
    assert_eq!(wide.grants, [RobotGrant { project: "tools".into(), permissions: vec![Pull] }]);
    assert!(store.robot("robot$empty").await.unwrap().is_some(), "a system robot named like the project stays");
    assert_eq!(store.delete_project("empty").await.unwrap_err().kind, ErrorKind::ResourceUnknown);
    // The project's name is free again.
    store.create_project("empty", true).await.unwrap();
    assert!(store.members("empty", ALL).await.unwrap().is_empty());
}
