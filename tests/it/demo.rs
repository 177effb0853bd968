//! `kiln up --demo`, README command 1's process: it stores the committed data as datasets and
//! trains the demo job on it to ≥ 0.9 test accuracy.

use std::time::{Duration, Instant};

use kiln_client::Client;
use kiln_proto::protocol::JobState;

use crate::cluster::{Proc, TOKEN, free_port};
use crate::support::kiln;

#[test]
fn kiln_up_demo_stores_the_committed_data_and_trains_the_demo_to_090() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let up = Proc::spawn(
        "kiln up --demo",
        kiln()
            .args(["up", "--demo", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--admin-token", TOKEN, "--device", "cpu"]),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client =
        Client::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).expect("client");
    let started = Instant::now();
    let job_id = loop {
        if let Some(id) = up.lines().iter().find_map(|l| {
            l.strip_prefix("demo: submitted job ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|id| id.parse::<i64>().ok())
        }) {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no demo job: {:#?}",
            up.lines()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let datasets = rt.block_on(client.datasets()).expect("datasets");
    let mut names: Vec<&str> = datasets.iter().map(|d| d.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["kiln-stories", "mnist-subset"]);

    let job = loop {
        let job = rt.block_on(client.job(job_id)).expect("the job");
        if job.state.is_terminal() {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the demo did not finish: {job:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.tags, ["demo"]);
    let metrics = rt
        .block_on(client.metrics(job_id, &kiln_client::MetricQuery::default()))
        .expect("metrics");
    let test = metrics
        .iter()
        .find(|m| m.metric.split == kiln_proto::metric::Split::Test)
        .expect("a test metric");
    let accuracy = test.metric.accuracy.expect("accuracy");
    eprintln!(
        "demo: {} metric points, test accuracy {accuracy}, {:.0} s",
        metrics.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");
    let train = metrics
        .iter()
        .filter(|m| m.metric.split == kiln_proto::metric::Split::Train)
        .count();
    assert!(train >= 100, "live curves, not four points: {train}");
}
