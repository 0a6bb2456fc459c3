//! The control plane, the device's link to the cloud: signed envelopes, the device's keys, the trust store and the
//! checks every cloud command passes before the dispatcher sees it.

pub mod check;
pub mod envelope;
pub mod inbox;
pub mod keys;
pub mod link;
pub mod mqtt;
pub mod outbox;
pub mod telemetry;
pub mod tls;
pub mod trim;
pub mod ws;

/// The trust store is a module of its own (`crate::trust`); this path keeps older callers working.
pub use crate::trust;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::Store;
use inbox::{Execute, Inbox};
use outbox::{Bounds, Outbox, Route};

/// Why the control plane could not start (the daemon does not start either).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    DeviceId(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Keys(#[from] crate::store::crypto::CryptoError),
    #[error("{0}")]
    Trust(#[from] trust::TrustError),
    #[error("{0}")]
    Outbox(#[from] crate::store::StoreError),
}

/// The running control plane: its links' tasks and their states.
pub struct ControlPlane {
    pub links: link::Links,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the cloud links that are configured (none: `Ok(None)`), with the outbox, the trust-store
/// watcher and telemetry. Everything stops with `stop`.
pub async fn start(
    cfg: &Config,
    store: &Store,
    exec: Arc<dyn Execute>,
    stop: CancellationToken,
) -> Result<Option<ControlPlane>, StartError> {
    let mut routes = Vec::new();
    if cfg.control.mqtt.is_some() {
        routes.push(Route::Mqtt);
    }
    if cfg.control.ws.is_some() {
        routes.push(Route::Ws);
    }
    if routes.is_empty() {
        return Ok(None);
    }
    let device_id = cfg.device_id()?;
    let keys = Arc::new(keys::Keyring::load_or_create(&cfg.data_dir)?);
    let trust = trust::TrustStore::load(&cfg.trust_store_path())?;
    if trust.keys.is_empty() {
        tracing::warn!("the trust store is empty: every cloud command will be refused (vistter-agent trust add)");
    }
    let trust = Arc::new(RwLock::new(trust));
    let bounds = Bounds { max_messages: cfg.control.outbox_max_messages, max_bytes: cfg.control.outbox_max_bytes };
    let outbox = Outbox::start(store.clone(), device_id.to_string(), keys.clone(), routes.clone(), bounds).await?;
    let inbox = Arc::new(Inbox {
        device_id,
        trust: trust.clone(),
        keys: keys.clone(),
        store: store.clone(),
        outbox: outbox.clone(),
        trust_path: cfg.trust_store_path(),
        max_bytes: cfg.control.max_message_bytes,
        max_skew_s: cfg.control.max_skew_s,
        exec: exec.clone(),
        floor_ms: std::sync::atomic::AtomicI64::new(inbox::FLOOR_UNKNOWN),
        segments: Some(crate::segments::library::Library::new(store.clone(), &cfg.data_dir)),
    });
    let links = link::Links::new(&routes);
    let mut tasks = vec![
        tokio::spawn(trust::watch(cfg.trust_store_path(), trust, Duration::from_secs(2), stop.clone())),
        tokio::spawn(keys::watch(keys, Duration::from_secs(2), stop.clone())),
        tokio::spawn(telemetry::export_events(store.clone(), outbox.clone(), Duration::from_secs(1), stop.clone())),
        tokio::spawn(telemetry::metrics(
            outbox,
            exec,
            cfg.data_dir.clone(),
            Duration::from_secs(cfg.control.metrics_interval_s),
            stop.clone(),
        )),
    ];
    if let Some(m) = cfg.control.mqtt.clone() {
        let prefix = cfg.control.topic_prefix.clone();
        tasks.push(tokio::spawn(mqtt::run(m, prefix, inbox.clone(), links.clone(), stop.clone())));
    }
    if let Some(w) = cfg.control.ws.clone() {
        tasks.push(tokio::spawn(ws::run(w, inbox, links.clone(), stop.clone())));
    }
    let mut watch = links.subscribe();
    let file = links_file(&cfg.data_dir);
    tasks.push(tokio::spawn(async move {
        loop {
            let now = watch.borrow_and_update().clone();
            tracing::info!(links = ?now, "cloud link state");
            // For `vistter-agent status`: the links as this daemon (pid) sees them.
            let doc =
                serde_json::json!({"pid": std::process::id(), "at": jiff::Timestamp::now().to_string(), "links": now});
            let tmp = file.with_extension("json.tmp");
            if std::fs::write(&tmp, doc.to_string()).and_then(|_| std::fs::rename(&tmp, &file)).is_err() {
                tracing::warn!("{} could not be written", file.display());
            }
            if watch.changed().await.is_err() {
                break;
            }
        }
    }));
    Ok(Some(ControlPlane { links, tasks }))
}

/// Where the daemon keeps its links' current state (`vistter-agent status` reads it).
pub fn links_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("cloud_links.json")
}
