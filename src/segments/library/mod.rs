//! The segment library: installed versions under `<data_dir>/segments/<segment_id>/<version>/`,
//! their rows, which version is active (its timeline is the one `segment play` and the cloud play),
//! and staging. A package goes staging → fsync → rename → one DB transaction (the version row, the
//! activation, the event); any failure before the commit leaves the library exactly as it was, and
//! what a crash leaves behind (staging, a renamed folder without its row) is removed on start.
//!
//! Rollback guard: a version must be above the installed one. Two imports of one segment can
//! run at once (a cloud load and a USB stick in the daemon, the CLI in another process), so the
//! check made before staging can be stale by the time a package is installed. The install
//! therefore checks again inside its `BEGIN IMMEDIATE` transaction, which holds SQLite's write
//! lock across the check, the rename into place and the commit: one step, one install at a time
//! in every process, and a version that stopped being newer is refused as `rollback` with nothing
//! moved. This is simpler than a per-segment lock, which would cover one process only; the
//! database is the one thing every importer shares. The slow part (staging, hashing, fsync of the
//! staged files) stays outside the lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sqlx::Row;

use super::manifest::{Manifest, SegmentId, Sha256Hex};
use super::package::{self, Checks, Next, VerifiedPackage};
use super::{Limits, Rejection, Threat};
use crate::store::Store;
use crate::timeline::model::{self, Inventory};
use crate::trust::TrustStore;
pub use disk::free_bytes;
use disk::{sync_dir, sync_dirs};

mod disk;

/// Versions kept per segment: the active one and the 2 before it (rollback), and any newer.
pub const KEEP_VERSIONS: usize = 3;
/// Free space kept beyond a package's size when staging it.
pub const SPACE_MARGIN: u64 = 64 << 20;

/// Where a package came from (in events and `segment list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Cli,
    Cloud,
    Usb(String),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Cli => "cli".into(),
            Source::Cloud => "cloud".into(),
            Source::Usb(p) => format!("usb:{p}"),
        }
    }
}

/// How a package is imported.
pub struct Import<'a> {
    pub trust: &'a TrustStore,
    pub device_id: &'a str,
    pub now: jiff::Timestamp,
    pub limits: Limits,
    /// A version not above the installed one is accepted (a local operator's decision).
    pub allow_downgrade: bool,
    /// The new version becomes the active one (the first version of a segment always does).
    pub activate: bool,
    pub source: Source,
}

/// The outcome of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Installed {
    pub segment_id: SegmentId,
    pub version: u64,
    pub timeline_id: String,
    pub active: bool,
    pub files: u64,
    pub bytes: u64,
    /// This exact package was installed before: nothing changed.
    pub already_installed: bool,
}

/// One installed version, as `segment list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRow {
    pub segment_id: SegmentId,
    pub version: u64,
    pub timeline_id: String,
    pub active: bool,
    pub bytes: u64,
    pub files: u64,
    pub key_id: String,
    pub source: String,
    pub installed_at: String,
}

#[derive(Clone)]
pub struct Library {
    store: Store,
    root: PathBuf,
    /// Tests only: awaited with the package's version once it is verified and staged, before its
    /// install (to hold one import there while another runs).
    #[cfg(test)]
    before_install: Option<BeforeInstall>,
}

#[cfg(test)]
type BeforeInstall = std::sync::Arc<dyn Fn(u64) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

struct Known {
    highest: u64,
    /// version → manifest sha256
    versions: HashMap<u64, String>,
}

impl Library {
    pub fn new(store: Store, data_dir: &Path) -> Library {
        Library {
            store,
            root: data_dir.join("segments"),
            #[cfg(test)]
            before_install: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn set_before_install(&mut self, f: BeforeInstall) {
        self.before_install = Some(f);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn staging_root(&self) -> PathBuf {
        self.root.join(".staging")
    }

    /// Removes what an interrupted import left: staging, and version folders without a row.
    pub async fn clean(&self) -> Result<u64, Rejection> {
        let mut removed = 0;
        let staging = self.staging_root();
        if staging.exists() {
            for e in std::fs::read_dir(&staging).map_err(Rejection::local)?.flatten() {
                let _ = std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
                removed += 1;
            }
        }
        // Under the write lock: an install in another process (the CLI) renames its folder and
        // commits its row inside its own write transaction, so it is never seen half done here.
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await.map_err(Rejection::local)?;
        let rows =
            sqlx::query("SELECT dir FROM segment_versions").fetch_all(&mut *tx).await.map_err(Rejection::local)?;
        let dirs: std::collections::HashSet<PathBuf> =
            rows.iter().map(|r| PathBuf::from(r.get::<String, _>("dir"))).collect();
        let Ok(rd) = std::fs::read_dir(&self.root) else { return Ok(removed) };
        for seg in rd.flatten() {
            let name = seg.file_name();
            if name.to_string_lossy().starts_with('.') || !seg.path().is_dir() {
                continue;
            }
            for v in std::fs::read_dir(seg.path()).map_err(Rejection::local)?.flatten() {
                if !dirs.contains(&v.path()) {
                    tracing::warn!("segment library: removing {} (left by an interrupted import)", v.path().display());
                    let _ = std::fs::remove_dir_all(v.path());
                    removed += 1;
                }
            }
            let _ = std::fs::remove_dir(seg.path()); // only if empty
        }
        drop(tx); // nothing was written: rolled back
        Ok(removed)
    }

    async fn known(&self) -> Result<HashMap<String, Known>, Rejection> {
        let mut out: HashMap<String, Known> = HashMap::new();
        for r in sqlx::query("SELECT segment_id, highest_version FROM segments")
            .fetch_all(self.store.pool())
            .await
            .map_err(Rejection::local)?
        {
            out.insert(
                r.get("segment_id"),
                Known { highest: r.get::<i64, _>("highest_version") as u64, versions: HashMap::new() },
            );
        }
        for r in sqlx::query("SELECT segment_id, version, manifest_sha256 FROM segment_versions")
            .fetch_all(self.store.pool())
            .await
            .map_err(Rejection::local)?
        {
            if let Some(k) = out.get_mut(r.get::<&str, _>("segment_id")) {
                k.versions.insert(r.get::<i64, _>("version") as u64, r.get("manifest_sha256"));
            }
        }
        Ok(out)
    }

    /// Verifies and installs the package in `file`. An identical package installed before is a
    /// no-op that returns the same outcome; any refusal changes nothing.
    pub async fn import_file(
        &self,
        file: &Path,
        how: Import<'_>,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<Installed, Rejection> {
        let src = std::fs::File::open(file).map_err(|e| Rejection::local(format!("{}: {e}", file.display())))?;
        self.import_open(src, &file.display().to_string(), how, progress).await
    }

    /// [`Library::import_file`] for a package already open (`name` says which, in messages): a
    /// drop folder opens it itself, never through a link.
    pub async fn import_open(
        &self,
        src: std::fs::File,
        name: &str,
        how: Import<'_>,
        progress: impl FnMut(u64) + Send + 'static,
    ) -> Result<Installed, Rejection> {
        let meta = src.metadata().map_err(|e| Rejection::local(format!("{name}: {e}")))?;
        if meta.len() > how.limits.max_compressed_bytes {
            return Err(Rejection::new(
                Threat::TooLarge,
                format!("{} bytes: over the limit of {}", meta.len(), how.limits.max_compressed_bytes),
            ));
        }
        let known = self.known().await?;
        let staging_root = self.staging_root();
        std::fs::create_dir_all(&staging_root)
            .map_err(|e| Rejection::local(format!("{}: {e}", staging_root.display())))?;
        let staging = staging_root.join(uuid::Uuid::new_v4().to_string());
        let (trust, device_id) = (how.trust.clone(), how.device_id.to_string());
        let (limits, now, allow_downgrade) = (how.limits, how.now, how.allow_downgrade);
        let space_at = self.root.clone();
        let staged = {
            let staging = staging.clone();
            tokio::task::spawn_blocking(move || {
                let mut progress = progress;
                let mut earlier = None;
                let checks = Checks { trust: &trust, device_id: &device_id, now, limits };
                let mut hook = |m: &Manifest, sha: &Sha256Hex| -> Result<Next, Rejection> {
                    if let Some(k) = known.get(m.segment_id.as_str()) {
                        match k.versions.get(&m.version) {
                            Some(s) if s == sha.as_str() => {
                                earlier = Some((m.segment_id.clone(), m.version));
                                return Ok(Next::Stop);
                            }
                            Some(_) => {
                                return Err(Rejection::new(
                                    Threat::Rollback,
                                    format!("{} version {} is installed with other content", m.segment_id, m.version),
                                ))
                            }
                            None if m.version <= k.highest && !allow_downgrade => {
                                return Err(Rejection::new(
                                    Threat::Rollback,
                                    format!(
                                        "{} version {} is not above the installed version {} (a local operator may force it)",
                                        m.segment_id, m.version, k.highest
                                    ),
                                ))
                            }
                            None => {}
                        }
                    }
                    let free = free_bytes(&space_at);
                    if free < m.total_bytes().saturating_add(SPACE_MARGIN) {
                        return Err(Rejection::new(
                            Threat::NoSpace,
                            format!("{} bytes free, {} needed (and {} to spare)", free, m.total_bytes(), SPACE_MARGIN),
                        ));
                    }
                    Ok(Next::Read)
                };
                let r = package::stage(src, &checks, &staging, &mut hook, &mut progress);
                (r, earlier)
            })
            .await
            .map_err(|e| Rejection::local(format!("the import task failed: {e}")))?
        };
        let staged = match staged {
            (Ok(Ok(pkg)), _) => pkg,
            (Ok(Err(_)), Some((id, version))) => {
                let _ = std::fs::remove_dir_all(&staging);
                return self.already(&id, version).await;
            }
            (Ok(Err(_)), None) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(Rejection::local("the package stopped being read for no reason"));
            }
            (Err(r), _) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(r);
            }
        };
        #[cfg(test)]
        if let Some(gate) = &self.before_install {
            gate(staged.manifest().version).await;
        }
        let r = self.install(&staged, &how.source, how.activate, how.allow_downgrade).await;
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        r
    }

    async fn already(&self, id: &SegmentId, version: u64) -> Result<Installed, Rejection> {
        let r = sqlx::query(
            "SELECT v.timeline_id, v.files, v.bytes, s.active_version FROM segment_versions v \
             JOIN segments s ON s.segment_id = v.segment_id WHERE v.segment_id = ? AND v.version = ?",
        )
        .bind(id.as_str())
        .bind(version as i64)
        .fetch_one(self.store.pool())
        .await
        .map_err(Rejection::local)?;
        Ok(Installed {
            segment_id: id.clone(),
            version,
            timeline_id: r.get("timeline_id"),
            active: r.get::<i64, _>("active_version") as u64 == version,
            files: r.get::<i64, _>("files") as u64,
            bytes: r.get::<i64, _>("bytes") as u64,
            already_installed: true,
        })
    }

    /// Checks the timeline against this appliance, then, in one write transaction, checks the
    /// version again, moves the staged files into place and records them.
    ///
    /// The version check before staging saw the library as it was then; another import of the
    /// same segment (a cloud load beside a stick, or the CLI in another process) may have
    /// installed a newer version since. So the check is done again inside `BEGIN IMMEDIATE`,
    /// which holds SQLite's write lock until the commit: every install, in any process, runs
    /// check, rename and commit as one step, one at a time, and a version that is no longer above
    /// the installed one is refused as a rollback with nothing moved. A lock in this process
    /// alone would miss the CLI; the database is what every importer shares.
    async fn install(
        &self,
        pkg: &VerifiedPackage,
        source: &Source,
        activate: bool,
        allow_downgrade: bool,
    ) -> Result<Installed, Rejection> {
        let m = pkg.manifest();
        let id = m.segment_id.as_str();
        let json = std::fs::read_to_string(m.entrypoint.under(pkg.staging()))
            .map_err(|e| Rejection::new(Threat::TimelineInvalid, format!("{}: {e}", m.entrypoint)))?;
        let inv = Inventory {
            cameras: self.store.camera_inventory().await.map_err(Rejection::local)?,
            asset_root: Some(pkg.staging().to_path_buf()),
        };
        let tl = model::parse(&json, &inv).map_err(|e| Rejection::new(Threat::TimelineInvalid, e.to_string()))?;
        // `segment_id` is a checked `SegmentId` (letters, digits, '-', '_': one plain name) and
        // the version a number: the target cannot leave `root`.
        let seg_dir = self.root.join(id);
        let target = seg_dir.join(m.version.to_string());
        // A timeline of that id loaded from elsewhere is not replaced by a package.
        if let Ok(row) = self.store.timeline(&tl.id).await {
            let ours = row.asset_root.as_deref().is_some_and(|r| Path::new(r).starts_with(&seg_dir));
            if !ours {
                return Err(Rejection::new(
                    Threat::Conflict,
                    format!("timeline {} exists and is not from segment {id}: remove it first", tl.id),
                ));
            }
        }
        // Outside the write lock: this is the slow part, and the staging dir is this import's own.
        sync_dirs(pkg.staging()).map_err(|e| Rejection::local(format!("syncing the staged files: {e}")))?;
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await.map_err(Rejection::local)?;
        let highest: Option<i64> = sqlx::query("SELECT highest_version FROM segments WHERE segment_id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(Rejection::local)?
            .map(|r| r.get("highest_version"));
        let same: Option<String> =
            sqlx::query("SELECT manifest_sha256 FROM segment_versions WHERE segment_id = ? AND version = ?")
                .bind(id)
                .bind(m.version as i64)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Rejection::local)?
                .map(|r| r.get("manifest_sha256"));
        match (same, highest) {
            (Some(sha), _) if sha == pkg.checked().manifest_sha256.as_str() => {
                // The identical package, installed meanwhile by another import.
                drop(tx);
                return self.already(&m.segment_id, m.version).await;
            }
            (Some(_), _) => {
                return Err(Rejection::new(
                    Threat::Rollback,
                    format!("{id} version {} was installed meanwhile with other content", m.version),
                ))
            }
            (None, Some(h)) if m.version as i64 <= h && !allow_downgrade => {
                return Err(Rejection::new(
                    Threat::Rollback,
                    format!(
                        "{id} version {} is not above version {h}, installed meanwhile by another import \
                         (a local operator may force it)",
                        m.version
                    ),
                ))
            }
            _ => {}
        }
        std::fs::create_dir_all(&seg_dir).map_err(|e| Rejection::local(format!("{}: {e}", seg_dir.display())))?;
        if target.exists() {
            // Left by an interrupted import: it has no row (and no other install runs now).
            std::fs::remove_dir_all(&target).map_err(|e| Rejection::local(format!("{}: {e}", target.display())))?;
        }
        std::fs::rename(pkg.staging(), &target).map_err(|e| Rejection::local(format!("{}: {e}", target.display())))?;
        let _ = sync_dir(&seg_dir);
        let target_s = target.display().to_string();
        let recorded = match self.record(&mut tx, pkg, source, activate, &tl, &json, &target_s).await {
            Ok(r) => tx.commit().await.map(|()| r),
            Err(e) => Err(e),
        };
        match recorded {
            Ok((installed, pruned)) => {
                for v in pruned {
                    let _ = std::fs::remove_dir_all(seg_dir.join(v.to_string()));
                }
                Ok(installed)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&target);
                Err(Rejection::local(format!("recording the install: {e}")))
            }
        }
    }

    /// The rows of an install, in the caller's write transaction (not committed here).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        tx: &mut sqlx::SqliteConnection,
        pkg: &VerifiedPackage,
        source: &Source,
        activate: bool,
        tl: &model::Timeline,
        json: &str,
        dir: &str,
    ) -> Result<(Installed, Vec<u64>), sqlx::Error> {
        let m = pkg.manifest();
        let (id, version) = (m.segment_id.as_str(), m.version as i64);
        let now = crate::store::now();
        let current: Option<(i64, i64)> =
            sqlx::query("SELECT active_version, highest_version FROM segments WHERE segment_id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| (r.get("active_version"), r.get("highest_version")));
        let active = activate || current.is_none();
        sqlx::query(
            "INSERT INTO segment_versions (segment_id, version, timeline_id, entrypoint, dir, manifest_sha256, bytes, files, key_id, source, installed_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(version)
        .bind(tl.id.as_str())
        .bind(m.entrypoint.as_str())
        .bind(dir)
        .bind(pkg.checked().manifest_sha256.as_str())
        .bind(m.total_bytes() as i64)
        .bind(m.files.len() as i64)
        .bind(&pkg.checked().key_id)
        .bind(source.describe())
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let (active_version, highest) = match current {
            None => (version, version),
            Some((a, h)) => (if active { version } else { a }, h.max(version)),
        };
        sqlx::query(
            "INSERT INTO segments (segment_id, active_version, highest_version) VALUES (?1, ?2, ?3) \
             ON CONFLICT(segment_id) DO UPDATE SET active_version = ?2, highest_version = ?3",
        )
        .bind(id)
        .bind(active_version)
        .bind(highest)
        .execute(&mut *tx)
        .await?;
        if active {
            put_timeline(tx, tl, json, dir).await?;
        }
        let detail = format!(
            "segment {id} version {version} installed from {} ({} files, {} bytes, signed by {}){}",
            source.describe(),
            m.files.len(),
            m.total_bytes(),
            pkg.checked().key_id,
            if active { "; active" } else { "" }
        );
        event(tx, "info", "segment_installed", id, &detail).await?;
        // Keep the active version, the newest ones and the two below the active one.
        let versions: Vec<i64> =
            sqlx::query("SELECT version FROM segment_versions WHERE segment_id = ? ORDER BY version DESC")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get("version"))
                .collect();
        let keep: Vec<i64> = {
            let mut k: Vec<i64> = versions.iter().copied().filter(|v| *v >= active_version).collect();
            k.extend(versions.iter().copied().filter(|v| *v < active_version).take(KEEP_VERSIONS - 1));
            k
        };
        let mut pruned = Vec::new();
        for v in versions.iter().filter(|v| !keep.contains(v)) {
            sqlx::query("DELETE FROM segment_versions WHERE segment_id = ? AND version = ?")
                .bind(id)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            pruned.push(*v as u64);
        }
        Ok((
            Installed {
                segment_id: m.segment_id.clone(),
                version: m.version,
                timeline_id: tl.id.to_string(),
                active,
                files: m.files.len() as u64,
                bytes: m.total_bytes(),
                already_installed: false,
            },
            pruned,
        ))
    }

    pub async fn list(&self) -> Result<Vec<VersionRow>, Rejection> {
        let rows = sqlx::query(
            "SELECT v.*, s.active_version FROM segment_versions v JOIN segments s ON s.segment_id = v.segment_id \
             ORDER BY v.segment_id, v.version DESC",
        )
        .fetch_all(self.store.pool())
        .await
        .map_err(Rejection::local)?;
        rows.iter()
            .map(|r| {
                Ok(VersionRow {
                    segment_id: SegmentId::new(r.get("segment_id")).map_err(Rejection::local)?,
                    version: r.get::<i64, _>("version") as u64,
                    timeline_id: r.get("timeline_id"),
                    active: r.get::<i64, _>("version") == r.get::<i64, _>("active_version"),
                    bytes: r.get::<i64, _>("bytes") as u64,
                    files: r.get::<i64, _>("files") as u64,
                    key_id: r.get("key_id"),
                    source: r.get("source"),
                    installed_at: r.get("installed_at"),
                })
            })
            .collect()
    }

    /// The active version's timeline id.
    pub async fn active_timeline(&self, id: &str) -> Result<(u64, String), Rejection> {
        let r = sqlx::query(
            "SELECT v.version, v.timeline_id FROM segments s JOIN segment_versions v \
             ON v.segment_id = s.segment_id AND v.version = s.active_version WHERE s.segment_id = ?",
        )
        .bind(id)
        .fetch_optional(self.store.pool())
        .await
        .map_err(Rejection::local)?
        .ok_or_else(|| Rejection::new(Threat::MissingFile, format!("no segment {id} is installed")))?;
        Ok((r.get::<i64, _>("version") as u64, r.get("timeline_id")))
    }

    /// Makes `version` (or, with `None`, the newest kept version below the active one) active.
    pub async fn activate(&self, id: &str, version: Option<u64>) -> Result<u64, Rejection> {
        let (active, _) = self.active_timeline(id).await?;
        let rows = self.list().await?;
        let mine: Vec<&VersionRow> = rows.iter().filter(|r| r.segment_id.as_str() == id).collect();
        let target = match version {
            Some(v) => mine.iter().find(|r| r.version == v).copied(),
            None => mine.iter().filter(|r| r.version < active).max_by_key(|r| r.version).copied(),
        }
        .ok_or_else(|| {
            Rejection::new(
                Threat::MissingFile,
                match version {
                    Some(v) => format!("segment {id} has no version {v} kept"),
                    None => format!("segment {id} has no version before {active} kept"),
                },
            )
        })?;
        let row = sqlx::query("SELECT dir, entrypoint FROM segment_versions WHERE segment_id = ? AND version = ?")
            .bind(id)
            .bind(target.version as i64)
            .fetch_one(self.store.pool())
            .await
            .map_err(Rejection::local)?;
        let (dir, entry): (String, String) = (row.get("dir"), row.get("entrypoint"));
        let entry = super::manifest::SafeRelPath::new(&entry).map_err(Rejection::local)?;
        let json = std::fs::read_to_string(entry.under(Path::new(&dir)))
            .map_err(|e| Rejection::local(format!("{dir}: {e}")))?;
        let inv = Inventory {
            cameras: self.store.camera_inventory().await.map_err(Rejection::local)?,
            asset_root: Some(PathBuf::from(&dir)),
        };
        let tl = model::parse(&json, &inv).map_err(|e| Rejection::new(Threat::TimelineInvalid, e.to_string()))?;
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await.map_err(Rejection::local)?;
        sqlx::query("UPDATE segments SET active_version = ? WHERE segment_id = ?")
            .bind(target.version as i64)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(Rejection::local)?;
        put_timeline(&mut tx, &tl, &json, &dir).await.map_err(Rejection::local)?;
        event(&mut tx, "info", "segment_activated", id, &format!("segment {id} version {} is active", target.version))
            .await
            .map_err(Rejection::local)?;
        tx.commit().await.map_err(Rejection::local)?;
        Ok(target.version)
    }

    /// Removes a segment: its versions, its timeline, its files.
    pub async fn remove(&self, id: &str) -> Result<u64, Rejection> {
        let (_, timeline_id) = self.active_timeline(id).await?;
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await.map_err(Rejection::local)?;
        let n = sqlx::query("DELETE FROM segment_versions WHERE segment_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(Rejection::local)?
            .rows_affected();
        sqlx::query("DELETE FROM segments WHERE segment_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(Rejection::local)?;
        sqlx::query("DELETE FROM timelines WHERE id = ? AND asset_root LIKE ?")
            .bind(&timeline_id)
            .bind(format!("{}%", self.root.join(id).display()))
            .execute(&mut *tx)
            .await
            .map_err(Rejection::local)?;
        event(&mut tx, "info", "segment_removed", id, &format!("segment {id} removed ({n} versions)"))
            .await
            .map_err(Rejection::local)?;
        tx.commit().await.map_err(Rejection::local)?;
        let _ = std::fs::remove_dir_all(self.root.join(id));
        Ok(n)
    }

    /// Records a refused package as an event (the library itself is unchanged).
    pub async fn rejected(&self, what: &str, source: &Source, r: &Rejection) {
        let detail = format!("{what} from {} refused: {r}", source.describe());
        if let Err(e) = self.store.add_event(crate::store::Severity::Warning, "segment_rejected", what, &detail).await {
            tracing::warn!("the rejection could not be recorded: {e}");
        }
        tracing::warn!("{detail}");
    }
}

async fn put_timeline(
    tx: &mut sqlx::SqliteConnection,
    tl: &model::Timeline,
    json: &str,
    dir: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timelines (id, name, json, asset_root, duration_s, loaded_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, json = excluded.json, \
         asset_root = excluded.asset_root, duration_s = excluded.duration_s, loaded_at = excluded.loaded_at",
    )
    .bind(tl.id.as_str())
    .bind(&tl.name)
    .bind(json)
    .bind(dir)
    .bind(tl.duration as f64 / 1e6)
    .bind(crate::store::now())
    .execute(tx)
    .await?;
    Ok(())
}

async fn event(
    tx: &mut sqlx::SqliteConnection,
    severity: &str,
    ty: &str,
    id: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (at, severity, event_type, subject, scope, detail) VALUES (?, ?, ?, ?, NULL, ?)")
        .bind(crate::store::now())
        .bind(severity)
        .bind(ty)
        .bind(format!("segment:{id}"))
        .bind(detail)
        .execute(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
