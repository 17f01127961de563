//! The behaviour every [`BlobStore`] backend must show; each backend's tests call [`run`].

use berth_core::Digest;
use bytes::Bytes;
use futures_util::{StreamExt, stream};

use crate::{BlobStore, ByteStream, StorageError};

pub(crate) fn body(parts: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))).collect::<Vec<_>>()))
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

/// Deterministic incompressible bytes.
pub(crate) fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub async fn run(store: &dyn BlobStore) {
    // Chunks small and large: backends with a minimum part size must still take them.
    let content = bytes(7 * 1024 * 1024 + 3, 1);
    let cuts = [0, 10, 100_000, 6 * 1024 * 1024, content.len()];
    let id = "0000aaaa-0000-4000-8000-000000000001";
    let mut state = store.create_upload(id).await.unwrap();
    let initial = state.clone();
    for w in cuts.windows(2) {
        let (n, s) =
            store.append_upload(id, &state, w[0] as u64, body(vec![content[w[0]..w[1]].to_vec()])).await.unwrap();
        assert_eq!(n as usize, w[1] - w[0]);
        state = s;
        if w[1] == 100_000 {
            // A failed append leaves the upload where it was.
            let err = store.append_upload(id, &state, 100_000, failing_body(b"garbage")).await.unwrap_err();
            assert!(matches!(err, StorageError::Body(_)), "{err:?}");
        }
    }
    let digest = Digest::of(&content);
    let key = store.commit_upload(id, &state, content.len() as u64, &digest).await.unwrap();
    assert_eq!(store.blob_size(&key).await.unwrap(), Some(content.len() as u64));
    assert!(!store.list_uploads().await.unwrap().contains(&id.to_owned()));
    assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content, "content differs");
    assert_eq!(collect(store.read_blob(&key, Some(6..9)).await.unwrap()).await, &content[6..9]);
    // Committing the same upload again (a crash before the metadata recorded it) finds it.
    assert_eq!(store.commit_upload(id, &state, content.len() as u64, &digest).await.unwrap(), key);

    // A whole-blob retry of the closing request, from the upload's first state, after its
    // first attempt committed: the upload starts over and the commit finds the blob.
    let (n, again) = store.append_upload(id, &initial, 0, body(vec![content.clone()])).await.unwrap();
    assert_eq!(n as usize, content.len());
    assert_eq!(store.commit_upload(id, &again, content.len() as u64, &digest).await.unwrap(), key);
    assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content, "content differs after a retry");

    // Committing identical content again from another upload: where keys are per digest
    // the bytes are kept once; otherwise the upload keeps its own copy (never another
    // upload's bytes), which the caller drops when the metadata already names one.
    let id2 = "0000aaaa-0000-4000-8000-000000000002";
    let state2 = store.create_upload(id2).await.unwrap();
    let (_, state2) = store.append_upload(id2, &state2, 0, body(vec![content.clone()])).await.unwrap();
    assert!(store.list_uploads().await.unwrap().contains(&id2.to_owned()));
    let key2 = store.commit_upload(id2, &state2, content.len() as u64, &digest).await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty());
    if store.key_per_digest() {
        assert_eq!(key2, key);
    } else {
        assert_ne!(key2, key);
        assert!(collect(store.read_blob(&key2, None).await.unwrap()).await == content, "the second copy differs");
        store.delete_blob(&key2).await.unwrap();
        assert_eq!(store.blob_size(&key2).await.unwrap(), None);
        assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content, "deleting a copy took the other");
    }

    // A small blob, one append.
    let id3 = "0000aaaa-0000-4000-8000-000000000003";
    let state3 = store.create_upload(id3).await.unwrap();
    let (_, state3) =
        store.append_upload(id3, &state3, 0, body(vec![b"hello ".to_vec(), b"world".to_vec()])).await.unwrap();
    let small = store.commit_upload(id3, &state3, 11, &Digest::of(b"hello world")).await.unwrap();
    assert_eq!(collect(store.read_blob(&small, None).await.unwrap()).await, b"hello world");

    // Listing: every stored blob under its store name, in pages; removal by name.
    let names = [store.stored_name(&key).unwrap(), store.stored_name(&small).unwrap()];
    let listed = store.list_blobs(None, 100).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (name, size, d) in [(&names[0], content.len() as u64, &digest), (&names[1], 11, &Digest::of(b"hello world"))] {
        let found = listed.iter().find(|b| &b.name == name).expect("a stored blob is listed");
        assert_eq!(found.size, size);
        assert!(found.digest.as_ref().is_none_or(|listed| listed == d));
        let age = found.modified.elapsed().unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(600), "modified {age:?} ago");
    }
    let first = store.list_blobs(None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0], listed[0], "sorted by name");
    assert_eq!(store.list_blobs(Some(&first[0].name), 100).await.unwrap(), listed[1..].to_vec());
    assert!(store.list_blobs(Some(&listed[1].name), 100).await.unwrap().is_empty());
    store.delete_stored(&names[1..]).await.unwrap();
    store.delete_stored(&names[1..]).await.unwrap();
    assert_eq!(store.blob_size(&small).await.unwrap(), None);
    assert_eq!(store.list_blobs(None, 100).await.unwrap().len(), 1);

    // Deleting is idempotent.
    store.delete_blob(&key).await.unwrap();
    store.delete_blob(&key).await.unwrap();
    assert_eq!(store.blob_size(&key).await.unwrap(), None);
    assert!(matches!(store.read_blob(&key, None).await, Err(StorageError::NotFound)));
    let id4 = "0000aaaa-0000-4000-8000-000000000004";
    let state4 = store.create_upload(id4).await.unwrap();
    store.delete_upload(id4, &state4).await.unwrap();
    store.delete_upload(id4, &state4).await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty());
}
