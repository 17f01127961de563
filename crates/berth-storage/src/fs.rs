//! The filesystem blob store: `blobs/sha256/<2 hex>/<hex>` and `uploads/<id>` under a root.
//! A blob's storage key is its path below `blobs/`.
//!
//! Durability: a staged upload is fsynced, then renamed into place, then its directory is
//! fsynced, so a blob path either does not exist or holds the complete, verified bytes.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_core::Digest;
use futures_util::StreamExt;
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use crate::{BlobStore, ByteStream, StorageError, UploadState};

/// Read and write buffers: large enough that a syscall moves a meaningful amount.
const BUF_SIZE: usize = 1 << 20;

/// Bytes written between background flushes of an upload being written.
const WRITEBACK: u64 = 32 << 20;

pub struct FsBlobStore {
    blobs: PathBuf,
    uploads: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) a store under `root`.
    pub async fn open(root: impl AsRef<Path>) -> io::Result<FsBlobStore> {
        let root = root.as_ref();
        let store = FsBlobStore { blobs: root.join("blobs"), uploads: root.join("uploads") };
        fs::create_dir_all(store.blobs.join("sha256")).await?;
        fs::create_dir_all(&store.uploads).await?;
        Ok(store)
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

async fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir).await?.sync_all().await
}

async fn size_of(path: &Path) -> Result<Option<u64>, StorageError> {
    match fs::metadata(path).await {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path).await {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create_upload(&self, id: &str) -> Result<UploadState, StorageError> {
        let path = self.upload_path(id)?;
        OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(UploadState::new())
    }

    async fn append_upload(
        &self,
        id: &str,
        _state: &str,
        offset: u64,
        mut data: ByteStream,
    ) -> Result<(u64, UploadState), StorageError> {
        let path = self.upload_path(id)?;
        let mut file = OpenOptions::new().write(true).open(&path).await?;
        let actual = file.metadata().await?.len();
        if actual < offset {
            return Err(StorageError::OffsetMismatch { expected: offset, actual });
        }
        if actual > offset {
            // Bytes of an append that never completed (crash, or a body error before the
            // truncate below could run): the metadata says they don't exist.
            file.set_len(offset).await?;
        }
        file.seek(SeekFrom::Start(offset)).await?;
        let mut writer = BufWriter::with_capacity(BUF_SIZE, file);
        let mut written = 0u64;
        let mut unsynced = 0u64;
        let mut writeback: Option<tokio::task::JoinHandle<()>> = None;
        let result: Result<(), StorageError> = async {
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(StorageError::Body)?;
                writer.write_all(&chunk).await?;
                written += chunk.len() as u64;
                unsynced += chunk.len() as u64;
                // Keep the disk busy while bytes arrive, so that the fsync on commit has
                // little left to do: one background flush at a time, every WRITEBACK bytes.
                if unsynced >= WRITEBACK && writeback.as_ref().is_none_or(|w| w.is_finished()) {
                    writer.flush().await?;
                    let file = writer.get_ref().try_clone().await?;
                    writeback = Some(tokio::spawn(async move {
                        // Only an early start: commit's fsync is the one that counts.
                        let _ = file.sync_data().await;
                    }));
                    unsynced = 0;
                }
            }
            writer.flush().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let file = writer.into_inner();
            // Best effort: if this fails too, the next append truncates.
            let _ = file.set_len(offset).await;
            return Err(e);
        }
        Ok((written, UploadState::new()))
    }

    async fn commit_upload(&self, id: &str, _state: &str, len: u64, digest: &Digest) -> Result<String, StorageError> {
        let staged = self.upload_path(id)?;
        let key = Self::key(digest);
        let target = self.blob_path(&key)?;
        if size_of(&target).await?.is_some() {
            remove_if_present(&staged).await?;
            return Ok(key);
        }
        let file = OpenOptions::new().write(true).open(&staged).await?;
        if file.metadata().await?.len() != len {
            file.set_len(len).await?;
        }
        file.sync_all().await?;
        drop(file);
        let dir = target.parent().expect("blob paths have a parent");
        fs::create_dir_all(dir).await?;
        fs::rename(&staged, &target).await?;
        sync_dir(dir).await?;
        Ok(key)
    }

    async fn delete_upload(&self, id: &str, _state: &str) -> Result<(), StorageError> {
        remove_if_present(&self.upload_path(id)?).await
    }

    async fn list_uploads(&self) -> Result<Vec<String>, StorageError> {
        let mut ids = Vec::new();
        let mut dir = fs::read_dir(&self.uploads).await?;
        while let Some(entry) = dir.next_entry().await? {
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }

    async fn blob_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        size_of(&self.blob_path(key)?).await
    }

    async fn read_blob(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream, StorageError> {
        let mut file = File::open(self.blob_path(key)?).await?;
        let stream: ByteStream = match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.start)).await?;
                Box::pin(ReaderStream::with_capacity(file.take(r.end - r.start), BUF_SIZE))
            }
            None => Box::pin(ReaderStream::with_capacity(file, BUF_SIZE)),
        };
        Ok(stream)
    }

    async fn delete_blob(&self, key: &str) -> Result<(), StorageError> {
        remove_if_present(&self.blob_path(key)?).await
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
