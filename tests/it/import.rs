//! `kiln import`: a run folder of `kiln train` becomes a job on the coordinator, with its curve,
//! model and checkpoint; with `--continue` a worker goes on from that checkpoint.

use std::path::Path;
use std::process::Output;

use kiln_proto::artifact::checkpoint_name;
use kiln_proto::protocol::{JobInfo, JobState};

use crate::cluster::{Cluster, TOKEN};
use crate::support::{kiln, read_jsonl, run, stderr, train_w1};

fn import(cluster: &Cluster, dir: &Path, extra: &[&str]) -> Output {
    run(kiln().arg("import").arg(dir).args(extra).args([
        "--json",
        "--server",
        &cluster.url,
        "--token",
        TOKEN,
    ]))
}

fn job_of(out: &Output) -> JobInfo {
    assert!(out.status.success(), "kiln import failed: {}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("import --json prints the job")
}

#[test]
fn a_kiln_train_run_imports_as_a_job_and_goes_on_on_a_worker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    train_w1(&out, 12);
    let mut cluster = Cluster::start(&dir.path().join("coordinator"));

    let job = job_of(&import(&cluster, &out, &["--tag", "local"]));
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.step, 12);
    assert_eq!(job.tags, vec!["local".to_string()]);
    let path = job.spec.dataset.path().unwrap_or_default().to_string();
    assert!(
        path.starts_with("kiln:sha256:"),
        "the data went along: {path}"
    );
    let local = read_jsonl(&out.join("metrics.jsonl"));
    assert_eq!(
        cluster.metrics(job.id).len(),
        local.len(),
        "the whole curve"
    );
    let files = cluster.artifacts(job.id);
    for name in ["model.bpk", "model.json", "data.json", "summary.json"] {
        assert!(files.iter().any(|f| f == name), "{name} in {files:?}");
    }
    assert!(files.contains(&checkpoint_name(12)), "{files:?}");

    // Go on on a worker: it resumes the imported checkpoint at step 12.
    let queued = job_of(&import(&cluster, &out, &["--continue"]));
    assert_eq!(queued.state, JobState::Queued);
    cluster.add_worker("importer");
    let done = cluster.wait_job(queued.id, 180, "success", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert!(done.step > 12, "it trained on: {done:?}");
    let attempts = cluster
        .rt
        .block_on(cluster.client().attempts(queued.id))
        .expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0].worker_id.starts_with("kiln train"),
        "{attempts:?}"
    );
    assert_eq!(attempts[1].resumed_from_step, Some(12));

    // A folder that is not a run: a clear error, nothing imported.
    let o = import(&cluster, dir.path(), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no spec.toml"), "{}", stderr(&o));
}
