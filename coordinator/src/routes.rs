//! The HTTP router: one module per resource, plus health, metrics, the OpenAPI document and
//! the dashboard's static files.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::protocol::Health;

use crate::auth::require_token;
use crate::error::ApiError;
use crate::openapi::{ApiDoc, HealthDoc};
use crate::state::AppState;
use crate::ws::{events, worker};

pub mod artifacts;
pub mod control;
pub mod datasets;
pub mod import;
pub mod jobs;
pub mod shares;
pub mod tokens;
pub mod workers;

/// Shown at `/` when no dashboard build is configured.
const NO_DASHBOARD: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Kiln</title>\
</head><body><h1>Kiln coordinator</h1><p>The dashboard is not built: run <code>scripts/build-web</code> \
in the Kiln sources (<code>scripts/up</code> does it too), or pass <code>--static-dir</code>. The REST API is at \
<code>/api</code> (see <code>/api/openapi.json</code>).</p></body></html>";

/// The whole application. Tests drive it directly or through a socket on `127.0.0.1:0`.
///
/// Each route is registered with its `#[utoipa::path]` operation (`routes!`), so the router and
/// the OpenAPI document come from one list; `split_for_parts` separates them.
pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    // Small JSON bodies.
    let small = OpenApiRouter::new()
        .merge(jobs::router())
        .merge(control::router())
        .merge(shares::router())
        .merge(workers::router())
        .merge(datasets::router())
        .merge(tokens::router())
        .routes(routes!(prometheus))
        .routes(routes!(events::upgrade))
        .layer(RequestBodyLimitLayer::new(max_body));
    // Dataset uploads, imports and artifacts have their own, larger limits (checked as they
    // stream).
    let streamed = datasets::upload_router()
        .merge(import::router())
        .merge(artifacts::router())
        .merge(datasets::content_router())
        .routes(routes!(worker::upgrade))
        .routes(routes!(crate::relay::upgrade));
    // Every route here needs a token whose scope `auth::allowed_scopes` allows for it.
    let protected = small
        .merge(streamed)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // No bearer token: a share token in the path opens one job and its metrics, nothing
    // else. Outside `require_token`; more specific than the `/api/{*rest}` catch-all below.
    let public = shares::public_router().layer(RequestBodyLimitLayer::new(max_body));
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .merge(public)
        .merge(protected)
        .split_for_parts();
    // The middleware's answers (401, 403, 429) are on no handler's annotation.
    crate::openapi::document_auth_errors(&mut doc);
    // The document describes the routes above, so it is served once they are all known;
    // like them, it needs a token (any scope). Serialized once, at start.
    let doc = Bytes::from(
        doc.to_json()
            .expect("the OpenAPI document serializes to JSON"),
    );
    let openapi = get(move || {
        let doc = doc.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
    })
    .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // `scripts/build-web` writes a `.gz` beside each file; browsers that accept gzip get it.
    let dashboard = match &state.config.static_dir {
        Some(dir) => Router::new().fallback_service(
            ServeDir::new(dir)
                .precompressed_gzip()
                .fallback(ServeFile::new(dir.join("index.html")).precompressed_gzip()),
        ),
        None => Router::new().fallback(|| async { Html(NO_DASHBOARD) }),
    };
    api.route("/api/openapi.json", openapi)
        .route("/api/{*rest}", any(api_not_found))
        .merge(dashboard)
        .layer(middleware::from_fn(json_413))
        // JSON and text (a 2,000-point metrics answer shrinks ≈ 6×); not artifacts, which are
        // binary and large, and not the already-gzipped dashboard files.
        .layer(CompressionLayer::new().compress_when(
            DefaultPredicate::new().and(NotForContentType::const_new("application/octet-stream")),
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `RequestBodyLimitLayer` answers 413 with a plain-text body; make it an `ApiErrorBody`.
async fn json_413(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::PayloadTooLarge("the request body is larger than allowed".into())
            .into_response();
    }
    response
}

async fn api_not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no API endpoint {} {}",
        req.method(),
        req.uri().path()
    ))
}

#[utoipa::path(get, path = "/api/health", tag = "meta",
    responses((status = 200, body = HealthDoc)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

#[utoipa::path(get, path = "/metrics", tag = "meta",
    description = "Prometheus text: jobs by state, workers connected, metric points ingested, jobs submitted.",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)),
    security(("bearer" = [])))]
pub async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.store.count_jobs_by_state().await?;
    let text = state
        .telemetry
        .render(&counts, state.workers.connected_count());
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
