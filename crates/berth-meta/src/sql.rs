//! The one SQL implementation of [`MetadataStore`](crate::MetadataStore), instantiated for
//! SQLite and for PostgreSQL by [`sql_store!`].
//!
//! Both dialects take the same statements: `$N` placeholders (SQLite numbers them too),
//! `ON CONFLICT`, and columns whose collation sorts bytewise. A statement that cannot be
//! written once for both does not belong here.

/// Implements `MetadataStore` for a struct with `writer` and `reader` pools and an
/// `async fn durable(&self) -> Result<(), Error>` that makes every write committed so far
/// durable (called after each write that acknowledges something; see the trait's docs).
/// The expanding module defines `row_lock!(share)` and `row_lock!(update)`: the dialect's
/// row-lock clause (PostgreSQL's `FOR SHARE`/`FOR UPDATE`; nothing on SQLite, whose one
/// writer serializes write transactions already).
///
/// Every write that can leave content unreferenced queues it for garbage collection in
/// its own transaction (`gc::sql`): a tag moved or deleted, a manifest deleted or pushed
/// untagged, a blob linked or unlinked.
macro_rules! sql_store {
    ($store:ty) => {
        impl $store {
            /// `put_manifest` (`check`: every blob and child named must be live in the repository)
            /// and `cache_manifest` (not checked).
            async fn store_manifest(&self, m: NewManifest<'_>, check: bool) -> Result<(), Error> {
                let repo = m.repo.as_str();
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let mut missing = Vec::new();
                // A cached manifest's blobs may be missing: not looked up (nor locked).
                let to_check = if check { m.parsed.blobs.as_slice() } else { &[] };
                for blob in to_check {
                    // Locked (PostgreSQL) until the commit: GC's decision on this blob waits
                    // for this put, or this check waits for GC's and sees its outcome. The
                    // blob's row first, then its link, the order GC's `doom_blobs` takes
                    // them in: the other order could deadlock with it.
                    let live = sqlx::query(concat!(
                        "SELECT 1 FROM blobs b WHERE b.digest = $1 AND b.state = 'live'
                           AND NOT EXISTS (SELECT 1 FROM blob_damage d WHERE d.digest = b.digest)",
                        row_lock!(share)
                    ))
                    .bind(blob.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .is_some();
                    let linked = live
                        && sqlx::query(concat!(
                            "SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = $2",
                            row_lock!(share)
                        ))
                        .bind(repo)
                        .bind(blob.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .is_some();
                    if !linked {
                        missing.push(blob.to_string());
                    }
                }
                for child in m.parsed.manifests.iter().chain([m.digest]) {
                    // Locked likewise against GC deleting a child, or this very manifest
                    // (re-pushed to tag it): which is not missing, only about to be inserted.
                    let found = sqlx::query(concat!(
                        "SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2",
                        row_lock!(share)
                    ))
                        .bind(repo)
                        .bind(child.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if found.is_none() && child != m.digest {
                        missing.push(child.to_string());
                    }
                }
                if check && !missing.is_empty() {
                    return Err(Error::new(ErrorKind::ManifestBlobUnknown).with_detail(missing));
                }
                Self::check_quota_held(&mut tx, m.repo).await?;
                let now = now();
                sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(repo)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let annotations =
                    m.parsed.annotations.as_ref().map(|a| serde_json::Value::Object(a.clone()).to_string());
                let inserted = sqlx::query(
                    "INSERT INTO manifests
                       (repo, digest, media_type, artifact_type, subject, annotations, size, body, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .bind(repo)
                .bind(m.digest.as_str())
                .bind(&m.parsed.media_type)
                .bind(m.parsed.artifact_type.as_deref())
                .bind(m.parsed.subject.as_ref().map(|s| s.as_str()))
                .bind(annotations)
                .bind(m.body.len() as i64)
                .bind(m.body)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected()
                    == 1;
                if inserted && m.tags.is_empty() {
                    // Pushed by digest: nothing may ever tag or reference it.
                    $crate::gc::sql::queue_manifest!(&mut *tx, repo, m.digest.as_str(), "untagged")?;
                }
                if inserted {
                    let refs = m.parsed.blobs.iter().map(|d| (d, "blob"))
                        .chain(m.parsed.manifests.iter().map(|d| (d, "manifest")));
                    for (child, kind) in refs {
                        sqlx::query(
                            "INSERT INTO manifest_refs (repo, manifest_digest, child_digest, kind)
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        )
                        .bind(repo)
                        .bind(m.digest.as_str())
                        .bind(child.as_str())
                        .bind(kind)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    }
                }
                let rules = if m.tags.is_empty() { Vec::new() } else { Self::immutable_patterns(&mut tx, m.repo).await? };
                for tag in m.tags {
                    // The tag row is inserted or locked first, and where it pointed is read
                    // under the lock: of two puts moving one tag at once (PostgreSQL), the
                    // second sees the first's manifest, and refuses to move it (an
                    // immutable tag) or queues it.
                    let held: String = sqlx::query(
                        "INSERT INTO tags (repo, name, manifest_digest, pushed_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (repo, name) DO UPDATE SET pushed_at = tags.pushed_at
                         RETURNING manifest_digest",
                    )
                    .bind(repo)
                    .bind(tag.as_str())
                    .bind(m.digest.as_str())
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .get(0);
                    if held != m.digest.as_str() {
                        if let Some(rule) = $crate::policy::sql::matching_rule(&rules, tag.as_str()) {
                            let project = berth_core::access::project_of(m.repo);
                            return Err($crate::policy::sql::immutable(tag.as_str(), rule, project));
                        }
                        // The manifest the tag leaves.
                        $crate::gc::sql::queue_manifest!(&mut *tx, repo, held.as_str(), "tag")?;
                    }
                    sqlx::query("UPDATE tags SET manifest_digest = $3, pushed_at = $4 WHERE repo = $1 AND name = $2")
                        .bind(repo)
                        .bind(tag.as_str())
                        .bind(m.digest.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                if check && (inserted || !m.tags.is_empty()) {
                    // A client's push (a proxy's cached copy is none): announced with its tags.
                    let tags: Vec<&str> = m.tags.iter().map(|t| t.as_str()).collect();
                    $crate::outbox::sql::outbox_event!(
                        &mut *tx, $crate::now_ms(), $crate::outbox::EventKind::ArtifactPushed, repo,
                        Some(m.digest.as_str()), Some(m.parsed.media_type.as_str()), tags.join("\n"),
                        Some(m.body.len() as i64), None::<&str>
                    )?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await
            }
        }

        #[async_trait::async_trait]
        impl $crate::MetadataStore for $store {
            async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
                let row = sqlx::query(
                    "SELECT b.size, b.storage_key FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.repo = $1 AND rb.digest = $2 AND b.state = 'live'
                       AND NOT EXISTS (SELECT 1 FROM blob_damage d WHERE d.digest = b.digest)",
                )
                .bind(repo.as_str())
                .bind(digest.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(row.map(|r| BlobInfo { size: r.get::<i64, _>(0) as u64, key: r.get(1) }))
            }

            async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>, Error> {
                let row = sqlx::query(
                    "SELECT size, storage_key FROM blobs b WHERE digest = $1 AND state = 'live' AND NOT EXISTS (SELECT 1 FROM blob_damage d WHERE d.digest = b.digest)",
                )
                    .bind(digest.as_str())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(row.map(|r| BlobInfo { size: r.get::<i64, _>(0) as u64, key: r.get(1) }))
            }

            async fn repos_with_blob(&self, digest: &Digest, limit: u32) -> Result<Vec<RepoName>, Error> {
                let rows = sqlx::query(
                    "SELECT rb.repo FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.digest = $1 AND b.state = 'live' AND NOT EXISTS (SELECT 1 FROM blob_damage d WHERE d.digest = b.digest)
                     ORDER BY rb.repo LIMIT $2",
                )
                .bind(digest.as_str())
                .bind(limit as i64)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                rows.into_iter().map(|r| repo_name(r.get(0))).collect()
            }

            async fn link_blob(
                &self,
                repo: &RepoName,
                digest: &Digest,
                blob: &BlobInfo,
                upload_id: Option<&str>,
            ) -> Result<String, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let now = now();
                sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(repo.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                Self::repair_damaged(&mut tx, digest, &blob.key).await?;
                // A live blob keeps its bytes; one being deleted by GC comes back to life
                // with the bytes the caller just committed, unless those are the very
                // bytes being deleted (a store that deduplicates found them): then it stays
                // `deleting` and the link fails, cleanly.
                let row = sqlx::query(
                    "INSERT INTO blobs (digest, size, storage_key, state, created_at) VALUES ($1, $2, $3, 'live', $4)
                     ON CONFLICT (digest) DO UPDATE SET
                       storage_key = CASE WHEN blobs.state = 'live' THEN blobs.storage_key ELSE excluded.storage_key END,
                       size = CASE WHEN blobs.state = 'live' THEN blobs.size ELSE excluded.size END,
                       state = CASE WHEN blobs.state = 'live' OR blobs.storage_key <> excluded.storage_key
                                    THEN 'live' ELSE 'deleting' END
                     RETURNING storage_key, state",
                )
                .bind(digest.as_str())
                .bind(blob.size as i64)
                .bind(&blob.key)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                let (key, state): (String, String) = (row.get(0), row.get(1));
                if state != "live" {
                    return Err($crate::gc::being_collected(digest));
                }
                // Uploaded, or mounted: maybe never referenced.
                $crate::gc::sql::queue_blob!(&mut *tx, digest.as_str(), "upload")?;
                if let Err(e) = Self::check_quota(&mut tx, repo, digest, blob.size).await {
                    if e.kind == ErrorKind::Denied {
                        // Refused, but the caller's bytes are stored: recorded without a
                        // link and queued, they are garbage after the grace period.
                        tx.commit().await.map_err(db_err)?;
                    }
                    return Err(e);
                }
                sqlx::query(
                    "INSERT INTO repo_blobs (repo, digest, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(repo.as_str())
                .bind(digest.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if let Some(id) = upload_id {
                    sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&mut *tx).await.map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(key)
            }

            async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let done = sqlx::query("DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if done.rows_affected() > 0 {
                    $crate::gc::sql::queue_blob!(&mut *tx, digest.as_str(), "unlink")?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn create_upload(
                &self,
                id: &str,
                repo: &RepoName,
                state: &str,
                max_open: u32,
            ) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Locks the repository's row until the commit, so that PostgreSQL runs
                // concurrent creations in one repository one after the other and each
                // count below sees the inserts before it (SQLite has one writer anyway).
                sqlx::query("INSERT INTO upload_locks (repo) VALUES ($1) ON CONFLICT (repo) DO UPDATE SET repo = excluded.repo")
                    .bind(repo.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let now = now();
                let done = sqlx::query(
                    "INSERT INTO uploads (id, repo, size, state, started_at, updated_at)
                     SELECT $1, $2, 0, $3, $4, $4
                     WHERE (SELECT COUNT(*) FROM (SELECT 1 FROM uploads WHERE repo = $2 LIMIT $5) AS open) < $5",
                )
                .bind(id)
                .bind(repo.as_str())
                .bind(state)
                .bind(now)
                .bind(max_open as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadRecord>, Error> {
                // A reader sees every commit that finished before the read began (SQLite in
                // WAL mode, PostgreSQL read committed): the last write to this upload.
                let row = sqlx::query(
                    "SELECT size, updated_at, hash_state, state FROM uploads WHERE id = $1 AND repo = $2",
                )
                .bind(id)
                .bind(repo.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
                Ok(row.map(|r| UploadRecord {
                    id: id.to_owned(),
                    repo: repo.clone(),
                    size: r.get::<i64, _>(0) as u64,
                    updated_at: r.get(1),
                    hash_state: r.get(2),
                    state: r.get(3),
                }))
            }

            async fn advance_upload(
                &self,
                id: &str,
                from: u64,
                to: u64,
                hash_state: &[u8],
                state: &str,
            ) -> Result<bool, Error> {
                let done = sqlx::query(
                    "UPDATE uploads SET size = $1, hash_state = $2, state = $3, updated_at = $4
                     WHERE id = $5 AND size = $6",
                )
                .bind(to as i64)
                .bind(hash_state)
                .bind(state)
                .bind(now())
                .bind(id)
                .bind(from as i64)
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_upload(&self, id: &str) -> Result<bool, Error> {
                let done = sqlx::query("DELETE FROM uploads WHERE id = $1")
                    .bind(id)
                    .execute(&self.writer)
                    .await
                    .map_err(db_err)?;
                Ok(done.rows_affected() > 0)
            }

            async fn expire_uploads(&self, before: i64, limit: u32) -> Result<Vec<(String, String)>, Error> {
                let rows = sqlx::query(
                    "DELETE FROM uploads WHERE id IN
                       (SELECT id FROM uploads WHERE updated_at < $1 ORDER BY updated_at LIMIT $2)
                     RETURNING id, state",
                )
                .bind(before)
                .bind(limit as i64)
                .fetch_all(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            }

            async fn known_uploads(&self, ids: &[String]) -> Result<Vec<bool>, Error> {
                let mut known = std::collections::HashSet::new();
                for chunk in ids.chunks($crate::sql::ID_BATCH) {
                    let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                    // Only placeholders are formatted into the statement.
                    let sql = format!("SELECT id FROM uploads WHERE id IN ({})", placeholders.join(", "));
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for id in chunk {
                        query = query.bind(id);
                    }
                    for row in query.fetch_all(&self.writer).await.map_err(db_err)? {
                        known.insert(row.get::<String, _>(0));
                    }
                }
                Ok(ids.iter().map(|id| known.contains(id)).collect())
            }

            async fn put_manifest(&self, m: NewManifest<'_>) -> Result<(), Error> {
                self.store_manifest(m, true).await
            }

            async fn cache_manifest(&self, m: NewManifest<'_>) -> Result<(), Error> {
                self.store_manifest(m, false).await
            }

            async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, Error> {
                let row = match reference {
                    Reference::Digest(d) => {
                        sqlx::query("SELECT digest, media_type, body FROM manifests WHERE repo = $1 AND digest = $2")
                            .bind(repo.as_str())
                            .bind(d.as_str())
                            .fetch_optional(&self.reader)
                            .await
                    }
                    Reference::Tag(t) => {
                        sqlx::query(
                            "SELECT m.digest, m.media_type, m.body FROM tags t
                             JOIN manifests m ON m.repo = t.repo AND m.digest = t.manifest_digest
                             WHERE t.repo = $1 AND t.name = $2",
                        )
                        .bind(repo.as_str())
                        .bind(t.as_str())
                        .fetch_optional(&self.reader)
                        .await
                    }
                }
                .map_err(db_err)?;
                row.map(|r| {
                    let body: Vec<u8> = r.get(2);
                    Ok(ManifestRecord { digest: digest(r.get(0))?, media_type: r.get(1), body: body.into() })
                })
                    .transpose()
            }

            async fn delete_manifest(
                &self,
                repo: &RepoName,
                digest: &Digest,
                condition: $crate::DeleteIf,
            ) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                // Locked first (PostgreSQL): a tag put on it concurrently is either seen by
                // the immutability check below or waits and finds the manifest gone.
                let found = sqlx::query(concat!(
                    "SELECT media_type, size FROM manifests WHERE repo = $1 AND digest = $2",
                    row_lock!(update)
                ))
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let Some(found) = found else {
                    return Ok(false);
                };
                if let $crate::DeleteIf::Unheld { pushed_by } = condition {
                    // Under the lock: an index naming it took the same row in share mode
                    // (`put_manifest`), so one committed since the caller looked is seen.
                    // Garbage as GC sees it when untagged manifests go, and not a referrer.
                    let unheld = sqlx::query(concat!(
                        "SELECT 1 FROM manifests m WHERE m.repo = $1 AND m.digest = $2
                           AND m.subject IS NULL AND m.created_at <= $3 AND",
                        $crate::gc::sql::manifest_is_garbage!("TRUE")
                    ))
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .bind(pushed_by)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    if unheld.is_none() {
                        return Ok(false);
                    }
                }
                Self::check_immutable_delete(&mut tx, repo, None, Some(digest)).await?;
                // Announced with the tags that go with it.
                let tags: Vec<String> = sqlx::query("SELECT name FROM tags WHERE repo = $1 AND manifest_digest = $2 ORDER BY name")
                    .bind(repo.as_str())
                    .bind(digest.as_str())
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                $crate::outbox::sql::outbox_event!(
                    &mut *tx, $crate::now_ms(), $crate::outbox::EventKind::ArtifactDeleted, repo.as_str(),
                    Some(digest.as_str()), Some(found.get::<String, _>(0)), tags.join("\n"),
                    Some(found.get::<i64, _>(1)), None::<&str>
                )?;
                // What it referenced may be garbage now: queued before the references go.
                let deleted = $crate::gc::sql::delete_manifest!(tx, repo.as_str(), digest.as_str())?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(deleted > 0)
            }

            async fn delete_tag(&self, repo: &RepoName, tag: &Tag, expected: Option<&TagTarget>) -> Result<bool, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                Self::check_immutable_delete(&mut tx, repo, Some(tag), None).await?;
                // With `expected`, only the tag as it was seen: one pushed since stays.
                let (digest, pushed_at) = expected.map_or((None, None), |e| (Some(e.digest.as_str()), Some(e.pushed_at)));
                // The tag row is deleted (locked) first, then the manifest it named queued:
                // the order `put_manifest` takes them in, and the manifest is the one the
                // tag named when it went, whatever a concurrent put made of it before.
                let deleted: Option<String> = sqlx::query(
                    "DELETE FROM tags
                     WHERE repo = $1 AND name = $2 AND ($3 IS NULL OR manifest_digest = $3) AND ($4 IS NULL OR pushed_at = $4)
                     RETURNING manifest_digest",
                )
                .bind(repo.as_str())
                .bind(tag.as_str())
                .bind(digest)
                .bind(pushed_at)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .map(|r| r.get(0));
                if let Some(manifest) = &deleted {
                    $crate::gc::sql::queue_manifest!(&mut *tx, repo.as_str(), manifest.as_str(), "tag")?;
                    $crate::outbox::sql::outbox_event!(
                        &mut *tx, $crate::now_ms(), $crate::outbox::EventKind::TagDeleted, repo.as_str(),
                        Some(manifest.as_str()), None::<&str>, tag.as_str(), None::<i64>, None::<&str>
                    )?;
                }
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(deleted.is_some())
            }

            async fn delete_repository(&self, repo: &RepoName) -> Result<Option<u64>, Error> {
                let mut tx = self.writer.begin().await.map_err(db_err)?;
                let found = sqlx::query(concat!("SELECT 1 FROM repositories WHERE name = $1", row_lock!(update)))
                    .bind(repo.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if found.is_none() {
                    return Ok(None);
                }
                Self::check_immutable_delete(&mut tx, repo, None, None).await?;
                // Every blob its manifests name or it links may be garbage now: queued (in
                // digest order, as `queue_children`) before the references and links go.
                sqlx::query(
                    "INSERT INTO gc_blob_review (digest, queued_at, reason)
                     SELECT digest, $2, 'repository' FROM
                       (SELECT child_digest AS digest FROM manifest_refs WHERE repo = $1 AND kind = 'blob'
                        UNION SELECT digest FROM repo_blobs WHERE repo = $1) used
                     ORDER BY digest
                     ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, reason = excluded.reason",
                )
                .bind(repo.as_str())
                .bind($crate::gc::review_now())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                // Tags and references go with the manifests (ON DELETE CASCADE); plain
                // deletes of the links, so the quota triggers see each one go.
                let manifests = sqlx::query("DELETE FROM manifests WHERE repo = $1")
                    .bind(repo.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                for sql in [
                    "DELETE FROM repo_blobs WHERE repo = $1",
                    "DELETE FROM gc_manifest_review WHERE repo = $1",
                    "DELETE FROM manifest_pulls WHERE repo = $1",
                    "DELETE FROM tag_pulls WHERE repo = $1",
                    "DELETE FROM repositories WHERE name = $1",
                ] {
                    sqlx::query(sql).bind(repo.as_str()).execute(&mut *tx).await.map_err(db_err)?;
                }
                $crate::outbox::sql::outbox_event!(
                    &mut *tx, $crate::now_ms(), $crate::outbox::EventKind::RepositoryDeleted, repo.as_str(),
                    None::<&str>, None::<&str>, "", None::<i64>, Some(format!("{manifests} manifests"))
                )?;
                tx.commit().await.map_err(db_err)?;
                self.durable().await?;
                Ok(Some(manifests))
            }

            async fn repo_exists(&self, repo: &RepoName) -> Result<bool, Error> {
                let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
                    .bind(repo.as_str())
                    .fetch_optional(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(row.is_some())
            }

            async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Page>, Error> {
                if !self.repo_exists(repo).await? {
                    return Ok(None);
                }
                let rows = sqlx::query("SELECT name FROM tags WHERE repo = $1 AND name > $2 ORDER BY name LIMIT $3")
                    .bind(repo.as_str())
                    .bind(last.unwrap_or(""))
                    .bind(limit as i64 + 1)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(Some(page(rows.into_iter().map(|r| r.get(0)).collect(), limit)))
            }

            async fn catalog(&self, last: Option<&str>, limit: u32) -> Result<Page, Error> {
                let rows = sqlx::query("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
                    .bind(last.unwrap_or(""))
                    .bind(limit as i64 + 1)
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                Ok(page(rows.into_iter().map(|r| r.get(0)).collect(), limit))
            }

            async fn artifacts(
                &self,
                repo: &RepoName,
                last: Option<&str>,
                limit: u32,
            ) -> Result<Option<Artifacts>, Error> {
                if !self.repo_exists(repo).await? {
                    return Ok(None);
                }
                let rows = sqlx::query(
                    "SELECT digest, media_type, artifact_type, size, created_at FROM manifests
                     WHERE repo = $1 AND digest > $2 ORDER BY digest LIMIT $3",
                )
                .bind(repo.as_str())
                .bind(last.unwrap_or(""))
                .bind(limit as i64 + 1)
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
                let more = rows.len() > limit as usize;
                let mut items = Vec::with_capacity(rows.len().min(limit as usize));
                for r in rows.into_iter().take(limit as usize) {
                    items.push(Artifact {
                        digest: digest(r.get(0))?,
                        media_type: r.get(1),
                        artifact_type: r.get(2),
                        size: r.get::<i64, _>(3) as u64,
                        pushed_at: r.get(4),
                        tags: Vec::new(),
                    });
                }
                if let (Some(first), Some(end)) = (items.first(), items.last()) {
                    // The tags of the page's manifests: one range over the page's digests.
                    let tags = sqlx::query(
                        "SELECT manifest_digest, name FROM tags
                         WHERE repo = $1 AND manifest_digest >= $2 AND manifest_digest <= $3 ORDER BY name",
                    )
                    .bind(repo.as_str())
                    .bind(first.digest.as_str())
                    .bind(end.digest.as_str())
                    .fetch_all(&self.reader)
                    .await
                    .map_err(db_err)?;
                    for t in tags {
                        let of: String = t.get(0);
                        if let Ok(i) = items.binary_search_by(|a| a.digest.as_str().cmp(&of)) {
                            items[i].tags.push(t.get(1));
                        }
                    }
                }
                Ok(Some(Artifacts { items, more }))
            }

            async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool, Error> {
                let now = now();
                let done = sqlx::query(
                    "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
                )
                .bind(name)
                .bind(holder)
                .bind(now + ttl_secs)
                .bind(now)
                .execute(&self.writer)
                .await
                .map_err(db_err)?;
                Ok(done.rows_affected() == 1)
            }

            async fn referrers(
                &self,
                repo: &RepoName,
                subject: &Digest,
                artifact_type: Option<&str>,
                page: PageSpec<'_>,
            ) -> Result<Referrers, Error> {
                macro_rules! select {
                    ($filter:literal) => {
                        concat!(
                            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests
                             WHERE repo = $1 AND subject = $2 AND digest > $3 ",
                            $filter,
                            " ORDER BY digest LIMIT $4"
                        )
                    };
                }
                let sql = match artifact_type {
                    None => select!(""),
                    Some(_) => select!("AND artifact_type = $5"),
                };
                let mut query = sqlx::query(sql)
                    .bind(repo.as_str())
                    .bind(subject.as_str())
                    .bind(page.last.unwrap_or(""))
                    .bind(page.limit as i64 + 1);
                if let Some(t) = artifact_type {
                    query = query.bind(t);
                }
                // Streamed: a page stops at its byte bound without reading further rows.
                let mut rows = query.fetch(&self.reader);
                let mut found = Referrers::default();
                let mut bytes = 0;
                while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await.map_err(db_err)? {
                    let annotations: Option<String> = r.get(4);
                    let descriptor = Descriptor {
                        digest: r.get(0),
                        media_type: r.get(1),
                        size: r.get::<i64, _>(2) as u64,
                        artifact_type: r.get(3),
                        annotations: None,
                        urls: None,
                        platform: None,
                    };
                    // About what the descriptor takes in the response.
                    let size = 64
                        + descriptor.digest.len()
                        + descriptor.media_type.len()
                        + descriptor.artifact_type.as_ref().map_or(0, String::len)
                        + annotations.as_ref().map_or(0, String::len);
                    let full = found.descriptors.len() >= page.limit as usize
                        || (!found.descriptors.is_empty() && bytes + size > page.max_bytes);
                    if full {
                        found.more = true;
                        break;
                    }
                    let annotations = annotations
                        .map(|a| serde_json::from_str(&a))
                        .transpose()
                        .map_err(|e| Error::internal(format!("corrupt annotations: {e}")))?;
                    found.descriptors.push(Descriptor { annotations, ..descriptor });
                    bytes += size;
                }
                Ok(found)
            }
        }
    };
}

pub(crate) use sql_store;

use crate::Page;

/// Ids per statement when looking many up: well under SQLite's limit of bound parameters.
pub(crate) const ID_BATCH: usize = 500;

/// Trims a `limit + 1` result to `limit`, noting whether more followed.
pub(crate) fn page(mut items: Vec<String>, limit: u32) -> Page {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    Page { items, more }
}
