//! The behaviour every [`BlobStore`] backend must show; each backend's tests call [`run`].

use berth_core::Digest;
use bytes::Bytes;
use futures_util::{StreamExt, stream};

use crate::{BlobStore, ByteStream, StorageError};

fn body(parts: &[&'static [u8]]) -> ByteStream {
    Box::pin(stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()))
}

fn failing_body(first: &'static [u8]) -> ByteStream {
    Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(first)),
        Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "client went away")),
    ]))
}

async fn collect(s: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

pub async fn run(store: &dyn BlobStore) {
    let id = "0000aaaa-0000-4000-8000-000000000001";
    store.create_upload(id).await.unwrap();
    assert_eq!(store.append_upload(id, 0, body(&[b"hello ", b"wor"])).await.unwrap(), 9);

    // A failed append leaves the upload where it was.
    let err = store.append_upload(id, 9, failing_body(b"garbage")).await.unwrap_err();
    assert!(matches!(err, StorageError::Body(_)), "{err:?}");
    assert_eq!(collect(store.read_upload(id, 9).await.unwrap()).await, b"hello wor");

    // Appending at the wrong offset is refused.
    let err = store.append_upload(id, 20, body(&[b"x"])).await.unwrap_err();
    assert!(matches!(err, StorageError::OffsetMismatch { expected: 20, actual: 9 }), "{err:?}");

    assert_eq!(store.append_upload(id, 9, body(&[b"ld"])).await.unwrap(), 2);
    let digest = Digest::of(b"hello world");
    assert_eq!(store.blob_size(&digest).await.unwrap(), None);
    store.commit_upload(id, 11, &digest).await.unwrap();
    assert_eq!(store.blob_size(&digest).await.unwrap(), Some(11));
    assert!(!store.list_uploads().await.unwrap().contains(&id.to_owned()));

    assert_eq!(collect(store.read_blob(&digest, None).await.unwrap()).await, b"hello world");
    assert_eq!(collect(store.read_blob(&digest, Some(6..9)).await.unwrap()).await, b"wor");

    // Committing identical content again dedupes and drops the second upload.
    let id2 = "0000aaaa-0000-4000-8000-000000000002";
    store.create_upload(id2).await.unwrap();
    store.append_upload(id2, 0, body(&[b"hello world"])).await.unwrap();
    assert!(store.list_uploads().await.unwrap().contains(&id2.to_owned()));
    store.commit_upload(id2, 11, &digest).await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty());
    assert_eq!(store.blob_size(&digest).await.unwrap(), Some(11));

    // Deleting is idempotent.
    store.delete_blob(&digest).await.unwrap();
    store.delete_blob(&digest).await.unwrap();
    assert_eq!(store.blob_size(&digest).await.unwrap(), None);
    assert!(matches!(store.read_blob(&digest, None).await, Err(StorageError::NotFound)));
    let id3 = "0000aaaa-0000-4000-8000-000000000003";
    store.create_upload(id3).await.unwrap();
    store.delete_upload(id3).await.unwrap();
    store.delete_upload(id3).await.unwrap();
    assert!(matches!(store.append_upload(id3, 0, body(&[b"x"])).await, Err(StorageError::NotFound)));
}
