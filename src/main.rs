//! `kiln`: the command line. Only argument parsing and output live here; the work is done by
//! kiln-proto (job spec, wire protocol), kiln-train (training core), kiln-coordinator and
//! kiln-worker.

mod client_cmd;
mod data_cmd;
mod devices_cmd;
mod import_cmd;
mod predict_cmd;
mod server_cmd;
mod token_cmd;
mod train_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: one Rust model, trained anywhere"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    remote: client_cmd::Remote,
}

#[derive(Subcommand)]
enum Command {
    /// Train a job spec locally, with a progress bar; writes a run folder.
    Train(train_cmd::TrainArgs),
    /// List the devices this kiln can train on here (cpu, wgpu, cuda), trying each one.
    Devices(devices_cmd::DevicesArgs),
    /// Run a trained model on the test images of an IDX folder: one JSON line per image
    /// (label, predicted class, logits, probabilities).
    Predict(predict_cmd::PredictArgs),
    /// Check a job spec and print it with every default filled in.
    Check {
        /// Job spec (TOML, or JSON if it ends in .json).
        spec: std::path::PathBuf,
    },
    /// Coordinator and a local worker in one process, with the dashboard.
    Up(server_cmd::UpArgs),
    /// Run the coordinator: job queue, store, dashboard.
    Serve(server_cmd::ServeArgs),
    /// Run a worker that dials out to a coordinator and trains its jobs.
    Worker(server_cmd::WorkerArgs),
    #[command(flatten)]
    Remote(client_cmd::RemoteCommand),
}

fn main() -> ExitCode {
    set_burn_default_device();
    set_runtime_dir();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kiln=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train_cmd::run(args),
        Command::Devices(args) => devices_cmd::run(args),
        Command::Predict(args) => predict_cmd::run(args),
        Command::Check { spec } => train_cmd::read_spec(&spec).map(|s| {
            print!("{}", s.to_toml_string());
            ExitCode::SUCCESS
        }),
        Command::Up(args) => server_cmd::up(args),
        Command::Serve(args) => server_cmd::serve(args),
        Command::Worker(args) => server_cmd::worker(args, cli.remote),
        Command::Remote(command) => client_cmd::run(cli.remote, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Burn's `Device::default()` — which it uses to materialise a loaded optimizer state before
/// moving it to the training device — would pick wgpu and so demand a GPU adapter on a CPU run.
/// Point it at the CPU backend unless the user chose otherwise.
fn set_burn_default_device() {
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("BURN_DEVICE", "flex")
        };
    }
}

/// wgpu's adapter search (`device = "auto"` or `wgpu`) loads Mesa, whose Wayland client prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." once per probe when the
/// variable is unset or not an absolute path: harmless, but it reads as Kiln's error. Like
/// `scripts/env.sh`, point it at `<tmp>/kiln-xdg` — only if that is a directory of this user
/// (not a link), made private (0700) as the XDG spec asks of it.
#[cfg(target_os = "linux")]
fn set_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute()) {
        return;
    }
    let dir = std::env::temp_dir().join("kiln-xdg");
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    // Ours and a real directory (not a link); then private, as `scripts/env.sh` makes it.
    let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == uid);
    if ours && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok() {
        // SAFETY: called first thing in `main` (right after `set_burn_default_device`), before
        // any other thread exists.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("XDG_RUNTIME_DIR", &dir)
        };
    }
}

/// Only Linux loads Mesa's Wayland client.
#[cfg(not(target_os = "linux"))]
fn set_runtime_dir() {}
