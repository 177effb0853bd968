//! REST: submit, list, auth, limits, artifacts, metrics, static files.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kiln_client::{Client, JobFilter};
use kiln_coordinator::Coordinator;
use kiln_proto::protocol::{ApiErrorBody, JobPatch, JobState, SubmitJob};

use crate::support::{self, ADMIN, MAX_ARTIFACT, MAX_BODY};

const HB: Duration = Duration::from_secs(2);

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub async fn raw(
    url: &str,
    method: reqwest::Method,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().request(method, url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

pub fn error_body(text: &str) -> ApiErrorBody {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not an ApiErrorBody ({e}): {text}"))
}

#[tokio::test]
async fn submit_valid_and_invalid() {
    let dir = tmp();
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);

    let job = support::submit(&client, "ok-job").await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.name, "ok-job");
    assert_eq!(client.job(job.id).await.expect("job").id, job.id);

    // Every problem is listed, and nothing is stored.
    let bad = r#"{"spec":{"name":"bad name!","max_attempts":0,"model":{"kind":"mlp"},
        "dataset":{"kind":"synthetic"},"training":{"batch_size":0}}}"#;
    let (status, text) = raw(
        &format!("{}/api/jobs", c.url()),
        reqwest::Method::POST,
        Some(ADMIN),
        bad.into(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(error_body(&text).error.contains("Content-Type"), "{text}");

    let resp = reqwest::Client::new()
        .post(format!("{}/api/jobs", c.url()))
        .bearer_auth(ADMIN)
        .json(&serde_json::from_str::<serde_json::Value>(bad).expect("json"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = error_body(&resp.text().await.expect("body"));
    let fields: Vec<&str> = body.fields.iter().map(|f| f.field.as_str()).collect();
    for f in ["name", "max_attempts", "training.batch_size"] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    assert!(body.error.contains("training.batch_size"), "{}", body.error);

    // Malformed JSON and unknown fields name serde's complaint.
    let err = reqwest::Client::new()
        .post(format!("{}/api/jobs", c.url()))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(r#"{"spec":{"name":"x","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"},"bogus":1}}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    let text = err.text().await.expect("body");
    assert!(text.contains("bogus"), "{text}");

    let err = client
        .submit(&SubmitJob {
            spec: support::spec("x"),
            group: Some(String::new()),
            tags: Vec::new(),
        })
        .await
        .expect_err("empty group");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));

    let page = client.jobs(&JobFilter::default()).await.expect("list");
    assert_eq!(page.total, 1, "only the valid job is stored");
    c.shutdown().await;
}

/// `device = "webgpu"` jobs are for browser tabs lent as workers: accepted and queued; but a
/// tab trains alone, so a data-parallel webgpu job is refused at submit, as a field error the
/// form shows at its input, next to any other problem of the spec.
#[tokio::test]
async fn webgpu_jobs_queue_for_tabs_and_cannot_be_data_parallel() {
    let dir = tmp();
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    let mut spec = support::spec("in-a-browser");
    spec.device = kiln_proto::spec::DeviceRequest::Webgpu;
    let job = client
        .submit(&SubmitJob {
            spec: spec.clone(),
            group: None,
            tags: Vec::new(),
        })
        .await
        .expect("a webgpu job is accepted");
    assert_eq!(job.state, kiln_proto::protocol::JobState::Queued);

    spec.distributed.workers = 2;
    spec.distributed.min_workers = Some(2);
    assert!(spec.validate().is_ok(), "the spec itself is valid");
    let err = client
        .submit(&SubmitJob {
            spec: spec.clone(),
            group: None,
            tags: Vec::new(),
        })
        .await
        .expect_err("data-parallel webgpu refused");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    let kiln_client::ClientError::Api {
        message, fields, ..
    } = &err
    else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!(fields.len(), 1, "{fields:?}");
    let f = &fields[0];
    assert_eq!(
        (f.field.as_str(), f.value.as_str()),
        ("distributed.workers", "2")
    );
    assert!(f.allowed.contains("browser tabs train alone"), "{f:?}");
    // What `kiln submit` and `kiln sweep` print: the field, the value, what is allowed.
    assert!(
        message.contains("distributed.workers: got 2, allowed: 1 for a webgpu job"),
        "{message}"
    );
    // Listed with the spec's own problems, in one answer.
    spec.training.batch_size = 0;
    let err = client
        .submit(&SubmitJob {
            spec,
            group: None,
            tags: Vec::new(),
        })
        .await
        .expect_err("two problems");
    let kiln_client::ClientError::Api { fields, .. } = &err else {
        panic!("expected an API error, got {err}")
    };
    let named: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(named, ["training.batch_size", "distributed.workers"]);
    let page = client.jobs(&JobFilter::default()).await.expect("list");
    assert_eq!(page.total, 1, "only the first job is stored");
    c.shutdown().await;
}

#[tokio::test]
async fn notes_and_tags_are_set_checked_and_filter_the_list() {
    let dir = tmp();
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    let a = support::submit(&client, "a").await;
    let b = support::submit(&client, "b").await;
    // Tags can come with the submission, checked the same way.
    let tagged_at_submit = client
        .submit(&SubmitJob {
            spec: support::spec("c"),
            group: None,
            tags: vec!["sweep-1".into(), "sweep-1".into()],
        })
        .await
        .expect("submit");
    assert_eq!(tagged_at_submit.tags, ["sweep-1"]);
    let err = client
        .submit(&SubmitJob {
            spec: support::spec("d"),
            group: None,
            tags: vec!["no spaces".into()],
        })
        .await
        .expect_err("bad tag");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(err.to_string().contains("tags[0]"), "{err}");
    assert_eq!(
        client
            .jobs(&JobFilter::default())
            .await
            .expect("list")
            .total,
        3
    );

    let tagged = client
        .annotate(
            a.id,
            &JobPatch {
                notes: Some("lr looks high\n".into()),
                tags: Some(vec!["baseline".into(), " mlp ".into(), "mlp".into()]),
            },
        )
        .await
        .expect("annotate");
    assert_eq!(tagged.notes, "lr looks high");
    assert_eq!(tagged.tags, ["baseline", "mlp"], "trimmed, repeats dropped");
    assert_eq!(client.job(a.id).await.expect("job"), tagged);

    let page = client
        .jobs(&JobFilter {
            tag: Some("mlp".into()),
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [a.id]);
    assert_eq!(page.total, 1);

    // Bad tags and notes: a 400 naming each field and value, and nothing changes.
    let url = format!("{}/api/jobs/{}", c.url(), b.id);
    let resp = reqwest::Client::new()
        .patch(&url)
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"tags": ["ok", "no spaces"], "notes": "x".repeat(10_001)}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = error_body(&resp.text().await.expect("body"));
    let fields: Vec<(&str, &str)> = body
        .fields
        .iter()
        .map(|f| (f.field.as_str(), f.value.as_str()))
        .collect();
    assert_eq!(fields, [("notes", "10001 bytes"), ("tags[1]", "no spaces")]);
    assert!(
        body.error.starts_with("the request has 2 problem(s)"),
        "{}",
        body.error
    );
    assert_eq!(client.job(b.id).await.expect("job"), b, "nothing stored");
    // Unknown fields, unknown jobs, bad ids, no token.
    let patch = |url: String, body: serde_json::Value| async move {
        let resp = reqwest::Client::new()
            .patch(url)
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .expect("request");
        (resp.status(), resp.text().await.expect("body"))
    };
    let (status, text) = patch(url.clone(), serde_json::json!({"tag": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(error_body(&text).error.contains("`tag`"), "{text}");
    let err = client
        .annotate(b.id + 100, &JobPatch::default())
        .await
        .expect_err("no such job");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let (status, text) = patch(format!("{}/api/jobs/x", c.url()), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_body(&text).error.contains("job id `x`"), "{text}");
    let (status, _) = raw(&url, reqwest::Method::PATCH, None, b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // serde reads a struct from a JSON array too (`["n"]` would set the notes): refused.
    for body in [&b"[]"[..], b"[\"notes\"]", b"null", b"3"] {
        let (status, text) = patch(url.clone(), serde_json::from_slice(body).expect("json")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(error_body(&text).error.contains("JSON object"), "{text}");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let dir = tmp();
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = client
            .submit(&SubmitJob {
                spec: support::spec(&format!("job-{i}")),
                group: (i % 2 == 0).then(|| "sweep".to_string()),
                tags: Vec::new(),
            })
            .await
            .expect("submit");
        ids.push(job.id);
    }
    client.cancel(ids[1]).await.expect("cancel");

    let page = client
        .jobs(&JobFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.total, 5);
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]],
        "newest first"
    );
    let page = client
        .jobs(&JobFilter {
            limit: Some(2),
            offset: Some(4),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );

    let group = JobFilter {
        group: Some("sweep".into()),
        ..Default::default()
    };
    assert_eq!(client.jobs(&group).await.expect("list").total, 3);
    let cancelled = JobFilter {
        state: Some(JobState::Cancelled),
        ..Default::default()
    };
    let page = client.jobs(&cancelled).await.expect("list");
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let name = JobFilter {
        name: Some("job-3".into()),
        ..Default::default()
    };
    assert_eq!(client.jobs(&name).await.expect("list").total, 1);

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("offset=9223372036854775808", "offset"),
        ("state=done", "state"),
        ("colour=red", "colour"),
    ] {
        let (status, text) = raw(
            &format!("{}/api/jobs?{query}", c.url()),
            reqwest::Method::GET,
            Some(ADMIN),
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let body = error_body(&text);
        assert!(body.error.contains(param), "{query}: {}", body.error);
    }
    let (status, text) = raw(
        &format!("{}/api/jobs/999", c.url()),
        reqwest::Method::GET,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_body(&text).error.contains("999"));
    c.shutdown().await;
}

#[tokio::test]
async fn auth_limits_and_meta() {
    let dir = tmp();
    let c = support::start(dir.path(), HB).await;
    let url = c.url();
    let client = support::admin(&c);
    let job = support::submit(&client, "auth").await;
    let worker_token = c.create_worker_token("w").await.expect("token");

    // Health needs no token; everything else does.
    let health = Client::new(&url, None)
        .expect("url")
        .health()
        .await
        .expect("health");
    assert_eq!(health.status, "ok");
    let (status, text) = raw(
        &format!("{url}/api/jobs"),
        reqwest::Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_body(&text).error.contains("Authorization"), "{text}");
    let (status, text) = raw(
        &format!("{url}/api/jobs"),
        reqwest::Method::GET,
        Some("nope"),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_body(&text).error.contains("not valid"), "{text}");
    for path in ["/metrics", "/api/openapi.json", "/api/workers"] {
        let (status, _) = raw(&format!("{url}{path}"), reqwest::Method::GET, None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // A worker token may not list jobs, nor touch the artifacts of a job none of its workers
    // runs (tests/it/tokens.rs covers every route and scope).
    let worker = Client::new(&url, Some(worker_token.clone()))
        .expect("url")
        .as_worker("w1");
    let err = worker.jobs(&JobFilter::default()).await.expect_err("403");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert!(
        err.to_string().contains("needs a token with scope"),
        "{err}"
    );
    let err = worker
        .upload_artifact(job.id, "model.bpk", vec![1, 2, 3])
        .await
        .expect_err("not its job");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert!(err.to_string().contains("does not run job"), "{err}");
    client
        .upload_artifact(job.id, "model.bpk", vec![1, 2, 3])
        .await
        .expect("upload");
    assert_eq!(
        client
            .download_artifact(job.id, "model.bpk")
            .await
            .expect("download"),
        vec![1, 2, 3]
    );

    // Oversized bodies: 413 with a JSON body, and the server carries on.
    let (status, text) = raw(
        &format!("{url}/api/jobs"),
        reqwest::Method::POST,
        Some(ADMIN),
        vec![b' '; MAX_BODY + 1],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_body(&text).error.contains("larger"), "{text}");
    let err = client
        .upload_artifact(job.id, "big.bin", vec![0; MAX_ARTIFACT + 1])
        .await
        .expect_err("413");
    assert_eq!(err.status(), Some(StatusCode::PAYLOAD_TOO_LARGE));
    assert!(client.health().await.is_ok());
    let names = support::artifact_names(&client, job.id).await;
    assert_eq!(names, vec!["model.bpk"]);

    // Prometheus text and the OpenAPI document.
    let (status, text) = raw(
        &format!("{url}/metrics"),
        reqwest::Method::GET,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("kiln_jobs{state=\"queued\"} 1"), "{text}");
    assert!(text.contains("kiln_jobs_submitted_total 1"), "{text}");
    assert!(text.contains("kiln_workers_connected 0"), "{text}");
    assert!(text.contains("kiln_metric_points_ingested_total"), "{text}");
    let (status, text) = raw(
        &format!("{url}/api/openapi.json"),
        reqwest::Method::GET,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/jobs",
        "/api/jobs/{id}/metrics",
        "/api/jobs/{id}/artifacts/{name}",
        "/ws/worker",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    // What the auth middleware answers is documented on every secured operation: 401, 403
    // (a scope that may not) and 429 (too many bad tokens).
    let mut secured = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op["security"].as_array().is_none_or(Vec::is_empty) {
                continue;
            }
            secured += 1;
            for status in ["401", "403", "429"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path}: no {status}"
                );
            }
        }
    }
    assert!(secured >= 25, "{secured} secured operations");
    // The 403 names the scopes that may (`auth::allowed_scopes`).
    let forbidden = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["403"]["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no 403"))
            .to_string()
    };
    assert!(
        forbidden("/api/jobs", "get").contains("allowed: read, submit, admin"),
        "{}",
        forbidden("/api/jobs", "get")
    );
    assert!(forbidden("/ws/worker", "get").contains("allowed: worker, admin"));
    // Query parameters are documented in the query, optional.
    let params = doc["paths"]["/api/jobs"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    for name in ["state", "group", "name", "tag", "limit", "offset"] {
        let p = params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {params:?}"));
        assert_eq!(
            (p["in"].as_str(), p["required"].as_bool()),
            (Some("query"), Some(false)),
            "{p}"
        );
    }

    // Unknown API paths are JSON 404s; other paths are the dashboard.
    let (status, text) = raw(
        &format!("{url}/api/nope"),
        reqwest::Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    error_body(&text);
    let (status, text) = raw(&format!("{url}/jobs/3"), reqwest::Method::GET, None, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("dashboard is not built"), "{text}");
    c.shutdown().await;
}

/// A raw HTTP/1.1 request, so no client normalizes the path first.
async fn raw_status(addr: std::net::SocketAddr, request_line: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "{request_line} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    out.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn artifact_names_cannot_escape() {
    let dir = tmp();
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    let job = support::submit(&client, "art").await;
    for name in [
        "..%2Fx",
        "%2e%2e",
        "%2E%2E%2Fkiln.db",
        "a%2Fb",
        ".hidden",
        "a%5Cb",
        "%00",
    ] {
        for method in ["PUT", "GET"] {
            let line = format!("{method} /api/jobs/{}/artifacts/{name}", job.id);
            let status = raw_status(c.local_addr(), &line).await;
            assert!(status.contains(" 400 "), "{line}: {status}");
        }
    }
    // Raw `..` segments never reach a handler with a name.
    let status = raw_status(
        c.local_addr(),
        &format!("PUT /api/jobs/{}/artifacts/../x", job.id),
    )
    .await;
    assert!(!status.contains(" 201 "), "{status}");
    assert!(client.artifacts(job.id).await.expect("list").is_empty());
    assert!(!dir.path().join("x").exists());
    let err = client
        .download_artifact(job.id, "missing.bin")
        .await
        .expect_err("404");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    c.shutdown().await;
}

/// GET with `Accept-Encoding: gzip` (reqwest here does not decompress): status, the
/// `content-encoding` header and the raw body.
async fn get_gzip(url: &str, token: Option<&str>) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut req = reqwest::Client::new()
        .get(url)
        .header("accept-encoding", "gzip");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let encoding = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    (
        resp.status(),
        encoding,
        resp.bytes().await.expect("body").to_vec(),
    )
}

#[tokio::test]
async fn json_and_dashboard_files_are_gzipped_but_artifacts_are_not() {
    let dir = tmp();
    let web = tmp();
    std::fs::write(web.path().join("index.html"), "<!doctype html>plain").expect("write");
    // What scripts/build-web writes beside each file.
    std::fs::write(web.path().join("index.html.gz"), b"\x1f\x8b fake gzip").expect("write");
    let c = Coordinator::start(kiln_coordinator::CoordinatorConfig {
        addr: "127.0.0.1:0".parse().expect("literal address"),
        data_dir: dir.path().to_path_buf(),
        database: kiln_coordinator::testing::database_for(dir.path())
            .await
            .expect("test database"),
        admin_token: Some(ADMIN.into()),
        static_dir: Some(web.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .expect("coordinator starts");
    let client = support::admin(&c);
    let job = support::submit(&client, "gz").await;
    let model = vec![7u8; 4096];
    client
        .upload_artifact(job.id, "model.bpk", model.clone())
        .await
        .expect("upload");

    let (status, encoding, _) = get_gzip(&format!("{}/api/jobs", c.url()), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        encoding.as_deref(),
        Some("gzip"),
        "JSON lists are compressed"
    );

    let url = format!("{}/api/jobs/{}/artifacts/model.bpk", c.url(), job.id);
    let (status, encoding, body) = get_gzip(&url, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(encoding, None, "artifacts are sent as stored");
    assert_eq!(body, model);

    // A deep link falls back to index.html; a gzip-accepting browser gets the .gz copy.
    let (status, encoding, body) = get_gzip(&format!("{}/jobs/{}", c.url(), job.id), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(encoding.as_deref(), Some("gzip"));
    assert!(body.starts_with(b"\x1f\x8b"), "the pre-compressed file");
    let (_, plain) = raw(
        &format!("{}/jobs/1", c.url()),
        reqwest::Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(plain, "<!doctype html>plain");
    c.shutdown().await;
}
