//! Telemetry: every event the agent records becomes an EVENT,
//! and METRICS go out on a fixed period. Both are written to the outbox, which carries them across
//! outages; the events exporter's position is kept in the same transaction as the message it
//! wrote, so an event is sent once, across restarts.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::inbox::Execute;
use super::outbox::{counter, Draft, Kind, Outbox};
use crate::command::ProgramInfo;
use crate::store::Store;

const EVENTS_CURSOR: &str = "events_exported";

/// The EVENT payload of an event row: its type, severity and what it is about.
pub fn event_payload(e: &crate::store::events::Event) -> Map<String, Value> {
    let mut context = Map::new();
    for (k, v) in [("subject", &e.subject), ("scope", &e.scope), ("detail", &e.detail)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            context.insert(k.into(), v.into());
        }
    }
    context.insert("at".into(), e.at.clone().into());
    let event_type: String = e
        .event_type
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(64)
        .collect();
    let event_type =
        if event_type.starts_with(|c: char| c.is_ascii_lowercase()) { event_type } else { format!("e_{event_type}") };
    let Value::Object(m) = json!({"event_type": event_type, "severity": e.severity, "context": context}) else {
        unreachable!()
    };
    m
}

/// Sends each new event row as an EVENT, in order; polls every `every`.
pub async fn export_events(store: Store, outbox: Outbox, every: Duration, stop: CancellationToken) {
    // A device that never exported starts from now: the backlog of its local log is not news.
    let mut after = match counter(&store, EVENTS_CURSOR).await {
        Ok(Some(c)) => c,
        _ => store.last_event_id().await.unwrap_or(0),
    };
    loop {
        match store.events_after(after, 200).await {
            Ok(events) if !events.is_empty() => {
                // Queued together: one commit for the lot, not one per event.
                let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
                let drafts = events
                    .iter()
                    .map(|e| {
                        let mut d = Draft::telemetry("EVENT", Kind::Events, event_payload(e));
                        d.counter = Some((EVENTS_CURSOR, e.id));
                        d
                    })
                    .collect();
                for (id, r) in ids.into_iter().zip(outbox.put_all(drafts).await) {
                    if let Err(err) = r {
                        tracing::warn!("an event could not be queued for the cloud: {err}");
                        break;
                    }
                    after = id;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("events: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Sends METRICS every `every`.
pub async fn metrics(
    outbox: Outbox,
    exec: Arc<dyn Execute>,
    data_dir: std::path::PathBuf,
    every: Duration,
    stop: CancellationToken,
) {
    let mut cpu = CpuSampler::default();
    cpu.sample();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (p, d) = gather(&programs(exec.as_ref()));
        let metrics = Metrics {
            cpu: Cpu {
                percent: cpu.sample(),
                cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            },
            memory: memory(),
            temperature: temperature(),
            disk: disk(&data_dir),
            network: network(),
            programs: p,
            destinations: d,
        };
        let Ok(Value::Object(payload)) = serde_json::to_value(&metrics) else { continue };
        if let Err(e) = outbox.put(Draft::telemetry("METRICS", Kind::Metrics, payload)).await {
            tracing::warn!("metrics could not be queued: {e}");
        }
    }
}

/// Every running program as `PROGRAM status` lists it (none when the dispatcher refuses).
pub fn programs(exec: &dyn Execute) -> Vec<ProgramInfo> {
    exec.programs()
}

/// The METRICS `programs` and `destinations` entries of these programs (the status server's
/// `/metrics` and `/api/v1/status` show the same figures).
pub use crate::command::view::figures as gather;

/// Whole-machine CPU use between two samples, from `/proc/stat`.
#[derive(Default)]
pub(crate) struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    pub(crate) fn sample(&mut self) -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let last = self.last.replace((total, idle))?;
        let (dt, di) = (total.saturating_sub(last.0), idle.saturating_sub(last.1));
        (dt > 0).then(|| ((dt - di) as f64 * 1000.0 / dt as f64).round() / 10.0)
    }
}

/// Machine memory and the agent's resident set, in kB (`None`: not readable here).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub total_kb: Option<u64>,
    pub available_kb: Option<u64>,
    pub agent_rss_kb: Option<u64>,
}

/// The hottest thermal zone.
#[derive(Debug, Clone, Serialize)]
pub struct Temperature {
    pub celsius: f64,
}

/// The data dir's file system (both absent when it cannot be read).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Disk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

/// Bytes through every interface but loopback since boot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Network {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// What the status page and `/api/v1/status` show of the machine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct System {
    pub cpu_percent: Option<f64>,
    pub memory: Memory,
    /// `None` (JSON `null`) where the machine has no thermal zone.
    pub temperature: Option<Temperature>,
    pub disk: Disk,
}

impl System {
    pub fn now(cpu_percent: Option<f64>, data_dir: &std::path::Path) -> System {
        System { cpu_percent, memory: memory(), temperature: temperature(), disk: disk(data_dir) }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Cpu {
    percent: Option<f64>,
    cores: usize,
}

/// A METRICS payload (`schemas/control/metrics.v1.json`).
#[derive(Debug, Clone, Serialize)]
struct Metrics {
    cpu: Cpu,
    memory: Memory,
    temperature: Option<Temperature>,
    disk: Disk,
    network: Network,
    programs: Vec<crate::command::view::ProgramFigures>,
    destinations: Vec<crate::command::view::DestinationFigures>,
}

pub(crate) fn memory() -> Memory {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = |name: &str| -> Option<u64> {
        info.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok());
    Memory { total_kb: kb("MemTotal:"), available_kb: kb("MemAvailable:"), agent_rss_kb: rss }
}

/// The hottest thermal zone (`None` where the machine has none).
pub(crate) fn temperature() -> Option<Temperature> {
    let dir = std::fs::read_dir("/sys/class/thermal").ok()?;
    let max = dir
        .flatten()
        .filter_map(|z| std::fs::read_to_string(z.path().join("temp")).ok()?.trim().parse::<f64>().ok())
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    max.map(|t| Temperature { celsius: (t / 100.0).round() / 10.0 })
}

pub(crate) fn disk(data_dir: &std::path::Path) -> Disk {
    match nix::sys::statvfs::statvfs(data_dir) {
        Ok(s) => {
            let f = s.fragment_size();
            Disk { total_bytes: Some(s.blocks() * f), free_bytes: Some(s.blocks_available() * f) }
        }
        Err(_) => Disk::default(),
    }
}

fn network() -> Network {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let (mut rx, mut tx) = (0u64, 0u64);
    for l in dev.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let v: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        rx += v.first().copied().unwrap_or(0);
        tx += v.get(8).copied().unwrap_or(0);
    }
    Network { rx_bytes: rx, tx_bytes: tx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_row_becomes_a_valid_event_payload() {
        let e = crate::store::events::Event {
            id: 1,
            at: "2026-11-30T00:00:00Z".into(),
            severity: "warning".into(),
            event_type: "camera_down".into(),
            subject: Some("cam1".into()),
            scope: None,
            detail: Some(String::new()),
        };
        let p = event_payload(&e);
        assert_eq!(p["event_type"], "camera_down");
        assert_eq!(p["context"]["subject"], "cam1");
        assert!(p["context"].get("detail").is_none());
        let odd = crate::store::events::Event { event_type: "9-Odd Type".into(), ..e };
        assert_eq!(event_payload(&odd)["event_type"], "e_9_odd_type");
        let mut c = CpuSampler::default();
        assert_eq!(c.sample(), None, "the first sample has nothing to compare with");
        assert!(memory().total_kb.unwrap() > 0);
    }
}
