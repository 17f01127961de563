//! The registry as a whole: read-only mode, turned on and off by a system administrator
//! for every node (`system.rs`: stored, and re-read by each node within seconds); it
//! refuses pushes and deletes on `/v2` and every other management write.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Reply, json, parse_body};
use crate::state::Registry;
use berth_access::Access;

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOnly {
    /// Pushes and deletes are refused; pulls continue.
    read_only: bool,
}

#[utoipa::path(get, path = "/api/v1/system/read-only", tag = "system",
    responses((status = 200, body = ReadOnly), (status = 403, body = super::ErrorBody)))]
pub async fn get_read_only(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    Ok(json(StatusCode::OK, &ReadOnly { read_only: registry.read_only.load(Ordering::Relaxed) }))
}

#[utoipa::path(put, path = "/api/v1/system/read-only", tag = "system", request_body = ReadOnly,
    responses((status = 200, body = ReadOnly), (status = 403, body = super::ErrorBody)))]
pub async fn put_read_only(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let wanted: ReadOnly = parse_body(&body)?;
    crate::system::set_read_only(&registry, wanted.read_only).await?;
    let detail = Some(format!("read_only={}", wanted.read_only));
    let change = Change { operation: "system.read-only", project: None, resource: "registry", detail };
    caller.audit(&registry, &principal, change).await;
    Ok(json(StatusCode::OK, &wanted))
}
