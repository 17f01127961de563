//! The token-signing keys: which keys verify tokens now, rotation (a new key signs from
//! now on; the old ones verify until the tokens they signed expire), and revocation (a
//! key verifies nothing more: at once on this node, within a minute on the others).
//! System administrators only. Only ids and dates leave the server, never a key.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::{Error, ErrorKind};
use berth_meta::SigningKey;
use serde::Serialize;

use super::{Caller, Change, Reply, json, unknown};
use crate::state::Registry;
use berth_access::Access;
use berth_access::keys::KeyRing;
use berth_access::tokens::TokenService;

/// A signing key as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// The JWT `kid` of the tokens it signs.
    kid: String,
    algorithm: String,
    /// Unix seconds.
    created_at: i64,
    /// Unix seconds when it stopped signing; `null` for the key that signs.
    retired_at: Option<i64>,
}

impl From<&SigningKey> for KeyView {
    fn from(k: &SigningKey) -> KeyView {
        KeyView {
            kid: k.kid.clone(),
            algorithm: k.algorithm.clone(),
            created_at: k.created_at,
            retired_at: k.retired_at,
        }
    }
}

/// The token service, when tokens are issued at all.
fn service(registry: &Registry) -> Result<&TokenService, Error> {
    let tokens = registry.tokens.as_ref().ok_or_else(|| {
        Error::new(ErrorKind::NotFound).with_message("this registry issues no tokens: it has no signing keys")
    })?;
    Ok(&tokens.tokens)
}

fn ring(registry: &Registry) -> Result<&KeyRing, Error> {
    Ok(&service(registry)?.keys)
}

#[utoipa::path(get, path = "/api/v1/signing-keys", tag = "keys",
    responses((status = 200, description = "The keys that verify tokens now", body = [KeyView]),
        (status = 403, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let keys = ring(&registry)?.list().await?;
    Ok(json(StatusCode::OK, &keys.iter().map(KeyView::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/signing-keys", tag = "keys",
    responses((status = 201, description = "A new key signs from now on; every node picks it up", body = KeyView),
        (status = 403, body = super::ErrorBody)))]
pub async fn rotate(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let ring = ring(&registry)?;
    let kid = ring.rotate().await?;
    let keys = ring.list().await?;
    let key = keys.iter().find(|k| k.kid == kid).ok_or_else(|| Error::internal("the new signing key is not listed"))?;
    caller
        .audit(&registry, &principal, Change { operation: "key.rotate", project: None, resource: &kid, detail: None })
        .await;
    Ok(json(StatusCode::CREATED, &KeyView::from(key)))
}

#[utoipa::path(delete, path = "/api/v1/signing-keys/{kid}", tag = "keys", params(("kid" = String, Path)),
    responses((status = 204, description = "The key verifies nothing more: at once on this node, on every other \
            within a minute (the key that signs is replaced first)"),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn revoke(State(registry): State<Arc<Registry>>, caller: Caller, Path(kid): Path<String>) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    if !service(&registry)?.revoke(&kid).await? {
        return Err(unknown("signing key", &kid).into());
    }
    caller
        .audit(&registry, &principal, Change { operation: "key.revoke", project: None, resource: &kid, detail: None })
        .await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}
