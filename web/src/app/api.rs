//! The REST client: the token in `localStorage`, JSON in and out, errors as the coordinator
//! wrote them (`ApiErrorBody`, with field errors for an invalid spec).

use gloo_net::http::{Request, RequestBuilder, Response};
use kiln_proto::protocol::ApiErrorBody;
use kiln_proto::spec::FieldError;
use serde::Serialize;
use serde::de::DeserializeOwned;

const TOKEN_KEY: &str = "kiln.token";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// The API token the user pasted, if any.
pub fn token() -> Option<String> {
    storage()?
        .get_item(TOKEN_KEY)
        .ok()?
        .filter(|t| !t.is_empty())
}

pub fn set_token(token: Option<&str>) {
    if let Some(s) = storage() {
        let _ = match token {
            Some(t) => s.set_item(TOKEN_KEY, t),
            None => s.remove_item(TOKEN_KEY),
        };
    }
}

/// A full page load of `path` (after logging in or out, so every page starts clean).
pub fn go(path: &str) {
    if let Some(w) = web_sys::window() {
        let _ = w.location().set_href(path);
    }
}

/// Milliseconds since the Unix epoch, by the browser's clock.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// What went wrong with a request, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status; 0 when the coordinator could not be reached.
    pub status: u16,
    pub message: String,
    pub fields: Vec<FieldError>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            0 => write!(f, "cannot reach the coordinator: {}", self.message),
            401 => write!(f, "{} — log in again with a valid token", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

impl ApiError {
    /// A failed answer: the coordinator's `ApiErrorBody`, or the start of whatever came.
    pub fn from_answer(status: u16, text: &str) -> Self {
        match serde_json::from_str::<ApiErrorBody>(text) {
            Ok(body) => ApiError {
                status,
                message: body.error,
                fields: body.fields,
            },
            Err(_) => ApiError {
                status,
                message: format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                ),
                fields: Vec::new(),
            },
        }
    }

    pub fn network(e: impl std::fmt::Display) -> Self {
        ApiError {
            status: 0,
            message: e.to_string(),
            fields: Vec::new(),
        }
    }
}

fn authed(builder: RequestBuilder) -> RequestBuilder {
    match token() {
        Some(t) => builder.header("Authorization", &format!("Bearer {t}")),
        None => builder,
    }
}

async fn check(response: Result<Response, gloo_net::Error>) -> Result<Response, ApiError> {
    let response = response.map_err(ApiError::network)?;
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    Err(ApiError::from_answer(status, &text))
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, ApiError> {
    response
        .json::<T>()
        .await
        .map_err(|e| ApiError::network(format!("unexpected answer: {e}")))
}

pub async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    json(check(authed(Request::get(path)).send().await).await?).await
}

/// A body as bytes (a stored dataset's content, an artifact).
pub async fn get_bytes(path: &str) -> Result<Vec<u8>, ApiError> {
    let response = check(authed(Request::get(path)).send().await).await?;
    response.binary().await.map_err(ApiError::network)
}

/// For share links: bytes, with no token even if the browser has one.
pub async fn get_public_bytes(path: &str) -> Result<Vec<u8>, ApiError> {
    let response = check(Request::get(path).send().await).await?;
    response.binary().await.map_err(ApiError::network)
}

/// For share links: no token, even if the browser has one.
pub async fn get_public<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    json(check(Request::get(path).send().await).await?).await
}

pub async fn post<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    let request = authed(Request::post(path))
        .json(body)
        .map_err(ApiError::network)?;
    json(check(request.send().await).await?).await
}

pub async fn patch<B: Serialize, T: DeserializeOwned>(path: &str, body: &B) -> Result<T, ApiError> {
    let request = authed(Request::patch(path))
        .json(body)
        .map_err(ApiError::network)?;
    json(check(request.send().await).await?).await
}

pub async fn post_empty<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    json(check(authed(Request::post(path)).send().await).await?).await
}

pub async fn delete<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    json(check(authed(Request::delete(path)).send().await).await?).await
}

/// A `DELETE` answered with no body (204).
pub async fn delete_empty(path: &str) -> Result<(), ApiError> {
    check(authed(Request::delete(path)).send().await)
        .await
        .map(drop)
}

/// `POST /api/jobs/import`: a run trained in this tab, with its files, becomes a job.
pub async fn import_run(
    run: &kiln_proto::protocol::ImportRun,
    files: Vec<(String, Vec<u8>)>,
) -> Result<kiln_proto::protocol::JobInfo, ApiError> {
    let fail = |what: &str| ApiError::network(format!("cannot build the request: {what}"));
    let form = web_sys::FormData::new().map_err(|_| fail("no FormData"))?;
    let run_json = serde_json::to_string(run).map_err(|e| fail(&e.to_string()))?;
    // The run first: the coordinator reads it before it receives the files.
    form.append_with_str(kiln_proto::protocol::IMPORT_RUN_PART, &run_json)
        .map_err(|_| fail("the run"))?;
    for (name, bytes) in files {
        let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes.as_slice()));
        let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).map_err(|_| fail("a blob"))?;
        form.append_with_blob_and_filename(&name, &blob, &name)
            .map_err(|_| fail(&name))?;
    }
    let request = authed(Request::post("/api/jobs/import"))
        .body(form)
        .map_err(ApiError::network)?;
    json(check(request.send().await).await?).await
}

/// Download an artifact with the token (a plain link could not send it) and hand it to the
/// browser as a file.
pub async fn download(path: &str, file_name: &str) -> Result<(), ApiError> {
    use wasm_bindgen::JsCast;
    let response = check(authed(Request::get(path)).send().await).await?;
    let bytes = response.binary().await.map_err(ApiError::network)?;
    let array = js_sys::Uint8Array::from(bytes.as_slice());
    let parts = js_sys::Array::of1(&array);
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts)
        .map_err(|_| ApiError::network("cannot create a blob"))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)
        .map_err(|_| ApiError::network("cannot create an object URL"))?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| ApiError::network("no document"))?;
    let a = document
        .create_element("a")
        .ok()
        .and_then(|e| e.dyn_into::<web_sys::HtmlAnchorElement>().ok())
        .ok_or_else(|| ApiError::network("cannot create a link"))?;
    a.set_href(&url);
    a.set_download(file_name);
    a.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    js_sys::encode_uri_component(s).into()
}
