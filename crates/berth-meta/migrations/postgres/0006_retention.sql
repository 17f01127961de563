-- Retention (issue 10): when manifests and tags were last pulled, and each project's
-- retention policy.
--
-- Pull times are written in batches by the server's pull recorder (never one write per
-- pull), and kept apart from `tags` and `manifests` so that a flush never locks the rows a
-- push or a pull reads. A row may outlive its tag or manifest (deletes do not touch these
-- tables): a tag's pull counts only if it is not older than the tag's `pushed_at`.

CREATE TABLE manifest_pulls (
    repo           TEXT COLLATE "C" NOT NULL,
    digest         TEXT NOT NULL,
    last_pulled_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);

CREATE TABLE tag_pulls (
    repo           TEXT COLLATE "C" NOT NULL,
    tag            TEXT COLLATE "C" NOT NULL,
    last_pulled_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
);

-- One policy per project, as the JSON the API validated.
CREATE TABLE retention_policies (
    project    TEXT COLLATE "C" PRIMARY KEY,
    policy     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
