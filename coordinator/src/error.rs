//! `ApiError`: every failure of a REST handler, and how it looks on the wire.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use kiln_proto::protocol::ApiErrorBody;
use kiln_proto::spec::FieldError;

use crate::store::StoreError;

/// A failed request. 4xx variants carry a message that says exactly what was wrong; 5xx
/// bodies stay generic and the detail is logged once, here.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the job spec has {} problem(s)", .0.len())]
    InvalidSpec(Vec<FieldError>),
    /// A request body other than a spec, with problems by field.
    #[error("the request has {} problem(s)", .0.len())]
    InvalidFields(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidSpec(_) | ApiError::InvalidFields(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(e.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError::NotFound(m),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Invalid(field) => ApiError::InvalidSpec(vec![field]),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let is_spec = matches!(self, ApiError::InvalidSpec(_));
        let body = match self {
            ApiError::InvalidSpec(fields) | ApiError::InvalidFields(fields) => ApiErrorBody {
                error: format!(
                    "the {} has {} problem(s): {}",
                    if is_spec { "job spec" } else { "request" },
                    fields.len(),
                    fields
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                fields,
            },
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                ApiErrorBody {
                    error: "internal server error (the coordinator's log has the details)".into(),
                    fields: Vec::new(),
                }
            }
            other => ApiErrorBody {
                error: other.to_string(),
                fields: Vec::new(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// `axum::Json`, but a bad body is an [`ApiError`] (400 naming serde's complaint, 413 when
/// too large) instead of axum's plain-text rejection. The body must be a JSON object: serde
/// also reads a struct from an array (`[]` is a `JobPatch` with no field, `["n"]` sets notes),
/// which no documented body is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(json_rejection)?;
        if !value.is_object() {
            return Err(ApiError::BadRequest(
                "invalid JSON body: expected a JSON object".into(),
            ));
        }
        // serde_path_to_error (axum's own Json uses it) keeps the field path in the message.
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge("the request body is larger than allowed".into());
    }
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::BadRequest("expected `Content-Type: application/json`".into())
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text()))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("malformed JSON body: {}", e.body_text()))
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Parse one query parameter; the error names it and says what is allowed.
pub fn parse_param<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid query parameter `{name}`: got `{v}`, allowed: {allowed}"
            ))
        }),
    }
}
