-- Federation (issue 19): the registries a proxy project caches, and when each cached tag
-- was last checked against its upstream. An upstream's password is kept sealed
-- (AES-256-GCM under the federation key, which the database never sees).

CREATE TABLE upstreams (
    name            TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    -- The proxy project whose repositories cache this upstream's (one each way).
    project         TEXT NOT NULL UNIQUE REFERENCES projects(name) ON DELETE CASCADE,
    username        TEXT,
    sealed_password BLOB,
    ca_pem          TEXT,
    tag_ttl_secs    INTEGER NOT NULL,
    -- The registry host names a mirror request's `ns` may give for it, one per line.
    hosts           TEXT NOT NULL,
    short_names     INTEGER NOT NULL,
    is_default      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) WITHOUT ROWID;
-- At most one default upstream (the one mirror requests without `ns` go to).
CREATE UNIQUE INDEX upstreams_one_default ON upstreams(is_default) WHERE is_default;

CREATE TABLE proxy_tags (
    repo       TEXT NOT NULL,
    tag        TEXT NOT NULL,
    checked_at INTEGER NOT NULL,
    PRIMARY KEY (repo, tag)
) WITHOUT ROWID;
