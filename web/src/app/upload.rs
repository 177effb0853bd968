//! A file from the browser to the coordinator: hashed in slices (memory stays at one slice,
//! whatever the file's size), then sent with `XMLHttpRequest`, which — unlike `fetch` — reports
//! upload progress and streams a `File` body from disk.

use kiln_proto::dataset::Digest;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, ProgressEvent, XmlHttpRequest};

use super::api::{self, ApiError};
use crate::datasets::{HASH_SLICE, Hasher, slices};

/// A browser exception as a message.
fn js_error(what: &str, e: JsValue) -> ApiError {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    ApiError::network(format!("{what}: {detail}"))
}

/// The SHA-256 of `file`, read [`HASH_SLICE`] bytes at a time; `progress` gets the bytes
/// hashed so far after each slice (each read yields to the page, so it can redraw).
pub async fn sha256(file: &Blob, mut progress: impl FnMut(u64)) -> Result<Digest, ApiError> {
    let size = file.size() as u64;
    let mut hasher = Hasher::default();
    let mut buf = Vec::new();
    for (start, end) in slices(size, HASH_SLICE) {
        let part = file
            .slice_with_f64_and_f64(start as f64, end as f64)
            .map_err(|e| js_error("cannot read the file", e))?;
        let array = JsFuture::from(part.array_buffer())
            .await
            .map_err(|e| js_error("cannot read the file", e))?;
        let bytes = js_sys::Uint8Array::new(&array);
        buf.resize(bytes.length() as usize, 0);
        bytes.copy_to(&mut buf);
        hasher.update(&buf);
        progress(hasher.bytes());
    }
    if hasher.bytes() != size {
        return Err(ApiError::network(format!(
            "the file changed while it was read ({} of {size} bytes)",
            hasher.bytes()
        )));
    }
    Ok(hasher.finish())
}

/// `PUT url` with `body` as the request body and the API token; `progress(sent, total)`
/// follows the upload. Returns the status and text of a 2xx answer; any other answer is the
/// coordinator's error.
pub async fn put(
    url: &str,
    body: &Blob,
    progress: impl FnMut(u64, u64) + 'static,
) -> Result<(u16, String), ApiError> {
    let fail = |e| js_error("cannot start the upload", e);
    let xhr = XmlHttpRequest::new().map_err(fail)?;
    xhr.open_with_async("PUT", url, true).map_err(fail)?;
    if let Some(token) = api::token() {
        xhr.set_request_header("Authorization", &format!("Bearer {token}"))
            .map_err(fail)?;
    }
    xhr.set_request_header("Content-Type", "application/octet-stream")
        .map_err(fail)?;
    let mut progress = progress;
    let on_progress = Closure::<dyn FnMut(ProgressEvent)>::new(move |e: ProgressEvent| {
        if e.length_computable() {
            progress(e.loaded() as u64, e.total() as u64);
        }
    });
    let upload = xhr.upload().map_err(fail)?;
    upload.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
    // `loadend` fires once, after success, an error or an abort alike.
    let done = js_sys::Promise::new(&mut |resolve, _reject| xhr.set_onloadend(Some(&resolve)));
    xhr.send_with_opt_blob(Some(body)).map_err(fail)?;
    let _ = JsFuture::from(done).await;
    upload.set_onprogress(None);
    drop(on_progress);
    let status = xhr.status().unwrap_or(0);
    if status == 0 {
        return Err(ApiError::network(
            "the upload was interrupted (the connection closed before an answer came)",
        ));
    }
    let text = xhr.response_text().ok().flatten().unwrap_or_default();
    if (200..300).contains(&status) {
        Ok((status, text))
    } else {
        Err(ApiError::from_answer(status, &text))
    }
}
