//! The behaviour every [`OpsStore`] backend must show; each backend's tests call [`run`].

use berth_core::{Digest, RepoName};

use super::OpsStore;
use crate::{BlobInfo, MetadataStore};

pub async fn run(ops: &dyn OpsStore, meta: &dyn MetadataStore) {
    ops.check_ready().await.expect("a freshly migrated database is ready");
    let pools = ops.pool_usage();
    assert!(!pools.is_empty());
    for p in &pools {
        assert!(p.idle <= p.size && p.size <= p.max && p.max > 0, "{p:?}");
    }
    assert_eq!(ops.storage_by_project().await.unwrap(), vec![]);

    let repo = |s: &str| RepoName::parse(s).unwrap();
    let (shared, own, solo) = (Digest::of(b"shared"), Digest::of(b"own"), Digest::of(b"solo"));
    let info = |size, key: &str| BlobInfo { size, key: key.to_owned() };
    // `shared` is linked twice in `team` and counted there once.
    meta.link_blob(&repo("team/a"), &shared, &info(100, "k/shared"), None).await.unwrap();
    meta.link_blob(&repo("team/b"), &shared, &info(100, "k/shared"), None).await.unwrap();
    meta.link_blob(&repo("team/b"), &own, &info(7, "k/own"), None).await.unwrap();
    // One-component names are `library`'s; a blob shared across projects counts in each.
    meta.link_blob(&repo("solo"), &solo, &info(5, "k/solo"), None).await.unwrap();
    meta.link_blob(&repo("other/x/y"), &shared, &info(100, "k/shared"), None).await.unwrap();
    let expected = vec![("library".to_owned(), 5), ("other".to_owned(), 100), ("team".to_owned(), 107)];
    assert_eq!(ops.storage_by_project().await.unwrap(), expected);

    // Settings: absent until set, then replaced.
    assert_eq!(ops.setting("read_only").await.unwrap(), None);
    ops.set_setting("read_only", "true").await.unwrap();
    ops.set_setting("other", "x").await.unwrap();
    ops.set_setting("read_only", "false").await.unwrap();
    assert_eq!(ops.setting("read_only").await.unwrap().as_deref(), Some("false"));
    assert_eq!(ops.setting("other").await.unwrap().as_deref(), Some("x"));
}
