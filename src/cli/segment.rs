//! `vistter-agent segment …` and `timeline export`: make, check, install and play signed segment
//! packages (their format is in `schemas/segment/`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::CliError;
use crate::command::configure::Configure;
use crate::command::values::{DestinationId, TimelineId};
use crate::command::{Command, Output, TimelineAction, TimelineExecute};
use crate::config::Config;
use crate::segments::library::{Import, Installed, Library, Source};
use crate::segments::manifest::{SafeRelPath, SegmentId};
use crate::segments::pack::{self, PackMeta};
use crate::segments::{package, Rejection, Threat};
use crate::store::Store;
use crate::trust::TrustStore;

#[derive(Subcommand, Debug)]
pub enum SegmentCmd {
    /// Make a package-signing key (JSON, 0600); trust it on devices with `trust add … --role segment`.
    Keygen {
        #[arg(long, default_value = "segments")]
        key_id: String,
        #[arg(short = 'o', long)]
        out: PathBuf,
    },
    /// Pack a folder (a timeline and its assets) into a signed `.vseg`.
    #[command(disable_version_flag = true)]
    Pack {
        dir: PathBuf,
        /// The signing key (from `segment keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        version: u64,
        /// The timeline file inside the folder.
        #[arg(long, default_value = "timeline.json")]
        entrypoint: String,
        /// After this time (RFC 3339) devices refuse the package.
        #[arg(long)]
        expires: Option<jiff::Timestamp>,
        /// Only these devices accept it (repeat for several).
        #[arg(long = "device")]
        devices: Vec<String>,
        #[arg(short = 'o', long)]
        out: PathBuf,
    },
    /// Check a package (signature, checksums, limits, targeting) without installing anything.
    Verify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Verify and install a package; its timeline becomes the segment's active one.
    Import {
        file: PathBuf,
        /// Accept a version not above the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Install, but keep the active version as it is.
        #[arg(long)]
        no_activate: bool,
        #[arg(long)]
        json: bool,
    },
    /// The installed segments and their kept versions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a segment: every version, its timeline, its files.
    Remove { id: String },
    /// Make the previous kept version (or `--to VERSION`) the active one.
    Rollback {
        id: String,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Play the segment's active timeline as the show.
    Play {
        id: String,
        #[arg(long = "destination", required = true)]
        destinations: Vec<DestinationId>,
    },
}

fn refused(r: Rejection) -> CliError {
    let code = match r.threat {
        Threat::Local => return CliError::Failed(r.to_string()),
        Threat::Rollback | Threat::Conflict => crate::error::EXIT_CONFLICT,
        Threat::NoSpace => return CliError::Failed(r.to_string()),
        _ => crate::error::EXIT_USAGE,
    };
    CliError::Coded(code, format!("package refused: {r}"))
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    // A bar for large inputs on a terminal only: logs and pipes get the summary line.
    if total < (64 << 20) || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}") {
        bar.set_style(style);
    }
    Some(bar)
}

/// What a package is checked against on this device.
pub(crate) async fn import_context(
    cfg: &Config,
    store: &Store,
) -> Result<(TrustStore, String, jiff::Timestamp), CliError> {
    let trust = TrustStore::load(&cfg.trust_store_path()).map_err(|e| CliError::Failed(e.to_string()))?;
    let device_id = cfg.device_id().map_err(|e| CliError::Invalid(e.to_string()))?;
    let floor = store.time_floor_ms().await?;
    let now = crate::clock::trusted_now(jiff::Timestamp::now(), floor);
    Ok((trust, device_id.to_string(), now))
}

fn print_installed(i: &Installed, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(i).expect("serializes"));
    } else if i.already_installed {
        outln!("segment {} version {} is installed already: nothing changed", i.segment_id, i.version);
    } else {
        outln!(
            "segment {} version {} installed ({} files, {} bytes), timeline {}{}",
            i.segment_id,
            i.version,
            i.files,
            i.bytes,
            i.timeline_id,
            if i.active { ", active" } else { "" }
        );
    }
}

pub async fn segment(cmd: SegmentCmd, cfg: &Config) -> Result<(), CliError> {
    match cmd {
        SegmentCmd::Keygen { key_id, out } => super::studio::keygen(&key_id, &out, "segment"),
        SegmentCmd::Pack { dir, key, id, version, entrypoint, expires, devices, out } => {
            let (key_id, key) = super::studio::load_key(&key)?;
            let files = pack::collect_dir(&dir).map_err(|e| CliError::Invalid(e.to_string()))?;
            let meta = PackMeta {
                segment_id: SegmentId::new(&id).map_err(|e| CliError::Invalid(e.to_string()))?,
                version,
                expires_at: expires,
                device_ids: devices,
                entrypoint: SafeRelPath::new(&entrypoint).map_err(|e| CliError::Invalid(e.to_string()))?,
                min_agent_version: None,
            };
            pack_to(&files, &meta, &key_id, &key, &out)
        }
        SegmentCmd::Verify { file, json } => {
            let store = Store::open(&cfg.data_dir).await?;
            let (trust, device_id, now) = import_context(cfg, &store).await?;
            let f = std::fs::File::open(&file).map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            if size > cfg.segments.limits.max_compressed_bytes {
                return Err(refused(Rejection::new(Threat::TooLarge, format!("{size} bytes: over the package limit"))));
            }
            let checks = package::Checks { trust: &trust, device_id: &device_id, now, limits: cfg.segments.limits };
            let bar = progress_bar(size * 2);
            let checked = tokio::task::block_in_place(|| {
                package::verify(std::io::BufReader::new(f), &checks, &mut |n| {
                    if let Some(b) = &bar {
                        b.set_position(n)
                    }
                })
            })
            .map_err(refused)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let m = &checked.manifest;
            if json {
                let v = serde_json::json!({"valid": true, "segment_id": m.segment_id, "version": m.version,
                    "key_id": checked.key_id, "files": m.files.len(), "bytes": m.total_bytes(),
                    "expires_at": m.expires_at, "entrypoint": m.entrypoint, "manifest_sha256": checked.manifest_sha256});
                outln!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else {
                outln!(
                    "valid: segment {} version {}, {} files, {} bytes, signed by {}{}",
                    m.segment_id,
                    m.version,
                    m.files.len(),
                    m.total_bytes(),
                    checked.key_id,
                    m.expires_at.map(|e| format!(", expires {e}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        SegmentCmd::Import { file, allow_downgrade, no_activate, json } => {
            let store = Store::open(&cfg.data_dir).await?;
            let (trust, device_id, now) = import_context(cfg, &store).await?;
            let lib = Library::new(store, &cfg.data_dir);
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let bar = progress_bar(size);
            let b2 = bar.clone();
            let how = Import {
                trust: &trust,
                device_id: &device_id,
                now,
                limits: cfg.segments.limits,
                allow_downgrade,
                activate: !no_activate,
                source: Source::Cli,
            };
            let r = lib
                .import_file(&file, how, move |n| {
                    if let Some(b) = &b2 {
                        b.set_position(n)
                    }
                })
                .await;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            match r {
                Ok(i) => {
                    print_installed(&i, json);
                    Ok(())
                }
                Err(e) => {
                    lib.rejected(&file.display().to_string(), &Source::Cli, &e).await;
                    Err(refused(e))
                }
            }
        }
        SegmentCmd::List { json } => {
            let lib = Library::new(Store::open(&cfg.data_dir).await?, &cfg.data_dir);
            let rows = lib.list().await.map_err(refused)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows).expect("serializes"));
            } else if rows.is_empty() {
                outln!("no segments installed");
            } else {
                for r in rows {
                    outln!(
                        "{:<24} v{:<6} {:<7} {:>12} bytes {:>5} files  timeline {}  from {}  {}",
                        r.segment_id,
                        r.version,
                        if r.active { "active" } else { "" },
                        r.bytes,
                        r.files,
                        r.timeline_id,
                        r.source,
                        r.installed_at
                    );
                }
            }
            Ok(())
        }
        SegmentCmd::Remove { id } => {
            let segment_id = SegmentId::new(&id).map_err(|e| CliError::Invalid(e.to_string()))?;
            super::configure_change(cfg, Configure::SegmentRemove { segment_id }).await
        }
        SegmentCmd::Rollback { id, to } => {
            let segment_id = SegmentId::new(&id).map_err(|e| CliError::Invalid(e.to_string()))?;
            super::configure_change(cfg, Configure::SegmentActivate { segment_id, version: to }).await
        }
        SegmentCmd::Play { id, destinations } => {
            let lib = Library::new(Store::open(&cfg.data_dir).await?, &cfg.data_dir);
            let (version, timeline) = lib.active_timeline(&id).await.map_err(not_found)?;
            let req = Command::TimelineExecute(TimelineExecute {
                timeline_id: Some(TimelineId::new(timeline).map_err(|e| CliError::Invalid(e.to_string()))?),
                destination_ids: Some(destinations),
                ..TimelineExecute::new(TimelineAction::Play)
            });
            match super::ask_daemon(cfg, &req).await? {
                Output::Started { preflight } => {
                    for w in preflight.warnings {
                        outln!("warning  {w}");
                    }
                }
                Output::Done => {}
                other => return Err(super::unexpected(&other)),
            }
            outln!("segment {id} version {version} playing");
            Ok(())
        }
    }
}

fn not_found(r: Rejection) -> CliError {
    match r.threat {
        Threat::MissingFile => CliError::Coded(crate::error::EXIT_NOT_FOUND, r.message),
        _ => refused(r),
    }
}

fn pack_to(
    files: &[(SafeRelPath, PathBuf)],
    meta: &PackMeta,
    key_id: &str,
    key: &ed25519_dalek::SigningKey,
    out: &Path,
) -> Result<(), CliError> {
    let total: u64 = files.iter().filter_map(|(_, p)| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = progress_bar(total * 2);
    let m = pack::pack(files, meta, key_id, key, out, &mut |done, _| {
        if let Some(b) = &bar {
            b.set_position(done)
        }
    })
    .map_err(|e| CliError::Invalid(e.to_string()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    outln!(
        "{}: segment {} version {}, {} files, {} bytes ({} packed), signed by {key_id}",
        out.display(),
        m.segment_id,
        m.version,
        m.files.len(),
        m.total_bytes(),
        size
    );
    Ok(())
}

/// `timeline export ID -o F --key K`: a stored timeline and the assets it uses, as a package.
pub async fn export(
    cfg: &Config,
    id: &TimelineId,
    out: &Path,
    key: &Path,
    version: Option<u64>,
) -> Result<(), CliError> {
    let (key_id, key) = super::studio::load_key(key)?;
    let store = Store::open(&cfg.data_dir).await?;
    let row = store.timeline(id).await?;
    let root = PathBuf::from(row.asset_root.clone().unwrap_or_else(|| ".".into()));
    let inv =
        crate::timeline::model::Inventory { cameras: store.camera_inventory().await?, asset_root: Some(root.clone()) };
    let tl = crate::timeline::model::parse_stored(&row.json, &inv).map_err(|e| CliError::Invalid(e.to_string()))?;
    let tmp = tempfile_dir(cfg)?;
    let timeline_file = tmp.join("timeline.json");
    std::fs::write(&timeline_file, &row.json).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut files = vec![(SafeRelPath::new("timeline.json").expect("a safe path"), timeline_file)];
    let mut assets = tl.assets();
    assets.sort();
    assets.dedup();
    for a in assets {
        let rel = SafeRelPath::new(&a).map_err(|e| CliError::Invalid(e.to_string()))?;
        if rel.as_str() == "timeline.json" {
            return Err(CliError::Invalid("an asset named timeline.json cannot be exported".into()));
        }
        let path = rel.under(&root);
        files.push((rel, path));
    }
    files.sort();
    let meta = PackMeta {
        segment_id: SegmentId::new(id.as_str()).map_err(|e| CliError::Invalid(e.to_string()))?,
        version: version.unwrap_or_else(|| jiff::Timestamp::now().as_second().max(1) as u64),
        expires_at: None,
        device_ids: Vec::new(),
        entrypoint: SafeRelPath::new("timeline.json").expect("a safe path"),
        min_agent_version: None,
    };
    let r = pack_to(&files, &meta, &key_id, &key, out);
    let _ = std::fs::remove_dir_all(&tmp);
    r
}

fn tempfile_dir(cfg: &Config) -> Result<PathBuf, CliError> {
    let d = cfg.data_dir.join("segments").join(".staging").join(format!("export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).map_err(|e| CliError::Failed(format!("{}: {e}", d.display())))?;
    Ok(d)
}
