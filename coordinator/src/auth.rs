//! Bearer tokens: generated with the OS RNG, stored as SHA-256 hashes, checked per request,
//! each with a scope (`kiln_proto::token::TokenScope`) that [`allowed_scopes`] matches against
//! the route. Share-link tokens (`routes::shares`) come from the same generator and are hashed
//! alike. Also here: the bad-token rate limit, the `Origin` check of WebSocket upgrades and the
//! audit log of requests that changed something.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, UPGRADE};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rand::TryRngCore;
use sha2::{Digest, Sha256};
use tracing::warn;

use kiln_proto::token::{AuditEntry, TokenInfo, TokenScope};

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling; put in the request's extensions by [`require_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token: TokenInfo,
}

impl Caller {
    pub fn scope(&self) -> TokenScope {
        self.token.scope
    }
}

const READ: &[TokenScope] = &[TokenScope::Read, TokenScope::Submit, TokenScope::Admin];
const SUBMIT: &[TokenScope] = &[TokenScope::Submit, TokenScope::Admin];
const ADMIN: &[TokenScope] = &[TokenScope::Admin];
const WORKER: &[TokenScope] = &[TokenScope::Worker, TokenScope::Admin];
const READ_OR_WORKER: &[TokenScope] = &[
    TokenScope::Read,
    TokenScope::Submit,
    TokenScope::Admin,
    TokenScope::Worker,
];

/// The scopes that may call `method` on the route `route` (its template, e.g.
/// `/api/jobs/{id}`): the one table of who may do what. A route not listed is admin-only.
pub fn allowed_scopes(method: &Method, route: &str) -> &'static [TokenScope] {
    match (method.as_str(), route) {
        ("GET", "/api/openapi.json") => READ_OR_WORKER,
        // What a worker fetches and stores for its attempts (checked per attempt in the
        // route), and what users download.
        ("GET", "/api/jobs/{id}/artifacts" | "/api/jobs/{id}/artifacts/{name}") => READ_OR_WORKER,
        ("GET", "/api/datasets/{dataset}/content") => READ_OR_WORKER,
        ("PUT", "/api/jobs/{id}/artifacts/{name}") => WORKER,
        ("GET", "/ws/worker" | "/api/relay/{job_id}/{attempt}/{link}") => WORKER,
        // Seeing.
        (
            "GET",
            "/api/jobs"
            | "/api/jobs/{id}"
            | "/api/jobs/{id}/attempts"
            | "/api/jobs/{id}/metrics"
            | "/api/jobs/{id}/logs"
            | "/api/jobs/{id}/shares"
            | "/api/workers"
            | "/api/datasets"
            | "/api/datasets/{dataset}"
            | "/api/datasets/{dataset}/versions"
            | "/ws/events"
            | "/metrics",
        ) => READ,
        // Doing: jobs, their share links, datasets.
        ("POST", "/api/jobs" | "/api/jobs/import")
        | ("PATCH", "/api/jobs/{id}")
        | (
            "POST",
            "/api/jobs/{id}/cancel"
            | "/api/jobs/{id}/retry"
            | "/api/jobs/{id}/shares"
            | "/api/jobs/{id}/control"
            | "/api/jobs/{id}/fork",
        )
        | ("DELETE", "/api/shares/{share_id}")
        | ("PUT", "/api/datasets/{dataset}")
        | ("POST", "/api/datasets/{dataset}/versions") => SUBMIT,
        // Everything else: tokens, the audit log, draining workers, deleting datasets.
        _ => ADMIN,
    }
}

/// How many bad tokens one client address may send per [`BAD_TOKEN_WINDOW`] before its
/// requests are refused (429) until the window ends.
pub const BAD_TOKENS_ALLOWED: u32 = 20;
pub const BAD_TOKEN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest windows go first).
const BAD_TOKEN_ADDRESSES: usize = 10_000;

/// Bad bearer tokens by client address, to refuse a client that keeps guessing.
#[derive(Debug, Default)]
pub struct BadTokens {
    seen: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

impl BadTokens {
    /// `Some(seconds left)` when `peer` is over the limit.
    fn limited(&self, peer: Option<IpAddr>) -> Option<u64> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (count, since) = seen.get(&peer)?;
        let left = BAD_TOKEN_WINDOW.checked_sub(since.elapsed())?;
        (*count >= BAD_TOKENS_ALLOWED).then(|| left.as_secs().max(1))
    }

    fn record(&self, peer: Option<IpAddr>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= BAD_TOKEN_ADDRESSES && !seen.contains_key(&peer) {
            seen.retain(|_, (_, since)| since.elapsed() < BAD_TOKEN_WINDOW);
            if seen.len() >= BAD_TOKEN_ADDRESSES
                && let Some(oldest) = seen.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k)
            {
                seen.remove(&oldest);
            }
        }
        let entry = seen.entry(peer).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= BAD_TOKEN_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
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
    if is_websocket(req.headers())
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

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// A browser's WebSocket to us must come from a page of ours: its `Origin` (browsers always
/// send one; native clients send none) names the host the request went to. Otherwise any
/// site could open a socket with a token it got hold of in a user's browser.
fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
        return Err(ApiError::Forbidden(format!(
            "a WebSocket from the page origin `{origin}` is refused: only pages served by this \
             coordinator ({host}) may open one"
        )));
    }
    Ok(())
}

/// The header a worker names itself in when its token is not bound to one worker id.
pub const WORKER_HEADER: &str = "x-kiln-worker";

/// A worker token acts only for the attempts of its workers: `Ok(None)` for any other caller;
/// for a worker token, `Ok(Some(the worker it acts as))` when that worker (its bound id, or
/// [`WORKER_HEADER`]) last connected with this token and is a rank of job `job_id`'s current,
/// running attempt.
pub async fn check_worker_acts_for_job(
    state: &AppState,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    job_id: i64,
) -> Result<Option<String>, ApiError> {
    let Some(caller) = caller.filter(|c| c.scope() == TokenScope::Worker) else {
        return Ok(None);
    };
    let named = headers.get(WORKER_HEADER).and_then(|v| v.to_str().ok());
    let acting = match (&caller.token.worker_id, named) {
        (Some(bound), Some(named)) if bound != named => {
            return Err(ApiError::Forbidden(format!(
                "this worker token is bound to worker `{bound}`, not `{named}`"
            )));
        }
        (Some(bound), _) => bound.as_str(),
        (None, Some(named)) => named,
        (None, None) => {
            return Err(ApiError::Forbidden(format!(
                "a worker token must name the worker it acts for (the `{WORKER_HEADER}` \
                 header)"
            )));
        }
    };
    if state
        .store
        .worker_runs_job(caller.token.id, acting, job_id)
        .await?
    {
        Ok(Some(acting.to_string()))
    } else {
        Err(ApiError::Forbidden(format!(
            "worker `{acting}` does not run job {job_id} with this token: a worker token acts \
             only for the attempts of the workers that connected with it"
        )))
    }
}

/// Middleware: a known, unexpired token whose scope may use this route ([`allowed_scopes`]);
/// puts the [`Caller`] in the request's extensions. A client address that sent too many bad
/// tokens gets 429 for its bad tokens for a while; requests that change something are
/// written to the audit log.
pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Over the limit, an address's bad tokens get 429 instead of 401; a good token still
    // passes, so clients behind one proxy address are not all locked out by one of them.
    let refuse = |error: ApiError| match state.bad_tokens.limited(peer) {
        Some(secs) => ApiError::TooManyRequests(format!(
            "too many bad tokens from this address; try again in {secs} s"
        )),
        None => {
            state.bad_tokens.record(peer);
            error
        }
    };
    let token = bearer(&req)?;
    let Some(stored) = state.store.token_by_hash(&hash_token(&token)).await? else {
        return Err(refuse(ApiError::Unauthorized(
            "the bearer token is not valid for this coordinator".into(),
        )));
    };
    if stored.expired {
        return Err(refuse(ApiError::Unauthorized(format!(
            "the token `{}` expired; ask an admin for a new one (kiln token create)",
            stored.info.name
        ))));
    }
    let caller = Caller { token: stored.info };
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    // Changes, and attempts at them, by people's tokens (workers' are their protocol).
    let audited = method != Method::GET && caller.scope() != TokenScope::Worker;
    let path = req.uri().path().to_string();
    let audit = |status: u16| {
        let entry = AuditEntry {
            seq: 0,
            ts_ms: crate::store::now_ms(),
            token_id: Some(caller.token.id),
            token_name: caller.token.name.clone(),
            scope: caller.scope(),
            method: method.to_string(),
            path: path.clone(),
            status,
            peer: peer.map(|p| p.to_string()),
        };
        let state = state.clone();
        async move {
            if audited && let Err(e) = state.store.insert_audit(&entry).await {
                warn!(error = %e, "cannot write the audit log");
            }
        }
    };
    let allowed = allowed_scopes(&method, &route);
    if !allowed.contains(&caller.scope()) {
        let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
        let error = ApiError::Forbidden(format!(
            "{method} {route} needs a token with scope {}; this is a {} token",
            names.join(" or "),
            caller.scope()
        ));
        audit(StatusCode::FORBIDDEN.as_u16()).await;
        return Err(error);
    }
    if is_websocket(req.headers()) {
        check_origin(req.headers())?;
    }
    req.extensions_mut().insert(caller.clone());
    let response = next.run(req).await;
    audit(response.status().as_u16()).await;
    Ok(response)
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
