-- Online garbage collection (issue 10): review queues filled by the writes that can make
-- content unreferenced, in their own transactions, and the record of every GC run.
--
-- A candidate is due once `queued_at` is older than the grace period (the GC's setting,
-- so that the write path needs none and a changed grace applies to what is queued).
-- Queueing again (an upsert) moves `queued_at` forward: a blob uploaded again, a tag moved
-- again, restarts its grace.

CREATE TABLE gc_blob_review (
    digest    TEXT PRIMARY KEY,
    queued_at INTEGER NOT NULL,
    -- Why it was queued: `upload`, `unlink`, `manifest`, `sweep`.
    reason    TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX gc_blob_review_by_time ON gc_blob_review(queued_at);

CREATE TABLE gc_manifest_review (
    repo      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    queued_at INTEGER NOT NULL,
    -- `tag` (a tag moved off it or was deleted), `parent` (an index naming it was
    -- deleted), `subject` (its subject was deleted), `sweep`.
    reason    TEXT NOT NULL,
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE INDEX gc_manifest_review_by_time ON gc_manifest_review(queued_at);

-- Blobs whose bytes are being removed (or were, by a run that crashed): the next run
-- finishes them.
CREATE INDEX blobs_deleting ON blobs(digest) WHERE state = 'deleting';

-- "Is this manifest tagged?" for every manifest candidate (and the cascade of a manifest
-- delete onto its tags).
CREATE INDEX tags_by_manifest ON tags(repo, manifest_digest);

-- One row per GC run, kept for the API; times in Unix milliseconds.
CREATE TABLE gc_runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT NOT NULL CHECK (kind IN ('incremental', 'full')),
    dry_run           INTEGER NOT NULL,
    started_ms        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    candidates        INTEGER NOT NULL,
    manifests_removed INTEGER NOT NULL,
    blobs_removed     INTEGER NOT NULL,
    bytes_freed       INTEGER NOT NULL,
    orphans_removed   INTEGER NOT NULL,
    orphan_bytes      INTEGER NOT NULL,
    -- Why the run stopped early, if it did (never a secret, never internal detail).
    error             TEXT
);
