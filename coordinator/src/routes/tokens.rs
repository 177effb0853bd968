//! `/api/tokens` (make, list, revoke API tokens) and `/api/audit` (what tokens changed):
//! admin only (`auth::allowed_scopes`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tracing::info;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::token::{AuditEntry, CreateToken, NewToken, TokenInfo};

use crate::auth::{generate_token, hash_token};
use crate::error::{ApiError, ApiJson, parse_param};
use crate::openapi::{ApiErrorDoc, AuditEntryDoc, CreateTokenDoc, NewTokenDoc, TokenInfoDoc};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .routes(routes!(audit))
}

#[utoipa::path(post, path = "/api/tokens", tag = "tokens", operation_id = "create_token",
    description = "A new API token: read (see everything), submit (read, and run, cancel, retry, annotate, import and share jobs, push datasets), admin (everything), or worker (the worker protocol, for the attempts of the workers that connect with it; bound to one worker id with `worker_id`). The token is in the answer only.",
    request_body = CreateTokenDoc,
    responses((status = 201, body = NewTokenDoc), (status = 400, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    body.check().map_err(ApiError::InvalidFields)?;
    let token = generate_token().map_err(ApiError::internal)?;
    let expires_ms = body.expires_in_s.map(|s| {
        crate::store::now_ms()
            .saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
    });
    let info = state
        .store
        .create_token(
            &hash_token(&token),
            body.scope,
            body.name.trim(),
            expires_ms,
            body.worker_id.as_deref().map(str::trim),
        )
        .await?;
    info!(token_id = info.id, scope = %info.scope, name = %info.name, "token created");
    Ok((StatusCode::CREATED, Json(NewToken { info, token })))
}

#[utoipa::path(get, path = "/api/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, body = Vec<TokenInfoDoc>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(state.store.tokens().await?))
}

#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    description = "The token stops working at once. The last admin token cannot be revoked (409).",
    params(("id" = i64, Path, description = "Token id (`kiln token ls`)")),
    responses((status = 200, body = TokenInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc), (status = 409, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::BadRequest(format!("invalid token id `{id}`: expected an integer"))
    })?;
    let info = state.store.revoke_token(id).await?;
    info!(token_id = id, name = %info.name, "token revoked");
    Ok(Json(info))
}

/// `GET /api/audit` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries with a larger `seq` (default 0: from the start).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

#[utoipa::path(get, path = "/api/audit", tag = "tokens", operation_id = "audit_log",
    description = "Requests that changed something (every method but GET) made with admin, submit or read tokens, oldest first: who (the token's id and name), when, what (method and path) and the answer's status.",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntryDoc>), (status = 400, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let after = parse_param::<i64>("after", q.after.as_deref(), "an integer ≥ 0")?.unwrap_or(0);
    let limit = parse_param::<u32>("limit", q.limit.as_deref(), "an integer from 1 to 10000")?
        .unwrap_or(1000);
    if after < 0 {
        return Err(ApiError::BadRequest(format!(
            "invalid query parameter `after`: got `{after}`, allowed: an integer ≥ 0"
        )));
    }
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "invalid query parameter `limit`: got `{limit}`, allowed: an integer from 1 to 10000"
        )));
    }
    Ok(Json(state.store.audit(after, limit).await?))
}
