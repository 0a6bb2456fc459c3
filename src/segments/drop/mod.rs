//! USB drop folders: folders matching the configured globs (`/media/*/vistter`) are
//! watched (inotify, with a rescan every `rescan_s` for sticks mounted later or events missed).
//! Each `.vseg` found is imported once, keyed by the SHA-256 of the file; the outcome is written
//! next to it as `NAME.vseg.result.json` when the medium is writable, and always as an event.
//! A stick pulled mid-import leaves nothing behind (the import fails before its commit) and the
//! package is tried again when it comes back.
//!
//! Everything on a stick is its owner's to choose, links included, and a link there could point
//! at the agent's own files (`agent.db`, the device key, `trust.json`). So a drop folder is opened
//! once per scan with `O_DIRECTORY | O_NOFOLLOW` ([`Folder`]), and every name in it is looked up,
//! read, created and renamed relative to that handle, never through a path: a drop folder that is
//! a link is skipped with a warning, a `.vseg` that is not a regular file (a link, a device, a
//! FIFO) is skipped with a warning and an event, a package is read with `O_NOFOLLOW`, and the
//! result file is created new (`O_CREAT | O_EXCL | O_NOFOLLOW`) then renamed onto its name.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::library::{Import, Library, Source};
use super::manifest::Sha256Hex;
use super::{Limits, Rejection, Threat};
use crate::store::Store;
use crate::trust::TrustStore;
use folder::{Folder, Kind};

mod folder;

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

/// The folders the globs match now. One that is a link is left out (and said once).
fn folders(globs: &[String], warned: &mut HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for g in globs {
        match glob::glob(g) {
            Ok(paths) => {
                for p in paths.flatten() {
                    match std::fs::symlink_metadata(&p) {
                        Ok(m) if m.is_dir() => out.push(p),
                        Ok(m) if m.file_type().is_symlink() && warned.insert(p.clone()) => {
                            tracing::warn!(
                                "drop folder {} is a symbolic link: skipped (a drop folder is never followed elsewhere)",
                                p.display()
                            );
                        }
                        _ => {}
                    }
                }
            }
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
    // Links and other non-files already warned about (once each while they are there).
    let mut warned: HashSet<PathBuf> = HashSet::new();
    let mut tick = tokio::time::interval(cfg.rescan);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let now_folders = folders(&cfg.globs, &mut warned);
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
            scan(f, &cfg, &store, &lib, &mut settling, &mut warned, SETTLE, &stop).await;
        }
        warned.retain(|p| std::fs::symlink_metadata(p).is_ok());
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

/// Looks at the `.vseg` names in `path`, importing those unchanged for `settle`.
#[allow(clippy::too_many_arguments)]
async fn scan(
    path: &Path,
    cfg: &DropConfig,
    store: &Store,
    lib: &Library,
    settling: &mut HashMap<PathBuf, Look>,
    warned: &mut HashSet<PathBuf>,
    settle: Duration,
    stop: &CancellationToken,
) {
    let folder = match Folder::open(path) {
        Ok(f) => f,
        Err(e) => {
            // Became a link since the glob matched it, or went away.
            if e.raw_os_error() == Some(nix::libc::ELOOP) && warned.insert(path.to_path_buf()) {
                tracing::warn!("drop folder {} is a symbolic link: skipped", path.display());
            }
            return;
        }
    };
    let Ok(names) = folder.names() else { return };
    let mut names: Vec<OsString> =
        names.into_iter().filter(|n| Path::new(n).extension().is_some_and(|x| x == "vseg")).collect();
    names.sort();
    for name in names {
        if stop.is_cancelled() {
            return;
        }
        let file = path.join(&name);
        let Ok((kind, len, mtime)) = folder.look(&name) else { continue };
        if kind != Kind::File {
            if warned.insert(file.clone()) {
                let what = if kind == Kind::Link { "a symbolic link" } else { "not a regular file" };
                let shown = folder.show(&name);
                let r = Rejection::new(
                    Threat::NotARegularFile,
                    format!("{what}: skipped (a package on a stick is read only as a regular file in the drop folder)"),
                );
                lib.rejected(&shown, &Source::Usb(shown.clone()), &r).await;
            }
            continue;
        }
        let look = (len, mtime);
        // Imported only once it has not changed for `settle` (a copy in progress keeps changing).
        match settling.get(&file) {
            Some((prev, since)) if *prev == look && since.elapsed() >= settle => {
                settling.remove(&file);
            }
            Some((prev, _)) if *prev == look => continue,
            _ => {
                settling.insert(file.clone(), (look, std::time::Instant::now()));
                continue;
            }
        }
        if let Err(e) = import_one(&folder, &name, cfg, store, lib).await {
            tracing::warn!("drop folder: {}: {e}", file.display());
        }
    }
    settling.retain(|p, _| std::fs::symlink_metadata(p).is_ok());
}

/// The SHA-256 of an open package, read to its end; the file is rewound for the import.
async fn digest_of(mut f: std::fs::File) -> Result<(Sha256Hex, std::fs::File), Rejection> {
    tokio::task::spawn_blocking(move || {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = f.read(&mut buf).map_err(Rejection::local)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
        f.rewind().map_err(Rejection::local)?;
        Ok((Sha256Hex::of(&h.finalize()), f))
    })
    .await
    .map_err(|e| Rejection::local(e.to_string()))?
}

/// Imports `name` unless a file with its digest was handled before.
async fn import_one(
    folder: &Folder,
    name: &OsStr,
    cfg: &DropConfig,
    store: &Store,
    lib: &Library,
) -> Result<(), Rejection> {
    let shown = folder.show(name);
    let file = folder.open_package(name).map_err(|e| Rejection::local(format!("{shown}: {e}")))?;
    let (digest, file) = digest_of(file).await?;
    let seen = sqlx::query("SELECT outcome FROM segment_drops WHERE sha256 = ?")
        .bind(digest.as_str())
        .fetch_optional(store.pool())
        .await
        .map_err(Rejection::local)?;
    if seen.is_some() {
        return Ok(());
    }
    tracing::info!("drop folder: importing {shown}");
    let trust = TrustStore::load(&cfg.trust_path).map_err(|e| Rejection::local(e.to_string()))?;
    let floor = store.time_floor_ms().await.map_err(Rejection::local)?;
    let how = Import {
        trust: &trust,
        device_id: &cfg.device_id,
        now: crate::clock::trusted_now(jiff::Timestamp::now(), floor),
        limits: cfg.limits,
        allow_downgrade: false,
        activate: true,
        source: Source::Usb(shown.clone()),
    };
    let r = lib.import_open(file, &shown, how, |_| {}).await;
    let outcome = match &r {
        Ok(i) => serde_json::json!({"ok": true, "installed": i, "at": jiff::Timestamp::now().to_string()}),
        Err(e) => serde_json::json!({"ok": false, "error": e.threat, "message": e.message,
                                      "at": jiff::Timestamp::now().to_string()}),
    };
    if let Err(e) = &r {
        // The medium went away (or another local failure): nothing is recorded, so the package
        // is tried again when it is back.
        if e.threat == Threat::Local && folder.look(name).is_err() {
            tracing::warn!("drop folder: {shown} went away during its import; nothing was installed");
            return Ok(());
        }
        lib.rejected(&shown, &Source::Usb(shown.clone()), e).await;
    }
    write_result(folder, name, &outcome);
    sqlx::query("INSERT OR REPLACE INTO segment_drops (sha256, name, outcome, at) VALUES (?, ?, ?, ?)")
        .bind(digest.as_str())
        .bind(&shown)
        .bind(outcome.to_string())
        .bind(crate::store::now())
        .execute(store.pool())
        .await
        .map_err(Rejection::local)?;
    Ok(())
}

/// `NAME.vseg.result.json` beside the package, written whole through the folder's handle: a new
/// `.NAME.vseg.result.json.tmp` (whatever was at that name removed first: a stale one, or a link
/// planted there, which goes itself and leaves what it points to alone), then renamed onto the
/// result's name. A read-only medium, or a name too long for the suffixes, is fine: the outcome
/// is in the events.
fn write_result(folder: &Folder, name: &OsStr, outcome: &serde_json::Value) {
    let mut target = name.to_os_string();
    target.push(".result.json");
    let mut tmp = OsString::from(".");
    tmp.push(&target);
    tmp.push(".tmp");
    let text = serde_json::to_string_pretty(outcome).unwrap_or_default();
    let _ = folder.remove(&tmp);
    let r = folder.create_new(&tmp).and_then(|mut f| {
        let written =
            f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).and_then(|()| folder.rename(&tmp, &target));
        if written.is_err() {
            // Ours: created above.
            let _ = folder.remove(&tmp);
        }
        written
    });
    if let Err(e) = r {
        tracing::info!("drop folder: no result file beside {} ({e}); the outcome is in the events", folder.show(name));
    }
}

#[cfg(test)]
mod tests;
