//! The agent's SQLite store (WAL), shared by the daemon and the CLI.
//!
//! The CLI writes desired state (cameras, destinations, relay streams) and the daemon reconciles
//! toward it and writes back what it observes; SQLite in WAL mode with a busy timeout lets both
//! processes use the file at once. Secrets are sealed with the device key ([`crypto`]) and come back
//! out only as [`Secret`](crate::secret::Secret). One file per table group.

pub mod admin;
pub mod cameras;
pub mod control;
pub mod crypto;
pub mod destinations;
pub mod events;
pub mod relays;
pub mod shows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crypto::{CryptoError, DeviceKey};

pub use cameras::{Camera, CameraError, NewCamera};
pub use destinations::Destination;
pub use events::{Event, Severity};
pub use relays::{Desired, RelayRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("data dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id:?} already exists")]
    Exists { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    /// A timeline a segment package installed changes only through that segment's packages.
    #[error("timeline {timeline:?} belongs to segment {segment:?}: it changes only through a newer package of that segment (or its rollback)")]
    OwnedBySegment { timeline: String, segment: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    key: DeviceKey,
    path: std::path::PathBuf,
    own_checkpoints: bool,
}

pub use crate::values::is_valid_id;

pub fn validate_id(kind: &'static str, id: &str) -> Result<(), StoreError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid {kind} id {id:?}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("formats")
}

/// The size (bytes) the WAL file is cut back to when SQLite starts it over.
pub const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

impl Store {
    /// Opens (creating if needed) `<data_dir>/agent.db` and the device key, and migrates.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, false).await
    }

    /// The daemon's store: its connections never checkpoint the WAL on commit (that fsyncs, and
    /// stalled replies by tens of milliseconds under load); a task checkpoints it every 500 ms
    /// instead, off the writers' path, until the pool is closed. (The outbox writer checkpoints
    /// the WAL itself when that task cannot catch up with it.)
    pub async fn open_for_daemon(data_dir: &Path) -> Result<Store, StoreError> {
        let store = Store::open_with(data_dir, true).await?;
        let pool = store.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !pool.is_closed() {
                tick.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    if !pool.is_closed() {
                        tracing::warn!("WAL checkpoint: {e}");
                    }
                }
            }
        });
        Ok(store)
    }

    async fn open_with(data_dir: &Path, own_checkpoints: bool) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
        // The daemon and a CLI command may open the store at the same moment: one makes the key
        // and migrates at a time (sqlx's SQLite migrator does not lock); the other then finds both done.
        let lock_path = data_dir.join("agent.db.migrate-lock");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<nix::fcntl::Flock<std::fs::File>> {
            let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
        let key = DeviceKey::load_or_create(&data_dir.join("device.key"))?;
        let path = data_dir.join("agent.db");
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // 512 KiB of page cache per connection (SQLite's default is 2 MiB): the database is
            // small and its pages are in the OS cache anyway; this keeps the daemon's RSS down.
            .pragma("cache_size", "-512")
            .pragma("wal_autocheckpoint", if own_checkpoints { "0" } else { "1000" })
            // A WAL that a burst made large is cut back to this when SQLite starts it over.
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await?;
        let migrated = sqlx::migrate!("./migrations").run(&pool).await;
        drop(lock);
        migrated?;
        Ok(Store { pool, key, path, own_checkpoints })
    }

    /// Every secret the store holds (camera passwords, also as they appear in a URL; stream
    /// keys), for redacting text that leaves the device (a diagnostics bundle).
    pub async fn secrets(&self) -> Result<Vec<crate::secret::Secret>, StoreError> {
        let mut out = Vec::new();
        for c in self.cameras().await? {
            out.extend(c.source().secrets().iter().cloned());
        }
        out.extend(self.destinations().await?.into_iter().map(|d| d.settings.key));
        Ok(out)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A connection of its own to the same database, set up as the pool's are, for a thread that
    /// writes on a latency-critical path (the outbox): each statement through the pool is a
    /// round trip to a connection's worker thread, a transaction of six statements six of them.
    pub fn dedicated_connection(&self) -> Result<rusqlite::Connection, StoreError> {
        use rusqlite::OpenFlags;
        let c = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.pragma_update(None, "foreign_keys", true)?;
        c.pragma_update(None, "cache_size", -512)?;
        c.pragma_update(None, "wal_autocheckpoint", if self.own_checkpoints { 0 } else { 1000 })?;
        c.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
        Ok(c)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod open_tests {
    use super::Store;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn opened_by_several_at_once_it_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let opens = (0..6).map(|_| {
            let d = dir.path().to_path_buf();
            tokio::spawn(async move { Store::open(&d).await.map(|_| ()) })
        });
        for r in futures_util::future::join_all(opens).await {
            r.unwrap().expect("every concurrent open succeeds");
        }
    }
}
