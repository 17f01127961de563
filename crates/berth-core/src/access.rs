//! Who may do what: projects, roles and the permission matrix, as data.
//!
//! The matrix is one table, [`MATRIX`]: a row per [`Permission`], a column per
//! [`Role`] (Harbor's project roles). Everything that decides access evaluates it
//! through [`Role::allows`]; the table in `docs/access.md` is generated from it
//! ([`markdown_table`], and a test checks the file), and so is the permission-matrix test.
//! No I/O: which role a caller holds in a project is the identity store's business.

use crate::name::RepoName;

/// The project every one-component repository name (`alpine`) belongs to.
pub const DEFAULT_PROJECT: &str = "library";

/// The project a repository belongs to: its first path component (`team/app` → `team`);
/// a one-component name belongs to [`DEFAULT_PROJECT`].
pub fn project_of(repo: &RepoName) -> &str {
    match repo.as_str().split_once('/') {
        Some((project, _)) => project,
        None => DEFAULT_PROJECT,
    }
}

/// A member's role in a project (Harbor's five).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    ProjectAdmin,
    Maintainer,
    Developer,
    Guest,
    LimitedGuest,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::ProjectAdmin, Role::Maintainer, Role::Developer, Role::Guest, Role::LimitedGuest];

    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProjectAdmin => "project-admin",
            Role::Maintainer => "maintainer",
            Role::Developer => "developer",
            Role::Guest => "guest",
            Role::LimitedGuest => "limited-guest",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn column(self) -> usize {
        Role::ALL.iter().position(|r| *r == self).expect("every role has a column")
    }

    /// Whether this role grants `permission` in its project.
    pub fn allows(self, permission: Permission) -> bool {
        MATRIX.iter().find(|(p, _)| *p == permission).is_some_and(|(_, columns)| columns[self.column()])
    }
}

/// Something a caller may do within one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Pull,
    Push,
    /// Delete a tag, a manifest or a blob link.
    Delete,
    DeleteRepository,
    ListRepositories,
    ManageMembers,
    ManageRobots,
    ManageTagPolicies,
    ManageWebhooks,
    ReadAuditLog,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Pull => "pull",
            Permission::Push => "push",
            Permission::Delete => "delete",
            Permission::DeleteRepository => "delete-repository",
            Permission::ListRepositories => "list-repositories",
            Permission::ManageMembers => "manage-members",
            Permission::ManageRobots => "manage-robots",
            Permission::ManageTagPolicies => "manage-tag-policies",
            Permission::ManageWebhooks => "manage-webhooks",
            Permission::ReadAuditLog => "read-audit-log",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        MATRIX.iter().map(|(p, _)| *p).find(|p| p.as_str() == s)
    }

    /// What the permission lets a caller do, for the documentation.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::Pull => "pull manifests and blobs, list tags and referrers",
            Permission::Push => "push blobs, manifests and tags",
            Permission::Delete => "delete tags, manifests and blobs",
            Permission::DeleteRepository => "delete a whole repository",
            Permission::ListRepositories => "list the project's repositories",
            Permission::ManageMembers => "add, change and remove members",
            Permission::ManageRobots => "create, change and delete robot accounts",
            Permission::ManageTagPolicies => "manage retention and immutability rules",
            Permission::ManageWebhooks => "manage webhooks and read their delivery log",
            Permission::ReadAuditLog => "read the project's audit log",
        }
    }
}

/// The permission matrix: for each permission, whether each role in [`Role::ALL`]'s
/// order (project admin, maintainer, developer, guest, limited guest) holds it.
/// System administrators hold every permission in every project.
pub const MATRIX: [(Permission, [bool; 5]); 10] = [
    //                                  admin  maint  dev    guest  limited
    (Permission::Pull, /*             */ [true, true, true, true, true]),
    (Permission::Push, /*             */ [true, true, true, false, false]),
    (Permission::Delete, /*           */ [true, true, false, false, false]),
    (Permission::DeleteRepository, /* */ [true, true, false, false, false]),
    (Permission::ListRepositories, /* */ [true, true, true, true, false]),
    (Permission::ManageMembers, /*    */ [true, false, false, false, false]),
    (Permission::ManageRobots, /*     */ [true, false, false, false, false]),
    (Permission::ManageTagPolicies, /**/ [true, true, false, false, false]),
    (Permission::ManageWebhooks, /*   */ [true, true, false, false, false]),
    (Permission::ReadAuditLog, /*     */ [true, true, false, false, false]),
];

/// The matrix as a Markdown table, as `docs/access.md` shows it.
pub fn markdown_table() -> String {
    let mut out = String::from("| permission | what it allows |");
    for role in Role::ALL {
        out.push_str(&format!(" {} |", role.as_str()));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(Role::ALL.len()));
    out.push('\n');
    for (permission, columns) in MATRIX {
        out.push_str(&format!("| `{}` | {} |", permission.as_str(), permission.describe()));
        for allowed in columns {
            out.push_str(if allowed { " yes |" } else { " no |" });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_is_the_first_component_or_library() {
        let name = |s| RepoName::parse(s).unwrap();
        assert_eq!(project_of(&name("team/app")), "team");
        assert_eq!(project_of(&name("team/sub/app")), "team");
        assert_eq!(project_of(&name("alpine")), "library");
    }

    #[test]
    fn every_permission_has_one_row_and_names_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for (p, _) in MATRIX {
            assert!(seen.insert(p), "{p:?} twice");
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn roles_are_ordered_by_privilege() {
        // Each role holds everything the next one down holds.
        for w in Role::ALL.windows(2) {
            for (p, _) in MATRIX {
                assert!(!w[1].allows(p) || w[0].allows(p), "{:?} has {p:?} but {:?} does not", w[1], w[0]);
            }
        }
        assert!(Role::LimitedGuest.allows(Permission::Pull));
        assert!(!Role::LimitedGuest.allows(Permission::ListRepositories));
        assert!(!Role::Developer.allows(Permission::Delete));
        assert!(Role::ProjectAdmin.allows(Permission::ManageRobots));
    }

    #[test]
    fn docs_access_md_shows_the_matrix_as_the_code_has_it() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/access.md");
        let doc = std::fs::read_to_string(path).expect("docs/access.md");
        assert!(
            doc.contains(&markdown_table()),
            "docs/access.md does not hold the permission table the code has; it should contain:\n{}",
            markdown_table()
        );
    }
}
