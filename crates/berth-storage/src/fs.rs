//! The filesystem blob store: `blobs/sha256/<2 hex>/<hex>` and `uploads/<id>` under a root.
//! A blob's storage key is its path below `blobs/`.
//!
//! Durability: a staged upload is fsynced, then renamed into place, then its directory is
//! fsynced, so a blob path either does not exist or holds the complete, verified bytes.
//! Staged bytes are not fsynced before the commit: an upload's state is the boot id of
//! the machine that wrote it, and an upload written before the machine went down (its
//! page cache with it) is not continued, since its file may be short or, on a file
//! system without a journal, hold zeros where acknowledged bytes were. A process crash
//! keeps the page cache, and the boot id.
//!
//! Every operation runs its system calls on a blocking thread in one go (not one tokio
//! round trip per call), and only once it has something to do: an append waits for body
//! bytes on the request's task and hands each batch to a blocking write, so a stalled
//! client costs a socket, never a thread. The request task hashes the next batch while
//! the previous one is written.
//!
//! One writer per upload, by construction: every operation on an upload's staged file
//! holds that upload's lock ([`UploadLocks`]), and every blocking write holds a share of
//! it, so the lock is free only when no write to the file can still happen, even if the
//! caller's future was dropped mid-append.
//!
//! Blobs are served by `pread`, never memory-mapped (`serve.rs`): a disk error or a file
//! shorter than recorded fails that one response (and is an error the server logs), never
//! the process; cached bytes are read on the sending task without waiting, cold pages on
//! a blocking thread, never inside the async runtime.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use berth_core::Digest;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::sync::OwnedMutexGuard;
use tokio::task::JoinHandle;

use crate::{BlobStore, ByteStream, StorageError, StoredBlob, UploadState};

mod serve;
use serve::serve;

/// Bytes written to an upload between starts of writeback (see [`start_writeback`]).
const WRITEBACK: u64 = 32 << 20;

/// Body bytes gathered before they are handed to a blocking write: one batch is written
/// while the next is received and hashed, so an append holds at most two in memory.
const BATCH: usize = 1 << 20;

/// Body chunks gathered at most into one batch (each is one `iovec`).
const BATCH_CHUNKS: usize = 256;

/// One lock per staged upload that anything touches right now. A holder owns the staged
/// file: an append, a commit, a delete. Entries go when the last holder drops.
#[derive(Default)]
struct UploadLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// Exclusive use of one staged upload; cloned into every blocking write of an append.
type UploadGuard = Arc<OwnedMutexGuard<()>>;

impl UploadLocks {
    /// Waits until no other operation holds upload `id`, then holds it.
    async fn lock(&self, id: &str) -> UploadGuard {
        let lock = {
            let mut map = self.map.lock().unwrap();
            match map.get(id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    // Forget uploads nobody holds (the map stays as large as the work in
                    // flight), then add this one.
                    if map.len() >= 64 {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        Arc::new(lock.lock_owned().await)
    }
}

pub struct FsBlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    /// The upload state this machine's appends record: its boot id.
    boot: UploadState,
    locks: UploadLocks,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store under `root`.
    pub async fn open(root: impl AsRef<Path>) -> io::Result<FsBlobStore> {
        let root = root.as_ref().to_owned();
        tokio::task::spawn_blocking(move || {
            let store = FsBlobStore {
                blobs: root.join("blobs"),
                uploads: root.join("uploads"),
                boot: boot_state(),
                locks: UploadLocks::default(),
            };
            let sha = store.blobs.join("sha256");
            let new = !sha.exists() || !store.uploads.exists();
            std::fs::create_dir_all(&store.uploads)?;
            std::fs::create_dir_all(&sha)?;
            if new {
                // The tree's own entries are durable before any blob relies on them.
                for dir in [&sha, &store.blobs, &root] {
                    File::open(dir)?.sync_all()?;
                }
            }
            Ok(store)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Staged bytes of an upload at `offset` in `state` can be trusted only if this boot of
    /// the machine wrote them.
    fn check_boot(&self, state: &str, offset: u64) -> Result<(), StorageError> {
        if offset > 0 && state != self.boot {
            return Err(StorageError::OffsetMismatch { expected: offset, actual: 0 });
        }
        Ok(())
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf, StorageError> {
        // Defence in depth: the server only passes UUIDs.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(StorageError::NotFound);
        }
        Ok(self.uploads.join(id))
    }

    fn key(digest: &Digest) -> String {
        let hex = digest.hex();
        format!("sha256/{}/{hex}", &hex[..2])
    }

    fn blob_path(&self, key: &str) -> Result<PathBuf, StorageError> {
        // Keys come from the metadata store; still, never leave `blobs/`.
        if key.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(StorageError::NotFound);
        }
        Ok(self.blobs.join(key))
    }
}

/// `boot:<id>`, the kernel's id of this boot (a constant where there is none).
fn boot_state() -> UploadState {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    format!("boot:{}", id.trim())
}

/// Runs `f` on a blocking thread.
async fn blocking<T, F>(f: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| StorageError::Io(io::Error::other(e)))?
}

fn size_of(path: &Path) -> Result<Option<u64>, StorageError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes every byte of `chunks` at the file's position, in as few calls as it takes.
fn write_all(mut file: &File, chunks: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Starts writing `len` bytes at `offset` to disk on another blocking thread, so that
/// the fsync on commit finds little left to do. Only an early start: the fsync is what
/// counts, and a failure here is ignored.
///
/// It holds no share of the upload's lock: it changes no byte, and the next append need
/// not wait for it.
fn start_writeback(file: &Arc<File>, offset: u64, len: u64) -> JoinHandle<()> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file descriptor this closure keeps open.
            unsafe {
                libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (&file, offset, len);
    })
}

/// Opens an upload's staged file positioned at `offset`, discarding anything past it.
fn open_at(path: &Path, offset: u64) -> Result<File, StorageError> {
    // An upload starting from nothing may find its staging file gone: a retried closing
    // PUT whose first attempt committed it (that PUT records no progress). It starts over.
    let mut file = OpenOptions::new().write(true).create(offset == 0).open(path)?;
    let actual = file.metadata()?.len();
    if actual < offset {
        return Err(StorageError::OffsetMismatch { expected: offset, actual });
    }
    if actual > offset {
        // Bytes of an append that never completed (a crash, or a failure whose truncate
        // did not run): the metadata says they don't exist.
        file.set_len(offset)?;
    }
    file.seek(SeekFrom::Start(offset))?;
    Ok(file)
}

/// Writes one batch at the file's position on a blocking thread that shares the upload's
/// lock, so the lock outlives the write.
fn write_batch(file: &Arc<File>, batch: Vec<Bytes>, guard: &UploadGuard) -> JoinHandle<io::Result<()>> {
    let file = Arc::clone(file);
    let guard = Arc::clone(guard);
    tokio::task::spawn_blocking(move || {
        let result = write_all(&file, &batch);
        drop(guard);
        result
    })
}

async fn joined<T>(task: JoinHandle<io::Result<T>>) -> Result<T, StorageError> {
    Ok(task.await.map_err(|e| StorageError::Io(io::Error::other(e)))??)
}

/// Streams the body into the staged file (open at `offset`): returns the bytes written,
/// or why it stopped. Every write it started has finished when it returns.
async fn pump(file: &Arc<File>, offset: u64, data: &mut ByteStream, guard: &UploadGuard) -> Result<u64, StorageError> {
    let mut written = 0u64;
    let mut writing: Option<JoinHandle<io::Result<()>>> = None;
    // Writeback runs beside the writes, one range at a time.
    let mut flushed = offset;
    let mut flushing: Option<JoinHandle<()>> = None;
    let mut batch = Vec::new();
    let mut batch_len = 0usize;
    let mut ended = false;
    let result = loop {
        if !ended && batch_len < BATCH && batch.len() < BATCH_CHUNKS {
            match data.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    batch_len += chunk.len();
                    batch.push(chunk);
                    continue;
                }
                Some(Err(e)) => break Err(StorageError::Body(e)),
                None => ended = true,
            }
        }
        // A batch is ready (or the body ended): the previous write must be done first.
        if let Some(w) = writing.take()
            && let Err(e) = joined(w).await
        {
            break Err(e);
        }
        if batch.is_empty() {
            break Ok(written);
        }
        written += batch_len as u64;
        batch_len = 0;
        writing = Some(write_batch(file, std::mem::take(&mut batch), guard));
        let end = offset + written;
        if end - flushed >= WRITEBACK && flushing.as_ref().is_none_or(|f| f.is_finished()) {
            flushing = Some(start_writeback(file, flushed, end - flushed));
            flushed = end;
        }
    };
    // No write may run on after this returns (the caller may truncate next).
    if let Some(w) = writing.take() {
        let last = joined(w).await;
        if result.is_ok() {
            last?;
        }
    }
    let written = result?;
    // The tail too: a chunked upload's appends are often each smaller than WRITEBACK.
    if offset + written > flushed {
        start_writeback(file, flushed, offset + written - flushed);
    }
    Ok(written)
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create_upload(&self, id: &str) -> Result<UploadState, StorageError> {
        let path = self.upload_path(id)?;
        let boot = self.boot.clone();
        blocking(move || {
            OpenOptions::new().write(true).create_new(true).open(&path)?;
            Ok(boot)
        })
        .await
    }

    async fn append_upload(
        &self,
        id: &str,
        state: &str,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<(u64, UploadState), StorageError> {
        let path = self.upload_path(id)?;
        self.check_boot(state, offset)?;
        // Nothing touches the file (and no thread is taken) before the body sends a byte.
        let first = loop {
            match data.next().await {
                None => return Ok((0, self.boot.clone())),
                Some(Err(e)) => return Err(StorageError::Body(e)),
                // An empty frame (HTTP/2 clients often end a body with one) is no byte.
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => break chunk,
            }
        };
        let guard = self.locks.lock(id).await;
        let file = {
            let path = path.clone();
            Arc::new(blocking(move || open_at(&path, offset)).await?)
        };
        let mut data: ByteStream = Box::pin(stream::once(async move { Ok(first) }).chain(data));
        let failure = match pump(&file, offset, &mut data, &guard).await {
            Ok(written) => return Ok((written, self.boot.clone())),
            Err(e) => e,
        };
        // All or nothing: drop what this append wrote (never extend a file that is short:
        // that is an offset mismatch, not ours to fill). Best effort: if this fails too,
        // the next append truncates. Every write of this append has finished (`pump`).
        let _ = blocking(move || {
            if file.metadata()?.len() > offset {
                file.set_len(offset)?;
            }
            drop(guard);
            Ok(())
        })
        .await;
        Err(failure)
    }

    async fn commit_upload(&self, id: &str, state: &str, len: u64, digest: &Digest) -> Result<String, StorageError> {
        let staged = self.upload_path(id)?;
        let key = Self::key(digest);
        let target = self.blob_path(&key)?;
        let trusted = self.check_boot(state, len);
        let guard = self.locks.lock(id).await;
        blocking(move || {
            if size_of(&target)?.is_some() {
                remove_if_present(&staged)?;
                return Ok(key);
            }
            trusted?;
            let file = OpenOptions::new().write(true).open(&staged)?;
            let actual = file.metadata()?.len();
            if actual < len {
                // Never padded: the bytes the digest was computed over are not all here.
                return Err(StorageError::OffsetMismatch { expected: len, actual });
            }
            if actual > len {
                // An append that was never acknowledged (a crash between its write and its
                // record): nobody else writes while the lock is held, so these bytes are
                // exactly the unrecorded tail.
                file.set_len(len)?;
            }
            file.sync_data()?;
            drop(file);
            let shard = target.parent().expect("blob paths have a parent");
            match std::fs::create_dir(shard) {
                // A new fan-out directory's entry is made durable before a blob goes in.
                Ok(()) => File::open(shard.parent().expect("shards have a parent"))?.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            std::fs::rename(&staged, &target)?;
            File::open(shard)?.sync_all()?;
            drop(guard);
            Ok(key)
        })
        .await
    }

    async fn delete_upload(&self, id: &str, _state: &str) -> Result<(), StorageError> {
        let path = self.upload_path(id)?;
        let guard = self.locks.lock(id).await;
        blocking(move || {
            let removed = remove_if_present(&path);
            drop(guard);
            removed
        })
        .await
    }

    async fn list_uploads(&self) -> Result<Vec<String>, StorageError> {
        let dir = self.uploads.clone();
        blocking(move || {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                if let Some(name) = entry?.file_name().to_str() {
                    ids.push(name.to_owned());
                }
            }
            Ok(ids)
        })
        .await
    }

    async fn blob_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.blob_path(key)?;
        blocking(move || size_of(&path)).await
    }

    async fn read_blob(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let path = self.blob_path(key)?;
        blocking(move || serve(&path, range)).await
    }

    async fn delete_blob(&self, key: &str) -> Result<(), StorageError> {
        let path = self.blob_path(key)?;
        blocking(move || remove_if_present(&path)).await
    }

    async fn list_blobs(&self, after: Option<&str>, limit: usize) -> Result<Vec<StoredBlob>, StorageError> {
        let root = self.blobs.join("sha256");
        let after = after.unwrap_or("").to_owned();
        blocking(move || list_blobs(&root, &after, limit)).await
    }

    fn stored_name(&self, key: &str) -> Option<String> {
        Some(key.to_owned())
    }

    fn key_per_digest(&self) -> bool {
        true
    }

    async fn delete_stored(&self, names: &[String]) -> Result<(), StorageError> {
        let paths = names.iter().map(|n| self.blob_path(n)).collect::<Result<Vec<_>, _>>()?;
        blocking(move || paths.iter().try_for_each(|p| remove_if_present(p))).await
    }

    async fn probe(&self) -> Result<(), StorageError> {
        let blobs = self.blobs.clone();
        blocking(move || std::fs::metadata(&blobs).map(|_| ()).map_err(StorageError::from)).await
    }
}

/// Up to `limit` blobs under `root` (`blobs/sha256`) named after `after`, sorted: the
/// shards in order, each read whole (a shard holds 1/256 of the blobs).
fn list_blobs(root: &Path, after: &str, limit: usize) -> Result<Vec<StoredBlob>, StorageError> {
    let sorted = |dir: &Path| -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    };
    let mut found = Vec::new();
    for shard in sorted(root)? {
        if found.len() >= limit {
            break;
        }
        if !after.is_empty() && *format!("sha256/{shard}/~") <= *after {
            continue;
        }
        for file in sorted(&root.join(&shard))? {
            let name = format!("sha256/{shard}/{file}");
            if *name <= *after {
                continue;
            }
            let meta = match std::fs::metadata(root.join(&shard).join(&file)) {
                Ok(m) if m.is_file() => m,
                // Removed since the directory was read, or not a blob.
                _ => continue,
            };
            let digest = Digest::parse(&format!("sha256:{file}")).ok();
            found.push(StoredBlob { name, digest, size: meta.len(), modified: meta.modified()? });
            if found.len() >= limit {
                break;
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::serve::SERVE_CHUNK;
    use super::*;

    #[tokio::test]
    async fn fs_store_passes_the_shared_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        crate::suite::run(&store).await;
    }

    fn abc() -> ByteStream {
        crate::suite::body(vec![b"abc".to_vec()])
    }

    /// A store with the upload `id` holding `abc`, and the upload's state.
    async fn staged_abc(id: &str) -> (tempfile::TempDir, FsBlobStore, UploadState) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let state = store.create_upload(id).await.unwrap();
        let (_, state) = store.append_upload(id, &state, 0, abc()).await.unwrap();
        (dir, store, state)
    }

    #[tokio::test]
    async fn staged_bytes_from_another_boot_are_not_continued() {
        let id = "0000bbbb-0000-4000-8000-000000000001";
        let (_dir, store, state) = staged_abc(id).await;
        // The same upload as recorded before a power loss: another boot's state.
        let before = "boot:00000000-0000-0000-0000-000000000000";
        let err = store.append_upload(id, before, 3, abc()).await.unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { .. }), "{err:?}");
        let digest = Digest::of(b"abc");
        let err = store.commit_upload(id, before, 3, &digest).await.unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { .. }), "{err:?}");
        // From nothing, another boot's state is fine: there are no bytes to distrust.
        let (n, fresh) = store.append_upload(id, before, 0, abc()).await.unwrap();
        assert_eq!((n, &fresh), (3, &state));
        store.commit_upload(id, &fresh, 3, &digest).await.unwrap();
    }

    #[tokio::test]
    async fn an_append_past_the_end_changes_nothing() {
        let id = "0000bbbb-0000-4000-8000-000000000002";
        let (dir, store, state) = staged_abc(id).await;
        let err = store.append_upload(id, &state, 10, abc()).await.unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { expected: 10, actual: 3 }), "{err:?}");
        assert_eq!(std::fs::metadata(dir.path().join("uploads").join(id)).unwrap().len(), 3);
    }

    #[tokio::test]
    async fn ids_and_keys_cannot_escape_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path().join("s")).await.unwrap();
        for id in ["../x", "/etc/passwd", "", "a/b"] {
            assert!(matches!(store.create_upload(id).await, Err(StorageError::NotFound)), "{id}");
        }
        for key in ["../uploads/x", "sha256/../../x", "/etc/passwd", ""] {
            assert!(matches!(store.read_blob(key, None).await, Err(StorageError::NotFound)), "{key}");
        }
    }

    #[tokio::test]
    async fn a_commit_never_pads_a_short_staged_file() {
        let id = "0000bbbb-0000-4000-8000-000000000003";
        let (dir, store, state) = staged_abc(id).await;
        let err = store.commit_upload(id, &state, 5, &Digest::of(b"abc\0\0")).await.unwrap_err();
        assert!(matches!(err, StorageError::OffsetMismatch { expected: 5, actual: 3 }), "{err:?}");
        assert_eq!(std::fs::metadata(dir.path().join("uploads").join(id)).unwrap().len(), 3);
        assert!(walk_blobs(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_commit_cuts_an_unrecorded_tail() {
        // An append wrote "abc" but its record never moved past 0..1 (a crash in between).
        let id = "0000bbbb-0000-4000-8000-000000000004";
        let (_dir, store, state) = staged_abc(id).await;
        let key = store.commit_upload(id, &state, 1, &Digest::of(b"a")).await.unwrap();
        let mut read = store.read_blob(&key, None).await.unwrap();
        assert_eq!(read.next().await.unwrap().unwrap().as_ref(), b"a");
    }

    fn walk_blobs(root: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut dirs = vec![root.join("blobs")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() { dirs.push(p) } else { found.push(p) }
            }
        }
        found
    }

    /// A blob of `len` bytes committed whole; its key and its file.
    async fn committed(store: &FsBlobStore, root: &Path, id: &str, len: usize) -> (String, PathBuf) {
        let content: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let state = store.create_upload(id).await.unwrap();
        let (_, state) = store.append_upload(id, &state, 0, crate::suite::body(vec![content.clone()])).await.unwrap();
        let key = store.commit_upload(id, &state, len as u64, &Digest::of(&content)).await.unwrap();
        let path = root.join("blobs").join(&key);
        (key, path)
    }

    /// A fresh store holding one committed blob of `len` bytes: the store, its key and file.
    async fn store_with_blob(id: &str, len: usize) -> (tempfile::TempDir, FsBlobStore, String, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let (key, path) = committed(&store, dir.path(), id, len).await;
        (dir, store, key, path)
    }

    #[tokio::test]
    async fn a_blob_file_shorter_than_recorded_fails_the_read_cleanly() {
        let len = 3 * SERVE_CHUNK + 5;
        let (_dir, store, key, path) = store_with_blob("0000bbbb-0000-4000-8000-000000000005", len).await;
        // Truncated on disk before the read: refused before any byte is sent.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(SERVE_CHUNK as u64).unwrap();
        let err = store.read_blob(&key, Some(0..len as u64)).await.err().expect("a short file must not serve");
        assert!(matches!(err, StorageError::Io(ref e) if e.kind() == io::ErrorKind::InvalidData), "{err:?}");
    }

    #[tokio::test]
    async fn a_blob_file_truncated_while_served_ends_that_stream_with_an_error() {
        let len = 8 * SERVE_CHUNK;
        let (_dir, store, key, path) = store_with_blob("0000bbbb-0000-4000-8000-000000000006", len).await;
        let mut read = store.read_blob(&key, None).await.unwrap();
        let first = read.next().await.unwrap().unwrap();
        assert_eq!(first.len(), SERVE_CHUNK);
        // What memory-mapped serving turned into a SIGBUS for the whole process.
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        let mut failed = false;
        while let Some(chunk) = read.next().await {
            if chunk.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a truncated blob file must end its stream with an error");
    }

    /// Every chunk of `read`, checked to be at most one serving buffer, concatenated.
    async fn chunks(mut read: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = read.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= SERVE_CHUNK, "a chunk of {} bytes: more than one serving buffer", chunk.len());
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[tokio::test]
    async fn ranges_across_serving_chunks_are_byte_exact() {
        let len = 3 * SERVE_CHUNK + 17;
        let (_dir, store, key, path) = store_with_blob("0000bbbb-0000-4000-8000-000000000009", len).await;
        let content = std::fs::read(&path).unwrap();
        let c = SERVE_CHUNK as u64;
        let l = len as u64;
        for range in [0..l, 1..l, c - 5..2 * c + 9, c..2 * c, l - 3..l, 7..7, 0..c + 1] {
            let got = chunks(store.read_blob(&key, Some(range.clone())).await.unwrap()).await;
            assert!(got[..] == content[range.start as usize..range.end as usize], "range {range:?} differs");
        }
    }

    #[tokio::test]
    async fn a_blob_out_of_the_page_cache_is_read_without_stalling_the_runtime() {
        use std::os::fd::AsRawFd;
        // Needs a file system backed by a disk (not tmpfs): its pages must be droppable.
        let len = 6 * SERVE_CHUNK + 3;
        let (_dir, store, key, path) = store_with_blob("0000bbbb-0000-4000-8000-00000000000a", len).await;
        let content = std::fs::read(&path).unwrap();
        let evict = || {
            let file = File::open(&path).unwrap();
            // SAFETY: a plain system call on an open file; the committed file is clean.
            assert_eq!(unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
            file
        };
        // What the sending task does: bytes the page cache holds are read at once (what
        // `std::fs::read` just read is cached) ...
        let file = File::open(&path).unwrap();
        let cached = serve::read(&file, 1, SERVE_CHUNK, serve::Wait::No).unwrap();
        assert!(cached[..] == content[1..1 + SERVE_CHUNK]);
        // ... and a read that would wait for the disk refuses instead.
        let file = evict();
        let err = serve::read(&file, SERVE_CHUNK as u64, SERVE_CHUNK, serve::Wait::No).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        // And the stream reads what is not cached on a blocking thread, in order.
        evict();
        assert!(chunks(store.read_blob(&key, None).await.unwrap()).await == content);
    }

    #[tokio::test]
    async fn an_append_dropped_mid_body_leaves_the_upload_to_the_next_writer() {
        let id = "0000bbbb-0000-4000-8000-000000000007";
        let (dir, store, state) = staged_abc(id).await;
        // A body that sends 4 MiB and then stalls forever (a client that went quiet).
        let big = Bytes::from(vec![b'x'; 4 << 20]);
        let stalled: ByteStream = Box::pin(stream::iter(vec![Ok(big)]).chain(stream::pending()));
        let append = store.append_upload(id, &state, 3, stalled);
        // The handler's future is dropped (client disconnect, HTTP/2 reset) while it runs.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), append).await;
        // The next append from the recorded size owns the file alone: its bytes, and only
        // its bytes, follow the acknowledged ones.
        let (n, state) = store.append_upload(id, &state, 3, crate::suite::body(vec![b"def".to_vec()])).await.unwrap();
        assert_eq!(n, 3);
        assert_eq!(std::fs::read(dir.path().join("uploads").join(id)).unwrap(), b"abcdef");
        store.commit_upload(id, &state, 6, &Digest::of(b"abcdef")).await.unwrap();
    }

    #[tokio::test]
    async fn empty_body_frames_are_no_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).await.unwrap();
        let id = "0000bbbb-0000-4000-8000-000000000008";
        let state = store.create_upload(id).await.unwrap();
        let framed = crate::suite::body(vec![vec![], b"ab".to_vec(), vec![], b"c".to_vec(), vec![]]);
        let (n, state) = store.append_upload(id, &state, 0, framed).await.unwrap();
        assert_eq!(n, 3);
        let (n, state) = store.append_upload(id, &state, 3, crate::suite::body(vec![vec![]])).await.unwrap();
        assert_eq!(n, 0);
        store.commit_upload(id, &state, 3, &Digest::of(b"abc")).await.unwrap();
    }
}
