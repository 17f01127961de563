-- The outbox (issue 19): every change another system hears of (webhooks now, replication
-- next) is written here in the transaction of the change itself, so that none is lost and
-- none is told that did not commit. The dispatcher fans each event out into the work it
-- makes (webhook deliveries) and deletes it, in one transaction: rows are taken by what is
-- present, never by an id cursor (on PostgreSQL ids commit out of order).

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Unix milliseconds of the change.
    at_ms      INTEGER NOT NULL,
    -- artifact.pushed, artifact.pulled, artifact.deleted, tag.deleted, repository.deleted,
    -- quota.exceeded.
    kind       TEXT NOT NULL,
    repo       TEXT NOT NULL,
    digest     TEXT,
    media_type TEXT,
    -- The tags concerned, one per line (empty for none).
    tags       TEXT NOT NULL,
    -- Bytes of the manifest.
    size       INTEGER,
    -- A note (a quota refusal's message).
    detail     TEXT
);

-- A project's webhooks. The HMAC secret and the extra header are sealed (AES-256-GCM under
-- the federation key, which the database never sees).
CREATE TABLE webhooks (
    project            TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    url                TEXT NOT NULL,
    -- The event kinds it receives, one per line.
    events             TEXT NOT NULL,
    -- harbor or cloudevents.
    format             TEXT NOT NULL,
    sealed_secret      BLOB,
    sealed_header      BLOB,
    enabled            INTEGER NOT NULL,
    -- Failed attempts in a row; at `disable_after` the webhook is disabled.
    failures           INTEGER NOT NULL,
    disable_after      INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (project, name)
) WITHOUT ROWID;

-- Each event a webhook is to receive, its body rendered at fan-out, and the outcome of its
-- latest attempt: the queue and the delivery log in one.
CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project     TEXT NOT NULL,
    webhook     TEXT NOT NULL,
    -- Stable across retries: receivers deduplicate by it.
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    body        BLOB NOT NULL,
    -- pending, delivered, failed (gave up after its attempts).
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    -- Unix milliseconds: when it is next due (pending), and when it was made.
    due_ms      INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    -- The latest attempt: when it ended, the receiver's status, how long it took, why it failed.
    last_ms     INTEGER,
    status_code INTEGER,
    duration_ms INTEGER,
    error       TEXT,
    FOREIGN KEY (project, webhook) REFERENCES webhooks(project, name) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(due_ms) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries(project, webhook, id);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries(created_ms);
