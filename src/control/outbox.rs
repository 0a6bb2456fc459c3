//! The outbox (DESIGN §3 "Replies and telemetry", "Transports"): every message the device sends
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
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};

use super::envelope::{new_message, sign};
use super::keys::Keyring;
use crate::clock::WallClock;
use crate::store::{Store, StoreError};

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
        // Settling is due every second, whatever comes in; the ticker ends with the last handle.
        let ticker = tx.downgrade();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SETTLE_EVERY).await;
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

struct Writer {
    conn: rusqlite::Connection,
    device_id: String,
    keys: Arc<Keyring>,
    seq: i64,
    cursors: HashMap<Route, i64>,
    dirty: bool,
    bounds: Bounds,
    committed: [watch::Sender<i64>; 2],
    recent: Arc<std::sync::Mutex<Recent>>,
    clock: WallClock,
}

const BATCH: usize = 512;
const SETTLE_EVERY: Duration = Duration::from_secs(1);
/// A WAL file larger than this (bytes) is checkpointed by the writer itself.
const WAL_CATCH_UP: u64 = 4 * crate::store::JOURNAL_SIZE_LIMIT as u64;

type Puts = Vec<(Draft, oneshot::Sender<Result<Written, StoreError>>)>;

impl Writer {
    /// The writer's thread: until the last handle is gone.
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut last_settle = Instant::now();
        let wal = format!("{}-wal", self.conn.path().unwrap_or_default());
        let mut last_wal_look = Instant::now();
        // Old replies are forgotten on the first pass after a start, then every minute.
        let mut last_prune: Option<Instant> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut puts = Vec::new();
            // The ticker's second: settling is due (comparing the elapsed time alone would skip
            // every other tick that lands a hair under a second after the last settle).
            let mut tick = false;
            let mut jobs = vec![first];
            while jobs.len() < BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            for j in jobs {
                match j {
                    Job::Put(d, tx) => puts.push((d, tx)),
                    Job::Delivered(route, id) => {
                        let c = self.cursors.entry(route).or_insert(0);
                        if id > *c {
                            *c = id;
                            self.dirty = true;
                        }
                    }
                    Job::Resend(bodies, route, tx) => {
                        let _ = tx.send(self.resend(bodies, route));
                    }
                    Job::TakeDropped(tx) => {
                        let n = self.take_dropped().unwrap_or_else(|e| {
                            tracing::warn!("outbox: {e}");
                            0
                        });
                        let _ = tx.send(n);
                    }
                    Job::Tick => tick = true,
                }
            }
            if !puts.is_empty() {
                self.commit(puts);
            }
            if self.dirty && (tick || last_settle.elapsed() >= SETTLE_EVERY) {
                last_settle = Instant::now();
                if let Err(e) = self.settle() {
                    tracing::warn!("outbox: settling: {e}");
                } else {
                    self.dirty = false;
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                last_prune = Some(Instant::now());
                let keep = crate::store::control::DEDUPE_KEEP_MS;
                if let Err(e) = self.conn.execute(crate::store::control::PRUNE_REPLIES, [keep]) {
                    tracing::warn!("outbox: pruning old replies: {e}");
                }
            }
            // The daemon's store checkpoints the WAL from another connection, off this path. While
            // replies keep coming that checkpoint never catches up, so SQLite never starts the WAL
            // over: under a burst of commands it grew by ~50 MB a second, without bound. Then the
            // writer checkpoints it itself, between batches and after their replies were handed
            // over: nothing is appended meanwhile, so it catches up and the WAL starts over.
            // Looked at once a second, not on every batch (by the clock too: a flood that fills
            // the job queue can crowd the ticker out).
            let look = tick || last_wal_look.elapsed() >= SETTLE_EVERY;
            if look {
                last_wal_look = Instant::now();
            }
            if look && std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_CATCH_UP) {
                if let Err(e) = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
                    tracing::warn!("outbox: WAL checkpoint: {e}");
                }
            }
        }
        let _ = self.settle();
    }

    /// Signs and numbers `puts` and stores them in one transaction, however many there are: under
    /// load a burst of replies costs one commit.
    fn commit(&mut self, puts: Puts) {
        let seq_before = self.seq;
        match self.write_batch(&puts) {
            Ok((out, rows)) => {
                if let Some(last) = rows.last().map(|(_, r)| r.id) {
                    let mut routes = [false; 2];
                    let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
                    for (route, row) in rows {
                        match route {
                            Some(r) => routes[r.index()] = true,
                            None => routes = [true; 2],
                        }
                        recent.push(route, row);
                    }
                    drop(recent);
                    for r in Route::ALL.into_iter().filter(|r| routes[r.index()]) {
                        self.committed[r.index()].send_replace(last);
                    }
                    self.dirty = true;
                }
                for ((_, tx), w) in puts.into_iter().zip(out) {
                    let _ = tx.send(Ok(w));
                }
            }
            Err(e) => {
                self.seq = seq_before;
                tracing::error!("outbox: a batch could not be stored: {e}");
                for (_, tx) in puts {
                    let _ = tx.send(Err(StoreError::Invalid(format!("the outbox could not store a message: {e}"))));
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn write_batch(&mut self, puts: &Puts) -> Result<(Vec<Written>, Vec<(Option<Route>, Stored)>), StoreError> {
        use rusqlite::OptionalExtension;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // The replies already stored for the commands that want to be answered first.
        let mut earlier: HashMap<uuid::Uuid, Vec<String>> = HashMap::new();
        {
            let mut q = tx.prepare_cached("SELECT reply FROM command_replies WHERE message_id = ?1")?;
            for (d, _) in puts {
                if let Remember::First(mid) = &d.remember {
                    let stored: Option<String> = q.query_row([mid.to_string()], |r| r.get(0)).optional()?;
                    if let Some(reply) = stored {
                        earlier.insert(*mid, serde_json::from_str(&reply).unwrap_or_default());
                    }
                }
            }
        }
        // Stamped by the trusted time (the clock, never below the time floor), and an accepted
        // command's row never below the command's own time: the row then outlives every moment
        // at which the command could pass the time check again (see `PRUNE_REPLIES`).
        let floor: i64 = tx
            .query_row("SELECT value FROM device_counters WHERE name = 'time_floor_ms'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        let now_ms = self.clock.now().as_millisecond().max(floor);
        let keys = self.keys.current();
        let mut out = Vec::with_capacity(puts.len());
        let mut rows = Vec::new();
        let mut counters: HashMap<&str, i64> = HashMap::new();
        let mut floor: Option<i64> = None;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO outbox (seq, kind, route, body, bytes) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            let mut remember = tx.prepare_cached(
                "INSERT INTO command_replies (message_id, received_ms, reply) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(message_id) DO UPDATE SET reply = excluded.reply",
            )?;
            for (d, _) in puts {
                if let Remember::First(mid) = &d.remember {
                    // Stored before, or a copy earlier in this same batch.
                    if let Some(e) = earlier.get(mid) {
                        out.push(Written::Repeat(e.clone()));
                        continue;
                    }
                }
                let mut m = new_message(&self.device_id, d.ty, d.payload.clone(), d.correlation_id);
                if d.kind == Kind::Will {
                    m.insert("after_seq".into(), self.seq.into());
                } else {
                    self.seq += 1;
                    m.insert("seq".into(), self.seq.into());
                }
                sign(&mut m, &self.device_id, keys.signing()).expect("an envelope we built is canonical");
                let body = Value::Object(m).to_string();
                let stamp = d.raise_floor.map_or(now_ms, |t| t.max(now_ms));
                match &d.remember {
                    Remember::No => {}
                    Remember::First(mid) => {
                        earlier.insert(*mid, vec![body.clone()]);
                        remember.execute(rusqlite::params![mid.to_string(), stamp, json!([body]).to_string()])?;
                    }
                    Remember::Then(mid, before) => {
                        let mut all = before.clone();
                        all.push(body.clone());
                        remember.execute(rusqlite::params![mid.to_string(), stamp, json!(all).to_string()])?;
                    }
                }
                if let Some((name, value)) = d.counter {
                    counters.insert(name, value);
                }
                if let Some(ms) = d.raise_floor {
                    floor = Some(floor.map_or(ms, |f: i64| f.max(ms)));
                }
                if !matches!(d.kind, Kind::State | Kind::Will) {
                    let route = d.route.map(Route::as_str);
                    insert.execute(rusqlite::params![self.seq, d.kind.as_str(), route, body, body.len() as i64])?;
                    rows.push((d.route, Stored { id: tx.last_insert_rowid(), kind: d.kind, body: body.clone() }));
                }
                out.push(Written::Sent(body));
            }
        }
        for (name, value) in counters {
            set_counter(&tx, name, value)?;
        }
        if let Some(ms) = floor {
            tx.prepare_cached(
                "INSERT INTO device_counters (name, value) VALUES ('time_floor_ms', ?1) \
                 ON CONFLICT(name) DO UPDATE SET value = max(value, ?1)",
            )?
            .execute([ms])?;
        }
        set_counter(&tx, "seq", self.seq)?;
        tx.commit()?;
        Ok((out, rows))
    }

    /// Writes the cursors, deletes what every transport has, then enforces the bounds.
    fn settle(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock up front. A transaction that reads first and writes later
        // fails at once (SQLITE_BUSY_SNAPSHOT) if another connection wrote in between, whatever
        // the busy timeout.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (route, id) in &self.cursors {
            tx.prepare_cached(
                "INSERT INTO outbox_cursors (transport, acked_id) VALUES (?1, ?2) \
                 ON CONFLICT(transport) DO UPDATE SET acked_id = max(acked_id, ?2)",
            )?
            .execute(rusqlite::params![route.as_str(), id])?;
            tx.prepare_cached("DELETE FROM outbox WHERE route = ?1 AND id <= ?2")?
                .execute(rusqlite::params![route.as_str(), id])?;
        }
        // Replies for a transport that is not configured (any more) have nobody to go to.
        for r in [Route::Mqtt, Route::Ws] {
            if !self.cursors.contains_key(&r) {
                tx.prepare_cached("DELETE FROM outbox WHERE route = ?1")?.execute([r.as_str()])?;
            }
        }
        if let Some(all) = self.cursors.values().min() {
            tx.prepare_cached("DELETE FROM outbox WHERE route IS NULL AND id <= ?1")?.execute([all])?;
        }
        // Bounds: the oldest go first.
        let (mut n, mut bytes): (i64, i64) =
            tx.query_row("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut dropped = 0i64;
        let mut dropped_to = None;
        while n as u64 > self.bounds.max_messages || bytes as u64 > self.bounds.max_bytes {
            let over = (n - self.bounds.max_messages as i64).clamp(1, 1000);
            let mut q = tx.prepare_cached(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?1) RETURNING id, bytes",
            )?;
            let gone: Vec<(i64, i64)> =
                q.query_map([over], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            if gone.is_empty() {
                break;
            }
            dropped += gone.len() as i64;
            n -= gone.len() as i64;
            bytes -= gone.iter().map(|(_, b)| b).sum::<i64>();
            dropped_to = gone.iter().map(|(id, _)| *id).max().max(dropped_to);
        }
        if dropped > 0 {
            tracing::warn!("outbox over its bounds: the {dropped} oldest message(s) were dropped");
            tx.prepare_cached(
                "INSERT INTO device_counters (name, value) VALUES ('outbox_dropped', ?1) \
                 ON CONFLICT(name) DO UPDATE SET value = value + ?1",
            )?
            .execute([dropped])?;
        }
        tx.commit()?;
        if let Some(id) = dropped_to {
            self.recent.lock().unwrap_or_else(|e| e.into_inner()).forget_to(id);
        }
        Ok(())
    }

    fn resend(&mut self, bodies: Vec<String>, route: Route) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut rows = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (seq, kind, route, body, bytes) VALUES (?1, 'replies', ?2, ?3, ?4)",
            )?;
            for b in bodies {
                let seq = serde_json::from_str::<Value>(&b).ok().and_then(|v| v["seq"].as_i64()).unwrap_or(0);
                insert.execute(rusqlite::params![seq, route.as_str(), b, b.len() as i64])?;
                rows.push(Stored { id: tx.last_insert_rowid(), kind: Kind::Replies, body: b });
            }
        }
        tx.commit()?;
        if let Some(last) = rows.last().map(|r| r.id) {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for r in rows {
                recent.push(Some(route), r);
            }
            drop(recent);
            self.committed[route.index()].send_replace(last);
        }
        Ok(())
    }

    fn take_dropped(&mut self) -> Result<u64, StoreError> {
        use rusqlite::OptionalExtension;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n: i64 = tx
            .query_row("SELECT value FROM device_counters WHERE name = 'outbox_dropped'", [], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        tx.execute("DELETE FROM device_counters WHERE name = 'outbox_dropped'", [])?;
        tx.commit()?;
        Ok(n.max(0) as u64)
    }
}

fn set_counter(tx: &rusqlite::Connection, name: &str, value: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO device_counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2",
    )?
    .execute(rusqlite::params![name, value])?;
    Ok(())
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
mod tests {
    use super::*;

    async fn outbox(dir: &std::path::Path, routes: Vec<Route>, max: u64) -> Outbox {
        let store = Store::open(dir).await.unwrap();
        let keys = Arc::new(Keyring::load_or_create(dir).unwrap());
        Outbox::start(store, "dev".into(), keys, routes, Bounds { max_messages: max, max_bytes: 20 << 20 })
            .await
            .unwrap()
    }

    fn event(n: u64) -> Draft {
        let Value::Object(p) = json!({"event_type": "test", "severity": "info", "context": {"n": n}}) else {
            unreachable!()
        };
        Draft::telemetry("EVENT", Kind::Events, p)
    }

    fn seq(w: &Written) -> i64 {
        let Written::Sent(b) = w else { panic!("{w:?}") };
        serde_json::from_str::<Value>(b).unwrap()["seq"].as_i64().unwrap()
    }

    #[tokio::test]
    async fn seq_is_contiguous_across_restarts_and_rows_stay_until_every_transport_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path(), vec![Route::Mqtt, Route::Ws], 100).await;
        let mut seqs = Vec::new();
        for n in 0..5 {
            seqs.push(seq(&o.put(event(n)).await.unwrap()));
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let rows = o.after(Route::Mqtt, 0, 100).await.unwrap();
        assert_eq!(rows.len(), 5);
        o.delivered(Route::Mqtt, rows[4].id);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(o.depth().await.unwrap().0, 5, "ws has not had them");
        o.delivered(Route::Ws, rows[2].id);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(o.depth().await.unwrap().0, 2);
        assert_eq!(o.cursor(Route::Ws).await.unwrap(), rows[2].id);
        drop(o);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let o = outbox(dir.path(), vec![Route::Mqtt, Route::Ws], 100).await;
        assert_eq!(seq(&o.put(event(9)).await.unwrap()), 6, "seq continues after a restart");
        assert_eq!(o.after(Route::Ws, rows[2].id, 100).await.unwrap().len(), 3);
        // The time floor only rises.
        for ms in [1_764_000_000_000, 0] {
            o.put(Draft { raise_floor: Some(ms), ..event(1) }).await.unwrap();
        }
        assert_eq!(o.store.time_floor_ms().await.unwrap(), 1_764_000_000_000, "never lowered");
    }

    /// Replies written without a pause (a burst of commands) must not grow the WAL for as long
    /// as the burst lasts: SQLite starts it over (and cuts it back to the journal size limit)
    /// only after a checkpoint caught up with it, which one run from another connection while
    /// the writer kept appending never did.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_burst_of_writes_does_not_grow_the_wal_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_for_daemon(dir.path()).await.unwrap();
        let keys = Arc::new(Keyring::load_or_create(dir.path()).unwrap());
        let bounds = Bounds { max_messages: 1_000_000, max_bytes: 1 << 30 };
        let o = Outbox::start(store.clone(), "dev".into(), keys, vec![Route::Mqtt], bounds).await.unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (o, stop) = (o.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.is_cancelled() {
                        o.put(event(w * 1_000_000 + n)).await.unwrap();
                        n += 1;
                    }
                })
            })
            .collect();
        let wal = dir.path().join("agent.db-wal");
        let size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let (mut largest, mut shrank) = (0u64, false);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = size();
            shrank |= now < largest;
            largest = largest.max(now);
        }
        stop.cancel();
        for w in writers {
            w.await.unwrap();
        }
        let limit = 2 * crate::store::JOURNAL_SIZE_LIMIT as u64;
        assert!(
            shrank || largest <= limit,
            "the WAL grew to {largest} bytes during the burst and was never started over"
        );
    }

    #[test]
    fn recent_rows_answer_only_what_they_hold_whole() {
        let row = |id: i64, n: usize| Stored { id, kind: Kind::Replies, body: "x".repeat(n) };
        let mut r = Recent { floor: 10, ..Recent::default() };
        assert_eq!(r.after(Route::Mqtt, 9, 10).map(|v| v.len()), None, "older than the floor: the database");
        r.push(Some(Route::Mqtt), row(11, 10));
        r.push(Some(Route::Ws), row(12, 10));
        r.push(None, row(13, 10));
        let ids = |v: Option<Vec<Stored>>| v.map(|v| v.iter().map(|r| r.id).collect::<Vec<_>>());
        assert_eq!(ids(r.after(Route::Mqtt, 10, 10)), Some(vec![11, 13]), "its own route and telemetry");
        assert_eq!(ids(r.after(Route::Ws, 11, 1)), Some(vec![12]), "limited");
        assert_eq!(ids(r.after(Route::Ws, 13, 10)), Some(vec![]), "caught up");
        r.forget_to(12);
        assert_eq!(ids(r.after(Route::Mqtt, 10, 10)), None, "dropped rows are not served");
        assert_eq!(ids(r.after(Route::Mqtt, 12, 10)), Some(vec![13]));
        for id in 14..14 + RECENT_ROWS as i64 {
            r.push(None, row(id, 1));
        }
        assert_eq!(r.rows.len(), RECENT_ROWS, "bounded");
        assert_eq!(ids(r.after(Route::Mqtt, 12, 1)), None, "row 13 fell out");
        assert_eq!(ids(r.after(Route::Mqtt, 13, 1)), Some(vec![14]));
        r.push(None, row(100_000, RECENT_BYTES));
        assert!(r.bytes <= RECENT_BYTES && r.rows.len() == 1, "bounded in bytes too");
    }

    #[tokio::test]
    async fn over_its_bounds_the_oldest_go_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path(), vec![Route::Mqtt], 10).await;
        for n in 0..25 {
            o.put(event(n)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        o.put(event(99)).await.unwrap();
        let rows = o.after(Route::Mqtt, 0, 100).await.unwrap();
        assert!(rows.len() <= 11, "{}", rows.len());
        let first: Value = serde_json::from_str(&rows[0].body).unwrap();
        assert!(first["seq"].as_i64().unwrap() >= 15, "the oldest went first: {first}");
        assert_eq!(o.take_dropped().await, 15);
        assert_eq!(o.take_dropped().await, 0, "reported once");
    }

    #[tokio::test]
    async fn a_command_s_first_reply_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path(), vec![Route::Mqtt], 100).await;
        let mid = uuid::Uuid::new_v4();
        let ack = |o: Outbox| async move {
            o.put(Draft {
                ty: "ACK",
                payload: Map::new(),
                correlation_id: Some(mid),
                kind: Kind::Replies,
                route: Some(Route::Mqtt),
                remember: Remember::First(mid),
                counter: None,
                raise_floor: None,
            })
            .await
            .unwrap()
        };
        let (a, b) = tokio::join!(ack(o.clone()), ack(o.clone()));
        let sent = [&a, &b].into_iter().filter(|w| matches!(w, Written::Sent(_))).count();
        assert_eq!(sent, 1, "{a:?} {b:?}");
        let Written::Sent(body) = (if matches!(a, Written::Sent(_)) { a.clone() } else { b.clone() }) else {
            unreachable!()
        };
        let repeat = if matches!(a, Written::Repeat(_)) { a } else { b };
        assert_eq!(repeat, Written::Repeat(vec![body.clone()]));
        // The RESULT joins it, with the floor raised and a counter set in the same batch; a copy
        // arriving later gets both replies.
        let result = o
            .put(Draft {
                ty: "RESULT",
                payload: Map::new(),
                correlation_id: Some(mid),
                kind: Kind::Replies,
                route: Some(Route::Mqtt),
                remember: Remember::Then(mid, vec![body.clone()]),
                counter: Some(("events_exported", 7)),
                raise_floor: Some(1_900_000_000_000),
            })
            .await
            .unwrap();
        let Written::Sent(result) = result else { panic!("{result:?}") };
        assert_eq!(ack(o.clone()).await, Written::Repeat(vec![body, result]));
        assert_eq!(counter(&o.store, "events_exported").await.unwrap(), Some(7));
        assert_eq!(o.store.time_floor_ms().await.unwrap(), 1_900_000_000_000);
        assert_eq!(o.depth().await.unwrap().0, 2, "the ACK and the RESULT, once each");
    }
}
