//! Read-only share links: create, open without a token, list, revoke; nothing else opens.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use kiln_client::{Client, MetricQuery};
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{JobState, WorkerMessage};

use crate::api::{error_body, raw};
use crate::support::{self, ADMIN, expect_assign, send_json};

const NO_SUCH_LINK: &str = "this share link does not exist or was revoked";

fn metric(step: u64, split: Split) -> Metric {
    Metric {
        step,
        epoch: step as f64 / 1000.0,
        split,
        loss: 1.0 / (step + 1) as f64,
        accuracy: Some(0.5),
        lr: Some(0.01),
        samples_per_sec: None,
    }
}

/// `GET url` without a token: 404 with the one share-link message.
async fn assert_no_link(url: &str) {
    let (status, text) = raw(url, Method::GET, None, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{url}: {text}");
    assert_eq!(error_body(&text).error, NO_SUCH_LINK, "{url}");
}

#[tokio::test]
async fn share_links_open_one_run_read_only_until_revoked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = Duration::from_millis(500);
    let c = support::start(dir.path(), hb).await;
    let url = c.url();
    let admin = support::admin(&c);
    let public = Client::new(&url, None).expect("url");

    // A finished job with 1000 train and 10 val points, run by a worker with a telling name.
    let worker_token = c.create_worker_token("fake").await.expect("token");
    let job = support::submit(&admin, "shared-run").await;
    let mut w = support::worker(&c, &worker_token, "gpu-box.internal", vec![]).await;
    let (attempt, _) = expect_assign(&mut w, hb).await;
    assert_eq!(attempt.job_id, job.id);
    let points: Vec<Metric> = (0..1000)
        .map(|s| metric(s, Split::Train))
        .chain((0..10).map(|s| metric(s * 100, Split::Val)))
        .collect();
    // 250 points a message stay under the 64 KiB frame limit of the tests.
    for chunk in points.chunks(250) {
        let points = chunk.to_vec();
        send_json(&mut w, &WorkerMessage::Metrics { attempt, points }).await;
    }
    support::finish_ok(&mut w, attempt, 1000).await;
    let done = support::wait_state(&admin, job.id, JobState::Succeeded).await;
    assert_eq!(done.worker_id.as_deref(), Some("gpu-box.internal"));

    // Create: 201, a 64-hex token, its hint, the dashboard path.
    let new = admin
        .create_share(job.id, &Default::default())
        .await
        .expect("create share");
    assert_eq!(new.token.len(), 64);
    assert!(
        new.token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{}",
        new.token
    );
    assert_eq!(new.path, format!("/s/{}", new.token));
    assert_eq!(new.share.job_id, job.id);
    assert_eq!(new.share.hint, new.token[58..]);
    assert_eq!(new.share.revoked_ms, None);
    let (status, text) = raw(
        &format!("{url}/api/jobs/{}/shares", job.id),
        Method::POST,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let second: kiln_proto::protocol::NewShare = serde_json::from_str(&text).expect("NewShare");
    assert_ne!(second.token, new.token);

    // The run opens without a token, without its worker; the rest of the job is as stored.
    let shared = public.shared_run(&new.token).await.expect("shared run");
    assert_eq!(shared.job.worker_id, None);
    assert_eq!(
        shared.job,
        kiln_proto::protocol::JobInfo {
            worker_id: None,
            ..done.clone()
        }
    );
    let (status, text) = raw(
        &format!("{url}/api/share/{}", new.token),
        Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(!text.contains("gpu-box"), "the worker leaked: {text}");

    // Metrics: the same query handling as /api/jobs/{id}/metrics.
    for query in [
        MetricQuery::default(),
        MetricQuery {
            max_points: Some(100),
            ..Default::default()
        },
        MetricQuery {
            split: Some(Split::Val),
            from_step: Some(200),
            to_step: Some(700),
            ..Default::default()
        },
    ] {
        let via_share = public
            .shared_metrics(&new.token, &query)
            .await
            .expect("shared metrics");
        let via_admin = admin.metrics(job.id, &query).await.expect("metrics");
        assert_eq!(via_share, via_admin, "{query:?}");
    }
    let few = public
        .shared_metrics(
            &new.token,
            &MetricQuery {
                split: Some(Split::Train),
                max_points: Some(100),
                ..Default::default()
            },
        )
        .await
        .expect("shared metrics");
    assert!(few.len() <= 100 && few.len() >= 50, "{}", few.len());
    assert_eq!(few.first().map(|p| p.metric.step), Some(0));
    let err = public
        .shared_metrics(
            &new.token,
            &MetricQuery {
                max_points: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect_err("400");
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    assert!(err.to_string().contains("max_points"), "{err}");
    let (status, text) = raw(
        &format!("{url}/api/share/{}/metrics?bogus=1", new.token),
        Method::GET,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(error_body(&text).error.contains("bogus"), "{text}");

    // Nothing else opens with a share token: not as a bearer token, not beside it in the path.
    for path in [
        "/api/jobs".to_string(),
        format!("/api/jobs/{}", job.id),
        format!("/api/jobs/{}/metrics", job.id),
        format!("/api/jobs/{}/logs", job.id),
        format!("/api/jobs/{}/artifacts", job.id),
        format!("/api/jobs/{}/shares", job.id),
        "/api/workers".to_string(),
        "/api/openapi.json".to_string(),
        "/ws/events".to_string(),
        "/metrics".to_string(),
    ] {
        let (status, text) = raw(
            &format!("{url}{path}"),
            Method::GET,
            Some(&new.token),
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {text}");
    }
    let (status, _) = raw(
        &format!("{url}/api/jobs/{}/shares", job.id),
        Method::POST,
        None,
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "creating needs a token");
    for rest in ["logs", "artifacts", "attempts", "artifacts/model.bpk"] {
        let (status, text) = raw(
            &format!("{url}/api/share/{}/{rest}", new.token),
            Method::GET,
            None,
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{rest}: {text}");
        error_body(&text);
    }
    let worker = Client::new(&url, Some(worker_token)).expect("url");
    let err = worker
        .create_share(job.id, &Default::default())
        .await
        .expect_err("403");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));

    // Listing: newest first.
    let list = admin.shares(job.id).await.expect("shares");
    assert_eq!(
        list.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![second.share.id, new.share.id]
    );
    assert_eq!(list[1], new.share);

    // Revoke: both public endpoints 404; idempotent; listed with its time; others still work.
    let revoked = admin.revoke_share(new.share.id).await.expect("revoke");
    let at = revoked.revoked_ms.expect("revoked_ms set");
    assert_eq!((revoked.id, revoked.job_id), (new.share.id, job.id));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = admin
        .revoke_share(new.share.id)
        .await
        .expect("revoke again");
    assert_eq!(again.revoked_ms, Some(at), "the first revoke time is kept");
    assert_no_link(&format!("{url}/api/share/{}", new.token)).await;
    assert_no_link(&format!("{url}/api/share/{}/metrics", new.token)).await;
    let err = public.shared_run(&new.token).await.expect_err("revoked");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    let list = admin.shares(job.id).await.expect("shares");
    assert_eq!(list[1].revoked_ms, Some(at));
    assert_eq!(list[0].revoked_ms, None);
    assert!(public.shared_run(&second.token).await.is_ok());

    // Unknown and malformed tokens: the same 404.
    let unknown = "0123456789abcdef".repeat(4);
    for token in [
        unknown.as_str(),
        "abcdef0123",
        "..%2Fx",
        "%2E%2E%2Fkiln.db",
        &second.token.to_uppercase(),
        &format!("{}0", second.token),
        &format!("kiln_{}", &second.token[5..]),
        "%FF%FE",
    ] {
        assert_no_link(&format!("{url}/api/share/{token}")).await;
        assert_no_link(&format!("{url}/api/share/{token}/metrics?max_points=1")).await;
    }
    let err = public.shared_run("../x").await.expect_err("404");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{err}");

    // Owner errors: missing job or share 404, bad ids 400 naming the value.
    for err in [
        admin
            .create_share(9999, &Default::default())
            .await
            .expect_err("no job"),
        admin.shares(9999).await.map(|_| ()).expect_err("no job"),
    ] {
        assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{err}");
        assert!(err.to_string().contains("9999"), "{err}");
    }
    let err = admin.revoke_share(9999).await.expect_err("no share");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND), "{err}");
    assert!(err.to_string().contains("9999"), "{err}");
    let (status, text) = raw(
        &format!("{url}/api/shares/abc"),
        Method::DELETE,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(error_body(&text).error.contains("`abc`"), "{text}");
    let (status, text) = raw(
        &format!("{url}/api/jobs/x1/shares"),
        Method::POST,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(error_body(&text).error.contains("`x1`"), "{text}");

    // The OpenAPI document lists the endpoints; the public ones need no token.
    let (_, text) = raw(
        &format!("{url}/api/openapi.json"),
        Method::GET,
        Some(ADMIN),
        vec![],
    )
    .await;
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    for (path, method, secured) in [
        ("/api/jobs/{id}/shares", "post", true),
        ("/api/jobs/{id}/shares", "get", true),
        ("/api/shares/{share_id}", "delete", true),
        ("/api/share/{token}", "get", false),
        ("/api/share/{token}/metrics", "get", false),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert_eq!(op.get("security").is_some(), secured, "{method} {path}");
    }
    c.shutdown().await;
}

/// A share link's options are checked: an unknown field or a wrong type is a clear 400 and
/// creates no link.
#[tokio::test]
async fn bad_share_options_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), Duration::from_secs(2)).await;
    let admin = support::admin(&c);
    let job = support::submit(&admin, "opts").await;
    let url = format!("{}/api/jobs/{}/shares", c.url(), job.id);
    for body in [
        r#"{"with_dat": true}"#,
        r#"{"with_data": "yes"}"#,
        "not json",
    ] {
        let (status, text) = raw(&url, Method::POST, Some(ADMIN), body.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains("with_data"), "{body}: {text}");
    }
    assert!(admin.shares(job.id).await.expect("list").is_empty());
}

#[tokio::test]
async fn a_share_body_is_nothing_null_or_an_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = support::start(dir.path(), Duration::from_millis(500)).await;
    let url = c.url();
    let job = support::submit(&support::admin(&c), "shared").await;
    // `null` is the document's "no options"; an array is no `CreateShare`, even though serde
    // would read `[true]` as `{"with_data": true}`.
    for (body, expected) in [
        ("", StatusCode::CREATED),
        ("null", StatusCode::CREATED),
        ("{\"with_data\": true}", StatusCode::CREATED),
        ("[true]", StatusCode::BAD_REQUEST),
        ("[]", StatusCode::BAD_REQUEST),
        ("{\"with_data\": 1}", StatusCode::BAD_REQUEST),
    ] {
        let (status, text) = raw(
            &format!("{url}/api/jobs/{}/shares", job.id),
            Method::POST,
            Some(ADMIN),
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, expected, "{body}: {text}");
        if expected == StatusCode::CREATED {
            let made: kiln_proto::protocol::NewShare = serde_json::from_str(&text).expect("json");
            assert_eq!(made.share.with_data, body.contains("true"), "{body}");
        } else {
            assert!(
                error_body(&text).error.contains("with_data"),
                "{body}: {text}"
            );
        }
    }
    c.shutdown().await;
}
