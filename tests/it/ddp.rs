//! Data-parallel training: one job, several `kiln worker` processes, one model. Real
//! coordinator, real workers, ranks talking over real TCP on loopback.

use std::time::{Duration, Instant};

use kiln_proto::protocol::{JobId, JobState};
use sha2::Digest;

use crate::cluster::{Cluster, assert_transport};

/// A `workers`-rank job on synthetic data; `min_workers` lets it resume smaller.
fn spec(name: &str, workers: u32, min_workers: u32, steps: u64) -> String {
    format!(
        r#"
name = "{name}"
device = "cpu"
[model]
kind = "mlp"
hidden = [256, 256]
dropout = 0.1
[dataset]
kind = "synthetic"
examples = 4096
features = 128
classes = 8
[training]
batch_size = 32
epochs = 1000
max_steps = {steps}
log_every = 5
checkpoint_every = 20
[distributed]
workers = {workers}
min_workers = {min_workers}
"#
    )
}

/// `(rank, hash)` of every "final weights sha256" line.
fn final_hashes(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let (head, hash) = l.split_once("final weights sha256 ")?;
            let rank = head.split("rank ").nth(1)?.split(' ').next()?.to_string();
            Some((rank, hash.trim().to_string()))
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn two_and_three_workers_train_one_job_and_every_rank_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    c.add_worker("w2");
    // One worker names its peer address by host name (resolved when it binds, advertised
    // as given, resolved again by the rank that dials it).
    c.add_worker_args(
        "w3",
        &mut crate::support::kiln(),
        &["--peer-addr", "localhost:0"],
    );
    c.wait_workers(3);
    for world in [2u32, 3] {
        let job = c.submit(&spec(&format!("ddp{world}"), world, world, 60));
        let done = c.wait_job(job.id, 180, "success", |j| j.state.is_terminal());
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        assert_eq!(done.step, 60);

        let attempts = c.rt.block_on(c.client().attempts(job.id)).unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        let ranks: Vec<u32> = attempts[0].ranks.iter().map(|r| r.rank).collect();
        assert_eq!(ranks, (0..world).collect::<Vec<_>>(), "{attempts:?}");
        let mut workers: Vec<&str> = attempts[0]
            .ranks
            .iter()
            .map(|r| r.worker_id.as_str())
            .collect();
        workers.sort();
        workers.dedup();
        assert_eq!(workers.len(), world as usize, "one rank per worker");

        let lines = c.log_lines(job.id);
        // The log says which transport each rank chose: on one host, direct TCP throughout.
        assert_transport(&lines, world as usize, "direct TCP");
        // How an epoch is shared: 4096 examples, 32 per rank and step.
        let steps = (4096 / world as usize).div_ceil(32);
        let shared = format!(
            "4096 training examples an epoch over {world} ranks: {steps} steps of up to 32 per \
             rank ({} global); no example is dropped",
            32 * world
        );
        assert!(lines.iter().any(|l| l == &shared), "{shared}\n{lines:#?}");
        let rates = lines
            .iter()
            .find(|l| l.contains("samples/s by rank at step"))
            .unwrap_or_else(|| panic!("every rank's throughput is logged: {lines:#?}"));
        for rank in 0..world {
            assert!(rates.contains(&format!("rank {rank} ")), "{rates}");
        }
        let hashes = final_hashes(&lines);
        assert_eq!(hashes.len(), world as usize, "{lines:#?}");
        let first = &hashes[0].1;
        assert!(
            hashes.iter().all(|(_, h)| h == first),
            "every rank ends with the same weights: {hashes:?}"
        );

        // Rank 0 wrote the run's files, and they hold those weights.
        let bpk =
            c.rt.block_on(c.client().download_artifact(job.id, "model.bpk"))
                .expect("model.bpk");
        assert_eq!(&sha256_hex(&bpk), first);
        let summary: serde_json::Value = serde_json::from_slice(
            &c.rt
                .block_on(c.client().download_artifact(job.id, "summary.json"))
                .expect("summary.json"),
        )
        .unwrap();
        assert_eq!(summary["world"], world);
        assert_eq!(summary["weights_sha256"].as_str(), Some(first.as_str()));
        // Where the synchronisation time went: one gradient all-reduce per step.
        assert_eq!(summary["sync_seconds"]["rounds"], 60, "{summary}");
        assert!(
            summary["sync_seconds"]["exchange"]
                .as_f64()
                .is_some_and(|s| s > 0.0)
        );

        // Only rank 0 reports metrics: one series, no duplicate steps.
        let steps: Vec<u64> = c
            .metrics(job.id)
            .iter()
            .filter(|p| p.metric.split == kiln_proto::metric::Split::Train)
            .map(|p| p.metric.step)
            .collect();
        let mut unique = steps.clone();
        unique.dedup();
        assert_eq!(steps, unique, "one rank's training metrics");
        assert_eq!(steps.last(), Some(&60));

        // The CLI shows every rank's worker and the global batch.
        let o = c.cli(&["job", &job.id.to_string()]);
        let text = String::from_utf8_lossy(&o.stdout);
        let global = 32 * world;
        assert!(
            text.contains(&format!("batch 32 per rank = {global} global")),
            "{text}"
        );
        for w in &workers {
            assert!(text.contains(&format!("{w} (rank ")), "{w} in {text}");
        }
    }
}

#[test]
fn a_gang_waits_for_its_workers_while_a_one_worker_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    // The gang is submitted from the CLI: a one-worker spec made a 2-worker job by --workers.
    let file = dir.path().join("gang.toml");
    std::fs::write(
        &file,
        spec("gang", 1, 1, 20).replace("min_workers = 1\n", ""),
    )
    .unwrap();
    let bad = c.cli(&["submit", file.to_str().unwrap(), "--workers", "0"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("distributed.workers") && err.contains("1 to 64"),
        "{err}"
    );
    let o = c.cli(&["submit", file.to_str().unwrap(), "--workers", "2", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gang: kiln_proto::protocol::JobInfo = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(gang.spec.distributed.workers, 2);
    let small = c.submit(&spec("small", 1, 1, 20));
    let done = c.wait_job(small.id, 120, "the small job", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(
        c.job(gang.id).state,
        JobState::Queued,
        "the gang cannot form yet"
    );
    c.add_worker("w2");
    let done = c.wait_job(gang.id, 120, "the gang", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let attempts = c.rt.block_on(c.client().attempts(gang.id)).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].ranks.len(), 2, "{attempts:?}");
}

#[test]
fn a_killed_rank_stops_the_others_fast_and_the_job_resumes_with_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    c.add_worker("w2");
    c.wait_workers(2);
    // Long enough to still be running when a checkpoint is in; bounded by epochs (not
    // max_steps), with a cosine schedule: the survivor alone takes twice the steps per epoch,
    // and the learning rate must go on from where it was, not jump.
    let text = spec("elastic", 2, 1, 0)
        .replace("epochs = 1000\nmax_steps = 0\n", "epochs = 60\n")
        .replace("[training]", "[schedule]\nkind = \"cosine\"\n[training]");
    assert!(!text.contains("max_steps"), "{text}");
    let job = c.submit(&text);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !c
        .artifacts(job.id)
        .iter()
        .any(|a| a.starts_with("checkpoint-"))
    {
        assert!(Instant::now() < deadline, "no checkpoint stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    let attempts = c.rt.block_on(c.client().attempts(job.id)).unwrap();
    assert_eq!(attempts[0].ranks.len(), 2, "{attempts:?}");
    // Kill rank 1's worker: rank 0 must notice on its own (socket closed or step deadline).
    let victim = attempts[0].ranks[1].worker_id.clone();
    let survivor = attempts[0].ranks[0].worker_id.clone();
    let index = c
        .workers
        .iter()
        .position(|w| w.name == victim)
        .expect("victim");
    let killed_at_ms = now_ms();
    c.workers[index].kill();

    let done = c.wait_job(job.id, 240, "success with the survivor", |j| {
        j.state.is_terminal()
    });
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let attempts = c.rt.block_on(c.client().attempts(job.id)).unwrap();
    assert!(attempts.len() >= 2, "{attempts:?}");
    let first = &attempts[0];
    assert_eq!(first.state, JobState::Failed, "{first:?}");
    // The survivor takes the next attempt only once its rank stopped and said so: that
    // bounds how long the kill kept it waiting.
    let survivor_free_after_ms = attempts[1].started_ms - killed_at_ms;
    assert!(
        survivor_free_after_ms <= 10_000,
        "the survivor was free {survivor_free_after_ms} ms after the kill: {attempts:?}"
    );
    let last = attempts.last().unwrap();
    assert_eq!(last.state, JobState::Succeeded);
    assert_eq!(last.ranks.len(), 1, "resumed smaller: {last:?}");
    assert_eq!(last.ranks[0].worker_id, survivor);
    assert!(
        last.resumed_from_step.is_some_and(|s| s >= 20),
        "resumed from rank 0's checkpoint: {last:?}"
    );
    // The learning rate over the run as it counts (the first attempt up to the checkpoint
    // the last one resumed from, then the last one): a cosine never goes back up.
    let resumed = last.resumed_from_step.unwrap_or(0);
    let mut lrs: Vec<(u64, f64)> = c
        .metrics(job.id)
        .iter()
        .filter(|p| p.metric.split == kiln_proto::metric::Split::Train)
        .filter(|p| p.attempt == last.attempt || (p.attempt == 1 && p.metric.step <= resumed))
        .filter_map(|p| Some((p.metric.step, p.metric.lr?)))
        .collect();
    lrs.sort_by_key(|(step, _)| *step);
    assert!(lrs.len() > 10, "{lrs:?}");
    for pair in lrs.windows(2) {
        assert!(
            pair[1].1 <= pair[0].1 + 1e-12,
            "the learning rate went up from step {} to {}: {pair:?}",
            pair[0].0,
            pair[1].0
        );
    }
    assert!(
        lrs.last().is_some_and(|(_, lr)| *lr < 1e-5),
        "ends at the bottom: {lrs:?}"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A spec for comparing curves: no dropout (ranks draw different masks), evaluation on a
/// validation split every 20 steps.
fn curve_spec(name: &str, workers: u32, batch: usize) -> String {
    format!(
        r#"
name = "{name}"
device = "cpu"
seed = 7
[model]
kind = "mlp"
hidden = [32]
[dataset]
kind = "synthetic"
examples = 2048
features = 32
classes = 10
validation_fraction = 0.2
[optimizer]
lr = 0.0005
[training]
batch_size = {batch}
epochs = 100
max_steps = 80
log_every = 10
eval_every = 20
[distributed]
workers = {workers}
"#
    )
}

#[test]
fn two_ranks_of_batch_32_follow_one_worker_of_batch_64() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    c.add_worker("w2");
    c.wait_workers(2);
    let single = c.submit(&curve_spec("single", 1, 64));
    let pair = c.submit(&curve_spec("pair", 2, 32));
    for id in [single.id, pair.id] {
        let done = c.wait_job(id, 180, "success", |j| j.state.is_terminal());
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    }
    let curve = |id: JobId, split| -> Vec<(u64, f64, Option<f64>)> {
        c.metrics(id)
            .iter()
            .filter(|p| p.metric.split == split)
            .map(|p| (p.metric.step, p.metric.loss, p.metric.accuracy))
            .collect()
    };
    use kiln_proto::metric::Split;
    for split in [Split::Train, Split::Val] {
        let (a, b) = (curve(single.id, split), curve(pair.id, split));
        assert!(!a.is_empty(), "{split:?} metrics");
        assert_eq!(
            a.iter().map(|p| p.0).collect::<Vec<_>>(),
            b.iter().map(|p| p.0).collect::<Vec<_>>(),
            "the same steps are reported"
        );
        // Same examples per step, gradients averaged over the two halves: the same updates up
        // to the order of float sums. The losses (global over both ranks) agree to about 1e-7
        // relative when measured (2026-11-30); 1e-4 leaves room without hiding a rank-0-only
        // loss (a half batch's loss differs by percents).
        for ((step, la, aa), (_, lb, ab)) in a.iter().zip(&b) {
            let tolerance = 1e-4 * la.abs();
            assert!(
                (la - lb).abs() <= tolerance,
                "{split:?} loss at step {step}: one worker {la}, two ranks {lb}"
            );
            if let (Some(aa), Some(ab)) = (aa, ab) {
                assert!(
                    (aa - ab).abs() <= 0.01,
                    "{split:?} accuracy at step {step}: {aa} vs {ab}"
                );
            }
        }
    }
}

#[test]
fn local_sgd_ranks_step_alone_and_average_their_parameters_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    c.add_worker("w2");
    c.wait_workers(2);
    // 45 steps: averaged at 8, 16, …, 40 and after the last step (45), not on a multiple of 8;
    // once as the plain mean, once with the ranks' moves added up (outer_lr = 2).
    let mut finals = Vec::new();
    for (name, sync, expected) in [
        (
            "local",
            "sync = { every = 8 }",
            kiln_proto::spec::SyncSpec::Every {
                every: 8,
                outer_lr: None,
            },
        ),
        (
            "local-outer",
            "sync = { every = 8, outer_lr = 2.0 }",
            kiln_proto::spec::SyncSpec::Every {
                every: 8,
                outer_lr: Some(2.0),
            },
        ),
    ] {
        let text = spec(name, 2, 2, 45)
            .replace("min_workers = 2\n", &format!("min_workers = 2\n{sync}\n"));
        let job = c.submit(&text);
        assert_eq!(job.spec.distributed.sync, expected);
        let done = c.wait_job(job.id, 180, "success", |j| j.state.is_terminal());
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        let lines = c.log_lines(job.id);
        let hashes = final_hashes(&lines);
        assert_eq!(hashes.len(), 2, "{lines:#?}");
        // The ranks train on different shards with no gradient all-reduce: only the final
        // synchronisation makes their weights equal.
        assert_eq!(hashes[0].1, hashes[1].1, "{name}: {hashes:?}");
        finals.push(hashes[0].1.clone());
    }
    // Same seed, same shards: only the outer learning rate differs, and it changes the model.
    assert_ne!(finals[0], finals[1]);
}

#[test]
fn ranks_whose_local_data_differ_fail_with_the_workers_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    // Each worker reads `points.csv` under its own --data-root; one file has an extra row.
    for (id, rows) in [("same", 40u32), ("odd", 41)] {
        let root = dir.path().join(format!("root-{id}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut csv = String::from("a,b,label\n");
        for i in 0..rows {
            csv.push_str(&format!("{}.0,{}.5,{}\n", i % 5, i % 3, i % 2));
        }
        std::fs::write(root.join("points.csv"), csv).unwrap();
        c.add_worker_with(id, crate::support::kiln().current_dir(&root));
    }
    c.wait_workers(2);
    let job = c.submit(
        r#"
name = "mismatch"
device = "cpu"
max_attempts = 1
[model]
kind = "mlp"
hidden = [8]
[dataset]
kind = "csv"
path = "points.csv"
label_column = "label"
validation_fraction = 0.0
[training]
batch_size = 4
[distributed]
workers = 2
"#,
    );
    let done = c.wait_job(job.id, 120, "the failure", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    let error = done.error.unwrap_or_default();
    assert!(
        error.contains("do not train on the same training data") && error.contains("worker odd"),
        "{error}"
    );
}

#[test]
fn the_ranks_keep_training_through_a_coordinator_restart_and_re_attach() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start(dir.path());
    c.add_worker("w1");
    c.add_worker("w2");
    c.wait_workers(2);
    let job = c.submit(&spec("through-restart", 2, 2, 4000));
    c.wait_job(job.id, 60, "running", |j| {
        j.state == JobState::Running && j.step >= 100
    });
    let before = c.job(job.id).step;
    c.restart_coordinator();
    let done = c.wait_job(job.id, 180, "success after the restart", |j| {
        j.state.is_terminal()
    });
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.step, 4000);
    let attempts = c.rt.block_on(c.client().attempts(job.id)).unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "both ranks re-attached to the running attempt: {attempts:?}"
    );
    assert_eq!(attempts[0].ranks.len(), 2);
    let lines = c.log_lines(job.id);
    let hashes = final_hashes(&lines);
    assert_eq!(hashes.len(), 2, "{lines:#?}");
    assert_eq!(hashes[0].1, hashes[1].1);
    assert!(
        before < 4000,
        "the restart happened mid-run (step {before})"
    );
}
