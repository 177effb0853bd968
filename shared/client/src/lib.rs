//! kiln-client: a typed async client for the coordinator's REST API (the CLI, workers and
//! tests use it).
//!
//! It compiles for native targets (reqwest over hyper with rustls) and for
//! `wasm32-unknown-unknown` (reqwest over the browser's `fetch`); every call used here exists
//! on both, so nothing is gated by target.
//!
//! ```no_run
//! # async fn demo(spec: kiln_proto::JobSpec) -> Result<(), kiln_client::ClientError> {
//! use kiln_client::Client;
//! let client = Client::new("http://127.0.0.1:7070", Some("kiln_…".into()))?;
//! let job = client.submit(&kiln_proto::protocol::SubmitJob { spec, group: None, tags: Vec::new() }).await?;
//! println!("job {} is {}", job.id, job.state.as_str());
//! # Ok(())
//! # }
//! ```

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use kiln_proto::dataset::{DatasetInfo, Digest, NameDataset};
use kiln_proto::metric::Split;
use kiln_proto::protocol::{
    ApiErrorBody, ArtifactInfo, AttemptInfo, ControlAction, CreateShare, ForkJob, Health,
    IMPORT_RUN_PART, ImportRun, JobId, JobInfo, JobPage, JobPatch, JobState, LogEntry, MetricPoint,
    NewShare, ShareInfo, SharedRun, SubmitJob, WorkerInfo,
};
use kiln_proto::spec::FieldError;
use kiln_proto::token::{AuditEntry, CreateToken, NewToken, TokenInfo};

/// What went wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator answered with an error status; `message` is its explanation.
    #[error("the coordinator answered {status}: {message}")]
    Api {
        status: StatusCode,
        message: String,
        /// For an invalid spec: every problem, by field.
        fields: Vec<FieldError>,
    },
    /// No answer (connection refused, timeout, …).
    #[error("cannot reach the coordinator at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the API promises.
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("invalid coordinator URL `{0}`")]
    BadUrl(String),
    /// A request that could not be put into bytes.
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

impl ClientError {
    /// The HTTP status, for an error the coordinator answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `GET /api/jobs` filters; `None` leaves a filter out.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub group: Option<String>,
    /// Part of the job name.
    pub name: Option<String>,
    /// A tag the job has.
    pub tag: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

/// `GET /api/jobs/{id}/metrics` query.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricQuery {
    pub split: Option<Split>,
    pub from_step: Option<u64>,
    pub to_step: Option<u64>,
    pub max_points: Option<usize>,
}

impl MetricQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(split) = self.split {
            let s = match split {
                Split::Train => "train",
                Split::Val => "val",
                Split::Test => "test",
            };
            q.push(("split", s.to_string()));
        }
        if let Some(f) = self.from_step {
            q.push(("from_step", f.to_string()));
        }
        if let Some(t) = self.to_step {
            q.push(("to_step", t.to_string()));
        }
        if let Some(m) = self.max_points {
            q.push(("max_points", m.to_string()));
        }
        q
    }
}

/// A REST client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The worker this client acts for (`X-Kiln-Worker`), when its token is a worker token.
    worker_id: Option<String>,
}

impl Client {
    /// `base_url` like `http://127.0.0.1:7070`; `token` is sent as `Authorization: Bearer`.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, ClientError> {
        let base = base_url.trim_end_matches('/').to_string();
        reqwest::Url::parse(&base).map_err(|_| ClientError::BadUrl(base_url.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Transport {
                url: base.clone(),
                source,
            })?;
        Ok(Client {
            http,
            base,
            token,
            worker_id: None,
        })
    }

    /// The same client, acting for worker `id`: a worker token's artifact requests say which
    /// worker they are for (the coordinator checks that worker runs the job).
    pub fn as_worker(mut self, id: &str) -> Client {
        self.worker_id = Some(id.to_string());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL of `path` (`ws://…` or `wss://…`).
    pub fn ws_url(&self, path: &str) -> String {
        let base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{base}{path}")
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = &self.worker_id {
            req = req.header("x-kiln-worker", id);
        }
        req
    }

    /// A request without the bearer token (public endpoints).
    fn public_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let response = req.send().await.map_err(|source| ClientError::Transport {
            url: self.base.clone(),
            source,
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let url = response.url().to_string();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api {
                status,
                message: body.error,
                fields: body.fields,
            }),
            Err(_) => Err(ClientError::Api {
                status,
                message: if text.is_empty() {
                    format!("{status} from {url}")
                } else {
                    text
                },
                fields: Vec::new(),
            }),
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        decode(self.send(req).await?).await
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(self.request(Method::GET, "/api/health")).await
    }

    pub async fn submit(&self, job: &SubmitJob) -> Result<JobInfo, ClientError> {
        self.json(self.request(Method::POST, "/api/jobs").json(job))
            .await
    }

    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, ClientError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(s) = filter.state {
            query.push(("state", s.as_str().to_string()));
        }
        if let Some(g) = &filter.group {
            query.push(("group", g.clone()));
        }
        if let Some(n) = &filter.name {
            query.push(("name", n.clone()));
        }
        if let Some(t) = &filter.tag {
            query.push(("tag", t.clone()));
        }
        if let Some(l) = filter.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(o) = filter.offset {
            query.push(("offset", o.to_string()));
        }
        self.json(self.request(Method::GET, "/api/jobs").query(&query))
            .await
    }

    pub async fn job(&self, id: JobId) -> Result<JobInfo, ClientError> {
        self.json(self.request(Method::GET, &format!("/api/jobs/{id}")))
            .await
    }

    /// Set a job's notes and/or tags.
    pub async fn annotate(&self, id: JobId, patch: &JobPatch) -> Result<JobInfo, ClientError> {
        self.json(
            self.request(Method::PATCH, &format!("/api/jobs/{id}"))
                .json(patch),
        )
        .await
    }

    pub async fn cancel(&self, id: JobId) -> Result<JobInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/api/jobs/{id}/cancel")))
            .await
    }

    pub async fn retry(&self, id: JobId) -> Result<JobInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/api/jobs/{id}/retry")))
            .await
    }

    /// Pause, resume, checkpoint or change the learning rate of a queued or running job. The
    /// answer is the job as the coordinator asked it; the job's log says when its worker did.
    pub async fn control(&self, id: JobId, action: ControlAction) -> Result<JobInfo, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/api/jobs/{id}/control"))
                .json(&action),
        )
        .await
    }

    /// A new queued job that resumes from one of job `id`'s checkpoints.
    pub async fn fork(&self, id: JobId, fork: &ForkJob) -> Result<JobInfo, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/api/jobs/{id}/fork"))
                .json(fork),
        )
        .await
    }

    pub async fn attempts(&self, id: JobId) -> Result<Vec<AttemptInfo>, ClientError> {
        self.json(self.request(Method::GET, &format!("/api/jobs/{id}/attempts")))
            .await
    }

    pub async fn metrics(
        &self,
        id: JobId,
        query: &MetricQuery,
    ) -> Result<Vec<MetricPoint>, ClientError> {
        self.json(
            self.request(Method::GET, &format!("/api/jobs/{id}/metrics"))
                .query(&query.pairs()),
        )
        .await
    }

    /// Log lines with `seq > after_seq`, oldest first.
    pub async fn logs(
        &self,
        id: JobId,
        after_seq: i64,
        limit: Option<u32>,
    ) -> Result<Vec<LogEntry>, ClientError> {
        let mut q: Vec<(&str, String)> = vec![("after", after_seq.to_string())];
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        self.json(
            self.request(Method::GET, &format!("/api/jobs/{id}/logs"))
                .query(&q),
        )
        .await
    }

    pub async fn artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>, ClientError> {
        self.json(self.request(Method::GET, &format!("/api/jobs/{id}/artifacts")))
            .await
    }

    pub async fn download_artifact(&self, id: JobId, name: &str) -> Result<Vec<u8>, ClientError> {
        let response = self
            .send(self.request(Method::GET, &format!("/api/jobs/{id}/artifacts/{name}")))
            .await?;
        let url = response.url().to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        Ok(bytes.to_vec())
    }

    pub async fn upload_artifact(
        &self,
        id: JobId,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ArtifactInfo, ClientError> {
        self.json(
            self.request(Method::PUT, &format!("/api/jobs/{id}/artifacts/{name}"))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        )
        .await
    }

    /// A run trained elsewhere, with its files (artifact name, bytes), becomes a job
    /// (`POST /api/jobs/import`); with `run.state = queued` a worker continues it from its
    /// checkpoint file.
    pub async fn import_run(
        &self,
        run: &ImportRun,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<JobInfo, ClientError> {
        let json = serde_json::to_string(run).map_err(|e| ClientError::Encode(e.to_string()))?;
        let mut form = reqwest::multipart::Form::new().text(IMPORT_RUN_PART, json);
        for (name, bytes) in files {
            form = form.part(
                name.clone(),
                reqwest::multipart::Part::bytes(bytes).file_name(name),
            );
        }
        self.json(
            self.request(Method::POST, "/api/jobs/import")
                .multipart(form),
        )
        .await
    }

    /// A new read-only link to the job (admin); the token is shown only here.
    pub async fn create_share(
        &self,
        job: JobId,
        options: &CreateShare,
    ) -> Result<NewShare, ClientError> {
        self.json(
            self.request(Method::POST, &format!("/api/jobs/{job}/shares"))
                .json(options),
        )
        .await
    }

    /// The job's share links, newest first, revoked ones included (admin).
    pub async fn shares(&self, job: JobId) -> Result<Vec<ShareInfo>, ClientError> {
        self.json(self.request(Method::GET, &format!("/api/jobs/{job}/shares")))
            .await
    }

    /// Revoke a share link (admin); revoking twice keeps the first time.
    pub async fn revoke_share(&self, id: i64) -> Result<ShareInfo, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/api/shares/{id}")))
            .await
    }

    /// The run a share token opens. Needs no API token (none is sent).
    pub async fn shared_run(&self, token: &str) -> Result<SharedRun, ClientError> {
        let path = format!("/api/share/{}", path_segment(token));
        self.json(self.public_request(Method::GET, &path)).await
    }

    /// The metrics of the run a share token opens. Needs no API token (none is sent).
    pub async fn shared_metrics(
        &self,
        token: &str,
        query: &MetricQuery,
    ) -> Result<Vec<MetricPoint>, ClientError> {
        let path = format!("/api/share/{}/metrics", path_segment(token));
        self.json(
            self.public_request(Method::GET, &path)
                .query(&query.pairs()),
        )
        .await
    }

    /// Make an API token (admin); the answer is the only time the token is shown.
    pub async fn create_token(&self, body: &CreateToken) -> Result<NewToken, ClientError> {
        self.json(self.request(Method::POST, "/api/tokens").json(body))
            .await
    }

    /// Every API token (admin), never the tokens themselves.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.json(self.request(Method::GET, "/api/tokens")).await
    }

    /// Revoke an API token (admin): it stops working at once.
    pub async fn revoke_token(&self, id: i64) -> Result<TokenInfo, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/api/tokens/{id}")))
            .await
    }

    /// The audit log (admin): requests that changed something, with `seq > after`.
    pub async fn audit(&self, after: i64, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        self.json(
            self.request(Method::GET, "/api/audit")
                .query(&[("after", after.to_string()), ("limit", limit.to_string())]),
        )
        .await
    }

    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, ClientError> {
        self.json(self.request(Method::GET, "/api/workers")).await
    }

    pub async fn drain(&self, worker_id: &str) -> Result<WorkerInfo, ClientError> {
        self.json(self.request(Method::POST, &format!("/api/workers/{worker_id}/drain")))
            .await
    }

    /// The newest version of every stored dataset, newest first.
    pub async fn datasets(&self) -> Result<Vec<DatasetInfo>, ClientError> {
        self.json(self.request(Method::GET, "/api/datasets")).await
    }

    /// A dataset by name (its newest version) or by digest (`sha256:<hex>`).
    pub async fn dataset(&self, reference: &str) -> Result<DatasetInfo, ClientError> {
        let path = format!("/api/datasets/{}", path_segment(reference));
        self.json(self.request(Method::GET, &path)).await
    }

    /// Every version of a name, newest first.
    pub async fn dataset_versions(&self, name: &str) -> Result<Vec<DatasetInfo>, ClientError> {
        let path = format!("/api/datasets/{}/versions", path_segment(name));
        self.json(self.request(Method::GET, &path)).await
    }

    /// Give an already-stored dataset `name` (its newest version); nothing is uploaded.
    pub async fn name_dataset(
        &self,
        name: &str,
        digest: &Digest,
    ) -> Result<DatasetInfo, ClientError> {
        let path = format!("/api/datasets/{}/versions", path_segment(name));
        let body = NameDataset {
            digest: digest.clone(),
        };
        self.json(self.request(Method::POST, &path).json(&body))
            .await
    }

    /// Delete every version of a name (refused while a queued or running job uses it).
    pub async fn delete_dataset(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/api/datasets/{}", path_segment(name));
        self.send(self.request(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// Upload a dataset's bytes as the newest version of `name`. `digest` is the SHA-256 of
    /// `body` (the coordinator checks it) and `size` its length. Returns the stored version
    /// and whether the bytes were new to the coordinator.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn upload_dataset(
        &self,
        name: &str,
        kind: kiln_proto::dataset::DatasetKind,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(DatasetInfo, bool), ClientError> {
        let path = format!("/api/datasets/{}", path_segment(name));
        let query = [("kind", kind.as_str()), ("sha256", digest.hex())];
        let response = self
            .send(
                self.request(Method::PUT, &path)
                    .query(&query)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .body(body),
            )
            .await?;
        let created = response.status() == StatusCode::CREATED;
        Ok((decode(response).await?, created))
    }

    /// Start downloading a dataset's bytes (by name or `sha256:<hex>`); read them with
    /// [`Download::chunk`].
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn download_dataset(&self, reference: &str) -> Result<Download, ClientError> {
        let path = format!("/api/datasets/{}/content", path_segment(reference));
        let response = self.send(self.request(Method::GET, &path)).await?;
        Ok(Download {
            url: response.url().to_string(),
            len: response.content_length(),
            response,
        })
    }
}

/// A download in progress: the body arrives in chunks, so it never has to fit in memory.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug)]
pub struct Download {
    response: reqwest::Response,
    url: String,
    /// The announced length, if any.
    pub len: Option<u64>,
}

#[cfg(not(target_arch = "wasm32"))]
impl Download {
    /// The next chunk, `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        self.response
            .chunk()
            .await
            .map_err(|source| ClientError::Transport {
                url: self.url.clone(),
                source,
            })
    }
}

/// A request body for [`Client::upload_dataset`] (a stream of chunks, e.g. a file read
/// piece by piece).
#[cfg(not(target_arch = "wasm32"))]
pub use reqwest::Body;

/// A successful answer's JSON body.
async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, ClientError> {
    let url = response.url().to_string();
    let bytes = response
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url,
        message: e.to_string(),
    })
}

/// `s` percent-encoded as one path segment (a share token is hex, but the caller may pass
/// anything; it must not turn into another path).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
