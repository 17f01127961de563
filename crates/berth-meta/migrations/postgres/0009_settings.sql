-- Registry-wide settings an administrator changes at run time (issue 11: read-only mode
-- set through the management API applies to every node). Each node re-reads them
-- every few seconds.
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
