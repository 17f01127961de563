-- Bounds on what clients can make the registry hold (issue 8).

-- Referrers are listed a page at a time, by digest after the last one returned.
DROP INDEX manifests_by_subject;
CREATE INDEX manifests_by_subject ON manifests(repo, subject, digest) WHERE subject IS NOT NULL;

-- Open uploads are counted per repository when one is created.
CREATE INDEX uploads_by_repo ON uploads(repo);

-- One row per repository that ever opened an upload. Creating an upload locks its row
-- first (an upsert), so PostgreSQL serializes the count-and-insert per repository;
-- the row carries nothing else.
CREATE TABLE upload_locks (
    repo TEXT PRIMARY KEY
) WITHOUT ROWID;
