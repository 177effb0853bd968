//! Live control of a job on a real worker process, from the CLI: pause, resume, a new learning
//! rate, a checkpoint now, and forks from it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kiln_proto::artifact::checkpoint_name;
use kiln_proto::metric::Split;
use kiln_proto::protocol::{JobId, JobInfo, JobState};

use crate::cluster::Cluster;
use crate::support::stderr;

/// Long enough to control while it runs (the test cancels it); a fixed seed, no dropout, so
/// two runs of it compute the same losses.
fn spec(name: &str, max_steps: u64) -> String {
    format!(
        r#"
name = "{name}"
device = "cpu"
seed = 7
[model]
kind = "mlp"
hidden = [128, 128]
[dataset]
kind = "synthetic"
examples = 4096
features = 64
classes = 8
[optimizer]
lr = 0.01
[training]
batch_size = 32
epochs = 1000
max_steps = {max_steps}
log_every = 1
checkpoint_every = 1000000
"#
    )
}

/// The step in the job's first log line that reads `prefix<step><suffix>`.
fn logged_step(c: &Cluster, id: JobId, prefix: &str, suffix: &str, secs: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let lines = c.log_lines(id);
        if let Some(step) = lines.iter().find_map(|l| {
            l.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u64>()
                .ok()
        }) {
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "job {id}'s log never said {prefix}N{suffix}: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Train metrics by step: (loss, lr).
fn train_points(c: &Cluster, id: JobId) -> BTreeMap<u64, (f64, f64)> {
    c.metrics(id)
        .into_iter()
        .filter(|p| p.metric.split == Split::Train)
        .map(|p| {
            (
                p.metric.step,
                (p.metric.loss, p.metric.lr.unwrap_or(f64::NAN)),
            )
        })
        .collect()
}

fn cli_ok(c: &Cluster, args: &[&str]) -> String {
    let o = c.cli(args);
    assert!(o.status.success(), "kiln {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fork(c: &Cluster, args: &[&str]) -> JobInfo {
    let out = cli_ok(c, &[&["fork"], args, &["--json"]].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn pause_resume_set_lr_checkpoint_and_fork_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    let job = c.submit(&spec("controlled", 1_000_000));
    let id = job.id.to_string();
    c.wait_job(job.id, 60, "running with progress", |j| {
        j.state == JobState::Running && j.step >= 5
    });

    // Pause: the loop holds after a step and says which; the job stays there.
    let said = cli_ok(&c, &["pause", &id]);
    assert!(said.contains("pause asked"), "{said}");
    let paused_at = logged_step(&c, job.id, "paused after step ", "", 30);
    std::thread::sleep(Duration::from_secs(1));
    let held = c.job(job.id);
    assert!(held.paused && held.state == JobState::Running, "{held:?}");
    assert_eq!(held.step, paused_at, "no step while paused");
    let shown = cli_ok(&c, &["job", &id]);
    assert!(shown.contains("steps (paused)"), "{shown}");
    assert_eq!(
        train_points(&c, job.id).keys().max(),
        Some(&paused_at),
        "metrics up to the pause, none after"
    );

    cli_ok(&c, &["resume", &id]);
    assert_eq!(
        logged_step(&c, job.id, "resumed after step ", "", 30),
        paused_at
    );
    c.wait_job(job.id, 60, "past the pause", |j| j.step >= paused_at + 20);

    // A new learning rate from the next step on.
    cli_ok(&c, &["set-lr", &id, "0.05"]);
    let lr_from = logged_step(&c, job.id, "learning rate 0.05 from step ", "", 30) - 1;
    assert!(lr_from >= paused_at + 20);

    // A checkpoint now.
    cli_ok(&c, &["checkpoint", &id]);
    let ckpt_at = logged_step(&c, job.id, "checkpoint at step ", ", as asked", 30);
    assert!(ckpt_at >= lr_from);
    assert!(
        c.artifacts(job.id).contains(&checkpoint_name(ckpt_at)),
        "{:?}",
        c.artifacts(job.id)
    );
    c.wait_job(job.id, 60, "past the checkpoint", |j| {
        j.step >= ckpt_at + 20
    });
    c.rt.block_on(c.client().cancel(job.id)).expect("cancel");
    let stopped = c.wait_job(job.id, 30, "cancelled", |j| j.state.is_terminal());
    assert_eq!(stopped.state, JobState::Cancelled);
    assert_eq!(
        stopped.lr_changes,
        vec![kiln_proto::protocol::LrChange {
            step: lr_from,
            lr: 0.05
        }]
    );
    let controlled = train_points(&c, job.id);
    for (step, (_, lr)) in &controlled {
        let want = if *step <= lr_from { 0.01 } else { 0.05 };
        assert!((lr - want).abs() < 1e-9, "lr {lr} at step {step}");
    }

    // The same spec uninterrupted to the rate change: the pause changed nothing.
    let reference = c.submit(&spec("reference", lr_from));
    let done = c.wait_job(reference.id, 120, "done", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let reference = train_points(&c, reference.id);
    assert_eq!(reference.len() as u64, lr_from);
    for (step, (loss, _)) in &reference {
        assert_eq!(
            controlled[step].0, *loss,
            "step {step}: paused and resumed at {paused_at}, the loss differs"
        );
    }

    // A fork from the checkpoint with the job's spec goes on exactly as the job did, its
    // live rate included.
    let fork_steps = ckpt_at + 15;
    let same = fork(
        &c,
        &[
            &id,
            "--step",
            &ckpt_at.to_string(),
            "--max-steps",
            &fork_steps.to_string(),
        ],
    );
    assert_eq!(
        same.forked_from.map(|f| (f.job_id, f.step)),
        Some((job.id, ckpt_at))
    );
    let done = c.wait_job(same.id, 120, "done", |j| j.state.is_terminal());
    assert_eq!(
        (done.state, done.step),
        (JobState::Succeeded, fork_steps),
        "{done:?}"
    );
    let attempts =
        c.rt.block_on(c.client().attempts(same.id))
            .expect("attempts");
    assert_eq!(attempts[0].resumed_from_step, Some(ckpt_at));
    let forked = train_points(&c, same.id);
    assert_eq!(
        forked.keys().copied().collect::<Vec<_>>(),
        (ckpt_at + 1..=fork_steps).collect::<Vec<_>>()
    );
    for (step, (loss, lr)) in &forked {
        assert!((lr - 0.05).abs() < 1e-9, "lr {lr} at step {step}");
        if let Some((job_loss, _)) = controlled.get(step) {
            assert_eq!(loss, job_loss, "step {step}: the fork differs from its job");
        }
    }

    // A fork with another rate trains with it. (Without --step a fork starts from the newest
    // checkpoint: the one the cancel wrote.)
    let faster = fork(
        &c,
        &[
            &id,
            "--step",
            &ckpt_at.to_string(),
            "--lr",
            "0.2",
            "--max-steps",
            &(ckpt_at + 5).to_string(),
        ],
    );
    assert!(faster.lr_changes.is_empty());
    let done = c.wait_job(faster.id, 120, "done", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let points = train_points(&c, faster.id);
    assert_eq!(points.len(), 5);
    assert!(
        points.values().all(|(_, lr)| (lr - 0.2).abs() < 1e-9),
        "{points:?}"
    );

    // Refusals name the problem.
    let o = c.cli(&["fork", &id, "--step", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("step: got 1"), "{}", stderr(&o));
    let o = c.cli(&["pause", &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is cancelled"), "{}", stderr(&o));
}
