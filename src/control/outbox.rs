//! The outbox (DESIGN §3 "Replies and telemetry", "Transports"): every message the device sends
//! is numbered (`seq`), signed and committed to SQLite by one writer task before any transport
//! sees it. Transports read rows after their own cursor and report what their peer acknowledged
//! (MQTT: the PUBACK); a row is deleted only when every transport it is for has it, or when the
//! outbox is over its bounds (oldest first, counted, and reported in an EVENT on reconnect).
//!
//! The writer takes whatever jobs are waiting and commits them in one transaction: under load a
//! burst of replies costs one commit, and an SD card is not worn by a write per message.
//! Because the writer alone hands out `seq`, numbers are contiguous and never repeat, across
//! restarts, and the dedupe record of a command is written in the same transaction as its reply.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, watch};

use super::envelope::{new_message, sign};
use super::keys::Keyring;
use crate::store::{Store, StoreError};

/// A transport a reply goes back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Mqtt,
    Ws,
}

impl Route {
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
    /// Signed and numbered, but not kept: a transport publishes it itself (retained birth, will).
    State,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Replies => "replies",
            Kind::Events => "events",
            Kind::Metrics => "metrics",
            Kind::State => "state",
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
    /// Raises the time floor (Unix ms) in the same transaction (an accepted command's time).
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
}

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    jobs: mpsc::Sender<Job>,
    /// The highest committed row id.
    pub committed: watch::Receiver<i64>,
    store: Store,
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
        let (committed_tx, committed) = watch::channel(max_id);
        let writer = Writer {
            store: store.clone(),
            device_id,
            keys,
            seq,
            cursors,
            dirty: true,
            bounds,
            committed: committed_tx,
        };
        tokio::spawn(writer.run(rx));
        Ok(Outbox { jobs: tx, committed, store })
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
    store: Store,
    device_id: String,
    keys: Arc<Keyring>,
    seq: i64,
    cursors: HashMap<Route, i64>,
    dirty: bool,
    bounds: Bounds,
    committed: watch::Sender<i64>,
}

const BATCH: usize = 512;
const SETTLE_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut last_settle = Instant::now();
        let mut last_prune = Instant::now();
        loop {
            let first = tokio::select! {
                j = rx.recv() => match j { Some(j) => Some(j), None => break },
                _ = tokio::time::sleep(SETTLE_EVERY) => None,
            };
            let mut puts = Vec::new();
            let mut jobs: Vec<Job> = first.into_iter().collect();
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
                        let _ = tx.send(self.resend(bodies, route).await);
                    }
                    Job::TakeDropped(tx) => {
                        let n = self.take_dropped().await.unwrap_or_else(|e| {
                            tracing::warn!("outbox: {e}");
                            0
                        });
                        let _ = tx.send(n);
                    }
                }
            }
            if !puts.is_empty() {
                self.commit(puts).await;
            }
            if self.dirty && last_settle.elapsed() >= SETTLE_EVERY {
                last_settle = Instant::now();
                if let Err(e) = self.settle().await {
                    tracing::warn!("outbox: settling: {e}");
                } else {
                    self.dirty = false;
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = Instant::now();
                if let Err(e) = self.store.prune_command_replies(jiff::Timestamp::now().as_millisecond()).await {
                    tracing::warn!("outbox: pruning old replies: {e}");
                }
            }
        }
        let _ = self.settle().await;
    }

    /// Signs and numbers `puts` and stores them in one transaction of a few statements, however
    /// many there are (rows go in as one JSON array): the writer's cost per message is signing.
    async fn commit(&mut self, puts: Vec<(Draft, oneshot::Sender<Result<Written, StoreError>>)>) {
        let seq_before = self.seq;
        let r = self.write_batch(&puts).await;
        match r {
            Ok((out, max_id)) => {
                if let Some(id) = max_id {
                    self.committed.send_replace(id);
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

    async fn write_batch(
        &mut self,
        puts: &[(Draft, oneshot::Sender<Result<Written, StoreError>>)],
    ) -> Result<(Vec<Written>, Option<i64>), StoreError> {
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await?;
        // The replies already stored for the commands that want to be answered first.
        let firsts: Vec<String> = puts
            .iter()
            .filter_map(|(d, _)| match &d.remember {
                Remember::First(mid) => Some(mid.to_string()),
                _ => None,
            })
            .collect();
        let mut earlier: HashMap<String, Vec<String>> = HashMap::new();
        if !firsts.is_empty() {
            let rows = sqlx::query(
                "SELECT message_id, reply FROM command_replies WHERE message_id IN (SELECT value FROM json_each(?))",
            )
            .bind(serde_json::to_string(&firsts).unwrap_or_default())
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                earlier.insert(r.get("message_id"), serde_json::from_str(r.get("reply")).unwrap_or_default());
            }
        }
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let keys = self.keys.current();
        let mut out = Vec::with_capacity(puts.len());
        // (seq, kind, route, body, bytes)
        let mut rows: Vec<(i64, &str, Option<&str>, String, usize)> = Vec::new();
        // message_id → (received_ms, replies); in the order first seen.
        let mut replies: Vec<(String, i64, Vec<String>)> = Vec::new();
        let mut counters: HashMap<&str, i64> = HashMap::new();
        let mut floor: Option<i64> = None;
        for (d, _) in puts {
            if let Remember::First(mid) = &d.remember {
                // Stored before, or a copy earlier in this same batch.
                if let Some(e) = earlier.get(&mid.to_string()) {
                    out.push(Written::Repeat(e.clone()));
                    continue;
                }
            }
            self.seq += 1;
            let mut m = new_message(&self.device_id, d.ty, d.payload.clone(), d.correlation_id);
            m.insert("seq".into(), self.seq.into());
            sign(&mut m, &self.device_id, keys.signing()).expect("an envelope we built is canonical");
            let body = Value::Object(m).to_string();
            match &d.remember {
                Remember::No => {}
                Remember::First(mid) => {
                    earlier.insert(mid.to_string(), vec![body.clone()]);
                    replies.push((mid.to_string(), now_ms, vec![body.clone()]));
                }
                Remember::Then(mid, before) => {
                    let mut all = before.clone();
                    all.push(body.clone());
                    replies.push((mid.to_string(), now_ms, all));
                }
            }
            if let Some((name, value)) = d.counter {
                counters.insert(name, value);
            }
            if let Some(ms) = d.raise_floor {
                floor = Some(floor.map_or(ms, |f: i64| f.max(ms)));
            }
            if d.kind != Kind::State {
                let bytes = body.len();
                rows.push((self.seq, d.kind.as_str(), d.route.map(Route::as_str), body.clone(), bytes));
            }
            out.push(Written::Sent(body));
        }
        let mut max_id = None;
        if !rows.is_empty() {
            let ids = sqlx::query(
                "INSERT INTO outbox (seq, kind, route, body, bytes) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?) ORDER BY key \
                 RETURNING id",
            )
            .bind(serde_json::to_string(&rows).unwrap_or_default())
            .fetch_all(&mut *tx)
            .await?;
            max_id = ids.iter().map(|r| r.get::<i64, _>("id")).max();
        }
        if !replies.is_empty() {
            let replies: Vec<(String, i64, String)> =
                replies.into_iter().map(|(mid, at, all)| (mid, at, json!(all).to_string())).collect();
            // `WHERE true`: SQLite's parser needs it before an upsert's ON CONFLICT.
            sqlx::query(
                "INSERT INTO command_replies (message_id, received_ms, reply) \
                 SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true \
                 ON CONFLICT(message_id) DO UPDATE SET reply = excluded.reply",
            )
            .bind(serde_json::to_string(&replies).unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        }
        for (name, value) in counters {
            set_counter(&mut tx, name, value).await?;
        }
        if let Some(ms) = floor {
            sqlx::query(
                "INSERT INTO device_counters (name, value) VALUES ('time_floor_ms', ?1) \
                 ON CONFLICT(name) DO UPDATE SET value = max(value, ?1)",
            )
            .bind(ms)
            .execute(&mut *tx)
            .await?;
        }
        set_counter(&mut tx, "seq", self.seq).await?;
        tx.commit().await?;
        Ok((out, max_id))
    }

    /// Writes the cursors, deletes what every transport has, then enforces the bounds.
    async fn settle(&mut self) -> Result<(), StoreError> {
        // IMMEDIATE: take the write lock up front. A transaction that reads first and writes later
        // fails at once (SQLITE_BUSY_SNAPSHOT) if another connection wrote in between, whatever
        // the busy timeout.
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await?;
        for (route, id) in &self.cursors {
            sqlx::query(
                "INSERT INTO outbox_cursors (transport, acked_id) VALUES (?1, ?2) \
                 ON CONFLICT(transport) DO UPDATE SET acked_id = max(acked_id, ?2)",
            )
            .bind(route.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM outbox WHERE route = ? AND id <= ?")
                .bind(route.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        // Replies for a transport that is not configured (any more) have nobody to go to.
        let routes: Vec<&str> = self.cursors.keys().map(|r| r.as_str()).collect();
        for r in [Route::Mqtt, Route::Ws] {
            if !routes.contains(&r.as_str()) {
                sqlx::query("DELETE FROM outbox WHERE route = ?").bind(r.as_str()).execute(&mut *tx).await?;
            }
        }
        if let Some(all) = self.cursors.values().min() {
            sqlx::query("DELETE FROM outbox WHERE route IS NULL AND id <= ?").bind(all).execute(&mut *tx).await?;
        }
        // Bounds: the oldest go first.
        let r =
            sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM outbox").fetch_one(&mut *tx).await?;
        let (mut n, mut bytes): (i64, i64) = (r.get("n"), r.get("b"));
        let mut dropped = 0i64;
        while n as u64 > self.bounds.max_messages || bytes as u64 > self.bounds.max_bytes {
            let over = (n - self.bounds.max_messages as i64).clamp(1, 1000);
            let gone = sqlx::query(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?) RETURNING bytes",
            )
            .bind(over)
            .fetch_all(&mut *tx)
            .await?;
            if gone.is_empty() {
                break;
            }
            dropped += gone.len() as i64;
            n -= gone.len() as i64;
            bytes -= gone.iter().map(|r| r.get::<i64, _>("bytes")).sum::<i64>();
        }
        if dropped > 0 {
            tracing::warn!("outbox over its bounds: the {dropped} oldest message(s) were dropped");
            sqlx::query(
                "INSERT INTO device_counters (name, value) VALUES ('outbox_dropped', ?1) \
                 ON CONFLICT(name) DO UPDATE SET value = value + ?1",
            )
            .bind(dropped)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn resend(&mut self, bodies: Vec<String>, route: Route) -> Result<(), StoreError> {
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await?;
        let mut max = None;
        for b in &bodies {
            let seq = serde_json::from_str::<Value>(b).ok().and_then(|v| v["seq"].as_i64()).unwrap_or(0);
            let id: i64 = sqlx::query(
                "INSERT INTO outbox (seq, kind, route, body, bytes) VALUES (?, 'replies', ?, ?, ?) RETURNING id",
            )
            .bind(seq)
            .bind(route.as_str())
            .bind(b)
            .bind(b.len() as i64)
            .fetch_one(&mut *tx)
            .await?
            .get("id");
            max = Some(id);
        }
        tx.commit().await?;
        if let Some(id) = max {
            self.committed.send_replace(id);
        }
        Ok(())
    }

    async fn take_dropped(&mut self) -> Result<u64, StoreError> {
        let mut tx = self.store.pool().begin_with("BEGIN IMMEDIATE").await?;
        let n: i64 = sqlx::query("SELECT value FROM device_counters WHERE name = 'outbox_dropped'")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get("value"))
            .unwrap_or(0);
        sqlx::query("DELETE FROM device_counters WHERE name = 'outbox_dropped'").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n.max(0) as u64)
    }
}

async fn set_counter(tx: &mut sqlx::SqliteConnection, name: &str, value: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO device_counters (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2")
        .bind(name)
        .bind(value)
        .execute(tx)
        .await?;
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
