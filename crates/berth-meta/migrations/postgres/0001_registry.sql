-- The registry core: repositories, blobs and who may read them, manifests, tags, uploads.
-- Repository names are stored as text in every table: they never change, and a manifest
-- GET by tag then needs no join through a repository id. Names and tags sort bytewise
-- (COLLATE "C"), as the spec's lexical order and the SQLite backend do.

CREATE TABLE repositories (
    name       TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- One row per stored blob, whichever repositories use it.
CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    -- Where the blob store keeps the bytes (returned by its commit).
    storage_key TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'deleting')),
    created_at  BIGINT NOT NULL
);

-- Which repository may read which blob.
CREATE TABLE repo_blobs (
    repo       TEXT NOT NULL REFERENCES repositories(name),
    digest     TEXT NOT NULL REFERENCES blobs(digest),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repo_blobs_by_digest ON repo_blobs(digest);

-- Manifest bytes live here, not in the blob store: they are small (≤ 4 MiB), are read on
-- every pull, and must appear atomically with their references and tags.
CREATE TABLE manifests (
    repo          TEXT NOT NULL REFERENCES repositories(name),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    size          BIGINT NOT NULL,
    body          BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repo, subject) WHERE subject IS NOT NULL;

-- What each manifest names: blobs (config, layers) and child manifests (index entries).
CREATE TABLE manifest_refs (
    repo            TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    child_digest    TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo, manifest_digest, kind, child_digest),
    FOREIGN KEY (repo, manifest_digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_refs_by_child ON manifest_refs(child_digest);

CREATE TABLE tags (
    repo            TEXT NOT NULL,
    name            TEXT COLLATE "C" NOT NULL,
    manifest_digest TEXT NOT NULL,
    pushed_at       BIGINT NOT NULL,
    immutable       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (repo, name),
    FOREIGN KEY (repo, manifest_digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
);

-- Upload sessions: resumable across restarts and nodes. `size` is the acknowledged
-- length, `hash_state` the SHA-256 state over exactly those bytes, `state` the blob
-- store's own progress record (S3 multipart id and parts; empty on the filesystem).
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,
    repo       TEXT NOT NULL,
    size       BIGINT NOT NULL DEFAULT 0,
    hash_state BYTEA,
    state      TEXT NOT NULL DEFAULT '',
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX uploads_by_updated_at ON uploads(updated_at);

-- Leases: which node runs a background job. A lease past `expires_at` is free.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
