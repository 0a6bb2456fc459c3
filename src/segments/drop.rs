//! USB drop folders (DESIGN §4): folders matching the configured globs (`/media/*/vistter`) are
//! watched (inotify, with a rescan every `rescan_s` for sticks mounted later or events missed).
//! Each `.vseg` found is imported once, keyed by the SHA-256 of the file; the outcome is written
//! next to it as `NAME.vseg.result.json` when the medium is writable, and always as an event.
//! A stick pulled mid-import leaves nothing behind (the import fails before its commit) and the
//! package is tried again when it comes back.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use tokio_util::sync::CancellationToken;

use super::library::{Import, Library, Source};
use super::{Limits, Rejection, Threat};
use crate::control::trust::TrustStore;
use crate::store::Store;

/// A file's size and mtime, and since when they have been unchanged.
type Look = ((u64, SystemTime), std::time::Instant);

/// How long a file must stay unchanged before it is imported.
const SETTLE: Duration = Duration::from_secs(1);

/// What drop-folder imports are checked against.
pub struct DropConfig {
    pub globs: Vec<String>,
    pub rescan: Duration,
    pub trust_path: PathBuf,
    pub device_id: String,
    pub limits: Limits,
}

/// The folders the globs match now.
fn folders(globs: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for g in globs {
        match glob::glob(g) {
            Ok(paths) => out.extend(paths.flatten().filter(|p| p.is_dir())),
            Err(e) => tracing::warn!("drop folder pattern {g:?}: {e}"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Watches until `stop`.
pub async fn watch(cfg: DropConfig, store: Store, lib: Library, stop: CancellationToken) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own scans open the folder: only changes wake the watcher.
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
        }
        let _ = tx.send(());
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("drop folders: inotify is not available ({e}); scanning every {:?}", cfg.rescan);
            None
        }
    };
    let mut watched: HashSet<PathBuf> = HashSet::new();
    // Files seen but maybe still being copied: size and mtime at the last look, and since when
    // they have been so.
    let mut settling: HashMap<PathBuf, Look> = HashMap::new();
    let mut tick = tokio::time::interval(cfg.rescan);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now_folders = folders(&cfg.globs);
        if let Some(w) = watcher.as_mut() {
            for f in &now_folders {
                if !watched.contains(f) {
                    match w.watch(f, notify::RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            tracing::info!("drop folder {} watched", f.display());
                            watched.insert(f.clone());
                        }
                        Err(e) => tracing::warn!("drop folder {}: {e}", f.display()),
                    }
                }
            }
            watched.retain(|f| {
                let still = now_folders.contains(f);
                if !still {
                    let _ = w.unwatch(f);
                }
                still
            });
        }
        for f in &now_folders {
            scan(f, &cfg, &store, &lib, &mut settling, &stop).await;
        }
        // Something is still being copied: look again soon.
        let soon = if settling.is_empty() { cfg.rescan } else { Duration::from_millis(300) };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = tokio::time::sleep(soon) => {}
            Some(()) = rx.recv() => {
                // A burst of events (a copy in progress) is one look.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
            }
        }
    }
}

async fn scan(
    folder: &Path,
    cfg: &DropConfig,
    store: &Store,
    lib: &Library,
    settling: &mut HashMap<PathBuf, Look>,
    stop: &CancellationToken,
) {
    let Ok(rd) = std::fs::read_dir(folder) else { return };
    let mut files: Vec<PathBuf> =
        rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "vseg") && p.is_file()).collect();
    files.sort();
    for file in files {
        if stop.is_cancelled() {
            return;
        }
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        let look = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
        // Imported only once it has not changed for SETTLE (a copy in progress keeps changing).
        match settling.get(&file) {
            Some((prev, since)) if *prev == look && since.elapsed() >= SETTLE => {
                settling.remove(&file);
            }
            Some((prev, _)) if *prev == look => continue,
            _ => {
                settling.insert(file.clone(), (look, std::time::Instant::now()));
                continue;
            }
        }
        if let Err(e) = import_one(&file, cfg, store, lib).await {
            tracing::warn!("drop folder: {}: {e}", file.display());
        }
    }
    settling.retain(|p, _| p.exists());
}

/// Imports `file` unless a file with its digest was handled before.
async fn import_one(file: &Path, cfg: &DropConfig, store: &Store, lib: &Library) -> Result<(), Rejection> {
    let digest = super::download::sha256_of(file).await?;
    let seen = sqlx::query("SELECT outcome FROM segment_drops WHERE sha256 = ?")
        .bind(digest.as_str())
        .fetch_optional(store.pool())
        .await
        .map_err(Rejection::local)?;
    if seen.is_some() {
        return Ok(());
    }
    let name = file.display().to_string();
    tracing::info!("drop folder: importing {name}");
    let trust = TrustStore::load(&cfg.trust_path).map_err(|e| Rejection::local(e.to_string()))?;
    let floor = store.time_floor_ms().await.map_err(Rejection::local)?;
    let how = Import {
        trust: &trust,
        device_id: &cfg.device_id,
        now: crate::control::check::trusted_now(jiff::Timestamp::now(), floor),
        limits: cfg.limits,
        allow_downgrade: false,
        activate: true,
        source: Source::Usb(name.clone()),
    };
    let r = lib.import_file(file, how, |_| {}).await;
    let outcome = match &r {
        Ok(i) => serde_json::json!({"ok": true, "installed": i, "at": jiff::Timestamp::now().to_string()}),
        Err(e) => serde_json::json!({"ok": false, "error": e.threat, "message": e.message,
                                      "at": jiff::Timestamp::now().to_string()}),
    };
    if let Err(e) = &r {
        // The medium went away (or another local failure): nothing is recorded, so the package
        // is tried again when it is back.
        if e.threat == Threat::Local && !file.exists() {
            tracing::warn!("drop folder: {name} went away during its import; nothing was installed");
            return Ok(());
        }
        lib.rejected(&name, &Source::Usb(name.clone()), e).await;
    }
    write_result(file, &outcome);
    sqlx::query("INSERT OR REPLACE INTO segment_drops (sha256, name, outcome, at) VALUES (?, ?, ?, ?)")
        .bind(digest.as_str())
        .bind(&name)
        .bind(outcome.to_string())
        .bind(crate::store::now())
        .execute(store.pool())
        .await
        .map_err(Rejection::local)?;
    Ok(())
}

/// `NAME.vseg.result.json` beside the package, written whole; a read-only medium is fine.
fn write_result(file: &Path, outcome: &serde_json::Value) {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".result.json");
    let target = file.with_file_name(&name);
    let tmp = file.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let text = serde_json::to_string_pretty(outcome).unwrap_or_default();
    let r = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &target));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        tracing::info!("drop folder: no result file beside {} ({e}); the outcome is in the events", file.display());
    }
}
