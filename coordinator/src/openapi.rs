//! The OpenAPI document's header (`GET /api/openapi.json`): title, description, the bearer
//! security scheme and the schemas of the wire types. Its paths come from the handlers'
//! `#[utoipa::path]` attributes as `routes.rs` registers them (utoipa-axum's `routes!`), so
//! this module names no handler and imports nothing from `routes` or `ws`.
//!
//! The wire types live in `kiln-proto`, which must not depend on utoipa; they appear here as
//! named object schemas (`JobInfo`, …) that point at their Rust definition.

use std::borrow::Cow;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder, Schema, Type};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

macro_rules! wire_schema {
    ($doc:ident, $name:literal, $description:literal) => {
        wire_schema!($doc, $name, $description, "protocol");
    };
    ($doc:ident, $name:literal, $description:literal, $module:literal) => {
        #[doc = $description]
        pub struct $doc;
        impl PartialSchema for $doc {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some(concat!(
                        $description,
                        " Defined by `kiln_proto::",
                        $module,
                        "::",
                        $name,
                        "`."
                    )))
                    .into()
            }
        }
        impl ToSchema for $doc {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

wire_schema!(
    JobInfoDoc,
    "JobInfo",
    "A job: state, progress, attempts, its spec and its revision."
);
wire_schema!(
    JobPageDoc,
    "JobPage",
    "A page of jobs, newest first, with the total count and the revision it was read at."
);
wire_schema!(
    SubmitJobDoc,
    "SubmitJob",
    "A job spec and an optional sweep group."
);
wire_schema!(
    JobPatchDoc,
    "JobPatch",
    "A run's notes and/or tags (tags replace the list; at most 16, each 1 to 32 of A-Z a-z 0-9 - _ . : /)."
);
wire_schema!(
    ControlActionDoc,
    "ControlAction",
    "A live change to a running job: {\"action\":\"pause\"}, {\"action\":\"resume\"}, {\"action\":\"checkpoint\"} or {\"action\":\"set_lr\",\"lr\":0.001} (0 < lr <= 10)."
);
wire_schema!(
    ForkJobDoc,
    "ForkJob",
    "step (a checkpoint's step; default the newest), spec (default the job's; same model and dataset), tags."
);
wire_schema!(AttemptInfoDoc, "AttemptInfo", "One attempt of a job.");
wire_schema!(
    MetricPointDoc,
    "MetricPoint",
    "A stored metric with its attempt."
);
wire_schema!(
    LogEntryDoc,
    "LogEntry",
    "A stored log line with its sequence number."
);
wire_schema!(ArtifactInfoDoc, "ArtifactInfo", "A stored file of a job.");
wire_schema!(
    WorkerInfoDoc,
    "WorkerInfo",
    "A connected or recently seen worker."
);
wire_schema!(
    ShareInfoDoc,
    "ShareInfo",
    "A read-only share link of a job: id, token hint, created and revoked times."
);
wire_schema!(
    NewShareDoc,
    "NewShare",
    "A new share link: its info, the token (shown only once) and the path `/s/<token>`."
);
wire_schema!(
    CreateShareDoc,
    "CreateShare",
    "Options of a new share link: `with_data` (default false) also opens the run's stored training data."
);
wire_schema!(
    SharedRunDoc,
    "SharedRun",
    "What a share link shows: the job, without its worker."
);
wire_schema!(
    ApiErrorDoc,
    "ApiErrorBody",
    "Every 4xx/5xx body: `error`, and `fields` for an invalid spec."
);

wire_schema!(
    DatasetInfoDoc,
    "DatasetInfo",
    "A stored dataset version: name, SHA-256 digest, kind (idx, csv, text), size, version, and a preview (CSV header and first rows, text head, or each IDX file's shape).",
    "dataset"
);
wire_schema!(
    NameDatasetDoc,
    "NameDataset",
    "`{\"digest\": \"<64 hex>\"}`: an already-stored dataset to give a name (a new version).",
    "dataset"
);

wire_schema!(
    CreateTokenDoc,
    "CreateToken",
    "`{\"scope\": \"read\"|\"submit\"|\"admin\"|\"worker\", \"name\": \"…\", \"expires_in_s\"?: 60…315360000, \"worker_id\"?: \"…\" (worker tokens)}`.",
    "token"
);
wire_schema!(
    NewTokenDoc,
    "NewToken",
    "The new token (`token`, shown once) and its listing (`info`).",
    "token"
);
wire_schema!(
    TokenInfoDoc,
    "TokenInfo",
    "A token as listed: id, name, scope, created_ms, expires_ms, worker_id (never the token).",
    "token"
);
wire_schema!(
    AuditEntryDoc,
    "AuditEntry",
    "One request that changed something: seq, ts_ms, token_id, token_name, scope, method, path, status, peer.",
    "token"
);

// The schema of `kiln_proto::protocol::Health`, here because kiln-proto does not depend on
// utoipa. Its doc comment is the schema's description.
/// `GET /api/health`.
#[derive(ToSchema)]
#[schema(as = Health)]
pub struct HealthDoc {
    /// Always `ok`.
    pub status: String,
    /// Coordinator version.
    pub version: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Add the answers of the auth middleware, which no handler annotation lists, to every
/// operation with a `security` requirement: 401 (no, an unknown or an expired token), 403 (a
/// scope that may not use it, per `auth::allowed_scopes`, which the description names), 429
/// (too many bad tokens). Runs on the finished document: `ApiDoc`'s modifiers run before
/// `routes::app` merges the routes' paths in.
pub fn document_auth_errors(doc: &mut utoipa::openapi::OpenApi) {
    let error = |description: String| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                    .build(),
            )
            .build()
    };
    use axum::http::Method;
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::PATCH, &mut item.patch),
        ];
        for (method, op) in operations {
            let Some(op) = op else { continue };
            if op.security.as_ref().is_none_or(Vec::is_empty) {
                continue;
            }
            let allowed: Vec<&str> = crate::auth::allowed_scopes(&method, path)
                .iter()
                .map(|s| s.as_str())
                .collect();
            let responses = &mut op.responses.responses;
            responses.entry("401".into()).or_insert_with(|| {
                error("Missing, malformed, unknown or expired bearer token".into()).into()
            });
            responses.entry("403".into()).or_insert_with(|| {
                error(format!(
                    "The token's scope may not do this (allowed: {})",
                    allowed.join(", ")
                ))
                .into()
            });
            responses.entry("429".into()).or_insert_with(|| {
                error("Too many bad tokens from this address; try again later".into()).into()
            });
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln coordinator", description = "Jobs, workers, metrics, artifacts, datasets and read-only share links."),
    components(schemas(
        JobInfoDoc, JobPageDoc, JobPatchDoc, SubmitJobDoc, ControlActionDoc, ForkJobDoc, AttemptInfoDoc, MetricPointDoc, LogEntryDoc,
        ArtifactInfoDoc, WorkerInfoDoc, ShareInfoDoc, NewShareDoc, CreateShareDoc, SharedRunDoc, ApiErrorDoc,
        DatasetInfoDoc, NameDatasetDoc, HealthDoc, CreateTokenDoc, NewTokenDoc, TokenInfoDoc,
        AuditEntryDoc
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
