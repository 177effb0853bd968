//! Datasets that travel with jobs, with real processes: `kiln submit` pushes a CSV from the
//! user's folder, a worker started in an empty folder fetches it by digest, caches it, and
//! checks the cached copy before every use.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use kiln_proto::protocol::{JobId, JobInfo, JobState};

use crate::cluster::{Cluster, TOKEN};
use crate::support::{kiln, run, stderr};

/// Three well-separated classes in four features: an MLP learns them in a few steps.
fn points_csv() -> String {
    let mut csv = String::from("a,b,c,d,label\n");
    for i in 0..240u32 {
        let class = i % 3;
        let jitter = f64::from(i % 7) * 0.05;
        let center = f64::from(class) * 3.0;
        csv.push_str(&format!(
            "{:.3},{:.3},{:.3},{:.3},{class}\n",
            center + jitter,
            center - jitter,
            1.0 - center + jitter,
            f64::from(i % 5) * 0.1
        ));
    }
    csv
}

const JOB: &str = r#"
name = "points"
device = "cpu"
[model]
kind = "mlp"
hidden = [16]
[dataset]
kind = "csv"
path = "points.csv"
label_column = "label"
[training]
batch_size = 32
epochs = 2
log_every = 2
"#;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `kiln submit --json` from `folder`; the job it made.
fn submit_from(cluster: &Cluster, folder: &Path) -> (JobInfo, String) {
    let out = run(kiln().current_dir(folder).args([
        "submit",
        "job.toml",
        "--json",
        "--server",
        &cluster.url,
        "--token",
        TOKEN,
    ]));
    assert!(out.status.success(), "kiln submit failed: {}", stderr(&out));
    let job: JobInfo = serde_json::from_slice(&out.stdout).expect("submit --json prints the job");
    (job, stderr(&out))
}

/// `kiln submit` of `spec` from `folder`, which must fail; its stderr.
fn submit_refused(cluster: &Cluster, folder: &Path, spec: &str) -> String {
    std::fs::write(folder.join("job.toml"), spec).expect("write spec");
    let out = run(kiln().current_dir(folder).args([
        "submit",
        "job.toml",
        "--server",
        &cluster.url,
        "--token",
        TOKEN,
    ]));
    assert!(!out.status.success(), "kiln submit should have failed");
    stderr(&out)
}

fn logs(cluster: &Cluster, id: JobId) -> String {
    cluster
        .rt
        .block_on(cluster.client().logs(id, 0, None))
        .expect("logs")
        .into_iter()
        .map(|e| e.line.text)
        .collect::<Vec<_>>()
        .join("\n")
}

fn succeeded(cluster: &Cluster, id: JobId) -> JobInfo {
    let job = cluster.wait_job(id, 120, "the end", |j| j.state.is_terminal());
    assert_eq!(job.state, JobState::Succeeded, "job {id}: {:?}", job.error);
    job
}

#[test]
fn a_pushed_csv_trains_on_a_worker_with_no_data_and_is_cached_by_digest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(&dir.path().join("coordinator"));
    // The worker runs in an empty folder: it has no copy of the data.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    cluster.add_worker_with("w1", kiln().current_dir(&empty));
    // The user's folder, elsewhere: the CSV and a spec that names it by a relative path.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let csv = points_csv();
    std::fs::write(home.join("points.csv"), &csv).expect("write csv");
    std::fs::write(home.join("job.toml"), JOB).expect("write spec");
    let hex = sha256_hex(csv.as_bytes());

    // 1. Submit uploads the file and pins the job to its digest.
    let (first, said) = submit_from(&cluster, &home);
    assert!(
        said.contains("dataset points.csv: uploaded as kiln:points.csv"),
        "{said}"
    );
    assert_eq!(
        first.spec.dataset.path(),
        Some(format!("kiln:sha256:{hex}").as_str())
    );
    assert_eq!(first.dataset_name.as_deref(), Some("points.csv"));
    succeeded(&cluster, first.id);
    let log = logs(&cluster, first.id);
    assert!(
        log.contains(&format!("downloaded dataset {}", &hex[..12])),
        "{log}"
    );
    assert!(
        !empty.join("points.csv").exists(),
        "nothing is read from the worker's own folder"
    );
    let cached = cluster.cache_dir("w1").join(&hex);
    assert_eq!(std::fs::read(&cached).expect("cached copy"), csv.as_bytes());

    // 2. The same data again: nothing is uploaded, nothing is downloaded.
    let (second, said) = submit_from(&cluster, &home);
    assert!(said.contains("already stored; named"), "{said}");
    assert_eq!(second.spec.dataset.path(), first.spec.dataset.path());
    succeeded(&cluster, second.id);
    let log = logs(&cluster, second.id);
    assert!(
        log.contains(&format!("dataset {} (", &hex[..12])) && log.contains("from the cache"),
        "{log}"
    );
    assert!(!log.contains("downloaded dataset"), "{log}");
    assert!(
        log.contains("dataset already in memory"),
        "the worker keeps the last job's data loaded: {log}"
    );

    // The job names exactly the data it trained on.
    let out = cluster.cli(&["job", &second.id.to_string()]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("dataset   kiln:points.csv = sha256:{hex}")),
        "{shown}"
    );

    // 3. A cached copy damaged on disk is downloaded again, never trained on.
    let mut damaged = csv.clone().into_bytes();
    damaged[10] ^= 0x55;
    std::fs::write(&cached, &damaged).expect("damage the cache");
    let (third, _) = submit_from(&cluster, &home);
    succeeded(&cluster, third.id);
    let log = logs(&cluster, third.id);
    assert!(log.contains("is damaged"), "{log}");
    assert!(log.contains("downloaded dataset"), "{log}");
    assert_eq!(std::fs::read(&cached).expect("cached copy"), csv.as_bytes());
}

#[test]
fn datasets_from_the_cli_push_ls_show_rm_and_bad_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(&dir.path().join("coordinator"));
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(home.join("points.csv"), points_csv()).expect("write csv");

    // An IDX folder travels as one archive; the same folder twice is stored once.
    let mnist = crate::support::repo_root().join("data/mnist");
    let out = cluster.cli(&[
        "data",
        "push",
        mnist.to_str().expect("utf-8 path"),
        "--name",
        "digits",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("uploaded as kiln:digits (version 1"));
    let out = cluster.cli(&[
        "data",
        "push",
        mnist.to_str().expect("utf-8 path"),
        "--name",
        "digits",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("already stored; named as kiln:digits (version 1"),
        "the same bytes make no new version"
    );
    let out = cluster.cli(&["data", "show", "digits"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("kind      idx"), "{shown}");
    assert!(shown.contains("train-images-idx3-ubyte"), "{shown}");
    assert!(shown.contains("28 × 28"), "{shown}");

    let out = cluster.cli(&[
        "data",
        "push",
        home.join("points.csv").to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.cli(&["data", "ls"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("points.csv") && listed.contains("digits"),
        "{listed}"
    );
    assert!(listed.contains("2 dataset(s)"), "{listed}");

    // A sweep sends the spec's local data along too, once, and pins every job of it.
    std::fs::write(home.join("job.toml"), JOB).expect("write spec");
    let out = run(kiln().current_dir(&home).args([
        "sweep",
        "job.toml",
        "--grid",
        "training.batch_size=16,32",
        "--json",
        "--server",
        &cluster.url,
        "--token",
        TOKEN,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already stored; named"),
        "{}",
        stderr(&out)
    );
    let jobs: Vec<JobInfo> = serde_json::from_slice(&out.stdout).expect("sweep --json");
    let hex = sha256_hex(points_csv().as_bytes());
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert_eq!(
            job.spec.dataset.path(),
            Some(format!("kiln:sha256:{hex}").as_str())
        );
    }
    // --no-upload leaves the path to the worker's --data-root.
    let out = run(kiln().current_dir(&home).args([
        "submit",
        "job.toml",
        "--no-upload",
        "--json",
        "--server",
        &cluster.url,
        "--token",
        TOKEN,
    ]));
    let job: JobInfo = serde_json::from_slice(&out.stdout).expect("submit --json");
    assert_eq!(job.spec.dataset.path(), Some("points.csv"));

    // A spec naming a dataset that is not stored: a clear error naming the field.
    let spec = JOB.replace("path = \"points.csv\"", "path = \"kiln:nope\"");
    let err = submit_refused(&cluster, &home, &spec);
    assert!(
        err.contains("dataset.path") && err.contains("none is named `nope`"),
        "{err}"
    );
    // The wrong kind: points.csv is CSV, the spec reads IDX.
    let spec = "name = \"x\"\n[model]\nkind = \"mlp\"\n[dataset]\nkind = \"idx\"\npath = \"kiln:points.csv\"\n";
    let err = submit_refused(&cluster, &home, spec);
    assert!(
        err.contains("a dataset of kind idx") && err.contains("stored as csv"),
        "{err}"
    );

    // Delete: gone from the list; deleting again says so.
    let out = cluster.cli(&["data", "rm", "digits"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.cli(&["data", "rm", "digits"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no dataset is named `digits`"),
        "{}",
        stderr(&out)
    );
    let out = cluster.cli(&["data", "ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dataset(s)"));
}
