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

/// Secured routes a worker token may use too (`require_token` only); every other secured route
/// is admin-only (`require_admin`). Keep in step with `routes::app`'s `any_token` router.
const ANY_TOKEN_PATHS: &[&str] = &[
    "/api/jobs/{id}/artifacts",
    "/api/jobs/{id}/artifacts/{name}",
    "/api/datasets/{dataset}/content",
    "/ws/worker",
    "/api/relay/{job_id}/{attempt}/{link}",
];

/// Add the answers of the auth middlewares, which no handler annotation lists: 401
/// (`require_token`) on every operation with a `security` requirement, 403 (`require_admin`: a
/// worker token) on the admin-only ones. Runs on the finished document: `ApiDoc`'s modifiers
/// run before `routes::app` merges the routes' paths in.
pub fn document_auth_errors(doc: &mut utoipa::openapi::OpenApi) {
    let error = |description: &str| {
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
    for (path, item) in doc.paths.paths.iter_mut() {
        let admin_only = !ANY_TOKEN_PATHS.contains(&path.as_str());
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in operations.into_iter().flatten() {
            if op.security.as_ref().is_none_or(Vec::is_empty) {
                continue;
            }
            let responses = &mut op.responses.responses;
            responses
                .entry("401".into())
                .or_insert_with(|| error("Missing, malformed or unknown bearer token").into());
            if admin_only {
                responses
                    .entry("403".into())
                    .or_insert_with(|| error("A worker token on an admin-only route").into());
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln coordinator", description = "Jobs, workers, metrics, artifacts, datasets and read-only share links."),
    components(schemas(
        JobInfoDoc, JobPageDoc, JobPatchDoc, SubmitJobDoc, AttemptInfoDoc, MetricPointDoc, LogEntryDoc,
        ArtifactInfoDoc, WorkerInfoDoc, ShareInfoDoc, NewShareDoc, CreateShareDoc, SharedRunDoc, ApiErrorDoc,
        DatasetInfoDoc, NameDatasetDoc, HealthDoc
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;
