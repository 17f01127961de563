//! What a caller holds, decided without I/O: a user's memberships or a robot's grants,
//! system administration, and which projects are public. [`SubjectGrants`] answers
//! [`Principal::may`](crate::Principal::may) from them; the authorizer and the token
//! endpoint decide with it, so a token never grants more than its caller holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use berth_core::Error;
use berth_core::access::{MATRIX, Permission, project_of};
use berth_meta::{IdentityStore, Member, PageSpec, Robot, User};

use crate::auth::{Access, AccessChange, Action, Grants, Subject};

/// How long the list of projects (names and visibility) is reused before it is re-read.
pub const PROJECTS_TTL: Duration = Duration::from_secs(5);

/// The permission an action on a repository needs in its project.
pub fn permission_of(action: Action) -> Permission {
    match action {
        Action::Pull => Permission::Pull,
        Action::Push => Permission::Push,
        Action::Delete => Permission::Delete,
    }
}

/// What listing `project`'s repositories needs: the matrix's `list-repositories`, in the
/// catalog (`/v2/_catalog`) and the management API's listing alike (a limited guest pulls
/// but lists nothing; a public project's repositories are listed to its members).
pub fn listing_of(project: &str) -> Access<'_> {
    Access::Project(project, Permission::ListRepositories)
}

/// A set of permissions, one bit per row of the matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermSet(u16);

impl PermSet {
    fn bit(p: Permission) -> u16 {
        1 << MATRIX.iter().position(|(q, _)| *q == p).expect("every permission has a row")
    }

    pub fn with(self, p: Permission) -> PermSet {
        PermSet(self.0 | PermSet::bit(p))
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & PermSet::bit(p) != 0
    }
}

/// Who a caller is and what its records give it, as read from the identity store.
#[derive(Debug)]
pub struct Holdings {
    pub subject: Subject,
    pub admin: bool,
    projects: HashMap<String, PermSet>,
    /// When the account stops logging in (a robot's `expires_at`), Unix seconds: nothing
    /// issued to it may outlive that.
    pub expires_at: Option<i64>,
    /// A keyless robot: it logs in with an external ID token, never with a credential of
    /// Berth's that could outlive that token.
    pub keyless: bool,
}

impl Holdings {
    pub fn anonymous() -> Holdings {
        Holdings {
            subject: Subject::Anonymous,
            admin: false,
            projects: HashMap::new(),
            expires_at: None,
            keyless: false,
        }
    }

    pub fn user(user: &User, memberships: &[Member]) -> Holdings {
        let projects = memberships
            .iter()
            .map(|m| {
                let perms =
                    MATRIX.iter().filter(|(p, _)| m.role.allows(*p)).fold(PermSet::default(), |s, (p, _)| s.with(*p));
                (m.project.clone(), perms)
            })
            .collect();
        Holdings {
            subject: Subject::User(user.name.clone()),
            admin: user.admin,
            projects,
            expires_at: None,
            keyless: false,
        }
    }

    pub fn robot(robot: &Robot) -> Holdings {
        let projects = robot
            .grants
            .iter()
            .map(|g| (g.project.clone(), g.permissions.iter().fold(PermSet::default(), |s, p| s.with(*p))))
            .collect();
        Holdings {
            subject: Subject::Robot(robot.name.clone()),
            admin: false,
            projects,
            expires_at: robot.expires_at,
            keyless: robot.trust.is_some(),
        }
    }

    /// Whether a change to `change` can alter what these holdings allow.
    pub fn affected_by(&self, change: AccessChange<'_>) -> bool {
        let name = match &self.subject {
            Subject::User(name) | Subject::Robot(name) => Some(name.as_str()),
            Subject::Anonymous => None,
        };
        match change {
            AccessChange::Account(account) => name == Some(account),
            AccessChange::Project(project) => self.projects.contains_key(project),
            AccessChange::Anything => true,
        }
    }

    fn holds(&self, project: &str, permission: Permission) -> bool {
        self.admin || self.projects.get(project).is_some_and(|s| s.contains(permission))
    }
}

/// Every project's name and whether it is public, as read at one moment.
#[derive(Debug, Default)]
pub struct Projects {
    public: HashMap<String, bool>,
}

impl Projects {
    pub fn from_list(list: impl IntoIterator<Item = (String, bool)>) -> Projects {
        Projects { public: list.into_iter().collect() }
    }

    pub fn exists(&self, project: &str) -> bool {
        self.public.contains_key(project)
    }

    pub fn is_public(&self, project: &str) -> bool {
        self.public.get(project).copied().unwrap_or(false)
    }
}

/// A caller's holdings with the projects' visibility: what a [`Principal`](crate::Principal)
/// made from store records may do.
#[derive(Debug)]
pub struct SubjectGrants {
    pub holdings: Arc<Holdings>,
    pub projects: Arc<Projects>,
}

impl Grants for SubjectGrants {
    fn may(&self, access: Access<'_>) -> bool {
        let h = &self.holdings;
        let known = h.subject != Subject::Anonymous;
        let in_project = |project: &str, permission: Permission| {
            h.holds(project, permission) || (permission == Permission::Pull && self.projects.is_public(project))
        };
        match access {
            Access::Base | Access::Catalog | Access::Authenticated => known,
            Access::System => h.admin,
            Access::Project(project, permission) => in_project(project, permission),
            Access::Repository(repo, action) => in_project(project_of(repo), permission_of(action)),
        }
    }
}

/// The projects list, re-read from the store at most every [`PROJECTS_TTL`] (names and a
/// flag each: a registry's projects fit in memory many times over).
pub struct ProjectCache {
    store: Arc<dyn IdentityStore>,
    current: RwLock<(Arc<Projects>, Option<Instant>)>,
    reloading: tokio::sync::Mutex<()>,
}

impl ProjectCache {
    pub fn new(store: Arc<dyn IdentityStore>) -> ProjectCache {
        ProjectCache { store, current: RwLock::default(), reloading: tokio::sync::Mutex::new(()) }
    }

    /// The next [`get`](ProjectCache::get) reads the store.
    pub fn forget(&self) {
        self.current.write().unwrap_or_else(|e| e.into_inner()).1 = None;
    }

    fn fresh(&self) -> Option<Arc<Projects>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.1.filter(|at| at.elapsed() < PROJECTS_TTL).map(|_| Arc::clone(&current.0))
    }

    pub async fn get(&self) -> Result<Arc<Projects>, Error> {
        if let Some(projects) = self.fresh() {
            return Ok(projects);
        }
        // One reload at a time; the others wait for it and take its result.
        let _one = self.reloading.lock().await;
        if let Some(projects) = self.fresh() {
            return Ok(projects);
        }
        let mut list = Vec::new();
        loop {
            let last = list.last().map(|(name, _): &(String, bool)| name.clone());
            let spec = PageSpec { last: last.as_deref(), limit: 1000, max_bytes: usize::MAX };
            let page = self.store.projects(spec).await?;
            let done = page.len() < 1000;
            list.extend(page.into_iter().map(|p| (p.name, p.public)));
            if done {
                break;
            }
        }
        let projects = Arc::new(Projects::from_list(list));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::clone(&projects), Some(Instant::now()));
        Ok(projects)
    }
}

#[cfg(test)]
mod tests {
    use berth_core::RepoName;
    use berth_core::access::Role;
    use berth_meta::RobotGrant;

    use super::*;

    fn user(name: &str, admin: bool) -> User {
        User { name: name.into(), password_hash: String::new(), admin, disabled: false, created_at: 0, updated_at: 0 }
    }

    fn grants(holdings: Holdings) -> SubjectGrants {
        let projects = Projects::from_list([("pub".to_owned(), true), ("priv".to_owned(), false)]);
        SubjectGrants { holdings: Arc::new(holdings), projects: Arc::new(projects) }
    }

    #[test]
    fn each_role_gets_exactly_its_matrix_row_and_public_projects_add_pull() {
        for role in Role::ALL {
            let member = Member { project: "priv".into(), user: "u".into(), role };
            let g = grants(Holdings::user(&user("u", false), &[member]));
            for (permission, _) in MATRIX {
                assert_eq!(
                    g.may(Access::Project("priv", permission)),
                    role.allows(permission),
                    "{role:?} {permission:?}"
                );
                let public = permission == Permission::Pull;
                assert_eq!(g.may(Access::Project("pub", permission)), public, "{role:?} {permission:?} on pub");
            }
            assert!(g.may(Access::Base) && g.may(Access::Catalog) && !g.may(Access::System));
        }
    }

    #[test]
    fn anonymous_pulls_public_projects_only_and_admins_do_everything() {
        let anon = grants(Holdings::anonymous());
        let (public, private) = (RepoName::parse("pub/app").unwrap(), RepoName::parse("priv/app").unwrap());
        assert!(anon.may(Access::Repository(&public, Action::Pull)));
        assert!(!anon.may(Access::Repository(&public, Action::Push)));
        assert!(!anon.may(Access::Repository(&private, Action::Pull)));
        assert!(!anon.may(Access::Base) && !anon.may(Access::Catalog) && !anon.may(Access::Authenticated));
        let admin = grants(Holdings::user(&user("root", true), &[]));
        assert!(admin.may(Access::Repository(&private, Action::Delete)) && admin.may(Access::System));
        assert!(admin.may(Access::Project("missing", Permission::ManageRobots)));
    }

    #[test]
    fn a_robot_holds_its_grants_and_nothing_outside_them() {
        let robot = Robot {
            name: "robot$priv+ci".into(),
            description: String::new(),
            secret_hash: None,
            disabled: false,
            expires_at: None,
            grants: vec![RobotGrant { project: "priv".into(), permissions: vec![Permission::Pull, Permission::Push] }],
            trust: None,
            created_by: "admin".into(),
            created_at: 0,
            updated_at: 0,
        };
        let g = grants(Holdings::robot(&robot));
        let (mine, other) = (RepoName::parse("priv/app").unwrap(), RepoName::parse("else/app").unwrap());
        assert!(g.may(Access::Repository(&mine, Action::Push)));
        assert!(!g.may(Access::Repository(&mine, Action::Delete)));
        assert!(!g.may(Access::Repository(&other, Action::Pull)));
        assert!(!g.may(Access::Project("priv", Permission::ManageMembers)));
    }
}
