//! kiln-coordinator: the job queue of Kiln.
//!
//! An axum HTTP + WebSocket server over a SQLite (or PostgreSQL) store. Clients submit job
//! specs over REST (`routes`); workers connect over `/ws/worker` (`ws::worker`) and get jobs
//! from the `scheduler`; dashboards follow along over `/ws/events` (`ws::events`). Several
//! coordinators may share one PostgreSQL database (`cluster`). Only `store` talks SQL. The typed client for the REST API (CLI, workers, tests) is the `kiln-client` crate.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let coordinator = kiln_coordinator::Coordinator::start(Default::default()).await?;
//! println!("listening on {}", coordinator.url());
//! coordinator.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use kiln_proto::protocol::{CloseReason, ServerEvent};
use kiln_proto::token::TokenScope;

pub mod artifact;
pub mod auth;
pub mod cluster;
pub mod dataset;
pub mod error;
pub mod openapi;
pub mod registry;
pub mod relay;
pub mod routes;
pub mod scheduler;
pub mod state;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
pub mod ws;

pub use routes::app;
pub use state::AppState;

/// How long `shutdown` waits for connections to finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the coordinator needs to start.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where to listen; port 0 lets the OS choose.
    pub addr: SocketAddr,
    /// Holds `kiln.db` (SQLite, WAL; unless `database` is set), `artifacts/` and
    /// `datasets/`; created if missing.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://…`) to keep jobs, metrics and tokens in instead of
    /// `data_dir/kiln.db`.
    pub database: Option<String>,
    /// If set, (re)stored as the admin token. If unset and none exists yet, one is generated
    /// (see [`Coordinator::new_admin_token`]).
    pub admin_token: Option<String>,
    /// If set, (re)stored as the shared worker token (scope `worker`, named
    /// [`store::BOOTSTRAP_WORKERS`]): for deployments whose workers get a token from a secret
    /// before the coordinator runs. Tokens made with `kiln token create` are kept.
    pub worker_token: Option<String>,
    /// Told to workers in Welcome; a worker is lost after 3 missed intervals.
    pub heartbeat_interval: Duration,
    /// Limit of a JSON request body.
    pub max_body_bytes: usize,
    /// Limit of one artifact upload.
    pub artifact_max_bytes: usize,
    /// Limit of one dataset upload.
    pub dataset_max_bytes: u64,
    /// Limit of one WebSocket message.
    pub max_frame_bytes: usize,
    /// The dashboard's files, served at `/` with `index.html` as the fallback. `None`: a
    /// small page saying the dashboard is not built.
    pub static_dir: Option<PathBuf>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: dirs::data_dir()
                .unwrap_or_else(|| PathBuf::from(".kiln-data"))
                .join("kiln"),
            database: None,
            admin_token: None,
            worker_token: None,
            heartbeat_interval: Duration::from_secs(2),
            max_body_bytes: 2 * 1024 * 1024,
            artifact_max_bytes: 1024 * 1024 * 1024,
            dataset_max_bytes: 8 * 1024 * 1024 * 1024,
            max_frame_bytes: 16 * 1024 * 1024,
            static_dir: None,
        }
    }
}

/// A running coordinator. Dropping it without [`Coordinator::shutdown`] leaves its tasks
/// running until the runtime ends.
pub struct Coordinator {
    state: AppState,
    addr: SocketAddr,
    new_admin_token: Option<String>,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    scheduler: JoinHandle<()>,
}

impl Coordinator {
    /// Create the data directory, open and migrate the database, set up the admin token,
    /// bind, and spawn the server and the scheduler.
    pub async fn start(mut config: CoordinatorConfig) -> anyhow::Result<Coordinator> {
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        config.data_dir = tokio::fs::canonicalize(&config.data_dir)
            .await
            .with_context(|| format!("cannot resolve {}", config.data_dir.display()))?;
        anyhow::ensure!(
            config.heartbeat_interval > Duration::ZERO,
            "the heartbeat interval must be positive"
        );
        let store = match &config.database {
            Some(url) => store::Store::connect(url).await?,
            None => store::Store::open(&config.data_dir).await?,
        };
        // On SQLite this is the only coordinator: no worker is connected yet. On PostgreSQL
        // others may hold workers; the scheduling one disconnects the workers of coordinators
        // that are gone (`cluster`).
        if config.database.is_none() {
            store.disconnect_all_workers().await?;
        }
        let new_admin_token = match &config.admin_token {
            Some(token) => {
                anyhow::ensure!(!token.trim().is_empty(), "the admin token is empty");
                store
                    .put_bootstrap(&auth::hash_token(token), TokenScope::Admin)
                    .await?;
                None
            }
            None if store.has_admin_token().await? => None,
            None => {
                let token = auth::generate_token()?;
                store
                    .put_bootstrap(&auth::hash_token(&token), TokenScope::Admin)
                    .await?;
                Some(token)
            }
        };
        if let Some(token) = &config.worker_token {
            anyhow::ensure!(!token.trim().is_empty(), "the worker token is empty");
            anyhow::ensure!(
                config.admin_token.as_deref() != Some(token.as_str()),
                "the worker token must differ from the admin token"
            );
            store
                .put_bootstrap(&auth::hash_token(token), TokenScope::Worker)
                .await?;
        }
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let data_dir = config.data_dir.clone();
        let cluster = config
            .database
            .as_deref()
            .map(|url| cluster::Cluster::new(url, &addr.to_string()));
        let shared_data = cluster.is_some();
        let state = AppState::with_cluster(config, store, shutdown_rx.clone(), cluster);
        // Another coordinator may be receiving an upload into a shared data directory.
        if !shared_data {
            state.datasets.clean_incoming().await;
        }
        cluster::spawn(&state).await?;
        let router = app(state.clone());
        let mut server_shutdown = shutdown_rx;
        // Small frames (metric batches, events) must not wait for Nagle + delayed ACK: it
        // added ~22 ms to the metric → browser p99 (examples/bench_coordinator.rs).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let server = tokio::spawn(async move {
            // The client's address: the bad-token limit and the audit log use it.
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|down| *down).await;
            })
            .await
        });
        let scheduler = tokio::spawn(scheduler::run(state.clone()));
        info!(%addr, data_dir = %data_dir.display(), node = %state.node, "coordinator started");
        Ok(Coordinator {
            state,
            addr,
            new_admin_token,
            shutdown_tx,
            server,
            scheduler,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, with `127.0.0.1` when bound to every interface.
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(host, self.addr.port()))
    }

    /// The admin token, only when this start generated it (print it once).
    pub fn new_admin_token(&self) -> Option<&str> {
        self.new_admin_token.as_deref()
    }

    /// A new worker token named `name` (the token is returned once; only its hash is kept),
    /// for any worker id (`worker_id: None`) or bound to one.
    pub async fn create_worker_token(&self, name: &str) -> anyhow::Result<String> {
        self.create_token(TokenScope::Worker, name, None).await
    }

    /// A new token of `scope` named `name`; a worker token may be bound to `worker_id`.
    pub async fn create_token(
        &self,
        scope: TokenScope,
        name: &str,
        worker_id: Option<&str>,
    ) -> anyhow::Result<String> {
        let token = auth::generate_token()?;
        self.state
            .store
            .create_token(&auth::hash_token(&token), scope, name, None, worker_id)
            .await?;
        Ok(token)
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Wait for SIGINT or SIGTERM, then shut down gracefully.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        info!("signal received; shutting down");
        self.shutdown().await;
    }

    /// Tell workers and clients goodbye (`ShuttingDown`), stop accepting, wait for
    /// connections (at most a few seconds), stop the scheduler and close the database.
    pub async fn shutdown(self) {
        let reason = CloseReason::ShuttingDown;
        self.state.workers.close_all(&reason);
        let _ = self.state.events.send(ServerEvent::Goodbye { reason });
        let _ = self.shutdown_tx.send(true);
        let server = self.server;
        let abort = server.abort_handle();
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "server task failed"),
            Err(_) => {
                warn!("connections still open after the grace period; dropping them");
                abort.abort();
            }
        }
        let _ = self.scheduler.await;
        if let Some(cluster) = &self.state.cluster {
            cluster.stop(&self.state).await;
        }
        self.state.store.close().await;
        info!("coordinator stopped");
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
