use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

async fn outbox(dir: &std::path::Path, routes: Vec<Route>, max: u64) -> Outbox {
    let store = Store::open(dir).await.unwrap();
    let keys = Arc::new(Keyring::load_or_create(dir).unwrap());
    Outbox::start(store, "dev".into(), keys, routes, Bounds { max_messages: max, max_bytes: 20 << 20 }).await.unwrap()
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
    tokio::time::sleep(super::writer::SETTLE_EVERY + Duration::from_secs(1)).await;
    assert_eq!(o.depth().await.unwrap().0, 5, "ws has not had them");
    o.delivered(Route::Ws, rows[2].id);
    tokio::time::sleep(super::writer::SETTLE_EVERY + Duration::from_secs(1)).await;
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
    assert!(shrank || largest <= limit, "the WAL grew to {largest} bytes during the burst and was never started over");
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
    // Bounds are kept when the writer settles.
    tokio::time::sleep(super::writer::SETTLE_EVERY + Duration::from_millis(1500)).await;
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
