//! Datasets over REST: upload (streamed, digest-checked, size-limited), versions, pinning at
//! submit, downloads, delete — and bad input that leaves nothing half-stored.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use kiln_client::{Body, Client};
use kiln_proto::dataset::{DatasetKind, DatasetPreview, Digest};
use kiln_proto::protocol::{CreateShare, JobState, SubmitJob};
use kiln_proto::spec::JobSpec;

use crate::api::{error_body, raw};
use crate::support::{self, ADMIN, MAX_DATASET};

const HB: Duration = Duration::from_secs(2);
const CSV: &str = "x,y,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n";

fn digest(bytes: &[u8]) -> Digest {
    Digest::from_bytes(&Sha256::digest(bytes).into())
}

async fn upload(
    client: &Client,
    name: &str,
    kind: DatasetKind,
    bytes: &[u8],
) -> Result<(kiln_proto::dataset::DatasetInfo, bool), kiln_client::ClientError> {
    client
        .upload_dataset(
            name,
            kind,
            &digest(bytes),
            bytes.len() as u64,
            Body::from(bytes.to_vec()),
        )
        .await
}

fn csv_spec(path: &str) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"name":"on-data","model":{{"kind":"mlp"}},
            "dataset":{{"kind":"csv","path":"{path}","label_column":"label"}}}}"#
    ))
    .expect("valid spec")
}

async fn submit(
    client: &Client,
    spec: JobSpec,
) -> Result<kiln_proto::protocol::JobInfo, kiln_client::ClientError> {
    client
        .submit(&SubmitJob {
            spec,
            group: None,
            tags: Vec::new(),
        })
        .await
}

/// What is in the dataset folder: stored files and leftovers of uploads.
fn files(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["datasets", "datasets/.incoming"] {
        if let Ok(entries) = std::fs::read_dir(data_dir.join(dir)) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    found.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn upload_versions_download_and_pin_at_submit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);

    let (v1, created) = upload(&client, "points", DatasetKind::Csv, CSV.as_bytes())
        .await
        .expect("upload");
    assert!(created);
    assert_eq!((v1.version, v1.size), (1, CSV.len() as u64));
    let DatasetPreview::Csv { columns, rows } = &v1.preview else {
        panic!("a CSV preview: {:?}", v1.preview);
    };
    assert_eq!(columns, &["x", "y", "label"]);
    assert_eq!(rows[0], ["1", "2", "0"]);
    assert_eq!(files(dir.path()), [format!("datasets/{}", v1.digest.hex())]);

    // The same bytes again: stored once, no new version.
    let (again, created) = upload(&client, "points", DatasetKind::Csv, CSV.as_bytes())
        .await
        .expect("upload");
    assert!(!created);
    assert_eq!(again.version, 1);

    // A job on `kiln:points` is pinned to version 1's digest.
    let first = submit(&client, csv_spec("kiln:points"))
        .await
        .expect("submit");
    assert_eq!(
        first.spec.dataset.path(),
        Some(v1.digest.reference().as_str())
    );
    assert_eq!(first.dataset_name.as_deref(), Some("points"));

    // New bytes under the same name: version 2; new jobs take it, the first job keeps v1.
    let changed = format!("{CSV}9,10,0\n");
    let (v2, _) = upload(&client, "points", DatasetKind::Csv, changed.as_bytes())
        .await
        .expect("upload");
    assert_eq!(v2.version, 2);
    let second = submit(&client, csv_spec("kiln:points"))
        .await
        .expect("submit");
    assert_eq!(
        second.spec.dataset.path(),
        Some(v2.digest.reference().as_str())
    );
    assert_eq!(
        client.job(first.id).await.expect("job").spec.dataset.path(),
        Some(v1.digest.reference().as_str())
    );
    let listed = client.datasets().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].version, listed[0].versions), (2, 2));
    let versions = client.dataset_versions("points").await.expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );

    // Another name for stored bytes, without sending them again.
    let named = client
        .name_dataset("first-points", &v1.digest)
        .await
        .expect("name");
    assert_eq!((named.name.as_str(), named.version), ("first-points", 1));

    // Workers download by digest with their own token; admin routes stay closed to them.
    let worker_token = c.create_worker_token("w").await.expect("token");
    let worker = Client::new(&c.url(), Some(worker_token.clone())).expect("client");
    let mut download = worker
        .download_dataset(&v1.digest.to_string())
        .await
        .expect("download");
    let mut got = Vec::new();
    while let Some(chunk) = download.chunk().await.expect("chunk") {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, CSV.as_bytes());
    let refused = worker.datasets().await.expect_err("admin only");
    assert_eq!(refused.status(), Some(StatusCode::FORBIDDEN));

    // The OpenAPI document describes the endpoints.
    let (status, doc) = raw(
        &format!("{}/api/openapi.json", c.url()),
        reqwest::Method::GET,
        Some(ADMIN),
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/datasets",
        "/api/datasets/{dataset}",
        "/api/datasets/{dataset}/versions",
        "/api/datasets/{dataset}/content",
    ] {
        assert!(doc.contains(&format!("\"{path}\"")), "{path} missing");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn bad_uploads_store_nothing_and_the_server_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);

    // The body is not what the digest says.
    let err = client
        .upload_dataset(
            "points",
            DatasetKind::Csv,
            &digest(b"something else"),
            CSV.len() as u64,
            Body::from(CSV.as_bytes().to_vec()),
        )
        .await
        .expect_err("digest mismatch");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(err.to_string().contains("nothing was stored"), "{err}");

    // Over the limit: refused up front by its length, and while streaming without one.
    let big = vec![b'1'; usize::try_from(MAX_DATASET).expect("fits") + 1];
    let err = upload(&client, "big", DatasetKind::Text, &big)
        .await
        .expect_err("too large");
    assert_eq!(err.status(), Some(StatusCode::PAYLOAD_TOO_LARGE));
    let chunks = futures_util::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, text) = {
        let response = reqwest::Client::new()
            .put(format!("{}/api/datasets/big", c.url()))
            .query(&[("kind", "text"), ("sha256", digest(&big).hex())])
            .bearer_auth(ADMIN)
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .expect("request");
        (response.status(), response.text().await.unwrap_or_default())
    };
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert!(error_body(&text).error.contains("limit"), "{text}");

    // Bytes that are not what the kind says.
    let err = upload(&client, "empty", DatasetKind::Csv, b"  \n")
        .await
        .expect_err("empty CSV");
    assert!(err.to_string().contains("the file is empty"), "{err}");
    let err = upload(&client, "digits", DatasetKind::Idx, CSV.as_bytes())
        .await
        .expect_err("not a tar of IDX files");
    assert!(err.to_string().contains("not a valid idx dataset"), "{err}");

    // Bad names and parameters name what is wrong.
    let err = upload(&client, ".hidden", DatasetKind::Csv, CSV.as_bytes())
        .await
        .expect_err("bad name");
    assert!(
        err.to_string().contains("invalid dataset name `.hidden`"),
        "{err}"
    );
    let (status, text) = raw(
        &format!(
            "{}/api/datasets/x?kind=parquet&sha256={}",
            c.url(),
            digest(b"").hex()
        ),
        reqwest::Method::PUT,
        Some(ADMIN),
        b"a".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        text.contains("`kind`") && text.contains("idx, csv, text"),
        "{text}"
    );

    // Cut off mid-stream: the client promised 100,000 bytes and hung up after 1,000.
    let addr = c.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /api/datasets/cut?kind=text&sha256={} HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {ADMIN}\r\nContent-Length: 100000\r\n\r\n",
        digest(&[b'a'; 100_000]).hex()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.write_all(&[b'a'; 1000]).await.expect("write");
    tcp.shutdown().await.expect("half-close");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    drop(tcp);
    // Give the server a moment to notice and clean up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !files(dir.path()).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Nothing of all that is stored; the server still takes a good upload.
    assert_eq!(files(dir.path()), Vec::<String>::new());
    assert!(client.datasets().await.expect("list").is_empty());
    let (ok, _) = upload(&client, "points", DatasetKind::Csv, CSV.as_bytes())
        .await
        .expect("a good upload after the bad ones");
    assert_eq!(ok.version, 1);
    c.shutdown().await;
}

#[tokio::test]
async fn bad_references_at_submit_and_deleting_data_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    let (info, _) = upload(&client, "points", DatasetKind::Csv, CSV.as_bytes())
        .await
        .expect("upload");

    // Unknown names and digests, malformed references, the wrong kind: 400 naming the field.
    // (Sent as raw JSON: the client-side parser would refuse the malformed ones itself.)
    let unknown = digest(b"never uploaded");
    for (path, expect) in [
        ("kiln:nope".to_string(), "none is named `nope`"),
        (unknown.reference(), "none has the digest"),
        ("kiln:sha256:abc".to_string(), "kiln:sha256:<64 hex digits>"),
        ("kiln:../x".to_string(), "kiln:NAME"),
    ] {
        let body = format!(
            r#"{{"spec":{{"name":"on-data","model":{{"kind":"mlp"}},
                "dataset":{{"kind":"csv","path":"{path}","label_column":"label"}}}}}}"#
        );
        let response = reqwest::Client::new()
            .post(format!("{}/api/jobs", c.url()))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {text}");
        let err = error_body(&text);
        assert_eq!(err.fields[0].field, "dataset.path", "{path}");
        assert!(err.fields[0].allowed.contains(expect), "{path}: {text}");
    }
    let text_spec = JobSpec::from_json_str(
        r#"{"name":"t","model":{"kind":"charlm"},"dataset":{"kind":"text","path":"kiln:points"}}"#,
    )
    .expect("valid spec");
    let err = submit(&client, text_spec).await.expect_err("wrong kind");
    assert!(err.to_string().contains("stored as csv"), "{err}");
    assert!(
        client
            .jobs(&Default::default())
            .await
            .expect("jobs")
            .jobs
            .is_empty()
    );

    // A queued job uses the data: deleting it is refused, naming the job.
    let job = submit(&client, csv_spec("kiln:points"))
        .await
        .expect("submit");
    let err = client.delete_dataset("points").await.expect_err("in use");
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    assert!(
        err.to_string()
            .contains(&format!("job(s) {} (queued)", job.id)),
        "{err}"
    );
    assert!(
        dir.path()
            .join("datasets")
            .join(info.digest.hex())
            .is_file()
    );

    // Once the job is cancelled the data can go; the job cannot be retried without it.
    client.cancel(job.id).await.expect("cancel");
    support::wait_state(&client, job.id, JobState::Cancelled).await;
    client.delete_dataset("points").await.expect("delete");
    assert!(!dir.path().join("datasets").join(info.digest.hex()).exists());
    let err = client.dataset("points").await.expect_err("deleted");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let err = client.retry(job.id).await.expect_err("data gone");
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    assert!(err.to_string().contains("has been deleted"), "{err}");
    c.shutdown().await;
}

/// A share link gives the stored dataset its run trained on (so the link can re-run in a
/// browser), without a token; not another dataset, not a run without stored data, and not
/// once the link is revoked.
#[tokio::test]
async fn a_share_link_gives_its_runs_stored_dataset_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    upload(&client, "points", DatasetKind::Csv, CSV.as_bytes())
        .await
        .expect("upload");
    let job = submit(&client, csv_spec("kiln:points"))
        .await
        .expect("submit");
    // A link made without its data keeps the data private.
    let private = client
        .create_share(job.id, &Default::default())
        .await
        .expect("share");
    assert!(!private.share.with_data);
    let (status, body) = crate::api::raw(
        &format!("{}/api/share/{}/dataset", c.url(), private.token),
        reqwest::Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("shared without the run's data"), "{body}");
    let shared = Client::new(&c.url(), None)
        .expect("url")
        .shared_run(&private.token)
        .await
        .expect("the run itself is shared");
    assert!(!shared.with_data);

    let with_data = CreateShare { with_data: true };
    let link = client
        .create_share(job.id, &with_data)
        .await
        .expect("share");
    assert!(link.share.with_data);
    let url = format!("{}/api/share/{}/dataset", c.url(), link.token);
    let (status, body) = crate::api::raw(&url, reqwest::Method::GET, None, vec![]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, CSV);

    // A run without stored data: a clear 404.
    let synthetic = submit(
        &client,
        JobSpec::from_json_str(
            r#"{"name":"blobs","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"}}"#,
        )
        .expect("spec"),
    )
    .await
    .expect("submit");
    let other = client
        .create_share(synthetic.id, &with_data)
        .await
        .expect("share");
    let (status, body) = crate::api::raw(
        &format!("{}/api/share/{}/dataset", c.url(), other.token),
        reqwest::Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not stored on the coordinator"), "{body}");

    // Revoked: the same 404 as any unknown link.
    client.revoke_share(link.share.id).await.expect("revoke");
    let (status, _) = crate::api::raw(&url, reqwest::Method::GET, None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
