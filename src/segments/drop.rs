//! USB drop folders (DESIGN §4): folders matching the configured globs (`/media/*/vistter`) are
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
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use notify::Watcher;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::library::{Import, Library, Source};
use super::manifest::Sha256Hex;
use super::{Limits, Rejection, Threat};
use crate::store::Store;
use crate::trust::TrustStore;

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

/// A drop folder, opened once and never through a link; names in it are single path components
/// addressed through its descriptor (`openat`, `fstatat`, `renameat`, `unlinkat`), so replacing
/// the folder or a name in it by a link afterwards changes nothing.
struct Folder {
    path: PathBuf,
    fd: OwnedFd,
}

/// What a name in a drop folder is (its own type: a link is a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Link,
    Other,
}

impl Folder {
    /// Opens `path`; a folder that is itself a link is refused (`ELOOP`).
    fn open(path: &Path) -> std::io::Result<Folder> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty())?;
        Ok(Folder { path: path.to_path_buf(), fd })
    }

    /// `name` as a path, for messages and events.
    fn show(&self, name: &OsStr) -> String {
        self.path.join(name).display().to_string()
    }

    /// The names in the folder (`.` and `..` left out).
    fn names(&self) -> std::io::Result<Vec<OsString>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = nix::dir::Dir::openat(&self.fd, ".", flags, Mode::empty())?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let name = e?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                out.push(OsString::from(std::ffi::OsStr::from_bytes(&name)));
            }
        }
        Ok(out)
    }

    /// What `name` is, its size and mtime, without following a link.
    fn look(&self, name: &OsStr) -> std::io::Result<(Kind, u64, SystemTime)> {
        one_component(name)?;
        let st = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let kind = if fmt == SFlag::S_IFREG {
            Kind::File
        } else if fmt == SFlag::S_IFLNK {
            Kind::Link
        } else {
            Kind::Other
        };
        let mtime = SystemTime::UNIX_EPOCH
            + Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec.clamp(0, 999_999_999) as u32);
        Ok((kind, st.st_size.max(0) as u64, mtime))
    }

    /// `name` opened for reading: never through a link (`O_NOFOLLOW`), never blocking on a FIFO
    /// (`O_NONBLOCK`), and only if it is a regular file once open.
    fn open_package(&self, name: &OsStr) -> std::io::Result<std::fs::File> {
        one_component(name)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let f = std::fs::File::from(nix::fcntl::openat(&self.fd, name, flags, Mode::empty())?);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(f)
    }

    /// A new file `name`: created here or not at all (`O_EXCL`: an existing name, a link
    /// included, is an error, and nothing is opened through it).
    fn create_new(&self, name: &OsStr) -> std::io::Result<std::fs::File> {
        one_component(name)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o644))?;
        Ok(std::fs::File::from(fd))
    }

    /// Renames `from` to `to` inside the folder. A link at `to` is replaced itself: rename never
    /// follows the link at its target name, so nothing it points to is touched.
    fn rename(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        one_component(from)?;
        one_component(to)?;
        Ok(nix::fcntl::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the name `name` (a link itself, never what it points to; never a folder).
    fn remove(&self, name: &OsStr) -> std::io::Result<()> {
        one_component(name)?;
        Ok(nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?)
    }
}

/// Names given to [`Folder`] come from its own listing plus fixed suffixes; this makes sure none
/// can reach another folder.
fn one_component(name: &OsStr) -> std::io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name in the folder"));
    }
    Ok(())
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
mod hostile_stick_tests {
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;

    use super::{watch, DropConfig};
    use crate::segments::testkit::Kit;
    use crate::segments::Limits;

    /// How long a test waits for the watcher to act (it rescans every 200 ms and lets a file
    /// settle for a second).
    const WAIT: Duration = Duration::from_secs(30);

    /// A running watcher over `<dir>/media/*/vistter`, stopped on drop.
    struct Watching {
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        media: PathBuf,
    }

    impl Drop for Watching {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn start(kit: &Kit) -> Watching {
        let media = kit.dir.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        let cfg = DropConfig {
            globs: vec![format!("{}/*/vistter", media.display())],
            rescan: Duration::from_millis(200),
            trust_path: kit.trust_path.clone(),
            device_id: "vs-drop".into(),
            limits: Limits::default(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(cfg, kit.store.clone(), kit.library.clone(), stop.clone()));
        Watching { stop, task, media }
    }

    /// A stick's `vistter` folder, created.
    fn stick(w: &Watching, name: &str) -> PathBuf {
        let d = w.media.join(name).join("vistter");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Waits until `f` holds (or panics after `WAIT`), checking that the watcher still runs.
    async fn until<F, Fut>(w: &Watching, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let t0 = Instant::now();
        while !f().await {
            assert!(!w.task.is_finished(), "the watcher stopped while waiting for {what}");
            assert!(t0.elapsed() < WAIT, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn result_of(p: &Path) -> Option<serde_json::Value> {
        let meta = std::fs::symlink_metadata(p).ok()?;
        if !meta.is_file() {
            return None;
        }
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    }

    /// Path → content of every regular file under `root` (symlinks as their target).
    fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    todo.push(e.path());
                } else if t.is_symlink() {
                    out.insert(e.path(), std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes());
                } else {
                    out.insert(e.path(), std::fs::read(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_result_tmp_on_a_stick_cannot_overwrite_a_file_outside() {
        let kit = Kit::new().await;
        let w = start(&kit);
        let trust_before = std::fs::read_to_string(&kit.trust_path).unwrap();
        let outside = kit.dir.path().join("outside.bin");
        std::fs::write(&outside, b"precious bytes").unwrap();
        let s = stick(&w, "evil");
        // The refused import's result would go through these links: one at the temporary name,
        // onto the device's trust store, one at the final name, onto another file outside.
        std::fs::write(s.join("x.vseg"), b"not a package at all").unwrap();
        symlink(&kit.trust_path, s.join(".x.vseg.result.json.tmp")).unwrap();
        std::fs::write(s.join("y.vseg"), b"not a package either").unwrap();
        symlink(&outside, s.join("y.vseg.result.json")).unwrap();

        // Both are handled (refused, reported, the outcome recorded after its result file), or
        // the damage is done.
        until(&w, "both packages handled", || async {
            let handled: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM segment_drops").fetch_one(kit.store.pool()).await.unwrap();
            handled == 2 || std::fs::read_to_string(&kit.trust_path).unwrap() != trust_before
        })
        .await;
        assert_eq!(
            std::fs::read_to_string(&kit.trust_path).unwrap(),
            trust_before,
            "trust.json was written through the link"
        );
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious bytes", "a file outside was written through the link");
        let rejected = kit.events("segment_rejected").await;
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        for name in ["x", "y"] {
            let r = result_of(&s.join(format!("{name}.vseg.result.json")))
                .unwrap_or_else(|| panic!("{name}.vseg.result.json is not a regular file of JSON"));
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["error"], "corrupt", "{r}");
        }

        // The watcher still runs, and imports a good package dropped afterwards.
        kit.package("after", 1, &s.join("good.vseg"));
        until(&w, "the good package's install", || async { kit.active("after").await == Some(1) }).await;
        assert_eq!(result_of(&s.join("good.vseg.result.json")).expect("its result")["ok"], true);
        assert_eq!(std::fs::read_to_string(&kit.trust_path).unwrap(), trust_before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_drop_folder_is_not_followed() {
        let kit = Kit::new().await;
        let w = start(&kit);
        // `a-evil/vistter` is a link into a folder the stick does not own (the data dir's kind):
        // a package there must not be imported, nor a result written there.
        let elsewhere = kit.dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        kit.package("linked", 1, &elsewhere.join("p.vseg"));
        std::fs::create_dir_all(w.media.join("a-evil")).unwrap();
        symlink(&elsewhere, w.media.join("a-evil").join("vistter")).unwrap();
        let before = snapshot(&elsewhere);
        // A real stick, scanned after the link in the same passes: once its package is in, the
        // link's folder has had every chance.
        let s = stick(&w, "b-good");
        kit.package("real", 1, &s.join("real.vseg"));
        until(&w, "the real stick's package", || async { kit.active("real").await == Some(1) }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(kit.active("linked").await, None, "a package behind a linked drop folder was installed");
        assert_eq!(snapshot(&elsewhere), before, "something was written behind a linked drop folder");
        assert!(!w.task.is_finished());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_vseg_is_skipped() {
        let kit = Kit::new().await;
        let w = start(&kit);
        let elsewhere = kit.dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        kit.package("linked", 1, &elsewhere.join("p.vseg"));
        let s = stick(&w, "stick");
        symlink(elsewhere.join("p.vseg"), s.join("a-linked.vseg")).unwrap();
        symlink("/dev/zero", s.join("b-device.vseg")).unwrap();
        kit.package("real", 1, &s.join("z-real.vseg"));
        until(&w, "the real package", || async { kit.active("real").await == Some(1) }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(kit.active("linked").await, None, "a package behind a link was installed");
        for n in ["a-linked", "b-device"] {
            assert!(std::fs::symlink_metadata(s.join(format!("{n}.vseg.result.json"))).is_err(), "{n} has a result");
        }
        let skipped = kit.events("segment_rejected").await;
        assert_eq!(skipped.len(), 2, "each linked package is reported once: {skipped:?}");
        assert!(!w.task.is_finished());
    }
}

#[cfg(test)]
mod hostile_name_tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio_util::sync::CancellationToken;

    use super::{scan, DropConfig};
    use crate::segments::testkit::Kit;
    use crate::segments::Limits;

    /// What a hostile name on the stick is.
    #[derive(Debug, Clone)]
    enum Plant {
        Garbage,
        /// A signed, valid package (of its own segment).
        Good,
        /// A link to a file outside the stick (a valid package or the device's trust store).
        LinkOutside,
        LinkToPackageOutside,
        LinkToFolderOutside,
        LinkToDevZero,
        Fifo,
        Folder,
    }

    fn plant() -> impl Strategy<Value = Plant> {
        prop_oneof![
            Just(Plant::Garbage),
            Just(Plant::Good),
            Just(Plant::LinkOutside),
            Just(Plant::LinkToPackageOutside),
            Just(Plant::LinkToFolderOutside),
            Just(Plant::LinkToDevZero),
            Just(Plant::Fifo),
            Just(Plant::Folder),
        ]
    }

    /// Any bytes Linux allows in a name (all but '/' and NUL), `..`, newlines, very long names.
    fn stem() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>().prop_filter("a name byte", |b| *b != b'/' && *b != 0), 1..24),
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(b"a\nb".to_vec()),
            Just(b"\n".to_vec()),
            (230usize..=250).prop_map(|n| vec![b'L'; n]),
        ]
    }

    /// A name and what it is; names often end in `.vseg`, and often collide with another
    /// package's result or temporary name.
    fn entry() -> impl Strategy<Value = (Vec<u8>, Plant)> {
        let suffix = prop_oneof![
            Just(&b".vseg"[..]),
            Just(&b".vseg"[..]),
            Just(&b".vseg.result.json"[..]),
            Just(&b".result.json"[..]),
            Just(&b".vseg.result.json.tmp"[..]),
            Just(&b""[..]),
        ];
        (any::<bool>(), stem(), suffix, plant()).prop_map(|(dot, stem, suffix, plant)| {
            let mut name = if dot { b".".to_vec() } else { Vec::new() };
            name.extend_from_slice(&stem);
            name.extend_from_slice(suffix);
            name.truncate(255);
            (name, plant)
        })
    }

    /// Path → kind and content (a link as its target), everything under `root`.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                let v = if t.is_symlink() {
                    format!("link {:?}", std::fs::read_link(e.path()).unwrap())
                } else if t.is_dir() {
                    todo.push(e.path());
                    "dir".into()
                } else if t.is_file() {
                    format!("file {:?}", std::fs::read(e.path()).unwrap())
                } else {
                    "other".into()
                };
                out.insert(e.path(), v);
            }
        }
        out
    }

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
    }

    async fn case(entries: Vec<(Vec<u8>, Plant)>) -> Result<(), TestCaseError> {
        let kit = Kit::new().await;
        let outside = kit.dir.path().join("outside");
        std::fs::create_dir_all(outside.join("folder")).unwrap();
        std::fs::write(outside.join("precious"), b"precious bytes").unwrap();
        kit.package("linked", 1, &outside.join("p.vseg"));
        let stick = kit.dir.path().join("media").join("stick").join("vistter");
        std::fs::create_dir_all(&stick).unwrap();
        let mut good = Vec::new();
        for (i, (name, plant)) in entries.iter().enumerate() {
            let p = stick.join(OsString::from_vec(name.clone()));
            // Names that cannot be made here ('.', '..', an existing one) are just not there (and an
            // existing name is never written again: opening a FIFO planted there would block).
            if std::fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            let _ = match plant {
                Plant::Garbage => std::fs::write(&p, format!("garbage {i}")),
                Plant::Good => {
                    if std::fs::symlink_metadata(&p).is_err() {
                        let id = format!("good-{i}");
                        let tmp = kit.dir.path().join(format!("{id}.vseg"));
                        kit.package(&id, 1, &tmp);
                        // Imported only under a `.vseg` name.
                        if std::fs::rename(&tmp, &p).is_ok() && p.extension().is_some_and(|x| x == "vseg") {
                            good.push(id);
                        }
                    }
                    Ok(())
                }
                Plant::LinkOutside => symlink(&kit.trust_path, &p),
                Plant::LinkToPackageOutside => symlink(outside.join("p.vseg"), &p),
                Plant::LinkToFolderOutside => symlink(outside.join("folder"), &p),
                Plant::LinkToDevZero => symlink("/dev/zero", &p),
                Plant::Fifo => nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(std::io::Error::from),
                Plant::Folder => std::fs::create_dir(&p),
            };
        }
        let outside_before = snapshot(&outside);
        let trust_before = std::fs::read(&kit.trust_path).unwrap();
        let stick_before = snapshot(&stick);

        let cfg = DropConfig {
            globs: Vec::new(),
            rescan: Duration::from_secs(1),
            trust_path: kit.trust_path.clone(),
            device_id: "vs-names".into(),
            limits: Limits::default(),
        };
        let (mut settling, mut warned) = Default::default();
        let stop = CancellationToken::new();
        // Twice: the first look only starts each file's settling.
        for _ in 0..2 {
            scan(&stick, &cfg, &kit.store, &kit.library, &mut settling, &mut warned, Duration::ZERO, &stop).await;
        }

        prop_assert_eq!(snapshot(&outside), outside_before, "something outside the stick changed");
        prop_assert_eq!(std::fs::read(&kit.trust_path).unwrap(), trust_before, "trust.json changed");
        prop_assert_eq!(kit.active("linked").await, None, "a package behind a link was installed");
        // On the stick: what was there is unchanged, except a result's name (replaced by a result
        // file, whatever it was) and a temporary name (removed); anything new is a result file.
        let after = snapshot(&stick);
        let is_result =
            |p: &Path| p.parent() == Some(stick.as_path()) && p.as_os_str().as_bytes().ends_with(b".result.json");
        let is_tmp =
            |p: &Path| p.parent() == Some(stick.as_path()) && p.as_os_str().as_bytes().ends_with(b".result.json.tmp");
        for (p, v) in &stick_before {
            if is_result(p) || is_tmp(p) {
                continue;
            }
            // Inside a planted folder named like a result, things go with it.
            if p.ancestors().any(|a| a != p && (is_result(a) || is_tmp(a))) {
                continue;
            }
            prop_assert_eq!(after.get(p), Some(v), "{:?} changed", p);
        }
        for (p, v) in &after {
            if stick_before.get(p) == Some(v) {
                continue;
            }
            prop_assert!(is_result(p) && v.starts_with("file "), "{:?} is new or changed: {}", p, v);
        }
        for id in good {
            prop_assert_eq!(kit.active(&id).await, Some(1), "the good package {} was not installed", id);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn hostile_names_on_a_stick_write_nothing_outside_its_folder_and_never_panic(
            entries in proptest::collection::vec(entry(), 1..8)
        ) {
            runtime().block_on(case(entries))?;
        }
    }
}
