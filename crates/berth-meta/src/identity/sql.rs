//! The one SQL implementation of [`IdentityStore`](super::IdentityStore), instantiated for
//! SQLite and for PostgreSQL by [`identity_store!`] (like `sql_store!` for the registry).
//!
//! Robot grants are a child table, one row per (robot, project), the permissions as their
//! names joined by commas: a robot and its grants are read by one statement (a join), so
//! a reader never sees a robot with half of an update's grants.

use berth_core::access::{Permission, Role};
use berth_core::{Error, ErrorKind};

use super::RobotGrant;
use crate::PageSpec;

/// Implements `IdentityStore` for a struct (of database `$db`) with `writer` and `reader` pools and an
/// `async fn durable(&self)` (see `sql_store!`). Every write acknowledges something, so
/// every write is durable when it returns. The expanding module imports `sqlx::Row`.
macro_rules! identity_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Robots (with their grants) named `name`, or with a grant in `project`, or all.
            async fn select_robots(
                &self,
                filter: $crate::identity::sql::RobotFilter<'_>,
            ) -> Result<Vec<$crate::identity::Robot>, berth_core::Error> {
                use $crate::identity::sql::RobotFilter;
                let query = match filter {
                    RobotFilter::Name(name) => {
                        sqlx::query($crate::identity::sql::robots_sql!("WHERE r.name = $1")).bind(name)
                    }
                    // A page of robots, each with all its grants (rows of the join).
                    RobotFilter::Page(project, page) => sqlx::query($crate::identity::sql::robots_sql!(
                        "WHERE r.name IN (SELECT p.name FROM robots p WHERE p.name > $1 AND ($2 IS NULL OR EXISTS
                           (SELECT 1 FROM robot_grants x WHERE x.robot = p.name AND x.project = $2))
                         ORDER BY p.name LIMIT $3)"
                    ))
                    .bind(page.last.unwrap_or(""))
                    .bind(project)
                    .bind(page.limit as i64),
                };
                // A reader sees every commit that finished before the read began (SQLite
                // in WAL mode, PostgreSQL read committed): a robot just written too.
                let rows = query.fetch_all(&self.reader).await.map_err(db_err)?;
                let mut robots: Vec<$crate::identity::Robot> = Vec::new();
                for r in rows {
                    let name: String = r.get(0);
                    if robots.last().is_none_or(|last| last.name != name) {
                        robots.push($crate::identity::Robot {
                            name,
                            description: r.get(1),
                            secret_hash: r.get(2),
                            disabled: r.get(3),
                            expires_at: r.get(4),
                            trust: r.get(5),
                            created_by: r.get(6),
                            created_at: r.get(7),
                            updated_at: r.get(8),
                            grants: Vec::new(),
                        });
                    }
                    if let Some(project) = r.get::<Option<String>, _>(9) {
                        let permissions: String = r.get(10);
                        let grant = $crate::identity::sql::grant(project, &permissions)?;
                        robots.last_mut().expect("pushed above").grants.push(grant);
                    }
                }
                Ok(robots)
            }

            /// Inserts `robot`'s grants (rows of `normalized`); an unknown project is unknown.
            async fn insert_grants(
                tx: &mut sqlx::Transaction<'_, $db>,
                robot: &str,
                grants: &[(String, String)],
            ) -> Result<(), berth_core::Error> {
                for (project, permissions) in grants {
                    sqlx::query("INSERT INTO robot_grants (robot, project, permissions) VALUES ($1, $2, $3)")
                        .bind(robot)
                        .bind(project)
                        .bind(permissions)
                        .execute(&mut **tx)
                        .await
                        .map_err(|e| $crate::db_error::write_err(e, "project", project))?;
                }
                Ok(())
            }

            async fn robot_written(&self, name: &str) -> Result<$crate::identity::Robot, berth_core::Error> {
                let robot = self.select_robots($crate::identity::sql::RobotFilter::Name(name)).await?.pop();
                robot.ok_or_else(|| $crate::db_error::unknown("robot", name))
            }
        }

        #[async_trait::async_trait]
        impl $crate::identity::IdentityStore for $store {
            async fn create_user(
                &self,
                name: &str,
                password_hash: &str,
                admin: bool,
            ) -> Result<$crate::identity::User, berth_core::Error> {
                let now = now();
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let row = sqlx::query(
                    "INSERT INTO users (name, password_hash, admin, disabled, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $5)
                     RETURNING name, password_hash, admin, disabled, created_at, updated_at",
                )
                .bind(name)
                .bind(password_hash)
                .bind(admin)
                .bind(false)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| $crate::db_error::write_err(e, "user", name))?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok($crate::identity::sql::user_row!(row))
            }

            async fn user(&self, name: &str) -> Result<Option<$crate::identity::User>, berth_core::Error> {
                let row = sqlx::query(
                    "SELECT name, password_hash, admin, disabled, created_at, updated_at FROM users WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(row.map(|r| $crate::identity::sql::user_row!(r)))
            }

            async fn users(&self, page: PageSpec<'_>) -> Result<Vec<$crate::identity::User>, berth_core::Error> {
                let rows = sqlx::query(
                    "SELECT name, password_hash, admin, disabled, created_at, updated_at FROM users
                     WHERE name > $1 ORDER BY name LIMIT $2",
                )
                .bind(page.last.unwrap_or(""))
                .bind(page.limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                let users = rows.into_iter().map(|r| $crate::identity::sql::user_row!(r)).collect();
                Ok($crate::identity::sql::within_bytes(users, page, |u| u.name.len() + u.password_hash.len()))
            }

            async fn update_user(
                &self,
                name: &str,
                update: &$crate::identity::UserUpdate,
            ) -> Result<$crate::identity::User, berth_core::Error> {
                // `updated_at` moves forward on every change, even twice in one second:
                // caches of a verified credential compare it.
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let row = sqlx::query(
                    "UPDATE users SET password_hash = COALESCE($1, password_hash), admin = COALESCE($2, admin),
                       disabled = COALESCE($3, disabled),
                       updated_at = CASE WHEN updated_at >= $4 THEN updated_at + 1 ELSE $4 END
                     WHERE name = $5
                     RETURNING name, password_hash, admin, disabled, created_at, updated_at",
                )
                .bind(update.password_hash.as_deref())
                .bind(update.admin)
                .bind(update.disabled)
                .bind(now())
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .ok_or_else(|| $crate::db_error::unknown("user", name))?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok($crate::identity::sql::user_row!(row))
            }

            async fn any_admin(&self) -> Result<bool, berth_core::Error> {
                let row = sqlx::query("SELECT 1 FROM users WHERE admin LIMIT 1")
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(row.is_some())
            }

            async fn create_project(
                &self,
                name: &str,
                public: bool,
            ) -> Result<$crate::identity::Project, berth_core::Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let row = sqlx::query(
                    "INSERT INTO projects (name, public, created_at) VALUES ($1, $2, $3)
                     RETURNING name, public, created_at",
                )
                .bind(name)
                .bind(public)
                .bind(now())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| $crate::db_error::write_err(e, "project", name))?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok($crate::identity::sql::project_row!(row))
            }

            async fn project(&self, name: &str) -> Result<Option<$crate::identity::Project>, berth_core::Error> {
                let row = sqlx::query("SELECT name, public, created_at FROM projects WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(row.map(|r| $crate::identity::sql::project_row!(r)))
            }

            async fn projects(&self, page: PageSpec<'_>) -> Result<Vec<$crate::identity::Project>, berth_core::Error> {
                let rows =
                    sqlx::query("SELECT name, public, created_at FROM projects WHERE name > $1 ORDER BY name LIMIT $2")
                        .bind(page.last.unwrap_or(""))
                        .bind(page.limit as i64)
                        .fetch_all(&self.reader)
                        .await
                        .map_err(db_err)?;
                let projects = rows.into_iter().map(|r| $crate::identity::sql::project_row!(r)).collect();
                Ok($crate::identity::sql::within_bytes(projects, page, |p| p.name.len()))
            }

            async fn set_project_public(
                &self,
                name: &str,
                public: bool,
            ) -> Result<$crate::identity::Project, berth_core::Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let row =
                    sqlx::query("UPDATE projects SET public = $1 WHERE name = $2 RETURNING name, public, created_at")
                        .bind(public)
                        .bind(name)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .ok_or_else(|| $crate::db_error::unknown("project", name))?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok($crate::identity::sql::project_row!(row))
            }

            async fn delete_project(&self, name: &str) -> Result<(), berth_core::Error> {
                use $crate::identity::sql::prefix_range;
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Repositories `NAME/…`, and for `library` the one-component names too.
                let (from, to) = prefix_range(&format!("{name}/"));
                let repository = sqlx::query(
                    "SELECT name FROM repositories
                     WHERE (name >= $1 AND name < $2) OR ($3 AND name NOT LIKE '%/%') LIMIT 1",
                )
                .bind(&from)
                .bind(&to)
                .bind(name == berth_core::access::DEFAULT_PROJECT)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                if let Some(r) = repository {
                    return Err(berth_core::Error::new(berth_core::ErrorKind::Conflict)
                        .with_message(format!("project {name} still has repositories"))
                        .with_detail(r.get::<String, _>(0)));
                }
                // Robots scoped to the project (`robot$NAME+…`) go with it; other robots
                // lose their grant in it (a cascade, as members do).
                let (from, to) = prefix_range(&format!("robot${name}+"));
                sqlx::query("DELETE FROM robots WHERE name >= $1 AND name < $2")
                    .bind(&from)
                    .bind(&to)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let done = sqlx::query("DELETE FROM projects WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if done.rows_affected() == 0 {
                    return Err($crate::db_error::unknown("project", name));
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await
            }

            async fn set_member(
                &self,
                project: &str,
                user: &str,
                role: berth_core::access::Role,
            ) -> Result<$crate::identity::Member, berth_core::Error> {
                sqlx::query(
                    "INSERT INTO members (project, user_name, role) VALUES ($1, $2, $3)
                     ON CONFLICT (project, user_name) DO UPDATE SET role = excluded.role",
                )
                .bind(project)
                .bind(user)
                .bind(role.as_str())
                .execute(&self.writer)
                .await
                .map_err(|e| $crate::db_error::write_err(e, "project or user", &format!("{project}, {user}")))?;
                self.durable().await?;
                Ok($crate::identity::Member { project: project.to_owned(), user: user.to_owned(), role })
            }

            async fn remove_member(&self, project: &str, user: &str) -> Result<bool, berth_core::Error> {
                let done = sqlx::query("DELETE FROM members WHERE project = $1 AND user_name = $2")
                    .bind(project)
                    .bind(user)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn members(
                &self,
                project: &str,
                page: PageSpec<'_>,
            ) -> Result<Vec<$crate::identity::Member>, berth_core::Error> {
                let rows = sqlx::query(
                    "SELECT project, user_name, role FROM members WHERE project = $1 AND user_name > $2
                     ORDER BY user_name LIMIT $3",
                )
                .bind(project)
                .bind(page.last.unwrap_or(""))
                .bind(page.limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                let members = rows
                    .into_iter()
                    .map(|r| $crate::identity::sql::member(r.get(0), r.get(1), r.get(2)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok($crate::identity::sql::within_bytes(members, page, |m| m.user.len()))
            }

            async fn memberships(&self, user: &str) -> Result<Vec<$crate::identity::Member>, berth_core::Error> {
                let rows =
                    sqlx::query("SELECT project, user_name, role FROM members WHERE user_name = $1 ORDER BY project")
                        .bind(user)
                        .fetch_all(&self.reader)
                        .await
                        .map_err(db_err)?;
                rows.into_iter().map(|r| $crate::identity::sql::member(r.get(0), r.get(1), r.get(2))).collect()
            }

            /// Created and updated now, whatever `robot` says.
            async fn create_robot(
                &self,
                robot: &$crate::identity::Robot,
            ) -> Result<$crate::identity::Robot, berth_core::Error> {
                let grants = $crate::identity::sql::normalized(&robot.grants)?;
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let now = now();
                sqlx::query(
                    "INSERT INTO robots (name, description, secret_hash, disabled, expires_at, trust, created_by,
                                         created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(&robot.name)
                .bind(&robot.description)
                .bind(robot.secret_hash.as_deref())
                .bind(robot.disabled)
                .bind(robot.expires_at)
                .bind(robot.trust.as_deref())
                .bind(&robot.created_by)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::db_error::write_err(e, "robot", &robot.name))?;
                Self::insert_grants(&mut tx, &robot.name, &grants).await?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                self.robot_written(&robot.name).await
            }

            async fn robot(&self, name: &str) -> Result<Option<$crate::identity::Robot>, berth_core::Error> {
                Ok(self.select_robots($crate::identity::sql::RobotFilter::Name(name)).await?.pop())
            }

            async fn robots(
                &self,
                project: Option<&str>,
                page: PageSpec<'_>,
            ) -> Result<Vec<$crate::identity::Robot>, berth_core::Error> {
                use $crate::identity::sql::RobotFilter;
                let robots = self.select_robots(RobotFilter::Page(project, page)).await?;
                Ok($crate::identity::sql::within_bytes(robots, page, |r| {
                    r.name.len() + r.secret_hash.as_ref().map_or(0, String::len) + r.grants.iter().map(|g| g.project.len() + 64).sum::<usize>()
                }))
            }

            async fn update_robot(
                &self,
                name: &str,
                update: &$crate::identity::RobotUpdate,
            ) -> Result<$crate::identity::Robot, berth_core::Error> {
                let grants = update.grants.as_deref().map($crate::identity::sql::normalized).transpose()?;
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // A `CASE` per optional field: whether to set it (`$n`), and to what (`$n+1`,
                // possibly NULL).
                let done = sqlx::query(
                    "UPDATE robots SET description = COALESCE($1, description),
                       secret_hash = CASE WHEN $2 THEN $3 ELSE secret_hash END,
                       disabled = COALESCE($4, disabled),
                       expires_at = CASE WHEN $5 THEN $6 ELSE expires_at END,
                       trust = CASE WHEN $7 THEN $8 ELSE trust END,
                       updated_at = CASE WHEN updated_at >= $9 THEN updated_at + 1 ELSE $9 END
                     WHERE name = $10",
                )
                .bind(update.description.as_deref())
                .bind(update.secret_hash.is_some())
                .bind(update.secret_hash.clone().flatten())
                .bind(update.disabled)
                .bind(update.expires_at.is_some())
                .bind(update.expires_at.flatten())
                .bind(update.trust.is_some())
                .bind(update.trust.clone().flatten())
                .bind(now())
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if done.rows_affected() == 0 {
                    return Err($crate::db_error::unknown("robot", name));
                }
                if let Some(grants) = &grants {
                    sqlx::query("DELETE FROM robot_grants WHERE robot = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    Self::insert_grants(&mut tx, name, grants).await?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                self.robot_written(name).await
            }

            async fn delete_robot(&self, name: &str) -> Result<bool, berth_core::Error> {
                // Its grants go by the cascade.
                let done = sqlx::query("DELETE FROM robots WHERE name = $1")
                    .bind(name)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn signing_keys(
                &self,
                retired_after: i64,
            ) -> Result<Vec<$crate::identity::SigningKey>, berth_core::Error> {
                let rows = sqlx::query(
                    "SELECT kid, algorithm, private_pem, public_pem, created_at, retired_at FROM signing_keys
                     WHERE retired_at IS NULL OR retired_at >= $1 ORDER BY created_at DESC, kid DESC",
                )
                .bind(retired_after)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::identity::SigningKey {
                        kid: r.get(0),
                        algorithm: r.get(1),
                        private_pem: r.get(2),
                        public_pem: r.get(3),
                        created_at: r.get(4),
                        retired_at: r.get(5),
                    })
                    .collect())
            }

            async fn rotate_signing_key(&self, key: &$crate::identity::SigningKey) -> Result<(), berth_core::Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Locks a row until the commit: on PostgreSQL concurrent rotations (two
                // nodes starting at once) run one after the other, and the second retires
                // the first's key (SQLite has one writer anyway).
                sqlx::query(
                    "INSERT INTO identity_locks (name) VALUES ('signing_keys')
                     ON CONFLICT (name) DO UPDATE SET name = excluded.name",
                )
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
                    .bind(key.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, algorithm, private_pem, public_pem, created_at, retired_at)
                     VALUES ($1, $2, $3, $4, $5, NULL)",
                )
                .bind(&key.kid)
                .bind(&key.algorithm)
                .bind(&key.private_pem)
                .bind(&key.public_pem)
                .bind(key.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::db_error::write_err(e, "signing key", &key.kid))?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await
            }

            async fn revoke_signing_key(&self, kid: &str) -> Result<bool, berth_core::Error> {
                let done = sqlx::query("DELETE FROM signing_keys WHERE kid = $1 AND retired_at IS NOT NULL")
                    .bind(kid)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

/// The columns of a robot and of one of its grants (a LEFT JOIN: none for a robot without
/// grants), sorted by robot, then project.
macro_rules! robots_sql {
    ($where:literal) => {
        concat!(
            "SELECT r.name, r.description, r.secret_hash, r.disabled, r.expires_at, r.trust, r.created_by,
                    r.created_at, r.updated_at, g.project, g.permissions
             FROM robots r LEFT JOIN robot_grants g ON g.robot = r.name ",
            $where,
            " ORDER BY r.name, g.project"
        )
    };
}

/// A `User` from the columns `name, password_hash, admin, disabled, created_at, updated_at`.
macro_rules! user_row {
    ($r:expr) => {
        $crate::identity::User {
            name: $r.get(0),
            password_hash: $r.get(1),
            admin: $r.get(2),
            disabled: $r.get(3),
            created_at: $r.get(4),
            updated_at: $r.get(5),
        }
    };
}

/// A `Project` from the columns `name, public, created_at`.
macro_rules! project_row {
    ($r:expr) => {
        $crate::identity::Project { name: $r.get(0), public: $r.get(1), created_at: $r.get(2) }
    };
}

pub(crate) use {identity_store, project_row, robots_sql, user_row};

/// Which robots `select_robots` reads.
pub(crate) enum RobotFilter<'a> {
    Name(&'a str),
    /// Those with a grant in the project (all if `None`).
    Page(Option<&'a str>, crate::PageSpec<'a>),
}

/// The bounds `[from, to)` of the names starting with `prefix` in bytewise order.
/// `prefix` ends in an ASCII byte below 0x7f (`/` or `+` here), so the bound is that byte
/// plus one.
pub(crate) fn prefix_range(prefix: &str) -> (String, String) {
    let mut to = prefix.as_bytes().to_vec();
    let last = to.last_mut().expect("a non-empty prefix");
    assert!(*last < 0x7f, "prefix_range needs an ASCII last byte");
    *last += 1;
    (prefix.to_owned(), String::from_utf8(to).expect("ASCII changed to ASCII"))
}

/// A member from its columns.
pub(crate) fn member(project: String, user: String, role: String) -> Result<super::Member, Error> {
    let role = Role::parse(&role).ok_or_else(|| Error::internal(format!("corrupt role {role:?}")))?;
    Ok(super::Member { project, user, role })
}

/// A grant from its columns.
pub(crate) fn grant(project: String, permissions: &str) -> Result<RobotGrant, Error> {
    let permissions = permissions
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| Permission::parse(p).ok_or_else(|| Error::internal(format!("corrupt permission {p:?}"))))
        .collect::<Result<_, _>>()?;
    Ok(RobotGrant { project, permissions })
}

/// `grants` as rows `(project, permissions)`: permissions sorted without duplicates; a
/// project named twice is refused.
pub(crate) fn normalized(grants: &[RobotGrant]) -> Result<Vec<(String, String)>, Error> {
    let mut rows: Vec<(String, String)> = Vec::with_capacity(grants.len());
    for g in grants {
        if rows.iter().any(|(project, _)| *project == g.project) {
            return Err(Error::new(ErrorKind::BadRequest)
                .with_message(format!("project {} is granted twice", g.project))
                .with_detail(g.project.clone()));
        }
        let mut permissions = g.permissions.clone();
        permissions.sort();
        permissions.dedup();
        let names: Vec<&str> = permissions.iter().map(|p| p.as_str()).collect();
        rows.push((g.project.clone(), names.join(",")));
    }
    Ok(rows)
}

/// The first items of `items` that fit in `page.max_bytes` (about `size` each plus a
/// little), at least one.
pub(crate) fn within_bytes<T>(mut items: Vec<T>, page: PageSpec<'_>, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut bytes = 0;
    let fit = items
        .iter()
        .position(|item| {
            bytes += 64 + size(item);
            bytes > page.max_bytes
        })
        .map_or(items.len(), |i| i.max(1));
    items.truncate(fit);
    items
}
