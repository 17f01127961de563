-- Federation (issue 19): the registries a proxy project caches, and when each cached tag
-- was last checked against its upstream. An upstream's password is kept sealed
-- (AES-256-GCM under the federation key, which the database never sees).

CREATE TABLE upstreams (
    name            TEXT COLLATE "C" PRIMARY KEY,
    url             TEXT NOT NULL,
    -- The proxy project whose repositories cache this upstream's (one each way).
    project         TEXT COLLATE "C" NOT NULL UNIQUE REFERENCES projects(name) ON DELETE CASCADE,
    username        TEXT,
    sealed_password BYTEA,
    ca_pem          TEXT,
    tag_ttl_secs    BIGINT NOT NULL,
    -- The registry host names a mirror request's `ns` may give for it, one per line.
    hosts           TEXT NOT NULL,
    short_names     BOOLEAN NOT NULL,
    is_default      BOOLEAN NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- At most one default upstream (the one mirror requests without `ns` go to).
CREATE UNIQUE INDEX upstreams_one_default ON upstreams(is_default) WHERE is_default;

CREATE TABLE proxy_tags (
    repo       TEXT COLLATE "C" NOT NULL,
    tag        TEXT COLLATE "C" NOT NULL,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
);
