-- Storage policies (issue 10): immutable tag rules, per-project quotas and the usage
-- they are checked against, and the integrity scrub's findings.

-- A repository's project: its name's first component, `library` for one-component names
-- (`berth_core::access::project_of`).
CREATE FUNCTION berth_project_of(repo TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN strpos(repo, '/') > 0 THEN split_part(repo, '/', 1) ELSE 'library' END
$$;

-- Tags matching one of a project's patterns (`berth_core::glob`) never move to another
-- digest and are never deleted. The old `tags.immutable` column is not used.
CREATE TABLE immutable_rules (
    project    TEXT COLLATE "C" NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    pattern    TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project, pattern)
);

-- A project's limit in bytes; no row: unlimited.
CREATE TABLE project_quotas (
    project     TEXT COLLATE "C" PRIMARY KEY REFERENCES projects(name) ON DELETE CASCADE,
    limit_bytes BIGINT NOT NULL
);

-- Each blob a project's repositories may read, once, with how many of them link it;
-- and the sum of those blobs' sizes per project. Kept by the triggers below, so every
-- insert or delete of a link (pushes, mounts, unlinks, garbage collection) keeps them
-- exact with no code of its own.
CREATE TABLE project_blobs (
    project TEXT NOT NULL,
    digest  TEXT NOT NULL,
    size    BIGINT NOT NULL,
    refs    BIGINT NOT NULL,
    PRIMARY KEY (project, digest)
);

CREATE TABLE project_usage (
    project TEXT PRIMARY KEY,
    bytes   BIGINT NOT NULL
);

INSERT INTO project_blobs (project, digest, size, refs)
    SELECT berth_project_of(rb.repo), rb.digest, MAX(b.size), COUNT(*)
    FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
    GROUP BY 1, 2;
INSERT INTO project_usage (project, bytes) SELECT project, SUM(size) FROM project_blobs GROUP BY project;

-- Both triggers lock the project's usage row first (as `link_blob`'s quota check does),
-- so that concurrent links in one project take their locks in one order.
CREATE FUNCTION repo_blobs_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p TEXT := berth_project_of(NEW.repo);
    s BIGINT;
    inserted BOOLEAN;
BEGIN
    INSERT INTO project_usage (project, bytes) VALUES (p, 0)
        ON CONFLICT (project) DO UPDATE SET bytes = project_usage.bytes;
    SELECT size INTO s FROM blobs WHERE digest = NEW.digest;
    INSERT INTO project_blobs (project, digest, size, refs) VALUES (p, NEW.digest, s, 1)
        ON CONFLICT (project, digest) DO UPDATE SET refs = project_blobs.refs + 1
        RETURNING (xmax = 0) INTO inserted;
    IF inserted THEN
        UPDATE project_usage SET bytes = bytes + s WHERE project = p;
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION repo_blobs_uncounted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    p TEXT := berth_project_of(OLD.repo);
    s BIGINT;
BEGIN
    INSERT INTO project_usage (project, bytes) VALUES (p, 0)
        ON CONFLICT (project) DO UPDATE SET bytes = project_usage.bytes;
    UPDATE project_blobs SET refs = refs - 1 WHERE project = p AND digest = OLD.digest;
    DELETE FROM project_blobs WHERE project = p AND digest = OLD.digest AND refs <= 0 RETURNING size INTO s;
    IF s IS NOT NULL THEN
        UPDATE project_usage SET bytes = bytes - s WHERE project = p;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER repo_blobs_counted AFTER INSERT ON repo_blobs
    FOR EACH ROW EXECUTE FUNCTION repo_blobs_counted();
CREATE TRIGGER repo_blobs_uncounted AFTER DELETE ON repo_blobs
    FOR EACH ROW EXECUTE FUNCTION repo_blobs_uncounted();

-- Blobs whose stored bytes the scrub found damaged: not served, not accepted in a
-- manifest, until a push of the right bytes repairs them (`link_blob` removes the row).
CREATE TABLE blob_damage (
    digest   TEXT PRIMARY KEY,
    -- `mismatch`, `missing` or `truncated`, then what was found.
    reason   TEXT NOT NULL,
    found_at BIGINT NOT NULL,
    run_id   BIGINT
);

-- One row per scrub run, updated as it goes.
CREATE TABLE scrub_runs (
    id          BIGSERIAL PRIMARY KEY,
    node        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    -- `running`, `finished`, `failed` (the run stopped: `error` says why).
    state       TEXT NOT NULL,
    blobs_total BIGINT NOT NULL DEFAULT 0,
    checked     BIGINT NOT NULL DEFAULT 0,
    bytes       BIGINT NOT NULL DEFAULT 0,
    damaged     BIGINT NOT NULL DEFAULT 0,
    error       TEXT
);

-- What a run found, kept with the run even after a repair.
CREATE TABLE scrub_findings (
    run_id BIGINT NOT NULL REFERENCES scrub_runs(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (run_id, digest)
);
