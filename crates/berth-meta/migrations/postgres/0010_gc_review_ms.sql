-- Review times in Unix milliseconds (they were whole seconds, issue 17): a candidate is due
-- once `queued_at + grace <= now`, so a grace of 0 s makes it due as soon as it is queued,
-- not from the next second on. The review runner compares at this precision. Entries a
-- node of an older version still writes in seconds during a rolling upgrade are read as
-- seconds (values below 10^11: `due_by!` in gc/sql.rs).
UPDATE gc_blob_review SET queued_at = queued_at * 1000;
UPDATE gc_manifest_review SET queued_at = queued_at * 1000;
