//! `kiln data push|ls|show|rm`, and the upload of a spec's local dataset by `kiln submit` and
//! `kiln sweep`.
//!
//! A file travels as it is; an IDX folder as a tar archive of its IDX files, built the same way
//! every time (sorted, no times or owners), so the same folder always has the same digest and
//! is stored once.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use kiln_client::{Body, Client};
use kiln_proto::dataset::{
    DatasetInfo, DatasetKind, DatasetPreview, DatasetRef, Digest, check_name, name_from_file,
};
use kiln_proto::fmt::bytes;
use kiln_proto::spec::JobSpec;

/// Uploads this large or larger show a progress bar.
const PROGRESS_FROM: u64 = 4 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Store a dataset on the coordinator: a CSV or text file, or an IDX folder (MNIST).
    /// Bytes already stored are not sent again.
    Push {
        path: PathBuf,
        /// Name to store it under (default: the file or folder name).
        #[arg(long)]
        name: Option<String>,
        /// idx, csv or text (default: idx for a folder, csv for `*.csv`, else text).
        #[arg(long)]
        kind: Option<DatasetKind>,
        #[arg(long)]
        json: bool,
    },
    /// List stored datasets (the newest version of each name).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a dataset (a name, or `sha256:<hex>`): digest, size, versions and a preview.
    Show {
        dataset: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete every version of a name (refused while a queued or running job uses it).
    Rm { name: String },
}

pub async fn run(client: &Client, command: DataCommand) -> anyhow::Result<()> {
    match command {
        DataCommand::Push {
            path,
            name,
            kind,
            json,
        } => {
            let name = match name {
                Some(n) => {
                    check_name(&n).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
                    n
                }
                None => default_name(&path)?,
            };
            let kind = match kind {
                Some(k) => k,
                None => guess_kind(&path),
            };
            let pushed = push(client, &path, &name, kind).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pushed.info)?);
            } else {
                println!("{}", pushed.describe(&path.display().to_string()));
            }
        }
        DataCommand::Ls { json } => {
            let list = client.datasets().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<28} {:<5} {:>9} {:>8}  {:<12}  AGE",
                    "NAME", "KIND", "SIZE", "VERSIONS", "DIGEST"
                );
                for d in &list {
                    println!(
                        "{:<28} {:<5} {:>9} {:>8}  {:<12}  {}",
                        d.name,
                        d.kind.as_str(),
                        bytes(d.size),
                        d.versions,
                        d.digest.short(),
                        crate::client_cmd::age(d.created_ms)
                    );
                }
                println!("{} dataset(s)", list.len());
            }
        }
        DataCommand::Show { dataset, json } => {
            let info = client.dataset(&dataset).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print_dataset(&info);
            }
        }
        DataCommand::Rm { name } => {
            client.delete_dataset(&name).await?;
            println!("dataset `{name}` deleted");
        }
    }
    Ok(())
}

fn print_dataset(d: &DatasetInfo) {
    println!(
        "dataset {} (version {} of {})",
        d.name,
        d.version,
        d.versions.max(d.version)
    );
    println!("  digest    {}", d.digest);
    println!(
        "  use as    dataset.path = \"kiln:{}\"  (or pinned: \"{}\")",
        d.name,
        d.digest.reference()
    );
    println!("  kind      {}", d.kind.as_str());
    println!("  size      {} ({} bytes)", bytes(d.size), d.size);
    match &d.preview {
        DatasetPreview::Csv { columns, rows } => {
            println!("  columns   {}", columns.join(", "));
            for row in rows {
                println!("            {}", row.join(", "));
            }
        }
        DatasetPreview::Text { head } => {
            let head: String = head.chars().take(200).collect();
            println!("  text      {head:?}…");
        }
        DatasetPreview::Idx { files } => {
            for f in files {
                let shape: Vec<String> = f.shape.iter().map(u32::to_string).collect();
                println!("  file      {} [{}]", f.name, shape.join(" × "));
            }
        }
    }
}

fn default_name(path: &Path) -> anyhow::Result<String> {
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_string());
    Ok(name_from_file(&file_name))
}

fn guess_kind(path: &Path) -> DatasetKind {
    if path.is_dir() {
        DatasetKind::Idx
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        DatasetKind::Csv
    } else {
        DatasetKind::Text
    }
}

/// What a push did.
pub struct Pushed {
    pub info: DatasetInfo,
    /// The bytes were sent (false: the coordinator had them already).
    pub uploaded: bool,
}

impl Pushed {
    fn describe(&self, what: &str) -> String {
        let d = &self.info;
        format!(
            "{what}: {} as kiln:{} (version {}, {}, {})",
            if self.uploaded {
                "uploaded"
            } else {
                "already stored; named"
            },
            d.name,
            d.version,
            bytes(d.size),
            d.digest
        )
    }
}

/// The bytes to send: the file itself, or a tar archive of an IDX folder (removed on drop).
struct Payload {
    path: PathBuf,
    temporary: bool,
}

impl Drop for Payload {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Pack `path` for `kind`: a folder must be an IDX folder; a file goes as it is.
fn payload(path: &Path, kind: DatasetKind) -> anyhow::Result<Payload> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    match (meta.is_dir(), kind) {
        (true, DatasetKind::Idx) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = std::env::temp_dir()
                .join(format!("kiln-push-{}-{nanos:x}.tar", std::process::id()));
            let payload = Payload {
                path: tmp,
                temporary: true,
            };
            pack_idx(path, &payload.path)?;
            Ok(payload)
        }
        (true, other) => anyhow::bail!(
            "{} is a folder; only an IDX folder (kind idx) can be pushed as a folder, not {}",
            path.display(),
            other.as_str()
        ),
        (false, DatasetKind::Idx) => anyhow::bail!(
            "{} is a file; an IDX dataset is a folder of IDX files (…-ubyte or …-ubyte.gz)",
            path.display()
        ),
        (false, _) => Ok(Payload {
            path: path.to_path_buf(),
            temporary: false,
        }),
    }
}

/// A tar of the folder's IDX files in name order, with fixed metadata (same folder, same
/// bytes).
fn pack_idx(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (name.ends_with("-ubyte") || name.ends_with("-ubyte.gz")).then(|| (name, e.path()))
        })
        .collect();
    anyhow::ensure!(
        !names.is_empty(),
        "{} has no IDX files (names ending in -ubyte or -ubyte.gz, like train-images-idx3-ubyte.gz)",
        dir.display()
    );
    names.sort();
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for (name, path) in names {
        let size = std::fs::metadata(&path)?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        let reader = std::fs::File::open(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        builder
            .append_data(&mut header, &name, reader)
            .with_context(|| format!("cannot pack {}", path.display()))?;
    }
    builder
        .into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?;
    Ok(())
}

fn sha256_of(path: &Path) -> anyhow::Result<(Digest, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((Digest::from_bytes(&hasher.finalize().into()), size))
}

/// Store `path` as the newest version of `name`; sends the bytes only if the coordinator does
/// not have them yet.
pub async fn push(
    client: &Client,
    path: &Path,
    name: &str,
    kind: DatasetKind,
) -> anyhow::Result<Pushed> {
    let payload = payload(path, kind)?;
    let hashed = payload.path.clone();
    let (digest, size) = tokio::task::spawn_blocking(move || sha256_of(&hashed)).await??;
    match client.dataset(&digest.to_string()).await {
        Ok(_) => {
            let info = client.name_dataset(name, &digest).await?;
            return Ok(Pushed {
                info,
                uploaded: false,
            });
        }
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 404) => {}
        Err(e) => return Err(e.into()),
    }
    let bar = if size >= PROGRESS_FROM {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "uploading {msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        bar
    } else {
        ProgressBar::hidden()
    };
    let file = tokio::fs::File::open(&payload.path)
        .await
        .with_context(|| format!("cannot read {}", payload.path.display()))?;
    let progress = bar.clone();
    let chunks = futures_util::stream::try_unfold(file, move |mut file| {
        let progress = progress.clone();
        async move {
            let mut buf = vec![0u8; CHUNK];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            progress.inc(n as u64);
            Ok(Some((buf, file)))
        }
    });
    let result = client
        .upload_dataset(name, kind, &digest, size, Body::wrap_stream(chunks))
        .await;
    bar.finish_and_clear();
    let (info, uploaded) = result.with_context(|| format!("uploading {}", path.display()))?;
    drop(payload);
    Ok(Pushed { info, uploaded })
}

/// `kiln submit` / `kiln sweep`: a spec whose `dataset.path` is a relative path that exists
/// here is uploaded (unless the coordinator has those bytes) and pinned to its digest. Other
/// paths are left for the worker's `--data-root`. Says what it did on stderr.
pub async fn upload_local_dataset(client: &Client, spec: &mut JobSpec) -> anyhow::Result<()> {
    let Some(Ok(DatasetRef::Local(local))) = DatasetRef::of(&spec.dataset) else {
        return Ok(());
    };
    let path = Path::new(&local);
    if path.is_absolute() {
        return Ok(());
    }
    if !path.exists() {
        eprintln!(
            "dataset.path {local:?} is not here: the worker reads it under its --data-root \
             (push data with `kiln data push` to send it along)"
        );
        return Ok(());
    }
    let Some(kind) = DatasetKind::of(&spec.dataset) else {
        return Ok(());
    };
    let name = default_name(path)?;
    let pushed = push(client, path, &name, kind)
        .await
        .with_context(|| format!("sending dataset.path {local:?} to the coordinator"))?;
    eprintln!("{}", pushed.describe(&format!("dataset {local}")));
    spec.dataset.set_path(pushed.info.digest.reference());
    Ok(())
}
