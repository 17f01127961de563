-- Identical pulls recorded together are one entry (issue 9's speed): how many events an
-- entry stands for. 1 for everything else.
ALTER TABLE audit_log ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
