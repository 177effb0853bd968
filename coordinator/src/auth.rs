//! Bearer tokens: generated with the OS RNG, stored as SHA-256 hashes, checked per request.
//! Share-link tokens (`routes::shares`) come from the same generator and are hashed alike.

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

/// Hex digits in a [`random_hex`] secret.
pub const SECRET_HEX_LEN: usize = 64;

/// 256 bits from the OS random number generator as 64 lowercase hex digits.
pub fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; SECRET_HEX_LEN / 2];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(hex::encode(bytes))
}

/// A fresh random API token: `kiln_` and 64 hex digits (256 bits from the OS).
pub fn generate_token() -> anyhow::Result<String> {
    Ok(format!("kiln_{}", random_hex()?))
}

/// A fresh share-link token: 64 lowercase hex digits, no prefix (see `routes::shares`).
pub fn generate_share_token() -> anyhow::Result<String> {
    random_hex()
}

/// Whether `token` has the shape of a share token; anything else is refused unlooked-up.
pub fn is_share_token(token: &str) -> bool {
    token.len() == SECRET_HEX_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_tokens_are_256_bit_lowercase_hex_and_differ() {
        let a = generate_share_token().expect("OS RNG");
        let b = generate_share_token().expect("OS RNG");
        assert_eq!(a.len(), 64);
        assert!(is_share_token(&a) && is_share_token(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_ne!(hash_token(&a), a, "stored as a hash");
        let api = generate_token().expect("OS RNG");
        assert!(api.starts_with("kiln_") && !is_share_token(&api));
        for bad in [
            "",
            "../x",
            "abcdef0123",
            &a.to_uppercase(),
            &format!("{a}0"),
            &a[1..],
        ] {
            assert!(!is_share_token(bad), "{bad}");
        }
    }
}
