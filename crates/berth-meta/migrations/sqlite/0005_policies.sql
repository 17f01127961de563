-- Storage policies (issue 10): immutable tag rules, per-project quotas and the usage
-- they are checked against, and the integrity scrub's findings.
--
-- A repository's project is its name's first component, `library` for one-component
-- names (`berth_core::access::project_of`); SQLite has no user functions, so the rule is
-- spelled out in each trigger.

-- Tags matching one of a project's patterns (`berth_core::glob`) never move to another
-- digest and are never deleted. The old `tags.immutable` column is not used.
CREATE TABLE immutable_rules (
    project    TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    pattern    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project, pattern)
) WITHOUT ROWID;

-- A project's limit in bytes; no row: unlimited.
CREATE TABLE project_quotas (
    project     TEXT PRIMARY KEY REFERENCES projects(name) ON DELETE CASCADE,
    limit_bytes INTEGER NOT NULL
) WITHOUT ROWID;

-- Each blob a project's repositories may read, once, with how many of them link it;
-- and the sum of those blobs' sizes per project. Kept by the triggers below, so every
-- insert or delete of a link (pushes, mounts, unlinks, garbage collection) keeps them
-- exact with no code of its own.
CREATE TABLE project_blobs (
    project TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    refs    INTEGER NOT NULL,
    PRIMARY KEY (project, digest)
) WITHOUT ROWID;

CREATE TABLE project_usage (
    project TEXT PRIMARY KEY,
    bytes   INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO project_blobs (project, digest, size, refs)
    SELECT CASE WHEN instr(rb.repo, '/') > 0 THEN substr(rb.repo, 1, instr(rb.repo, '/') - 1) ELSE 'library' END,
           rb.digest, MAX(b.size), COUNT(*)
    FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
    GROUP BY 1, 2;
INSERT INTO project_usage (project, bytes) SELECT project, SUM(size) FROM project_blobs GROUP BY project;

CREATE TRIGGER repo_blobs_counted AFTER INSERT ON repo_blobs BEGIN
    INSERT INTO project_usage (project, bytes)
        SELECT CASE WHEN instr(NEW.repo, '/') > 0 THEN substr(NEW.repo, 1, instr(NEW.repo, '/') - 1) ELSE 'library' END,
               b.size
        FROM blobs b
        WHERE b.digest = NEW.digest AND NOT EXISTS (
            SELECT 1 FROM project_blobs pb
            WHERE pb.digest = NEW.digest AND pb.project =
                CASE WHEN instr(NEW.repo, '/') > 0 THEN substr(NEW.repo, 1, instr(NEW.repo, '/') - 1) ELSE 'library' END)
        ON CONFLICT (project) DO UPDATE SET bytes = project_usage.bytes + excluded.bytes;
    INSERT INTO project_blobs (project, digest, size, refs)
        SELECT CASE WHEN instr(NEW.repo, '/') > 0 THEN substr(NEW.repo, 1, instr(NEW.repo, '/') - 1) ELSE 'library' END,
               NEW.digest, b.size, 1
        FROM blobs b WHERE b.digest = NEW.digest
        ON CONFLICT (project, digest) DO UPDATE SET refs = project_blobs.refs + 1;
END;

CREATE TRIGGER repo_blobs_uncounted AFTER DELETE ON repo_blobs BEGIN
    UPDATE project_blobs SET refs = refs - 1
        WHERE digest = OLD.digest AND project =
            CASE WHEN instr(OLD.repo, '/') > 0 THEN substr(OLD.repo, 1, instr(OLD.repo, '/') - 1) ELSE 'library' END;
    UPDATE project_usage SET bytes = bytes - (
            SELECT pb.size FROM project_blobs pb WHERE pb.digest = OLD.digest AND pb.project = project_usage.project)
        WHERE project =
            CASE WHEN instr(OLD.repo, '/') > 0 THEN substr(OLD.repo, 1, instr(OLD.repo, '/') - 1) ELSE 'library' END
          AND EXISTS (SELECT 1 FROM project_blobs pb
                      WHERE pb.digest = OLD.digest AND pb.project = project_usage.project AND pb.refs <= 0);
    DELETE FROM project_blobs
        WHERE digest = OLD.digest AND refs <= 0 AND project =
            CASE WHEN instr(OLD.repo, '/') > 0 THEN substr(OLD.repo, 1, instr(OLD.repo, '/') - 1) ELSE 'library' END;
END;

-- Blobs whose stored bytes the scrub found damaged: not served, not accepted in a
-- manifest, until a push of the right bytes repairs them (`link_blob` removes the row).
CREATE TABLE blob_damage (
    digest   TEXT PRIMARY KEY,
    -- `mismatch`, `missing` or `truncated`, then what was found.
    reason   TEXT NOT NULL,
    found_at INTEGER NOT NULL,
    run_id   INTEGER
) WITHOUT ROWID;

-- One row per scrub run, updated as it goes.
CREATE TABLE scrub_runs (
    id          INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    -- `running`, `finished`, `failed` (the run stopped: `error` says why).
    state       TEXT NOT NULL,
    blobs_total INTEGER NOT NULL DEFAULT 0,
    checked     INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    damaged     INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);

-- What a run found, kept with the run even after a repair.
CREATE TABLE scrub_findings (
    run_id INTEGER NOT NULL REFERENCES scrub_runs(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, digest)
) WITHOUT ROWID;
