//! Coordinator + workers as real processes on OS-chosen ports.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_client::{Client, JobFilter, MetricQuery};
use kiln_proto::protocol::{JobId, JobInfo, JobState, SubmitJob};
use kiln_proto::spec::JobSpec;

use crate::support::{kiln, run, stderr};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A child process that is killed on drop and whose output is kept for failure reports.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn kiln");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().expect("lock").push(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            output,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.output.lock().expect("lock").clone()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- output of {} ---", self.name);
            for line in self.lines() {
                eprintln!("{line}");
            }
        }
    }
}

/// Every one of `ranks` ranks logged that its ring links took `transport` ("direct TCP",
/// "relayed through the coordinator").
pub fn assert_transport(lines: &[String], ranks: usize, transport: &str) {
    let chosen: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("(transport: "))
        .collect();
    assert_eq!(chosen.len(), ranks, "one line per rank: {lines:#?}");
    let expected = format!("(transport: {transport})");
    assert!(
        chosen.iter().all(|l| l.ends_with(&expected)),
        "every link {transport}: {chosen:#?}"
    );
}

/// A log line without its ANSI colours.
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Cluster {
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub coordinator: Proc,
    pub workers: Vec<Proc>,
    pub rt: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn start(data_dir: &Path) -> Cluster {
        Cluster::start_on(data_dir, "127.0.0.1")
    }

    /// A coordinator listening on `ip` (e.g. `0.0.0.0`, for workers in network namespaces);
    /// the test talks to it on 127.0.0.1.
    pub fn start_on(data_dir: &Path, ip: &str) -> Cluster {
        let port = free_port();
        let coordinator = start_coordinator(data_dir, ip, port);
        Cluster {
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.to_path_buf(),
            coordinator,
            workers: Vec::new(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    pub fn restart_coordinator(&mut self) {
        self.coordinator.kill();
        self.coordinator = start_coordinator(&self.data_dir, "127.0.0.1", self.port);
    }

    pub fn add_worker(&mut self, id: &str) {
        self.add_worker_with(id, &mut kiln());
    }

    /// A worker from `cmd` (e.g. with another working directory), with its own dataset cache
    /// under the data dir: `<data dir>/cache-<id>`.
    pub fn add_worker_with(&mut self, id: &str, cmd: &mut Command) {
        self.add_worker_args(id, cmd, &[]);
    }

    /// As [`Cluster::add_worker_with`], with more `kiln worker` flags.
    pub fn add_worker_args(&mut self, id: &str, cmd: &mut Command, extra: &[&str]) {
        self.add_worker_token(id, cmd, TOKEN, extra);
    }

    /// As [`Cluster::add_worker_args`], connecting with `token` instead of the admin token.
    pub fn add_worker_token(&mut self, id: &str, cmd: &mut Command, token: &str, extra: &[&str]) {
        let w = Proc::spawn(
            id,
            cmd.args([
                "worker", "--server", &self.url, "--token", token, "--device", "cpu", "--id", id,
            ])
            .args(extra)
            .arg("--cache-dir")
            .arg(self.cache_dir(id)),
        );
        self.workers.push(w);
    }

    /// The dataset cache of worker `id`.
    pub fn cache_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join(format!("cache-{id}"))
    }

    /// Run `kiln ARGS --server <this cluster> --token <admin>`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run(kiln()
            .args(args)
            .args(["--server", &self.url, "--token", TOKEN]))
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(TOKEN.to_string())).expect("client")
    }

    pub fn submit(&self, spec: &str) -> JobInfo {
        let spec = JobSpec::from_toml_str(spec).expect("test spec is valid");
        self.rt
            .block_on(self.client().submit(&SubmitJob {
                spec,
                group: None,
                tags: Vec::new(),
            }))
            .expect("submit")
    }

    pub fn job(&self, id: JobId) -> JobInfo {
        self.rt.block_on(self.client().job(id)).expect("get job")
    }

    /// Poll until `pred` holds for the job (or panic after `secs`).
    pub fn wait_job(
        &self,
        id: JobId,
        secs: u64,
        what: &str,
        pred: impl Fn(&JobInfo) -> bool,
    ) -> JobInfo {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(id);
            if pred(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id}: timed out waiting for {what}; last: {job:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn metrics(&self, id: JobId) -> Vec<kiln_proto::protocol::MetricPoint> {
        self.rt
            .block_on(self.client().metrics(
                id,
                &MetricQuery {
                    max_points: Some(100_000),
                    ..MetricQuery::default()
                },
            ))
            .expect("metrics")
    }

    /// Wait until `n` workers are connected (an elastic job starts with whoever is there).
    pub fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let workers = self.rt.block_on(self.client().workers()).expect("workers");
            if workers.iter().filter(|w| w.connected).count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} workers never connected: {workers:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The job's log lines, oldest first.
    pub fn log_lines(&self, id: JobId) -> Vec<String> {
        self.rt
            .block_on(self.client().logs(id, 0, Some(10_000)))
            .expect("logs")
            .into_iter()
            .map(|l| l.line.text)
            .collect()
    }

    /// The steps of the checkpoints of job `id` that its workers announced (the coordinator
    /// logs each as it marks it resumable).
    pub fn announced_checkpoints(&self, id: JobId) -> Vec<u64> {
        let prefix = format!("kiln_coordinator::ws::worker: checkpoint job_id={id} step=");
        self.coordinator
            .lines()
            .iter()
            .filter_map(|l| {
                let l = plain(l);
                let rest = &l[l.find(&prefix)? + prefix.len()..];
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    pub fn artifacts(&self, id: JobId) -> Vec<String> {
        self.rt
            .block_on(self.client().artifacts(id))
            .expect("artifacts")
            .into_iter()
            .map(|a| a.name)
            .collect()
    }
}

/// `--database URL` when the suite runs on PostgreSQL (`KILN_TEST_POSTGRES`, see
/// `kiln_coordinator::testing`): one database per data directory, kept across restarts.
fn postgres_for(data_dir: &Path) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt
        .block_on(kiln_coordinator::testing::database_for(data_dir))
        .expect("test database")
    {
        Some(url) => vec!["--database".into(), url],
        None => Vec::new(),
    }
}

fn start_coordinator(data_dir: &Path, ip: &str, port: u16) -> Proc {
    let p = Proc::spawn(
        "coordinator",
        kiln()
            .args([
                "serve",
                "--addr",
                &format!("{ip}:{port}"),
                "--admin-token",
                TOKEN,
                // Lost after three missed heartbeats (1.5 s): short enough for the kill tests,
                // long enough that a 2-core CI machine running several trainings at once
                // does not starve a live worker into "lost".
                "--heartbeat-ms",
                "500",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(postgres_for(data_dir)),
    );
    // Poll health instead of sleeping.
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/api/health");
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = write!(s, "GET /api/health HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200") {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "coordinator did not answer {url}: {:?}",
            p.lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A job of `steps` steps on synthetic data, heavy enough to take a few ms a step.
pub fn spec(name: &str, steps: u64, checkpoint_every: u64) -> String {
    format!(
        r#"
name = "{name}"
device = "cpu"
[model]
kind = "mlp"
hidden = [256, 256]
[dataset]
kind = "synthetic"
examples = 4096
features = 128
classes = 8
[training]
batch_size = 64
epochs = 1000
max_steps = {steps}
log_every = 5
checkpoint_every = {checkpoint_every}
"#
    )
}

#[test]
fn two_workers_run_four_jobs_and_results_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    c.add_worker("w2");
    let jobs: Vec<_> = (0..4)
        .map(|i| c.submit(&spec(&format!("job{i}"), 40, 20)))
        .collect();
    let mut workers_used = std::collections::BTreeSet::new();
    for j in &jobs {
        let done = c.wait_job(j.id, 120, "success", |j| j.state.is_terminal());
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        assert_eq!(done.step, 40);
        workers_used.insert(done.worker_id.clone().unwrap_or_default());
        let metrics = c.metrics(j.id);
        assert!(
            metrics.iter().any(|p| p.metric.step == 40),
            "final metric stored"
        );
        let artifacts = c.artifacts(j.id);
        for name in ["model.bpk", "model.safetensors", "summary.json"] {
            assert!(
                artifacts.iter().any(|a| a == name),
                "{name} in {artifacts:?}"
            );
        }
    }
    assert_eq!(
        workers_used.len(),
        2,
        "both workers took jobs: {workers_used:?}"
    );
    // The same through the CLI.
    let o = c.cli(&["jobs", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(page["total"], 4);
    let o = c.cli(&["job", &jobs[0].id.to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let job: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(job["job"]["state"], "succeeded");
    assert!(job["metrics"].as_array().is_some_and(|m| !m.is_empty()));
    let bytes =
        c.rt.block_on(c.client().download_artifact(jobs[0].id, "model.bpk"))
            .expect("download the final model");
    assert!(bytes.len() > 1000);
    // A read-only share link: the CLI prints its URL; it opens without a token until revoked.
    let o = c.cli(&["share", &jobs[0].id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let link = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let token = link
        .strip_prefix(&format!("{}/s/", c.url))
        .unwrap_or_else(|| panic!("not a share URL: {link}"));
    let anonymous = Client::new(&c.url, None).expect("client");
    let shared =
        c.rt.block_on(anonymous.shared_run(token))
            .expect("the link opens without a token");
    assert_eq!(shared.job.name, "job0");
    assert_eq!(shared.job.worker_id, None, "the worker is not shown");
    let o = c.cli(&["shares", &jobs[0].id.to_string(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let shares: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let share_id = shares[0]["id"].as_i64().expect("a share id");
    let o = c.cli(&["unshare", &share_id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err =
        c.rt.block_on(anonymous.shared_run(token))
            .expect_err("a revoked link is gone");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");
}

#[test]
fn cancel_stops_the_worker_within_two_seconds_and_it_takes_the_next_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    let long = c.submit(&spec("long", 1_000_000, 1_000_000));
    c.wait_job(long.id, 60, "running with progress", |j| {
        j.state == JobState::Running && j.step > 0
    });
    let o = c.cli(&["cancel", &long.id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let asked = Instant::now();
    c.wait_job(long.id, 10, "cancelled", |j| j.state == JobState::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "cancelled after {:?}",
        asked.elapsed()
    );
    // Retry re-queues the cancelled job; cancel it again so the worker is free.
    let o = c.cli(&["retry", &long.id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.wait_job(long.id, 60, "running again", |j| {
        j.state == JobState::Running
    });
    c.rt.block_on(c.client().cancel(long.id))
        .expect("cancel again");
    c.wait_job(long.id, 10, "cancelled again", |j| {
        j.state == JobState::Cancelled
    });
    let next = c.submit(&spec("next", 20, 10));
    let next = c.wait_job(next.id, 60, "success", |j| j.state.is_terminal());
    assert_eq!(next.state, JobState::Succeeded);
    assert_eq!(next.worker_id.as_deref(), Some("w1"));
}

#[test]
fn a_killed_workers_job_resumes_from_its_checkpoint_on_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("first");
    let job = c.submit(&spec("survivor", 3000, 25));
    // Wait until the coordinator has a checkpoint announced, then kill the worker that runs
    // the job: whatever it uploaded after that without announcing it is not resumed from.
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.announced_checkpoints(job.id).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint announced");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.workers[0].kill();
    // The worker is dead: the coordinator has read all it will ever read of it once it saw
    // the socket close.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .coordinator
        .lines()
        .iter()
        .map(|l| plain(l))
        .any(|l| l.contains("worker{worker_id=first}") && l.contains("worker disconnected"))
    {
        assert!(
            Instant::now() < deadline,
            "the coordinator did not see `first` go"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let newest = *c
        .announced_checkpoints(job.id)
        .iter()
        .max()
        .expect("announced");
    let before_kill: Vec<u64> = c
        .metrics(job.id)
        .iter()
        .filter(|p| p.attempt == 1 && p.metric.step <= newest)
        .map(|p| p.metric.step)
        .collect();
    c.add_worker("second");
    let done = c.wait_job(job.id, 180, "success after the kill", |j| {
        j.state.is_terminal()
    });
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.worker_id.as_deref(), Some("second"));
    assert_eq!(done.step, 3000);
    let attempts = c.rt.block_on(c.client().attempts(job.id)).unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].state, JobState::Failed);
    let resumed_from = attempts[1]
        .resumed_from_step
        .expect("attempt 2 resumed from a checkpoint");
    assert!(
        resumed_from == newest,
        "resumed from {resumed_from}, newest announced checkpoint {newest}"
    );
    let metrics = c.metrics(job.id);
    // The step count continues: attempt 2 starts after its checkpoint.
    let second: Vec<u64> = metrics
        .iter()
        .filter(|p| p.attempt == 2)
        .map(|p| p.metric.step)
        .collect();
    assert!(
        second.iter().all(|&s| s > resumed_from),
        "attempt 2 steps {second:?}"
    );
    // No metric point up to the checkpoint was lost.
    let kept: Vec<u64> = metrics
        .iter()
        .filter(|p| p.attempt == 1)
        .map(|p| p.metric.step)
        .collect();
    for step in before_kill {
        assert!(kept.contains(&step), "metric at step {step} lost");
    }
    for step in (5..=resumed_from).step_by(5) {
        assert!(
            kept.contains(&step),
            "train metric at step {step} (before the checkpoint) missing"
        );
    }
}

#[test]
fn restarting_the_coordinator_mid_job_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("steady");
    let done_first = c.submit(&spec("earlier", 20, 10));
    c.wait_job(done_first.id, 60, "success", |j| {
        j.state == JobState::Succeeded
    });
    let job = c.submit(&spec("through-restart", 1500, 100));
    c.wait_job(job.id, 60, "running", |j| {
        j.state == JobState::Running && j.step >= 100
    });
    let metrics_before = c.metrics(job.id).len();
    c.restart_coordinator();
    let done = c.wait_job(job.id, 180, "success after the restart", |j| {
        j.state.is_terminal()
    });
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(
        done.worker_id.as_deref(),
        Some("steady"),
        "the same worker re-attached"
    );
    assert!(c.metrics(job.id).len() >= metrics_before);
    let attempts = c.rt.block_on(c.client().attempts(job.id)).unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "no new attempt: the running one re-attached: {attempts:?}"
    );
    // The earlier job, its metrics and artifacts are intact.
    assert_eq!(c.job(done_first.id).state, JobState::Succeeded);
    assert!(c.artifacts(done_first.id).iter().any(|a| a == "model.bpk"));
    let page =
        c.rt.block_on(c.client().jobs(&JobFilter::default()))
            .unwrap();
    assert_eq!(page.total, 2);
}

/// Bad data and a diverging loss fail the same way on every machine: the job fails after one
/// attempt, though it has three, and its error says why it was not retried.
#[test]
fn a_job_that_cannot_succeed_fails_after_one_attempt_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    let garbage = dir.path().join("garbage.csv");
    std::fs::write(&garbage, "x,y\n1,a\nnot a number,b\n3,a\n").unwrap();
    // Regression targets of 1e20: the squared error overflows at the first step.
    let huge = dir.path().join("huge.csv");
    std::fs::write(&huge, "x,y\n1,1e20\n2,-1e20\n3,1e20\n4,-1e20\n5,1e20\n").unwrap();
    let csv_spec = |name: &str, path: &Path, task: &str| {
        format!(
            r#"
name = "{name}"
device = "cpu"
max_attempts = 3
[model]
kind = "mlp"
hidden = [4]
[dataset]
kind = "csv"
path = "{}"
label_column = "y"
task = "{task}"
[training]
batch_size = 2
max_steps = 5
log_every = 1
"#,
            path.to_str().expect("utf-8 temp path")
        )
    };
    for (spec, reason) in [
        (
            csv_spec("bad-data", &garbage, "classification"),
            "line 3, column \"x\": \"not a number\" is not a number",
        ),
        (
            csv_spec("diverges", &huge, "regression"),
            "the loss became inf at step 1",
        ),
    ] {
        let job = c.submit(&spec);
        let job = c.wait_job(job.id, 60, "terminal", |j| j.state.is_terminal());
        assert_eq!(job.state, JobState::Failed, "{job:?}");
        assert_eq!((job.attempts, job.max_attempts), (1, 3), "{job:?}");
        let error = job.error.clone().unwrap_or_default();
        assert!(error.starts_with("not retried: "), "{error}");
        assert!(error.contains(reason), "expected {reason:?} in {error}");
        let attempts =
            c.rt.block_on(c.client().attempts(job.id))
                .expect("attempts");
        assert_eq!(attempts.len(), 1, "{attempts:?}");
    }
}

#[test]
fn bad_input_over_the_api_is_rejected_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    // Invalid spec through the CLI: 400 naming the fields, nothing stored.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        spec("bad", 10, 5).replace("batch_size = 64", "batch_size = 0"),
    )
    .unwrap();
    let o = c.cli(&["submit", bad.to_str().expect("utf-8 temp path")]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("training.batch_size"), "{}", stderr(&o));
    let page =
        c.rt.block_on(c.client().jobs(&JobFilter::default()))
            .unwrap();
    assert_eq!(page.total, 0, "nothing stored");
    // Missing and wrong tokens.
    let o = run(kiln().args(["jobs", "--server", &c.url, "--token", "wrong"]));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    let o = run(kiln()
        .args(["jobs", "--server", &c.url])
        .env_remove("KILN_TOKEN"));
    assert!(stderr(&o).contains("no API token"), "{}", stderr(&o));
    // Artifact path traversal.
    let job = c.submit(&spec("x", 10, 5));
    for name in ["../escape", "..%2Fescape", "%2e%2e%2fescape", ".hidden"] {
        let err =
            c.rt.block_on(c.client().upload_artifact(job.id, name, b"x".to_vec()))
                .expect_err("traversal rejected");
        let status = err.status().map(|s| s.as_u16());
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)),
            "{name}: {err}"
        );
    }
    assert!(c.artifacts(job.id).is_empty(), "nothing stored");
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn tags_and_notes_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let job = c.submit(&spec("tagged", 10, 5));
    c.submit(&spec("other", 10, 5));
    let id = job.id.to_string();
    let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    let o = c.cli(&["tag", &id, "baseline", "mlp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("tags: baseline, mlp"), "{}", stdout(&o));
    let o = c.cli(&["tag", &id, "--remove", "mlp", "wide"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(c.job(job.id).tags, ["baseline", "wide"]);
    // A bad tag: the field and value named, nothing stored.
    let o = c.cli(&["tag", &id, "bad tag"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("tags[2]") && stderr(&o).contains("bad tag"),
        "{}",
        stderr(&o)
    );
    assert_eq!(c.job(job.id).tags, ["baseline", "wide"], "nothing stored");

    // Tags at submission.
    let file = dir.path().join("tagged.toml");
    std::fs::write(&file, spec("at-submit", 10, 5)).unwrap();
    let o = c.cli(&["submit", file.to_str().unwrap(), "--tag", "wide", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let submitted: JobInfo = serde_json::from_slice(&o.stdout).expect("job json");
    assert_eq!(submitted.tags, ["wide"]);

    let o = c.cli(&["note", &id, "first try, lr 1e-3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.cli(&["jobs", "--tag", "wide"]);
    assert!(stdout(&o).contains("2 of 2 jobs"), "{}", stdout(&o));
    assert!(stdout(&o).contains("tagged") && stdout(&o).contains("at-submit"));
    assert!(!stdout(&o).contains("other"), "{}", stdout(&o));
    let o = c.cli(&["job", &id]);
    assert!(
        stdout(&o).contains("tags      baseline, wide"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("notes     first try, lr 1e-3"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn scoped_tokens_from_the_cli_a_worker_with_its_own_token_and_a_reader_that_only_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    let create = |args: &[&str]| -> kiln_proto::token::NewToken {
        let o = c.cli(&[&["token", "create"], args, &["--json"]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).expect("NewToken JSON")
    };
    let worker = create(&["--scope", "worker", "--worker", "w1", "--name", "box one"]);
    let reader = create(&["--scope", "read", "--name", "wall", "--expires", "30d"]);
    assert_eq!(reader.info.scope, kiln_proto::token::TokenScope::Read);
    assert!(reader.info.expires_ms.is_some());

    // A real worker with a token bound to it trains a job: checkpoints and the model upload
    // because it runs the job.
    c.add_worker_token("w1", &mut kiln(), &worker.token, &[]);
    let job = c.submit(&spec("scoped", 40, 20));
    let done = c.wait_job(job.id, 120, "success", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let artifacts = c.artifacts(job.id);
    for name in ["model.bpk", "checkpoint-0000000020.ckpt"] {
        assert!(
            artifacts.iter().any(|a| a == name),
            "{name} in {artifacts:?}"
        );
    }

    // The reader lists jobs; submitting is refused, naming the scope it needs.
    let as_reader = |args: &[&str]| {
        run(kiln()
            .args(args)
            .args(["--server", &c.url, "--token", &reader.token]))
    };
    let o = as_reader(&["jobs"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("scoped"));
    let file = dir.path().join("job.toml");
    std::fs::write(&file, spec("not-allowed", 10, 5)).unwrap();
    let o = as_reader(&["submit", file.to_str().expect("utf-8 temp path")]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("needs a token with scope submit or admin; this is a read token"),
        "{}",
        stderr(&o)
    );
    // The listing shows both; the audit log shows who made them and who submitted.
    let o = c.cli(&["token", "ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        listing.contains("box one") && listing.contains("wall"),
        "{listing}"
    );
    assert!(!listing.contains(&reader.token), "{listing}");
    let o = c.cli(&["audit", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let audit: Vec<kiln_proto::token::AuditEntry> = serde_json::from_slice(&o.stdout).unwrap();
    let seen: Vec<(&str, &str, u16)> = audit
        .iter()
        .map(|e| (e.method.as_str(), e.path.as_str(), e.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("POST", "/api/tokens", 201),
            ("POST", "/api/tokens", 201),
            ("POST", "/api/jobs", 201),
            ("POST", "/api/jobs", 403),
        ],
        "{audit:?}"
    );
    assert_eq!(audit[3].token_name, "wall");
    // Revoked, the reader is refused.
    let o = c.cli(&["token", "revoke", &reader.info.id.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = as_reader(&["jobs"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
}
