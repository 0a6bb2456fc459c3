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
pub mod peek;
pub mod programs;
pub mod relays;
pub mod shows;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crypto::{CryptoError, DeviceKey};

use crate::values::{shorten, ValueError};

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
    /// An id read back from the database breaks the id rule: the file was edited by hand or is
    /// damaged. Reported, never a panic, so the rest of the store stays usable.
    #[error("table {table}, column {column}: the stored value {value:?} is not a valid id (1-64 letters, digits, '-' or '_', starting with a letter or digit); the database was changed outside the agent: correct or delete that row")]
    BadStoredId { table: &'static str, column: &'static str, value: String },
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    key: DeviceKey,
    path: std::path::PathBuf,
    own_checkpoints: bool,
}

pub use crate::values::is_valid_id;

/// Checks an id that has no type of its own (a signing key's id). The store's own ids arrive as
/// the types of [`crate::values`], checked where they entered.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), StoreError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "invalid {kind} id {id:?}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

/// Checks an id read back from the database (`table`.`column`): a value that breaks the id rule is
/// a [`StoreError::BadStoredId`] naming the table and the value.
pub(crate) fn stored_id<T>(table: &'static str, column: &'static str, raw: String) -> Result<T, StoreError>
where
    T: TryFrom<String, Error = ValueError>,
{
    T::try_from(raw.clone()).map_err(|_| StoreError::BadStoredId { table, column, value: shorten(&raw) })
}

/// The id in `column` of a row of `table` (see [`stored_id`]).
pub(crate) fn id_at<T>(row: &SqliteRow, table: &'static str, column: &'static str) -> Result<T, StoreError>
where
    T: TryFrom<String, Error = ValueError>,
{
    stored_id(table, column, row.try_get(column)?)
}

/// The id in `column` of a row of `table`, which may be NULL (see [`stored_id`]).
pub(crate) fn opt_id_at<T>(row: &SqliteRow, table: &'static str, column: &'static str) -> Result<Option<T>, StoreError>
where
    T: TryFrom<String, Error = ValueError>,
{
    row.try_get::<Option<String>, _>(column)?.map(|raw| stored_id(table, column, raw)).transpose()
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).expect("formats")
}

/// How often the daemon's store copies the WAL into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

/// The size (bytes) the WAL file is cut back to when SQLite starts it over.
pub const JOURNAL_SIZE_LIMIT: i64 = 4 << 20;

impl Store {
    /// Opens (creating if needed) `<data_dir>/agent.db` and the device key, and migrates.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, false).await
    }

    /// The daemon's store: its connections never checkpoint the WAL on commit (that fsyncs, and
    /// stalled replies by tens of milliseconds under load); a task checkpoints it every
    /// [`CHECKPOINT_EVERY`] instead, off the writers' path, until the pool is closed. Seldom, because
    /// the data disk is often an SD card: a page changed many times between two checkpoints is
    /// written to the database file once. (The outbox writer checkpoints the WAL itself when that
    /// task cannot catch up with it.)
    pub async fn open_for_daemon(data_dir: &Path) -> Result<Store, StoreError> {
        let store = Store::open_with(data_dir, true).await?;
        let pool = store.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
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

#[cfg(test)]
mod id_tests {
    use super::{Store, StoreError};
    use crate::values::{CameraId, DestinationId, ScheduleId, StreamId};

    async fn raw(s: &Store, sql: &str) {
        sqlx::query(sql).execute(&s.pool).await.unwrap();
    }

    #[tokio::test]
    async fn an_id_edited_outside_the_agent_is_an_error_naming_the_table_and_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        raw(&s, "INSERT INTO cameras (id, url, created_at) VALUES ('bad id!', 'rtsp://10.0.0.5/s', 'now')").await;
        let e = s.cameras().await.unwrap_err();
        assert!(
            matches!(&e, StoreError::BadStoredId { table: "cameras", column: "id", value } if value == "bad id!"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("cameras") && msg.contains("\"bad id!\""), "{msg}");
        // Schedules and relay links too: an error, never a panic.
        raw(&s, "INSERT INTO schedules (id, json, position, updated_at) VALUES ('', '{}', 1, 'now')").await;
        assert!(matches!(s.schedules().await, Err(StoreError::BadStoredId { table: "schedules", .. })));
        raw(&s, "DELETE FROM cameras").await;
        raw(&s, "INSERT INTO cameras (id, url, created_at) VALUES ('cam1', 'rtsp://10.0.0.5/s', 'now')").await;
        raw(&s, "INSERT INTO relay_streams (id, camera_id, desired, updated_at) VALUES ('r1', 'cam1', 'live', 'now')")
            .await;
        // A link to a destination id no check would let in (foreign keys off on this connection).
        let mut c = s.pool.acquire().await.unwrap();
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *c).await.unwrap();
        sqlx::query("INSERT INTO relay_destinations (relay_id, destination_id) VALUES ('r1', '-x')")
            .execute(&mut *c)
            .await
            .unwrap();
        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *c).await.unwrap();
        drop(c);
        let e = s.relays().await.unwrap_err();
        assert!(matches!(e, StoreError::BadStoredId { table: "relay_destinations", .. }), "{e:?}");
        s.close().await;
    }

    #[tokio::test]
    async fn rows_carry_typed_ids_and_serialize_them_as_plain_strings() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let cam = CameraId::new("cam1").unwrap();
        let new = super::NewCamera {
            id: cam.clone(),
            url: "rtsp://u:p@10.0.0.5/s".into(),
            username: None,
            password: None,
            backup_camera_id: None,
            onvif_host: None,
            onvif_port: None,
        };
        s.add_camera(new).await.unwrap();
        let settings = crate::media::destination::DestinationInput {
            platform: crate::media::destination::Platform::Youtube,
            url: None,
            key: crate::secret::Secret::new("k"),
            backup_ingest: false,
            ca_file: None,
            tls_verify: true,
            publisher: Default::default(),
        }
        .validate()
        .unwrap();
        let yt = DestinationId::new("yt").unwrap();
        s.add_destination(&yt, &settings, true).await.unwrap();
        let r1 = StreamId::new("r1").unwrap();
        s.put_relay(&r1, &cam, std::slice::from_ref(&yt), super::Desired::Live).await.unwrap();
        let row = s.relay(&r1).await.unwrap();
        assert_eq!((&row.id, &row.camera_id, &row.destinations[..]), (&r1, &cam, &[yt.clone()][..]));
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["id"], "r1");
        assert_eq!(json["camera_id"], "cam1");
        assert_eq!(json["destinations"], serde_json::json!(["yt"]));
        assert_eq!(serde_json::to_value(s.camera(&cam).await.unwrap()).unwrap()["id"], "cam1");
        assert_eq!(serde_json::to_value(s.destination(&yt).await.unwrap()).unwrap()["id"], "yt");
        let sched = ScheduleId::new("s1").unwrap();
        s.put_schedule(&sched, "{}").await.unwrap();
        assert_eq!(s.schedules().await.unwrap(), vec![(sched, "{}".to_string())]);
        s.close().await;
    }
}
