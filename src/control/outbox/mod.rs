//! The outbox, for replies and telemetry on every transport: every message the device sends
//! is numbered (`seq`), signed and committed to SQLite by one writer before any transport sees
//! it. Transports read rows after their own cursor and report what their peer acknowledged
//! (MQTT: the PUBACK); a row is deleted only when every transport it is for has it, or when the
//! outbox is over its bounds (oldest first, counted, and reported in an EVENT on reconnect).
//!
//! The writer takes whatever jobs are waiting and commits them in one transaction: under load a
//! burst of replies costs one commit, and an SD card is not worn by a write per message.
//! Because the writer alone hands out `seq`, numbers are contiguous and never repeat, across
//! restarts, and the dedupe record of a command is written in the same transaction as its reply.
//!
//! The writer is a thread with a SQLite connection of its own (rusqlite, prepared statements):
//! through the async pool every statement was a round trip to a connection's worker thread, and
//! an ACK's transaction took seven of them. The rows it commits stay in memory for a while
//! ([`Recent`]), so a transport that is caught up publishes them without reading them back.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};

use super::envelope::{new_message, sign};
use super::keys::Keyring;
use crate::clock::WallClock;
use crate::store::{Store, StoreError};
use writer::{Writer, TICK_EVERY};

mod writer;

/// A transport a reply goes back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Mqtt,
    Ws,
}

impl Route {
    pub const ALL: [Route; 2] = [Route::Mqtt, Route::Ws];

    fn index(self) -> usize {
        match self {
            Route::Mqtt => 0,
            Route::Ws => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Mqtt => "mqtt",
            Route::Ws => "ws",
        }
    }
}

/// Where a message goes: the MQTT topic it is published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Replies,
    Events,
    Metrics,
    /// Signed and numbered, but not kept: a transport publishes it itself (retained birth, the
    /// offline STATE of a clean stop).
    State,
    /// The death STATE handed to the broker as the MQTT Last Will. Most wills are never
    /// published, so it takes no number of the `seq` run (a hole would look like a loss): it
    /// carries `after_seq`, the last `seq` handed out before it was signed. Not kept.
    Will,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Replies => "replies",
            Kind::Events => "events",
            Kind::Metrics => "metrics",
            Kind::State | Kind::Will => "state",
        }
    }
}

/// What the dedupe store records with a reply.
#[derive(Debug, Clone)]
pub enum Remember {
    No,
    /// The first reply to this command (ACK or NACK). If the command already has replies, nothing
    /// is written and they are returned instead ([`Written::Repeat`]).
    First(uuid::Uuid),
    /// The RESULT: the stored replies become `[earlier…, this]`.
    Then(uuid::Uuid, Vec<String>),
}

/// A message to send.
pub struct Draft {
    pub ty: &'static str,
    pub payload: Map<String, Value>,
    pub correlation_id: Option<uuid::Uuid>,
    pub kind: Kind,
    pub route: Option<Route>,
    pub remember: Remember,
    /// A device counter set in the same transaction (the events exporter's cursor).
    pub counter: Option<(&'static str, i64)>,
    /// Raises the time floor (Unix ms) in the same transaction (an accepted command's time); the
    /// command's dedupe row is stamped no earlier than it.
    pub raise_floor: Option<i64>,
}

impl Draft {
    pub fn telemetry(ty: &'static str, kind: Kind, payload: Map<String, Value>) -> Draft {
        Draft {
            ty,
            payload,
            correlation_id: None,
            kind,
            route: None,
            remember: Remember::No,
            counter: None,
            raise_floor: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    /// The signed message as it goes on the wire.
    Sent(String),
    /// The command had replies already: these, unchanged.
    Repeat(Vec<String>),
}

/// One stored row, as a transport reads it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub kind: Kind,
    pub body: String,
}

enum Job {
    Put(Draft, oneshot::Sender<Result<Written, StoreError>>),
    Delivered(Route, i64),
    /// Messages sent before, again, unchanged (a repeated command's replies).
    Resend(Vec<String>, Route, oneshot::Sender<Result<(), StoreError>>),
    /// Takes the dropped-message count (reset to 0), for the overflow EVENT.
    TakeDropped(oneshot::Sender<u64>),
    /// Time passed: settle if due.
    Tick,
}

/// The rows committed most recently, in id order, for transports that are caught up: reading
/// them back from SQLite would cost an ACK a round trip to the database on its way out. Every
/// row with an id above `floor` is here; older ones are read from the database.
#[derive(Default)]
struct Recent {
    floor: i64,
    rows: std::collections::VecDeque<(Option<Route>, Stored)>,
    bytes: usize,
}

/// What [`Recent`] holds at most.
const RECENT_ROWS: usize = 512;
const RECENT_BYTES: usize = 256 << 10;

impl Recent {
    fn push(&mut self, route: Option<Route>, row: Stored) {
        self.bytes += row.body.len();
        self.rows.push_back((route, row));
        while self.rows.len() > RECENT_ROWS || self.bytes > RECENT_BYTES {
            let Some((_, old)) = self.rows.pop_front() else { break };
            self.bytes -= old.body.len();
            self.floor = old.id;
        }
    }

    /// Forgets everything up to `id` (rows the database no longer has).
    fn forget_to(&mut self, id: i64) {
        while self.rows.front().is_some_and(|(_, r)| r.id <= id) {
            if let Some((_, old)) = self.rows.pop_front() {
                self.bytes -= old.body.len();
            }
        }
        self.floor = self.floor.max(id);
    }

    /// Rows after `after` for `route`, if they are all here.
    fn after(&self, route: Route, after: i64, limit: usize) -> Option<Vec<Stored>> {
        if after < self.floor {
            return None;
        }
        let start = self.rows.partition_point(|(_, r)| r.id <= after);
        Some(
            self.rows
                .range(start..)
                .filter(|(to, _)| to.is_none_or(|t| t == route))
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect(),
        )
    }
}

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    jobs: mpsc::Sender<Job>,
    /// The highest committed row id.
    /// Per transport: the last row id committed when rows for it last were (a transport is not
    /// woken for another's replies).
    committed: [watch::Receiver<i64>; 2],
    store: Store,
    recent: Arc<std::sync::Mutex<Recent>>,
    /// The wall clock the dedupe store's stamps and the inbox's time checks read.
    clock: WallClock,
}

#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_messages: u64,
    pub max_bytes: u64,
}

impl Outbox {
    /// Starts the writer. `transports` are the configured ones: rows for every transport stay
    /// until each of these has delivered them.
    pub async fn start(
        store: Store,
        device_id: String,
        keys: Arc<Keyring>,
        transports: Vec<Route>,
        bounds: Bounds,
    ) -> Result<Outbox, StoreError> {
        let pool = store.pool().clone();
        let seq: i64 = sqlx::query("SELECT value FROM device_counters WHERE name = 'seq'")
            .fetch_optional(&pool)
            .await?
            .map(|r| r.get("value"))
            .unwrap_or(0);
        let max_id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM outbox").fetch_one(&pool).await?.get("m");
        let mut cursors = HashMap::new();
        for t in &transports {
            let c: Option<i64> = sqlx::query("SELECT acked_id FROM outbox_cursors WHERE transport = ?")
                .bind(t.as_str())
                .fetch_optional(&pool)
                .await?
                .map(|r| r.get("acked_id"));
            cursors.insert(*t, c.unwrap_or(0));
        }
        let (tx, rx) = mpsc::channel(4096);
        let (mqtt_tx, mqtt_rx) = watch::channel(max_id);
        let (ws_tx, ws_rx) = watch::channel(max_id);
        let recent = Arc::new(std::sync::Mutex::new(Recent { floor: max_id, ..Recent::default() }));
        let clock = WallClock::default();
        let writer = Writer {
            clock: clock.clone(),
            conn: store.dedicated_connection()?,
            device_id,
            keys,
            seq,
            cursors,
            dirty: true,
            bounds,
            committed: [mqtt_tx, ws_tx],
            recent: recent.clone(),
        };
        // The writer has a thread of its own: a reply's way out is one hand-over to it and one
        // back, and its SQLite work never holds up the runtime's workers.
        std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Invalid(format!("the outbox writer could not start: {e}")))?;
        // The writer wakes every second, whatever comes in; the ticker ends with the last handle.
        let ticker = tx.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK_EVERY).await;
                match ticker.upgrade() {
                    Some(jobs) if jobs.try_send(Job::Tick).is_ok() || !jobs.is_closed() => {}
                    _ => return,
                }
            }
        });
        Ok(Outbox { jobs: tx, committed: [mqtt_rx, ws_rx], store, recent, clock })
    }

    /// The wall clock of the control plane (the inbox's time checks read it too).
    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// Changes whenever rows for `route` (its own, or for every transport) are committed; holds
    /// the last row id committed then: every row up to it is readable.
    pub fn committed(&self, route: Route) -> watch::Receiver<i64> {
        self.committed[route.index()].clone()
    }

    /// The value [`Outbox::committed`] holds now.
    pub fn committed_to(&self, route: Route) -> i64 {
        *self.committed[route.index()].borrow()
    }

    /// Signs, numbers and stores `draft`; returns it as sent (or a command's earlier replies).
    pub async fn put(&self, draft: Draft) -> Result<Written, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Put(draft, tx)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// [`Outbox::put`] for several drafts, numbered in their order; queued together, they are
    /// usually stored in one commit.
    pub async fn put_all(&self, drafts: Vec<Draft>) -> Vec<Result<Written, StoreError>> {
        let mut waiting = Vec::with_capacity(drafts.len());
        for d in drafts {
            let (tx, rx) = oneshot::channel();
            if self.jobs.send(Job::Put(d, tx)).await.is_err() {
                break;
            }
            waiting.push(rx);
        }
        let mut out = Vec::with_capacity(waiting.len());
        for rx in waiting {
            out.push(rx.await.map_err(|_| closed()).and_then(|r| r));
        }
        out
    }

    /// Queues `bodies` (signed before) again for `route`, unchanged.
    pub async fn resend(&self, bodies: Vec<String>, route: Route) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Resend(bodies, route, tx)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// `route` has delivered every row up to `id` (rows not for it included).
    pub fn delivered(&self, route: Route, id: i64) {
        let _ = self.jobs.try_send(Job::Delivered(route, id));
    }

    pub async fn take_dropped(&self) -> u64 {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::TakeDropped(tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Where `route` resumes: the last row it delivered.
    pub async fn cursor(&self, route: Route) -> Result<i64, StoreError> {
        let c: Option<i64> = sqlx::query("SELECT acked_id FROM outbox_cursors WHERE transport = ?")
            .bind(route.as_str())
            .fetch_optional(self.store.pool())
            .await?
            .map(|r| r.get("acked_id"));
        Ok(c.unwrap_or(0))
    }

    /// Up to `limit` rows after `after` for `route`, oldest first.
    pub async fn after(&self, route: Route, after: i64, limit: i64) -> Result<Vec<Stored>, StoreError> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner()).after(route, after, limit.max(0) as usize);
        if let Some(rows) = recent {
            return Ok(rows);
        }
        let rows = sqlx::query(
            "SELECT id, kind, body FROM outbox WHERE id > ? AND (route IS NULL OR route = ?) ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(route.as_str())
        .bind(limit)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Stored {
                id: r.get("id"),
                kind: match r.get::<&str, _>("kind") {
                    "events" => Kind::Events,
                    "metrics" => Kind::Metrics,
                    _ => Kind::Replies,
                },
                body: r.get("body"),
            })
            .collect())
    }

    /// Messages waiting and their bytes.
    pub async fn depth(&self) -> Result<(i64, i64), StoreError> {
        self.store.outbox_depth().await
    }
}

fn closed() -> StoreError {
    StoreError::Invalid("the outbox writer has stopped".into())
}

/// A device counter (0 when unset).
pub async fn counter(store: &Store, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query("SELECT value FROM device_counters WHERE name = ?")
        .bind(name)
        .fetch_optional(store.pool())
        .await?
        .map(|r| r.get("value")))
}

#[cfg(test)]
mod tests;
