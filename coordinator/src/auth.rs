//! Bearer tokens: generated with the OS RNG, stored as SHA-256 hashes, checked per request.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::TokenKind;

/// Who is calling; put in the request's extensions by [`require_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub kind: TokenKind,
}

/// A fresh random token: `kiln_` and 64 hex digits (256 bits from the OS).
pub fn generate_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(format!("kiln_{}", hex::encode(bytes)))
}

/// Hex SHA-256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The bearer token of a request. WebSocket upgrades may pass it as `?access_token=` instead,
/// because browsers cannot set headers on a WebSocket.
fn bearer(req: &Request) -> Result<String, ApiError> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| {
            ApiError::Unauthorized("the Authorization header is not valid text".into())
        })?;
        return match value.strip_prefix("Bearer ") {
            Some(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
            _ => Err(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            )),
        };
    }
    let is_upgrade = req
        .headers()
        .get(axum::http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if is_upgrade
        && let Some(query) = req.uri().query()
        && let Some(token) = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("access_token="))
    {
        return Ok(token.to_string());
    }
    Err(ApiError::Unauthorized(
        "missing `Authorization: Bearer <token>` header".into(),
    ))
}

/// Middleware: any known token (admin or worker).
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(&req)?;
    let kind = state
        .store
        .token_kind(&hash_token(&token))
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized("the bearer token is not valid for this coordinator".into())
        })?;
    req.extensions_mut().insert(Caller { kind });
    Ok(next.run(req).await)
}

/// Middleware (inside [`require_token`]): an admin token.
pub async fn require_admin(req: Request, next: Next) -> Result<Response, ApiError> {
    match req.extensions().get::<Caller>() {
        Some(Caller {
            kind: TokenKind::Admin,
        }) => Ok(next.run(req).await),
        Some(_) => Err(ApiError::Forbidden(format!(
            "{} needs an admin token; a worker token may only use /ws/worker and artifacts",
            req.uri().path()
        ))),
        None => Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <token>` header".into(),
        )),
    }
}
