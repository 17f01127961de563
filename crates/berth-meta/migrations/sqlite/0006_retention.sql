-- Retention (issue 10): when manifests and tags were last pulled, and each project's
-- retention policy.
--
-- Pull times are written in batches by the server's pull recorder (never one write per
-- pull), and kept apart from `tags` and `manifests` so that a flush never locks the rows a
-- push or a pull reads. A row may outlive its tag or manifest (deletes do not touch these
-- tables): a tag's pull counts only if it is not older than the tag's `pushed_at`.

CREATE TABLE manifest_pulls (
    repo           TEXT NOT NULL,
    digest         TEXT NOT NULL,
    last_pulled_at INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;

CREATE TABLE tag_pulls (
    repo           TEXT NOT NULL,
    tag            TEXT NOT NULL,
    last_pulled_at INTEGER NOT NULL,
    PRIMARY KEY (repo, tag)
) WITHOUT ROWID;

-- One policy per project, as the JSON the API validated.
CREATE TABLE retention_policies (
    project    TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
