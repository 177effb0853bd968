//! Scoped tokens: every route against every scope, worker tokens that act only for their own
//! workers' attempts, expiry, revocation, the bad-token limit, the audit log and the `Origin`
//! check of WebSocket upgrades.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use kiln_client::{Client, JobFilter, MetricQuery};
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{CloseReason, CoordinatorMessage, JobState, WorkerMessage};
use kiln_proto::token::{CreateToken, TokenScope};

use crate::api::{error_body, raw};
use crate::support::{self, ADMIN, Next, expect_assign, send_json};

const HB: Duration = Duration::from_secs(2);

/// Who may call what, written out apart from the coordinator's `auth::allowed_scopes` so that
/// a change there that is not made here too fails: method, route template, then the scopes
/// (r = read, s = submit, a = admin, w = worker).
const POLICY: &str = "
GET    /metrics                                r s a
GET    /api/openapi.json                       r s a w
GET    /api/workers                            r s a
POST   /api/workers/{id}/drain                 a
POST   /api/jobs                               s a
GET    /api/jobs                               r s a
POST   /api/jobs/import                        s a
GET    /api/jobs/{id}                          r s a
PATCH  /api/jobs/{id}                          s a
POST   /api/jobs/{id}/cancel                   s a
POST   /api/jobs/{id}/retry                    s a
POST   /api/jobs/{id}/control                  s a
POST   /api/jobs/{id}/fork                     s a
GET    /api/jobs/{id}/attempts                 r s a
GET    /api/jobs/{id}/metrics                  r s a
GET    /api/jobs/{id}/logs                     r s a
GET    /api/jobs/{id}/artifacts                r s a w
GET    /api/jobs/{id}/artifacts/{name}         r s a w
PUT    /api/jobs/{id}/artifacts/{name}         a w
POST   /api/jobs/{id}/shares                   s a
GET    /api/jobs/{id}/shares                   r s a
DELETE /api/shares/{share_id}                  s a
GET    /api/datasets                           r s a
GET    /api/datasets/{dataset}                 r s a
PUT    /api/datasets/{dataset}                 s a
DELETE /api/datasets/{dataset}                 a
GET    /api/datasets/{dataset}/versions        r s a
POST   /api/datasets/{dataset}/versions        s a
GET    /api/datasets/{dataset}/content         r s a w
POST   /api/tokens                             a
GET    /api/tokens                             a
DELETE /api/tokens/{id}                        a
GET    /api/audit                              a
GET    /api/relay/{job_id}/{attempt}/{link}    a w
GET    /ws/events                              r s a
GET    /ws/worker                              a w
";

/// Routes that need no token at all.
const PUBLIC: &[&str] = &[
    "GET /api/health",
    "GET /api/share/{token}",
    "GET /api/share/{token}/metrics",
    "GET /api/share/{token}/dataset",
];

fn scope_letter(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::Read => "r",
        TokenScope::Submit => "s",
        TokenScope::Admin => "a",
        TokenScope::Worker => "w",
    }
}

/// A path for a route template: ids that do not exist, names that are not stored.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "987654")
        .replace("{job_id}", "987654")
        .replace("{attempt}", "1")
        .replace("{link}", "0")
        .replace("{name}", "model.bpk")
        .replace("{share_id}", "987654")
        .replace("{dataset}", "no-such-set")
}

/// `GET /api/jobs` with `token`: the status and the body.
async fn list_jobs(url: &str, token: &str) -> (StatusCode, String) {
    raw(
        &format!("{url}/api/jobs"),
        reqwest::Method::GET,
        Some(token),
        vec![],
    )
    .await
}

async fn token(admin: &Client, scope: TokenScope, name: &str) -> String {
    admin
        .create_token(&CreateToken {
            scope,
            name: name.into(),
            expires_in_s: None,
            worker_id: None,
        })
        .await
        .expect("create token")
        .token
}

#[tokio::test]
async fn every_route_answers_every_scope_as_the_policy_says() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = support::start(dir.path(), HB).await;
    let url = c.url();
    let admin = support::admin(&c);
    let mut tokens = vec![(TokenScope::Admin, ADMIN.to_string())];
    for scope in [TokenScope::Read, TokenScope::Submit, TokenScope::Worker] {
        tokens.push((scope, token(&admin, scope, &format!("{scope} test")).await));
    }

    // The document's operations are exactly the policy's routes and the public ones: a new
    // route must be placed in the table above.
    let (status, doc) = raw(
        &format!("{url}/api/openapi.json"),
        reqwest::Method::GET,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&doc).expect("json");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let key = format!("{} {path}", method.to_uppercase());
            let secured = op.get("security").is_some();
            assert_eq!(
                secured,
                !PUBLIC.contains(&key.as_str()),
                "{key}: `security` in the document must match whether it needs a token"
            );
            if secured {
                // A route a scope may not use is documented with its 403.
                assert!(op["responses"].get("403").is_some(), "{key}: no 403");
                assert!(op["responses"].get("401").is_some(), "{key}: no 401");
            }
            documented.insert(key);
        }
    }
    let policy: Vec<(&str, &str, Vec<&str>)> = POLICY
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split_whitespace();
            let method = parts.next().expect("method");
            let route = parts.next().expect("route");
            (method, route, parts.collect())
        })
        .collect();
    let mut listed: BTreeSet<String> = policy.iter().map(|(m, r, _)| format!("{m} {r}")).collect();
    listed.extend(PUBLIC.iter().map(|s| s.to_string()));
    // The document itself is served outside it.
    documented.insert("GET /api/openapi.json".into());
    assert_eq!(documented, listed, "routes in the document vs. in POLICY");

    let http = reqwest::Client::new();
    for (method, route, allowed) in &policy {
        let path = concrete(route);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
            Vec::new()
        } else {
            b"{}".to_vec()
        };
        // No token: 401, whatever the route.
        let response = http
            .request(method.clone(), format!("{url}{path}"))
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        for (scope, token) in &tokens {
            let response = http
                .request(method.clone(), format!("{url}{path}"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("request");
            let status = response.status();
            let text = response.text().await.expect("body");
            let refused_by_scope =
                status == StatusCode::FORBIDDEN && text.contains("needs a token with scope");
            if allowed.contains(&scope_letter(*scope)) {
                assert!(
                    !refused_by_scope && status != StatusCode::UNAUTHORIZED,
                    "{method} {path} with a {scope} token: {status} {text}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} with a {scope} token: {text}"
                );
                let error = error_body(&text).error;
                assert!(
                    error.contains("needs a token with scope")
                        && error.contains(&format!("this is a {scope} token")),
                    "{method} {path} with a {scope} token: {error}"
                );
            }
        }
    }
    c.shutdown().await;
}

fn metric(step: u64) -> Metric {
    Metric {
        step,
        epoch: 0.0,
        split: Split::Train,
        loss: 1.0 / step as f64,
        accuracy: None,
        lr: None,
        samples_per_sec: None,
    }
}

#[tokio::test]
async fn a_worker_token_acts_only_for_the_attempts_of_its_own_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = Duration::from_millis(300);
    let c = support::start(dir.path(), hb).await;
    let url = c.url();
    let admin = support::admin(&c);
    let pool = c.create_worker_token("pool").await.expect("token");
    let only_b = admin
        .create_token(&CreateToken {
            scope: TokenScope::Worker,
            name: "b only".into(),
            expires_in_s: None,
            worker_id: Some("b".into()),
        })
        .await
        .expect("bound token");
    assert_eq!(only_b.info.worker_id.as_deref(), Some("b"));
    let only_b = only_b.token;

    let job = support::submit(&admin, "mine").await;
    let mut a = support::worker(&c, &pool, "a", vec![]).await;
    let (attempt, _) = expect_assign(&mut a, hb).await;
    support::start_ok(&mut a, attempt, 10).await;
    support::wait_state(&admin, job.id, JobState::Running).await;

    // Worker `a` stores and fetches its attempt's artifacts with the pool token.
    let as_a = Client::new(&url, Some(pool.clone()))
        .expect("url")
        .as_worker("a");
    as_a.upload_artifact(job.id, "checkpoint-0000000002.ckpt", vec![2])
        .await
        .expect("a uploads for its own attempt");
    assert_eq!(
        as_a.download_artifact(job.id, "checkpoint-0000000002.ckpt")
            .await
            .expect("a downloads"),
        vec![2]
    );

    // The same token for a worker that does not run the job, or naming none: refused.
    let forbidden = |err: kiln_client::ClientError, needle: &str| {
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    };
    let as_x = Client::new(&url, Some(pool.clone()))
        .expect("url")
        .as_worker("x");
    forbidden(
        as_x.upload_artifact(job.id, "model.bpk", vec![1])
            .await
            .expect_err("x does not run it"),
        "worker `x` does not run job",
    );
    forbidden(
        as_x.artifacts(job.id).await.expect_err("nor read it"),
        "does not run job",
    );
    let nameless = Client::new(&url, Some(pool.clone())).expect("url");
    forbidden(
        nameless
            .upload_artifact(job.id, "model.bpk", vec![1])
            .await
            .expect_err("no worker named"),
        "x-kiln-worker",
    );
    // A token bound to `b` cannot pose as `a`, and `b` does not run the job.
    let b_as_a = Client::new(&url, Some(only_b.clone()))
        .expect("url")
        .as_worker("a");
    forbidden(
        b_as_a
            .upload_artifact(job.id, "model.bpk", vec![1])
            .await
            .expect_err("bound to b"),
        "bound to worker `b`, not `a`",
    );
    let b = Client::new(&url, Some(only_b.clone())).expect("url");
    forbidden(
        b.upload_artifact(job.id, "model.bpk", vec![1])
            .await
            .expect_err("b does not run it"),
        "worker `b` does not run job",
    );
    // Nor can it say hello as `a` on the worker socket.
    let mut posing = support::connect(&c, "/ws/worker", &only_b).await;
    send_json(&mut posing, &support::hello("a", vec![])).await;
    match support::next::<CoordinatorMessage>(&mut posing, None).await {
        Next::Msg(CoordinatorMessage::Goodbye {
            reason: CloseReason::BadMessage { message },
        }) => assert!(message.contains("bound to worker `b`"), "{message}"),
        other => panic!("expected a goodbye, got {other:?}"),
    }

    // As itself, `b` connects; its reports about `a`'s attempt are ignored, `a`'s are kept.
    let mut b_ws = support::worker(&c, &only_b, "b", vec![]).await;
    send_json(
        &mut b_ws,
        &WorkerMessage::Metrics {
            attempt,
            points: vec![metric(1)],
        },
    )
    .await;
    send_json(
        &mut b_ws,
        &WorkerMessage::Finished {
            attempt,
            outcome: kiln_proto::protocol::AttemptOutcome::Failed,
            error: Some("not b's to say".into()),
            steps: 1,
            retryable: Some(false),
        },
    )
    .await;
    send_json(
        &mut a,
        &WorkerMessage::Metrics {
            attempt,
            points: vec![metric(2)],
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let points = loop {
        let points = admin
            .metrics(job.id, &MetricQuery::default())
            .await
            .expect("metrics");
        if !points.is_empty() {
            break points;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's metric never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let steps: Vec<u64> = points.iter().map(|p| p.metric.step).collect();
    assert_eq!(steps, vec![2], "only a's report is kept");
    assert_eq!(
        admin.job(job.id).await.expect("job").state,
        JobState::Running
    );

    // Once the attempt is over, its worker's token no longer reaches the job's artifacts.
    support::finish_ok(&mut a, attempt, 10).await;
    support::wait_state(&admin, job.id, JobState::Succeeded).await;
    forbidden(
        as_a.upload_artifact(job.id, "late.bin", vec![1])
            .await
            .expect_err("over"),
        "does not run job",
    );
    // Admins and readers still read them.
    assert_eq!(
        support::artifact_names(&admin, job.id).await,
        vec!["checkpoint-0000000002.ckpt"]
    );
    c.shutdown().await;
}

/// A raw relay request as `kiln worker` makes it; the answer's status line.
async fn relay_status(url: &str, token: &str, worker: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: kiln-ring\r\n\
         Authorization: Bearer {token}\r\nX-Kiln-Worker: {worker}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n") {
        head.push(stream.read_u8().await.expect("read"));
    }
    String::from_utf8_lossy(&head).trim().to_string()
}

#[tokio::test]
async fn a_worker_token_opens_only_its_own_ranks_ends_of_relayed_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = Duration::from_millis(300);
    let c = support::start(dir.path(), hb).await;
    let url = c.url();
    let admin = support::admin(&c);
    let pool = c.create_worker_token("pool").await.expect("token");
    let mut spec = support::spec("pair");
    spec.distributed.workers = 2;
    let job = admin
        .submit(&kiln_proto::protocol::SubmitJob {
            spec,
            group: None,
            tags: Vec::new(),
        })
        .await
        .expect("submit");
    // Workers that can join a data-parallel job advertise where their peers reach them.
    let ddp_worker = |id: &'static str| {
        let (c, pool) = (&c, pool.clone());
        async move {
            let mut ws = support::connect(c, "/ws/worker", &pool).await;
            let mut hello = support::hello(id, vec![]);
            if let WorkerMessage::Hello { capabilities, .. } = &mut hello {
                capabilities.peer_addr = Some("127.0.0.1:9".into());
            }
            send_json(&mut ws, &hello).await;
            match support::recv(&mut ws, None).await {
                CoordinatorMessage::Welcome { .. } => ws,
                other => panic!("expected welcome, got {other:?}"),
            }
        }
    };
    let mut a = ddp_worker("a").await;
    let mut b = ddp_worker("b").await;
    let ((attempt, _), _) = tokio::join!(expect_assign(&mut a, hb), expect_assign(&mut b, hb));
    let ranks = c
        .state()
        .store
        .attempt_workers(attempt)
        .await
        .expect("ranks");
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    let link = |side: &str| format!("/api/relay/{}/{}/0?side={side}", job.id, attempt.attempt);
    // Link 0 carries rank 0 to rank 1: rank 0 dials it, rank 1 accepts it; nobody else.
    let (zero, one) = (ranks[0].as_str(), ranks[1].as_str());
    assert!(
        relay_status(&url, &pool, zero, &link("dial"))
            .await
            .contains(" 101 ")
    );
    assert!(
        relay_status(&url, &pool, one, &link("accept"))
            .await
            .contains(" 101 ")
    );
    for (worker, side) in [(one, "dial"), (zero, "accept"), ("x", "dial")] {
        let status = relay_status(&url, &pool, worker, &link(side)).await;
        assert!(status.contains(" 403 "), "{worker} {side}: {status}");
    }
    // The admin token is not a worker's: it may open either end (the browser tab's case).
    assert!(
        relay_status(&url, ADMIN, "whoever", &link("accept"))
            .await
            .contains(" 101 ")
    );
    c.shutdown().await;
}

#[tokio::test]
async fn tokens_are_listed_revoked_expire_and_audited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = support::start(dir.path(), HB).await;
    let url = c.url();
    let admin = support::admin(&c);

    // Bad requests name the field.
    for (body, field) in [
        (r#"{"scope":"root","name":"x"}"#, "scope"),
        (r#"{"scope":"read","name":"  "}"#, "name"),
        (
            r#"{"scope":"read","name":"x","expires_in_s":5}"#,
            "expires_in_s",
        ),
        (
            r#"{"scope":"read","name":"x","worker_id":"w"}"#,
            "worker_id",
        ),
        (r#"{"scope":"read","name":"x","admin":true}"#, "admin"),
    ] {
        let response = reqwest::Client::new()
            .post(format!("{url}/api/tokens"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(error_body(&text).error.contains(field), "{body}: {text}");
    }

    let submitter = admin
        .create_token(&CreateToken {
            scope: TokenScope::Submit,
            name: "ci bot".into(),
            expires_in_s: Some(3600),
            worker_id: None,
        })
        .await
        .expect("token");
    let expires = submitter.info.expires_ms.expect("an expiry");
    let lifetime = expires - submitter.info.created_ms;
    assert!((3_599_000..=3_601_000).contains(&lifetime), "{lifetime}");
    let bot = Client::new(&url, Some(submitter.token.clone())).expect("url");
    let job = support::submit(&bot, "by-the-bot").await;
    bot.cancel(job.id).await.expect("cancel");
    let err = bot.tokens().await.expect_err("admin only");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    let err = bot.revoke_token(999).await.expect_err("admin only");
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));

    // The listing shows names and scopes, never tokens.
    let listed = admin.tokens().await.expect("tokens");
    let names: Vec<(&str, TokenScope)> =
        listed.iter().map(|t| (t.name.as_str(), t.scope)).collect();
    assert_eq!(
        names,
        vec![("admin", TokenScope::Admin), ("ci bot", TokenScope::Submit)]
    );
    let (_, text) = raw(
        &format!("{url}/api/tokens"),
        reqwest::Method::GET,
        Some(ADMIN),
        vec![],
    )
    .await;
    assert!(
        !text.contains(&submitter.token) && !text.contains(ADMIN),
        "{text}"
    );

    // The audit log: who changed what, with which answer; reads are not in it.
    let audit = admin.audit(0, 100).await.expect("audit");
    let seen: Vec<(String, String, String, u16)> = audit
        .iter()
        .map(|e| {
            (
                e.token_name.clone(),
                e.method.clone(),
                e.path.clone(),
                e.status,
            )
        })
        .collect();
    let bad_posts = vec![
        (
            "admin".to_string(),
            "POST".to_string(),
            "/api/tokens".to_string(),
            400
        );
        5
    ];
    let mut expected = bad_posts;
    expected.extend([
        ("admin".into(), "POST".into(), "/api/tokens".into(), 201),
        ("ci bot".into(), "POST".into(), "/api/jobs".into(), 201),
        (
            "ci bot".into(),
            "POST".into(),
            format!("/api/jobs/{}/cancel", job.id),
            200,
        ),
        // Refused attempts are in it too.
        (
            "ci bot".into(),
            "DELETE".into(),
            "/api/tokens/999".into(),
            403,
        ),
    ]);
    assert_eq!(seen, expected);
    assert!(audit.iter().all(|e| e.peer.as_deref() == Some("127.0.0.1")));
    let later = admin.audit(audit[5].seq, 100).await.expect("audit after");
    assert_eq!(later.len(), 3);

    // The last admin token stays.
    let err = admin
        .revoke_token(listed[0].id)
        .await
        .expect_err("the last admin token");
    assert_eq!(err.status(), Some(StatusCode::CONFLICT));
    assert!(err.to_string().contains("last admin token"), "{err}");

    // Revoked: refused at once.
    admin.revoke_token(submitter.info.id).await.expect("revoke");
    let err = bot.jobs(&JobFilter::default()).await.expect_err("revoked");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    let err = admin
        .revoke_token(submitter.info.id)
        .await
        .expect_err("gone");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));

    // Expired: refused, saying so (made in the store: the API's shortest lifetime is a
    // minute).
    let old = "kiln_expired-token-for-tests";
    c.state()
        .store
        .create_token(
            &kiln_coordinator::auth::hash_token(old),
            TokenScope::Read,
            "old",
            Some(kiln_coordinator::store::now_ms() - 1),
            None,
        )
        .await
        .expect("store token");
    let (status, text) = list_jobs(&url, old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_body(&text).error.contains("expired"), "{text}");
    c.shutdown().await;
}

#[tokio::test]
async fn a_browser_socket_must_come_from_our_own_pages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = support::start(dir.path(), HB).await;
    let ws_url = format!("{}/ws/events", c.url().replacen("http://", "ws://", 1));
    let host = c.url().replacen("http://", "", 1);
    for (origin, ok) in [
        ("https://evil.example".to_string(), false),
        (format!("http://{host}.evil.example"), false),
        ("null".to_string(), false),
        (format!("http://{host}"), true),
    ] {
        let mut req = ws_url.as_str().into_client_request().expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {ADMIN}").parse().expect("value"),
        );
        req.headers_mut()
            .insert("origin", origin.parse().expect("value"));
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => assert!(ok, "{origin} was let in"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert!(!ok, "{origin} was refused");
                assert_eq!(response.status(), StatusCode::FORBIDDEN);
                let body =
                    String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[])).to_string();
                assert!(body.contains(&origin), "{body}");
            }
            Err(e) => panic!("{origin}: {e}"),
        }
    }
    c.shutdown().await;
}

#[tokio::test]
async fn an_address_that_keeps_guessing_tokens_is_refused_for_a_while() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = support::start(dir.path(), HB).await;
    let url = c.url();
    for i in 0..kiln_coordinator::auth::BAD_TOKENS_ALLOWED {
        let (status, _) = list_jobs(&url, &format!("guess-{i}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // Now its bad tokens get 429, saying for how long; the right token still passes (clients
    // behind one proxy share an address), and health needs none.
    let (status, text) = list_jobs(&url, "guess-again").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    let error = error_body(&text).error;
    assert!(
        error.contains("too many bad tokens") && error.contains("try again in"),
        "{error}"
    );
    let (status, text) = list_jobs(&url, ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let health = Client::new(&url, None).expect("url").health().await;
    assert!(health.is_ok());
    c.shutdown().await;
}
