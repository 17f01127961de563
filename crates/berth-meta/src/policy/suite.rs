//! The behaviour every [`PolicyStore`] backend must show, and how the registry's
//! operations enforce its rules; each backend's tests call [`run`].

use berth_core::{Digest, ErrorKind, MediaType, RepoName, Tag, manifest};

use super::{PolicyStore, Quota};
use crate::{BlobInfo, IdentityStore, MetadataStore, NewManifest};

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

fn info(size: u64, key: &str) -> BlobInfo {
    BlobInfo { size, key: key.to_owned() }
}

/// Puts an image of `layer` (which doubles as its config) under `tags`.
async fn put(
    meta: &dyn MetadataStore,
    repo: &RepoName,
    layer: &Digest,
    tags: &[&str],
) -> Result<Digest, berth_core::Error> {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/x.cfg","digest":"{layer}","size":1}},"layers":[]}}"#,
        MediaType::OCI_MANIFEST
    )
    .into_bytes();
    let parsed = manifest::parse(Some(MediaType::OCI_MANIFEST), &body).unwrap();
    let digest = Digest::of(&body);
    let tags: Vec<Tag> = tags.iter().map(|t| Tag::parse(t).unwrap()).collect();
    meta.put_manifest(NewManifest { repo, digest: &digest, parsed: &parsed, body: &body, tags: &tags }).await?;
    Ok(digest)
}

pub async fn run(meta: &dyn MetadataStore, policy: &dyn PolicyStore, identity: &dyn IdentityStore) {
    identity.create_project("pol", false).await.unwrap();
    immutable_tags_never_move_nor_go(meta, policy).await;
    usage_counts_a_blob_once_per_project(meta, policy).await;
    quotas_refuse_links_past_the_limit(meta, policy).await;
}

async fn immutable_tags_never_move_nor_go(meta: &dyn MetadataStore, policy: &dyn PolicyStore) {
    let r = repo("pol/imm");
    let (one, two) = (Digest::of(b"imm-1"), Digest::of(b"imm-2"));
    meta.link_blob(&r, &one, &info(5, "k1"), None).await.unwrap();
    meta.link_blob(&r, &two, &info(5, "k2"), None).await.unwrap();
    let rule = policy.add_immutable_rule("pol", "v*").await.unwrap();
    assert_eq!(rule.pattern, "v*");
    assert_eq!(policy.add_immutable_rule("pol", "v*").await.unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(policy.add_immutable_rule("nope", "v*").await.unwrap_err().kind, ErrorKind::ResourceUnknown);
    assert_eq!(policy.immutable_rules("pol").await.unwrap(), vec![rule]);

    let first = put(meta, &r, &one, &["v1", "latest"]).await.unwrap();
    // The same digest again is no move.
    put(meta, &r, &one, &["v1"]).await.unwrap();
    let moved = put(meta, &r, &two, &["v1"]).await.unwrap_err();
    assert_eq!(moved.kind, ErrorKind::Denied);
    assert_eq!(moved.message(), r#"tag "v1" is immutable (rule "v*" of project "pol")"#);
    // v1 still names the first.
    let v1 = meta.manifest(&r, &berth_core::Reference::Tag(Tag::parse("v1").unwrap())).await.unwrap().unwrap();
    assert_eq!(v1.digest, first);
    // Mutable tags still move.
    put(meta, &r, &two, &["latest"]).await.unwrap();

    let v1 = Tag::parse("v1").unwrap();
    assert_eq!(meta.delete_tag(&r, &v1, None).await.unwrap_err().kind, ErrorKind::Denied);
    assert_eq!(meta.delete_manifest(&r, &first, crate::DeleteIf::Any).await.unwrap_err().kind, ErrorKind::Denied);
    assert!(policy.remove_immutable_rule("pol", "v*").await.unwrap());
    assert!(!policy.remove_immutable_rule("pol", "v*").await.unwrap());
    assert!(meta.delete_tag(&r, &v1, None).await.unwrap());
}

async fn usage_counts_a_blob_once_per_project(meta: &dyn MetadataStore, policy: &dyn PolicyStore) {
    let (a, b, other) = (repo("usage/a"), repo("usage/b"), repo("elsewhere/a"));
    let (x, y) = (Digest::of(b"usage-x"), Digest::of(b"usage-y"));
    meta.link_blob(&a, &x, &info(100, "kx"), None).await.unwrap();
    meta.link_blob(&b, &x, &info(100, "kx"), None).await.unwrap();
    meta.link_blob(&a, &y, &info(10, "ky"), None).await.unwrap();
    meta.link_blob(&other, &x, &info(100, "kx"), None).await.unwrap();
    assert_eq!(policy.quota("usage").await.unwrap(), Quota { limit: None, used: 110 });
    assert_eq!(policy.quota("elsewhere").await.unwrap().used, 100);
    assert!(meta.unlink_blob(&a, &x).await.unwrap());
    assert_eq!(policy.quota("usage").await.unwrap().used, 110, "b still links x");
    assert!(meta.unlink_blob(&b, &x).await.unwrap());
    assert_eq!(policy.quota("usage").await.unwrap().used, 10);
    assert_eq!(policy.quota("elsewhere").await.unwrap().used, 100);
}

async fn quotas_refuse_links_past_the_limit(meta: &dyn MetadataStore, policy: &dyn PolicyStore) {
    let (a, b) = (repo("pol/q-a"), repo("pol/q-b"));
    let base = policy.quota("pol").await.unwrap().used;
    assert_eq!(policy.set_quota("pol", Some(base + 100)).await.unwrap(), Quota { limit: Some(base + 100), used: base });
    assert_eq!(policy.set_quota("nope", Some(1)).await.unwrap_err().kind, ErrorKind::ResourceUnknown);
    let (x, y) = (Digest::of(b"q-x"), Digest::of(b"q-y"));
    meta.link_blob(&a, &x, &info(80, "qx"), None).await.unwrap();
    // Counted once: linking it into another repository of the project costs nothing.
    meta.link_blob(&b, &x, &info(80, "qx"), None).await.unwrap();
    let refused = meta.link_blob(&a, &y, &info(30, "qy"), None).await.unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Denied);
    assert!(refused.message().starts_with(r#"quota exceeded for project "pol": "#), "{}", refused.message());
    assert_eq!(meta.repo_blob(&a, &y).await.unwrap(), None, "refused as a whole");
    assert_eq!(policy.quota("pol").await.unwrap().used, base + 80);
    // Lowering the limit deletes nothing; a manifest put is then refused.
    assert_eq!(policy.set_quota("pol", Some(10)).await.unwrap().used, base + 80);
    assert!(meta.repo_blob(&a, &x).await.unwrap().is_some());
    assert_eq!(put(meta, &a, &x, &["q"]).await.unwrap_err().kind, ErrorKind::Denied);
    assert_eq!(policy.set_quota("pol", None).await.unwrap().limit, None);
    put(meta, &a, &x, &["q"]).await.unwrap();
    meta.link_blob(&a, &y, &info(30, "qy"), None).await.unwrap();
}
