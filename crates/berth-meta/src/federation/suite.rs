//! The behaviour every [`FederationStore`] backend must show; each backend's tests call
//! [`run`].

use berth_core::ErrorKind;

use super::{FederationStore, Upstream};
use crate::IdentityStore;

fn upstream(name: &str, project: &str) -> Upstream {
    Upstream {
        name: name.to_owned(),
        url: format!("https://{name}.example"),
        project: project.to_owned(),
        username: Some("reader".to_owned()),
        sealed_password: Some(vec![0, 1, 2, 255]),
        ca_pem: None,
        tag_ttl_secs: 300,
        hosts: vec![format!("{name}.example"), "docker.io".to_owned()],
        short_names: true,
        is_default: false,
        created_at: 0,
        updated_at: 0,
    }
}

pub async fn run(fed: &dyn FederationStore, identity: &dyn IdentityStore) {
    identity.create_project("fed-hub", true).await.unwrap();
    identity.create_project("fed-ghcr", false).await.unwrap();
    identity.create_project("fed-gone", false).await.unwrap();
    upstreams_round_trip_and_keep_their_project(fed).await;
    one_upstream_is_the_default(fed).await;
    an_upstream_goes_with_its_project(fed, identity).await;
    tag_checks_are_kept_per_tag(fed).await;
}

async fn upstreams_round_trip_and_keep_their_project(fed: &dyn FederationStore) {
    let hub = fed.put_upstream(&upstream("hub", "fed-hub"), true).await.unwrap();
    assert!(hub.created_at > 0);
    let listed = fed.upstreams().await.unwrap();
    assert_eq!(listed, vec![hub.clone()], "every field comes back as written, hosts in order");

    let again = fed.put_upstream(&upstream("hub", "fed-ghcr"), true).await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::Conflict, "a name is taken once");
    let same_project = fed.put_upstream(&upstream("ghcr", "fed-hub"), true).await.unwrap_err();
    assert_eq!(same_project.kind, ErrorKind::Conflict, "a project proxies one upstream");
    assert!(same_project.message().contains("fed-hub"), "{same_project:?}");
    let no_project = fed.put_upstream(&upstream("ghcr", "fed-none"), true).await.unwrap_err();
    assert_eq!(no_project.kind, ErrorKind::ResourceUnknown, "{no_project:?}");
    let missing = fed.put_upstream(&upstream("quay", "fed-ghcr"), false).await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::ResourceUnknown, "a replace needs the upstream");

    let replaced = Upstream { username: None, sealed_password: None, tag_ttl_secs: 60, ..hub.clone() };
    let stored = fed.put_upstream(&replaced, false).await.unwrap();
    assert_eq!(stored.created_at, hub.created_at, "a replace keeps the creation time");
    let listed = fed.upstreams().await.unwrap();
    assert_eq!(listed[0].username, None);
    assert_eq!(listed[0].sealed_password, None, "credentials can be removed");
    assert_eq!(listed[0].tag_ttl_secs, 60);
}

async fn one_upstream_is_the_default(fed: &dyn FederationStore) {
    let hub = Upstream { is_default: true, ..upstream("hub", "fed-hub") };
    fed.put_upstream(&hub, false).await.unwrap();
    let ghcr = Upstream { is_default: true, ..upstream("ghcr", "fed-ghcr") };
    fed.put_upstream(&ghcr, true).await.unwrap();
    let defaults: Vec<String> =
        fed.upstreams().await.unwrap().into_iter().filter(|u| u.is_default).map(|u| u.name).collect();
    assert_eq!(defaults, ["ghcr"], "the new default takes the role");
}

async fn an_upstream_goes_with_its_project(fed: &dyn FederationStore, identity: &dyn IdentityStore) {
    fed.put_upstream(&upstream("gone", "fed-gone"), true).await.unwrap();
    identity.delete_project("fed-gone").await.unwrap();
    let names: Vec<String> = fed.upstreams().await.unwrap().into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["ghcr", "hub"]);
    assert!(fed.delete_upstream("ghcr").await.unwrap());
    assert!(!fed.delete_upstream("ghcr").await.unwrap(), "a second delete finds nothing");
    assert!(identity.project("fed-ghcr").await.unwrap().is_some(), "the project stays");
}

async fn tag_checks_are_kept_per_tag(fed: &dyn FederationStore) {
    assert_eq!(fed.tag_checked("fed-hub/nginx", "1.27").await.unwrap(), None);
    fed.check_tag("fed-hub/nginx", "1.27", 100).await.unwrap();
    fed.check_tag("fed-hub/nginx", "1.27", 200).await.unwrap();
    fed.check_tag("fed-hub/nginx", "latest", 50).await.unwrap();
    assert_eq!(fed.tag_checked("fed-hub/nginx", "1.27").await.unwrap(), Some(200), "the latest check counts");
    assert_eq!(fed.tag_checked("fed-hub/nginx", "latest").await.unwrap(), Some(50));
    assert_eq!(fed.tag_checked("fed-hub/redis", "1.27").await.unwrap(), None);
}
