-- Replication (issue 19): copying artifacts between Berth and other registries. A registry
-- is a remote endpoint with its credentials; a rule says what to copy where (push: local to
-- remote, pull: remote to local); an execution is one run of a rule, made of tasks, one per
-- artifact. Which artifacts a rule takes, and the copying, are `berth-federation`'s: the
-- tables keep the state durably, so that any node can take up a task another left.

-- The remote registries. The password is kept sealed (AES-256-GCM under the federation key,
-- which the database never sees).
CREATE TABLE replication_registries (
    name            TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    username        TEXT,
    sealed_password BLOB,
    -- PEM certificates the registry's TLS certificate may chain to, besides the system's.
    ca_pem          TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE replication_rules (
    name        TEXT PRIMARY KEY,
    -- Not deleted while a rule uses it (the store names the rules).
    registry    TEXT NOT NULL REFERENCES replication_registries(name),
    -- push or pull.
    direction   TEXT NOT NULL,
    -- The local project: what a push copies from, what a pull copies into.
    project     TEXT NOT NULL,
    -- Runs on the outbox's events (pushes, deletes) as they are fanned out.
    on_event    INTEGER NOT NULL,
    -- Runs on a schedule: the cron expression, and when it is next due (Unix milliseconds).
    cron        TEXT,
    next_run_ms INTEGER,
    enabled     INTEGER NOT NULL,
    -- The filters and options, as JSON (the store does not read it).
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- One run of a rule, with its tasks' outcomes summed as they become final.
CREATE TABLE replication_executions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rule        TEXT NOT NULL REFERENCES replication_rules(name) ON DELETE CASCADE,
    -- event, schedule or manual.
    trigger     TEXT NOT NULL,
    -- running, then succeeded, failed or partial (some tasks failed, some succeeded).
    state       TEXT NOT NULL,
    -- Unix milliseconds.
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    total       INTEGER NOT NULL,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX replication_executions_rule ON replication_executions(rule, id);
CREATE INDEX replication_executions_age ON replication_executions(finished_ms);

-- One artifact to copy (a manifest with everything it references) or delete: the queue
-- and the execution's log in one table, as webhook deliveries are.
CREATE TABLE replication_tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    execution   INTEGER NOT NULL REFERENCES replication_executions(id) ON DELETE CASCADE,
    rule        TEXT NOT NULL,
    -- copy or delete.
    op          TEXT NOT NULL,
    repo        TEXT NOT NULL,
    digest      TEXT,
    -- The tags concerned, one per line (empty for none).
    tags        TEXT NOT NULL,
    -- pending, succeeded, failed (gave up).
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    -- Unix milliseconds: when it is next due (pending; a claim moves it to when the claim
    -- ends), when it was made, when it became final.
    due_ms      INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER,
    -- The latest attempt: bytes copied, how long it took, why it failed.
    bytes       INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER,
    error       TEXT
);
CREATE INDEX replication_tasks_due ON replication_tasks(rule, state, due_ms);
-- An execution's tasks in order (its log), and what a deleted execution takes with it.
CREATE INDEX replication_tasks_execution ON replication_tasks(execution, id);
