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
//! round trip per call). An append streams the body to a writer thread that owns the
//! file, so the request task hashes while that thread writes, without copying the bytes
//! into intermediate buffers. Blobs of [`MAP_AT`] bytes or more are served from a memory
//! map: the kernel copies straight from the page cache to the socket.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_core::Digest;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::sync::mpsc;

use crate::{BlobStore, ByteStream, StorageError, UploadState};

/// Bytes written to an upload between starts of writeback (see [`start_writeback`]).
const WRITEBACK: u64 = 32 << 20;

/// Body chunks queued for an upload's writer thread: few, so that an append that ends
/// has little left to drain before it can answer (a chunked upload pays that per chunk).
const QUEUE: usize = 4;

/// Blobs (or ranges) at least this large are served from a memory map; smaller ones are
/// read whole with one `pread`.
const MAP_AT: u64 = 1 << 20;

/// What one chunk of a blob served from a map holds.
const SERVE_CHUNK: usize = 4 << 20;

pub struct FsBlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
    /// The upload state this machine's appends record: its boot id.
    boot: UploadState,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store under `root`.
    pub async fn open(root: impl AsRef<Path>) -> io::Result<FsBlobStore> {
        let root = root.as_ref().to_owned();
        tokio::task::spawn_blocking(move || {
            let store = FsBlobStore { blobs: root.join("blobs"), uploads: root.join("uploads"), boot: boot_state() };
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
fn write_all(file: &mut File, chunks: &[Bytes]) -> io::Result<()> {
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
fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<tokio::task::JoinHandle<()>> {
    let file = file.try_clone()?;
    Ok(tokio::runtime::Handle::current().spawn_blocking(move || {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain system call on a file descriptor this closure owns.
            unsafe {
                libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (file, offset, len);
    }))
}

/// The writer thread of one append: opens the staged file at `offset` and writes what
/// arrives on `rx` until it closes. Returns the file and the bytes written.
fn write_upload(path: &Path, offset: u64, mut rx: mpsc::Receiver<Bytes>) -> Result<(File, u64), StorageError> {
    // An upload starting from nothing may find its staging file gone: a retried closing
    // PUT whose first attempt committed it (that PUT records no progress). It starts over.
    let mut file = OpenOptions::new().write(true).create(offset == 0).open(path)?;
    let actual = file.metadata()?.len();
    if actual < offset {
        return Err(StorageError::OffsetMismatch { expected: offset, actual });
    }
    if actual > offset {
        // Bytes of an append that never completed (crash, or a body error before the
        // truncate could run): the metadata says they don't exist.
        file.set_len(offset)?;
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut written = 0u64;
    // Writeback runs beside this thread, one range at a time: started from here, a
    // congested disk would stall the copying and the disk would idle between ranges.
    let mut flushed = offset;
    let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
    let mut batch = Vec::with_capacity(QUEUE);
    while let Some(chunk) = rx.blocking_recv() {
        batch.push(chunk);
        while batch.len() < QUEUE {
            match rx.try_recv() {
                Ok(chunk) => batch.push(chunk),
                Err(_) => break,
            }
        }
        write_all(&mut file, &batch)?;
        written += batch.drain(..).map(|c| c.len() as u64).sum::<u64>();
        let end = offset + written;
        if end - flushed >= WRITEBACK && flushing.as_ref().is_none_or(|f| f.is_finished()) {
            flushing = Some(start_writeback(&file, flushed, end - flushed)?);
            flushed = end;
        }
    }
    // The tail too: a chunked upload's appends are often each smaller than WRITEBACK.
    if offset + written > flushed {
        start_writeback(&file, flushed, offset + written - flushed)?;
    }
    Ok((file, written))
}

/// A blob range as a stream: read whole if small, else slices of a memory map.
fn serve(path: &Path, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size {
        return Err(StorageError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {range:?} of a {size}-byte blob"),
        )));
    }
    let len = range.end - range.start;
    if len < MAP_AT {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, range.start)?;
        return Ok(Box::pin(stream::once(async move { Ok(Bytes::from(buf)) })));
    }
    // One map per chunk, unmapped once the chunk is sent: what the process maps stays a
    // few chunks, not the blob. SAFETY: blob files are immutable: written and fsynced
    // under another name, renamed into place, never modified or truncated afterwards,
    // only unlinked (which leaves a mapping intact). An I/O error while the kernel reads a
    // mapped page is a SIGBUS rather than an error return; the price of one copy fewer
    // per byte served.
    let chunks = len.div_ceil(SERVE_CHUNK as u64);
    Ok(Box::pin(stream::iter(0..chunks).map(move |i| {
        let start = range.start + i * SERVE_CHUNK as u64;
        let len = (range.end - start).min(SERVE_CHUNK as u64) as usize;
        let map = unsafe { memmap2::MmapOptions::new().offset(start).len(len).map(&file)? };
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Bytes::from_owner(map))
    })))
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
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || write_upload(&path, offset, rx))
        };
        // Feed the writer until the body ends, the body fails, or the writer stops (then
        // its result says why).
        let mut body_error = None;
        while let Some(chunk) = data.next().await {
            match chunk {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| StorageError::Io(io::Error::other(e)))?;
        let failure = match (written, body_error) {
            (Ok((_, written)), None) => return Ok((written, self.boot.clone())),
            (Ok((file, _)), Some(e)) => (Some(file), StorageError::Body(e)),
            (Err(e), _) => (None, e),
        };
        // All or nothing: drop what this append wrote (never extend a file that is short:
        // that is an offset mismatch, not ours to fill). Best effort: if this fails too,
        // the next append truncates.
        let (file, err) = failure;
        let _ = blocking(move || {
            let file = match file {
                Some(file) => file,
                None => OpenOptions::new().write(true).open(&path)?,
            };
            if file.metadata()?.len() > offset {
                file.set_len(offset)?;
            }
            Ok(())
        })
        .await;
        Err(err)
    }

    async fn commit_upload(&self, id: &str, state: &str, len: u64, digest: &Digest) -> Result<String, StorageError> {
        let staged = self.upload_path(id)?;
        let key = Self::key(digest);
        let target = self.blob_path(&key)?;
        let trusted = self.check_boot(state, len);
        blocking(move || {
            if size_of(&target)?.is_some() {
                remove_if_present(&staged)?;
                return Ok(key);
            }
            trusted?;
            let file = OpenOptions::new().write(true).open(&staged)?;
            if file.metadata()?.len() != len {
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
            Ok(key)
        })
        .await
    }

    async fn delete_upload(&self, id: &str, _state: &str) -> Result<(), StorageError> {
        let path = self.upload_path(id)?;
        blocking(move || remove_if_present(&path)).await
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
}

#[cfg(test)]
mod tests {
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
}
