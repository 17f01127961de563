-- Identity and audit (issue 9): users, projects, members, robots, token-signing keys,
-- and the audit log. Names compare bytewise (COLLATE "C"), like the registry's. Secrets
-- are kept only as hashes, except the signing keys' private halves, which every node
-- must be able to sign with.

CREATE TABLE users (
    name          TEXT COLLATE "C" PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
-- `any_admin` looks for one.
CREATE INDEX users_admins ON users(admin) WHERE admin;

CREATE TABLE projects (
    name       TEXT COLLATE "C" PRIMARY KEY,
    public     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
-- One-component repository names belong to `library`, which always exists, public.
INSERT INTO projects (name, public, created_at) VALUES ('library', TRUE, CAST(extract(epoch FROM now()) AS BIGINT));

CREATE TABLE members (
    project TEXT COLLATE "C" NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    user_name TEXT COLLATE "C" NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    role    TEXT NOT NULL CHECK (role IN ('project-admin', 'maintainer', 'developer', 'guest', 'limited-guest')),
    PRIMARY KEY (project, user_name)
);
CREATE INDEX members_by_user ON members(user_name, project);

CREATE TABLE robots (
    name        TEXT COLLATE "C" PRIMARY KEY,
    description TEXT NOT NULL,
    -- NULL for a keyless robot, which trusts an external issuer (`trust`, JSON) instead.
    secret_hash TEXT,
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at  BIGINT,
    trust       TEXT,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- A robot's grants: one row per project, its permissions as their names joined by
-- commas, sorted (a grant with no permission is kept as it was given).
CREATE TABLE robot_grants (
    robot       TEXT COLLATE "C" NOT NULL REFERENCES robots(name) ON DELETE CASCADE,
    project     TEXT COLLATE "C" NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    permissions TEXT NOT NULL,
    PRIMARY KEY (robot, project)
);
CREATE INDEX robot_grants_by_project ON robot_grants(project, robot);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    public_pem  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
-- At most one key signs.
CREATE UNIQUE INDEX signing_keys_one_signs ON signing_keys((retired_at IS NULL)) WHERE retired_at IS NULL;

-- Rows locked (by an upsert) to serialize a read-then-write; they carry nothing else.
-- `signing_keys`: key rotation.
CREATE TABLE identity_locks (
    name TEXT PRIMARY KEY
);

-- Append-only; `id` increases in the order of recording.
CREATE TABLE audit_log (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    actor     TEXT COLLATE "C",
    address   TEXT NOT NULL,
    operation TEXT COLLATE "C" NOT NULL,
    project   TEXT COLLATE "C",
    resource  TEXT,
    outcome   TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX audit_log_by_time ON audit_log(at_ms);
CREATE INDEX audit_log_by_actor ON audit_log(actor, id) WHERE actor IS NOT NULL;
CREATE INDEX audit_log_by_project ON audit_log(project, id) WHERE project IS NOT NULL;
CREATE INDEX audit_log_by_operation ON audit_log(operation, id);
