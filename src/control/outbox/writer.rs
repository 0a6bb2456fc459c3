//! The outbox's writer: one thread with a SQLite connection of its own that numbers, signs and
//! commits every message in batches, settles acknowledged rows and keeps the outbox in its bounds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::*;

pub(super) struct Writer {
    pub(super) conn: rusqlite::Connection,
    pub(super) device_id: String,
    pub(super) keys: Arc<Keyring>,
    pub(super) seq: i64,
    pub(super) cursors: HashMap<Route, i64>,
    pub(super) dirty: bool,
    pub(super) bounds: Bounds,
    pub(super) committed: [watch::Sender<i64>; 2],
    pub(super) recent: Arc<std::sync::Mutex<Recent>>,
    pub(super) clock: WallClock,
}

const BATCH: usize = 512;
/// How often the writer wakes up with nothing to do (the ticker), to settle and to look at the WAL.
pub(super) const TICK_EVERY: Duration = Duration::from_secs(1);
/// Delivered rows are deleted and the cursors stored at most this often: each settling is a
/// commit, and the data disk is often an SD card. A crash in between only means rows the cloud
/// already has are sent again (the cloud drops repeats by `message_id`).
pub(super) const SETTLE_EVERY: Duration = Duration::from_secs(5);
/// A WAL file larger than this (bytes) is checkpointed by the writer itself.
const WAL_CATCH_UP: u64 = 4 * crate::store::JOURNAL_SIZE_LIMIT as u64;

type Puts = Vec<(Draft, oneshot::Sender<Result<Written, StoreError>>)>;

impl Writer {
    /// The writer's thread: until the last handle is gone.
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut last_settle = Instant::now();
        let wal = format!("{}-wal", self.conn.path().unwrap_or_default());
        let mut last_wal_look = Instant::now();
        // Old replies are forgotten on the first pass after a start, then every minute.
        let mut last_prune: Option<Instant> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut puts = Vec::new();
            // The ticker's second: the WAL is looked at (comparing the elapsed time alone would
            // skip every other tick that lands a hair under a second after the last look).
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
            if self.dirty && last_settle.elapsed() + TICK_EVERY / 4 >= SETTLE_EVERY {
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
            let look = tick || last_wal_look.elapsed() >= TICK_EVERY;
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
