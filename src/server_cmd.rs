//! `kiln serve`, `kiln worker` and `kiln up` (both in one process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kiln_client::Client;
use kiln_coordinator::{Coordinator, CoordinatorConfig};
use kiln_proto::protocol::SubmitJob;
use kiln_proto::spec::{DeviceRequest, JobSpec};
use kiln_worker::WorkerConfig;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub addr: SocketAddr,
    /// Where the SQLite database and artifacts live (default: the user's data directory).
    #[arg(long, env = "KILN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep jobs, metrics and tokens in this PostgreSQL database instead of SQLite
    /// (postgres://USER:PASSWORD@HOST:PORT/DB; artifacts stay in the data directory).
    /// Several `kiln serve` may share one database (and a data directory on a shared volume).
    #[arg(
        long,
        env = "KILN_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
    /// Set the admin token instead of generating one at first start.
    #[arg(long, env = "KILN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A worker token (scope worker) to accept as well, e.g. from a secret that the workers
    /// also get; `kiln token create --scope worker` makes more.
    #[arg(long, env = "KILN_WORKER_TOKEN", hide_env_values = true)]
    pub worker_token: Option<String>,
    /// Heartbeat interval told to workers, in milliseconds (a worker is lost after 3 missed).
    #[arg(long, default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// Folder with the built dashboard (default: web/dist beside the binary's repo, if built).
    #[arg(long)]
    pub static_dir: Option<PathBuf>,
    /// Largest dataset upload accepted, in bytes (default 8 GiB).
    #[arg(long, default_value_t = 8 * 1024 * 1024 * 1024)]
    pub dataset_max_bytes: u64,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Device to train on: auto, cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Name shown in the dashboard (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Stable worker id (default: host name + random suffix).
    #[arg(long)]
    pub id: Option<String>,
    /// Base directory for relative dataset paths in job specs.
    #[arg(long, default_value = ".")]
    pub data_root: PathBuf,
    /// Where data-parallel peers connect to this worker, IP:PORT or HOST:PORT (default: any
    /// free port on the address this machine reaches the coordinator from; 0.0.0.0:PORT
    /// listens on every interface).
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The worker's cache of datasets stored on the coordinator (`kiln:` paths).
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Where fetched datasets are kept (default: the user's cache dir, kiln/datasets).
    #[arg(long, env = "KILN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size limit of the cache in bytes; the least recently used datasets go first.
    #[arg(long, default_value_t = kiln_worker::DEFAULT_CACHE_MAX_BYTES)]
    pub cache_max_bytes: u64,
}

impl CacheArgs {
    fn apply(&self, config: &mut WorkerConfig) {
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = dir.clone();
        }
        config.cache_max_bytes = self.cache_max_bytes;
    }
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Device for the local worker.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
    /// Submit the demo job (examples/demo.toml) at start.
    #[arg(long)]
    pub demo: bool,
    /// Run only the coordinator (same as `kiln serve`).
    #[arg(long)]
    pub no_worker: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

fn config(args: &ServeArgs) -> anyhow::Result<CoordinatorConfig> {
    let mut config = CoordinatorConfig {
        addr: args.addr,
        admin_token: args.admin_token.clone(),
        worker_token: args.worker_token.clone(),
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(10)),
        dataset_max_bytes: args.dataset_max_bytes,
        database: args.database.clone(),
        ..CoordinatorConfig::default()
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config.static_dir = args.static_dir.clone().or_else(default_static_dir);
    Ok(config)
}

/// The dashboard built by `scripts/build-web`, if there is one.
fn default_static_dir() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("web/dist"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/dist"),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("index.html").is_file())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                () = ctrl_c() => {},
                _ = term.recv() => {},
            },
            Err(_) => ctrl_c().await,
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

fn print_banner(coordinator: &Coordinator) {
    println!("Kiln is up: {}", coordinator.url());
    match coordinator.new_admin_token() {
        Some(token) => {
            println!("admin token: {token}");
            println!(
                "  (shown once; it is stored hashed. Use it as KILN_TOKEN or in the dashboard.)"
            );
        }
        None => println!(
            "admin token: set earlier (pass --admin-token or KILN_ADMIN_TOKEN to replace it)"
        ),
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let coordinator = Coordinator::start(config(&args)?).await?;
        print_banner(&coordinator);
        shutdown_signal().await;
        coordinator.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `kiln worker`; the coordinator URL and token are the global `--server` / `--token`.
pub fn worker(args: WorkerArgs, remote: crate::client_cmd::Remote) -> anyhow::Result<ExitCode> {
    let token = remote
        .token
        .context("kiln worker needs --token (or KILN_TOKEN): a worker or admin token")?;
    let mut config = WorkerConfig::new(remote.server, token);
    config.device = args.device;
    config.data_root = args.data_root;
    config.peer_addr = args.peer_addr;
    args.cache.apply(&mut config);
    if let Some(name) = args.name {
        config.name = name;
    }
    if let Some(id) = args.id {
        config.worker_id = id;
    }
    runtime()?.block_on(async {
        kiln_worker::run(config, shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let coordinator = Coordinator::start(config(&args.serve)?).await?;
        print_banner(&coordinator);
        let worker = if args.no_worker {
            None
        } else {
            let token = coordinator
                .create_worker_token("local worker (kiln up)")
                .await?;
            let mut config = WorkerConfig::new(coordinator.url(), token.clone());
            config.device = args.device;
            config.name = format!("{} (local)", config.name);
            config.max_backoff = Duration::from_secs(1);
            args.cache.apply(&mut config);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let handle = tokio::spawn(kiln_worker::run(config, async move {
                let _ = stop_rx.await;
            }));
            let admin = coordinator
                .new_admin_token()
                .map(str::to_string)
                .or_else(|| args.serve.admin_token.clone());
            let stored = store_committed_data(&coordinator, admin.as_deref()).await;
            if args.demo {
                submit_demo(&coordinator, admin.as_deref(), stored).await?;
            }
            Some((stop_tx, handle))
        };
        match args.serve.static_dir.clone().or_else(default_static_dir) {
            // A fresh token goes in the link's fragment, which the browser keeps to itself:
            // opening it logs the dashboard in.
            Some(_) => match coordinator.new_admin_token() {
                Some(token) => println!(
                    "dashboard: {}/login#token={token}   (Ctrl-C stops Kiln)",
                    coordinator.url()
                ),
                None => println!("dashboard: {}/   (Ctrl-C stops Kiln)", coordinator.url()),
            },
            None => println!(
                "API: {}/api (OpenAPI at /api/openapi.json; the web dashboard is not built: run scripts/build-web). Ctrl-C stops Kiln.",
                coordinator.url()
            ),
        }
        shutdown_signal().await;
        if let Some((stop, handle)) = worker {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        coordinator.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The committed data (the MNIST subset, the text corpus) as stored datasets, for the
/// playground's presets and any job: `kiln:mnist-subset`, `kiln:kiln-stories`. Bytes the
/// coordinator has are not sent again; a failure is a warning (Kiln runs without them).
/// Whether the MNIST subset is stored (the demo trains on it).
async fn store_committed_data(coordinator: &Coordinator, admin: Option<&str>) -> bool {
    use kiln_proto::dataset::DatasetKind;
    let Some(admin) = admin else { return false };
    let Ok(client) = Client::new(&coordinator.url(), Some(admin.to_string())) else {
        return false;
    };
    let roots = [
        PathBuf::from("."),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ];
    let Some(root) = roots
        .into_iter()
        .find(|r| r.join("data/mnist/train-images-idx3-ubyte.gz").is_file())
    else {
        return false;
    };
    let mut stored = Vec::new();
    for (path, name, kind) in [
        ("data/mnist", "mnist-subset", DatasetKind::Idx),
        (
            "data/text/kiln-stories.txt",
            "kiln-stories",
            DatasetKind::Text,
        ),
    ] {
        match crate::data_cmd::push(&client, &root.join(path), name, kind).await {
            Ok(_) => stored.push(format!("kiln:{name}")),
            Err(e) => eprintln!("warning: could not store {path} as dataset {name}: {e:#}"),
        }
    }
    if !stored.is_empty() {
        println!("datasets: {} (the committed data)", stored.join(", "));
    }
    stored.iter().any(|s| s == "kiln:mnist-subset")
}

/// The demo job (examples/demo.toml): a CNN on the committed MNIST subset, about a minute of
/// live curves to ≈ 0.96 test accuracy.
async fn submit_demo(
    coordinator: &Coordinator,
    admin: Option<&str>,
    data_stored: bool,
) -> anyhow::Result<()> {
    let spec = JobSpec::from_toml_str(include_str!("../examples/demo.toml"))
        .context("the demo spec is valid")?;
    let Some(admin) = admin else {
        println!(
            "demo: not submitted (no admin token in hand; submit with `kiln submit examples/demo.toml`)"
        );
        return Ok(());
    };
    if !data_stored {
        println!(
            "demo: not submitted (the committed MNIST subset, data/mnist, is not here to store; \
             run kiln up from a clone of the repository)"
        );
        return Ok(());
    }
    let client = Client::new(&coordinator.url(), Some(admin.to_string()))?;
    let job = client
        .submit(&SubmitJob {
            spec,
            group: None,
            tags: vec!["demo".to_string()],
        })
        .await
        .context("submitting the demo job")?;
    println!(
        "demo: submitted job {} ({}: a CNN learning MNIST digits, about a minute) — watch it in the dashboard or with `kiln job {}`",
        job.id, job.name, job.id
    );
    Ok(())
}
