-- Identity and audit (issue 9): users, projects, members, robots, token-signing keys,
-- and the audit log. Names compare bytewise (SQLite's default BINARY collation), like the
-- registry's. Secrets are kept only as hashes, except the signing keys' private halves,
-- which every node must be able to sign with.

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;
-- `any_admin` looks for one.
CREATE INDEX users_admins ON users(admin) WHERE admin;

CREATE TABLE projects (
    name       TEXT PRIMARY KEY,
    public     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
-- One-component repository names belong to `library`, which always exists, public.
INSERT INTO projects (name, public, created_at) VALUES ('library', 1, CAST(strftime('%s', 'now') AS INTEGER));

CREATE TABLE members (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role    TEXT NOT NULL CHECK (role IN ('project-admin', 'maintainer', 'developer', 'guest', 'limited-guest')),
    PRIMARY KEY (project, user_name)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members(user_name, project);

CREATE TABLE robots (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    -- NULL for a keyless robot, which trusts an external issuer (`trust`, JSON) instead.
    secret_hash TEXT,
    disabled    INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER,
    trust       TEXT,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- A robot's grants: one row per project, its permissions as their names joined by
-- commas, sorted (a grant with no permission is kept as it was given).
CREATE TABLE robot_grants (
    robot       TEXT NOT NULL REFERENCES robots(name) ON DELETE CASCADE,
    project     TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    permissions TEXT NOT NULL,
    PRIMARY KEY (robot, project)
) WITHOUT ROWID;
CREATE INDEX robot_grants_by_project ON robot_grants(project, robot);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) WITHOUT ROWID;
-- At most one key signs.
CREATE UNIQUE INDEX signing_keys_one_signs ON signing_keys((retired_at IS NULL)) WHERE retired_at IS NULL;

-- Rows locked (by an upsert) to serialize a read-then-write on PostgreSQL; they carry
-- nothing else. `signing_keys`: key rotation.
CREATE TABLE identity_locks (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;

-- Append-only; `id` increases in the order of recording (AUTOINCREMENT: never reused,
-- even after the newest entries are pruned).
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    actor     TEXT,
    address   TEXT NOT NULL,
    operation TEXT NOT NULL,
    project   TEXT,
    resource  TEXT,
    outcome   TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX audit_log_by_time ON audit_log(at_ms);
CREATE INDEX audit_log_by_actor ON audit_log(actor, id) WHERE actor IS NOT NULL;
CREATE INDEX audit_log_by_project ON audit_log(project, id) WHERE project IS NOT NULL;
CREATE INDEX audit_log_by_operation ON audit_log(operation, id);
