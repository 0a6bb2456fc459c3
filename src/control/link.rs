//! What the transports share: the state of each link (for STATE, logs and `vistter-agent status`)
//! and the STATE message itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::sync::watch;

use super::inbox::Inbox;
use super::outbox::{Draft, Kind, Route, Written};
use crate::store::StoreError;

/// Why a cloud link could not connect, or dropped. It is logged and the link reconnects.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{host}: not a valid TLS server name: {reason}")]
    ServerName { host: String, reason: String },
    /// A socket failed; `at` says which (`connect`, `connect: TLS`, `host:port`, `private socket`).
    #[error("{at}: {source}")]
    Io { at: String, source: std::io::Error },
    #[error("{0}: connect timed out")]
    TimedOut(String),
    #[error("{0}")]
    Tls(#[from] super::tls::TlsError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("connect: {0}")]
    Handshake(tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("{0}")]
    Subscribe(rumqttc::ClientError),
    #[error("publish: {0}")]
    Publish(rumqttc::ClientError),
    #[error("the outbox has stopped")]
    OutboxStopped,
    #[error("nothing heard for {0} s")]
    Silent(u64),
    #[error("the server closed the connection")]
    Closed,
}

/// Each configured transport's state: `connecting`, `connected`, `reconnecting`, `offline`, …
#[derive(Clone)]
pub struct Links {
    tx: Arc<watch::Sender<BTreeMap<&'static str, String>>>,
    /// When each transport last heard from the other side (any packet or frame).
    contact: Arc<std::sync::Mutex<BTreeMap<&'static str, std::time::SystemTime>>>,
}

impl Links {
    pub fn new(routes: &[Route]) -> Links {
        let m = routes.iter().map(|r| (r.as_str(), "offline".to_string())).collect();
        Links { tx: Arc::new(watch::channel(m).0), contact: Default::default() }
    }

    /// `route` heard from the broker or server just now.
    pub fn heard(&self, route: Route) {
        self.contact.lock().unwrap_or_else(|e| e.into_inner()).insert(route.as_str(), std::time::SystemTime::now());
    }

    /// Seconds since each transport last heard from the other side (absent: never).
    pub fn last_contact_s(&self) -> BTreeMap<&'static str, f64> {
        let now = std::time::SystemTime::now();
        let c = self.contact.lock().unwrap_or_else(|e| e.into_inner());
        c.iter().map(|(k, t)| (*k, now.duration_since(*t).map_or(0.0, |d| d.as_secs_f64()))).collect()
    }

    pub fn set(&self, route: Route, state: &str) {
        self.tx.send_if_modified(|m| {
            let old = m.insert(route.as_str(), state.to_string());
            old.as_deref() != Some(state)
        });
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, String> {
        self.tx.borrow().clone()
    }

    /// The snapshot with `route` in `state` (what a death message says).
    pub fn with(&self, route: Route, state: &str) -> BTreeMap<&'static str, String> {
        let mut m = self.snapshot();
        m.insert(route.as_str(), state.to_string());
        m
    }

    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<&'static str, String>> {
        self.tx.subscribe()
    }

    pub fn routes(&self) -> Vec<&'static str> {
        self.tx.borrow().keys().copied().collect()
    }
}

/// The command types this agent takes from the cloud, and its transports (STATE `capabilities`).
/// `camera_discover`: `CAMERA_ACTION` takes `discover`.
fn capabilities(transports: Vec<&'static str>) -> Value {
    json!({"commands": super::check::CLOUD_TYPES, "transports": transports, "features": ["sealed_secrets", "outbox", "camera_discover"]})
}

/// Which STATE message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    /// Online, sent on every connection: numbered (`seq`).
    Birth,
    /// Offline, sent on a clean stop: numbered (`seq`).
    Offline,
    /// Offline, the MQTT Last Will, signed when connecting and published only by the broker if
    /// the connection is lost: `after_seq`, no number of its own.
    Will,
}

/// A signed STATE message.
pub async fn state(inbox: &Inbox, links: &BTreeMap<&'static str, String>, life: Life) -> Result<String, StoreError> {
    let online = life == Life::Birth;
    let p = inbox.keys.current().public();
    let segments = match &inbox.segments {
        Some(library) => library.list().await.map(|v| serde_json::to_value(v).unwrap_or_default()).unwrap_or_default(),
        None => json!([]),
    };
    let payload = json!({
        "online": online,
        "agent_version": env!("CARGO_PKG_VERSION"),
        "device_public_key": p.device_public_key,
        "device_sealing_key": p.device_sealing_key,
        "capabilities": capabilities(links.keys().copied().collect()),
        "link": links,
        "segments": segments,
        "program": null,
    });
    let Value::Object(payload) = payload else { unreachable!("a JSON object") };
    match inbox
        .outbox
        .put(Draft::telemetry("STATE", if life == Life::Will { Kind::Will } else { Kind::State }, payload))
        .await?
    {
        Written::Sent(s) => Ok(s),
        Written::Repeat(_) => unreachable!("only commands' replies repeat"),
    }
}

/// After a reconnect: if the outbox had to drop messages while the device was away, one EVENT
/// says how many.
pub async fn report_dropped(inbox: &Inbox) {
    let n = inbox.outbox.take_dropped().await;
    if n == 0 {
        return;
    }
    let mut context = Map::new();
    context.insert("dropped".into(), n.into());
    let payload = json!({"event_type": "outbox_overflow", "severity": "warning", "context": context});
    let Value::Object(payload) = payload else { return };
    if let Err(e) = inbox.outbox.put(Draft::telemetry("EVENT", Kind::Events, payload)).await {
        tracing::warn!("the outbox overflow could not be reported: {e}");
    }
}
