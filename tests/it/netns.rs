//! Data-parallel ranks on different "hosts": each worker in its own network namespace,
//! joined to the host (where the coordinator listens) by a veth pair, so that peer traffic
//! really crosses interfaces. Needs root and `ip netns` (CI runs as root); elsewhere each test
//! says that it skipped and why.

use std::process::Command;

use kiln_proto::protocol::JobState;

use crate::cluster::{Cluster, Proc, TOKEN, assert_transport};

/// Namespaces and links made for one test; deleted on drop.
struct Hosts {
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces `a` and `b` with a veth each to the host: 10.23K.1.2 and 10.23K.2.2, the
/// host 10.23K.1.1 and 10.23K.2.1; no route between them. With `direct`, also a veth between
/// the two namespaces: 10.23K.3.1 (a) and 10.23K.3.2 (b). `k` keeps tests apart.
fn hosts(k: u8, direct: bool) -> Result<Hosts, String> {
    let id = std::process::id() % 10_000;
    let mut hosts = Hosts {
        namespaces: Vec::new(),
        links: Vec::new(),
    };
    for (i, side) in ["a", "b"].iter().enumerate() {
        let ns = format!("kn{id}{k}{side}");
        ip(&["netns", "add", &ns])?;
        hosts.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let (host_end, ns_end) = (format!("kh{id}{k}{side}"), format!("kw{id}{k}{side}"));
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end, "netns", &ns,
        ])?;
        hosts.links.push(host_end.clone());
        let net = i + 1;
        ip(&[
            "addr",
            "add",
            &format!("10.23{k}.{net}.1/30"),
            "dev",
            &host_end,
        ])?;
        ip(&["link", "set", &host_end, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.23{k}.{net}.2/30"),
            "dev",
            &ns_end,
        ])?;
        ip(&["-n", &ns, "link", "set", &ns_end, "up"])?;
    }
    if direct {
        let (a, b) = (&hosts.namespaces[0].clone(), &hosts.namespaces[1].clone());
        let (ea, eb) = (format!("kp{id}{k}a"), format!("kp{id}{k}b"));
        ip(&[
            "-n", a, "link", "add", &ea, "type", "veth", "peer", "name", &eb, "netns", b,
        ])?;
        ip(&[
            "-n",
            a,
            "addr",
            "add",
            &format!("10.23{k}.3.1/30"),
            "dev",
            &ea,
        ])?;
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            &format!("10.23{k}.3.2/30"),
            "dev",
            &eb,
        ])?;
        ip(&["-n", a, "link", "set", &ea, "up"])?;
        ip(&["-n", b, "link", "set", &eb, "up"])?;
    }
    Ok(hosts)
}

/// `kiln worker` inside namespace `ns`, dialing the coordinator at `server`.
fn worker_in(c: &mut Cluster, ns: &str, id: &str, server: &str, extra: &[&str]) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_kiln")])
        .args([
            "worker", "--server", server, "--token", TOKEN, "--device", "cpu", "--id", id,
        ])
        .args(extra)
        .arg("--cache-dir")
        .arg(c.cache_dir(id))
        .env("BURN_DEVICE", "flex");
    c.workers.push(Proc::spawn(id, &mut cmd));
}

fn spec(name: &str) -> String {
    format!(
        r#"
name = "{name}"
device = "cpu"
[model]
kind = "mlp"
hidden = [64]
[dataset]
kind = "synthetic"
examples = 2048
features = 32
classes = 4
[training]
batch_size = 32
epochs = 100
max_steps = 40
log_every = 10
[distributed]
workers = 2
"#
    )
}

/// Train one 2-rank job on workers in the namespaces; the job's log lines.
fn train_across(k: u8, direct: bool) -> Option<Vec<String>> {
    let hosts = match hosts(k, direct) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("SKIPPED: network namespaces are not available here (needs root): {e}");
            return None;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = Cluster::start_on(dir.path(), "0.0.0.0");
    for (i, ns) in hosts.namespaces.iter().enumerate() {
        let net = i + 1;
        let server = format!("http://10.23{k}.{net}.1:{}", c.port);
        // The direct case advertises the address on the link between the namespaces.
        let peer = format!("10.23{k}.3.{net}:0");
        let extra: &[&str] = if direct { &["--peer-addr", &peer] } else { &[] };
        worker_in(&mut c, ns, &format!("host{net}"), &server, extra);
    }
    c.wait_workers(2);
    let job = c.submit(&spec(if direct { "direct" } else { "relayed" }));
    let done = c.wait_job(job.id, 120, "success", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let attempts =
        c.rt.block_on(c.client().attempts(job.id))
            .expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].ranks.len(), 2, "{attempts:?}");
    let lines = c.log_lines(job.id);
    // Every rank ends with the same weights.
    let hashes: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once("final weights sha256 ").map(|(_, h)| h.trim()))
        .collect();
    assert_eq!(hashes.len(), 2, "{lines:#?}");
    assert_eq!(hashes[0], hashes[1]);
    drop(hosts);
    Some(lines)
}

#[test]
fn ranks_on_two_hosts_train_over_direct_tcp_across_interfaces() {
    let Some(lines) = train_across(1, true) else {
        return;
    };
    assert_transport(&lines, 2, "direct TCP");
    // The peers dialed each other on the link between the namespaces.
    assert!(
        lines.iter().any(|l| l.contains("next rank at 10.231.3.")),
        "{lines:#?}"
    );
}

#[test]
fn ranks_that_cannot_reach_each_other_relay_through_the_coordinator() {
    let Some(lines) = train_across(2, false) else {
        return;
    };
    assert_transport(&lines, 2, "relayed through the coordinator");
}
