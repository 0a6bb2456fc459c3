//! `TIMELINE_LOAD`: a package downloaded over HTTPS then imported like any other, or an inline
//! timeline (no assets) checked and stored. Progress goes out as `(percent, detail)`: the download
//! is the first 90 %, verifying and installing the rest.
//!
//! Only the cloud link sends it: the cloud inbox lends the command what it knows once every check
//! passed ([`FromCloud`]: the trust store, the trusted time, the progress channel), in a field no
//! other origin can set; without it the dispatcher refuses the command.

use std::path::PathBuf;

use tokio::sync::watch;

use super::{ErrorCode, LoadSource, Output, Refusal, TimelineLoad};
use crate::config::Config;
use crate::segments::library::{Import, Library, Source};
use crate::segments::{download, Limits, Rejection, Threat};
use crate::store::{Store, StoreError};
use crate::timeline::model::{self, Inventory};
use crate::trust::TrustStore;

/// What the cloud inbox lends a `TIMELINE_LOAD` it accepted. Never read from or written to the
/// wire (`#[serde(skip)]`): no other origin can set it.
#[derive(Clone)]
pub struct FromCloud {
    /// The trust store as it was when the command was accepted: package signatures are checked
    /// against it.
    pub trust: TrustStore,
    pub device_id: crate::values::DeviceId,
    /// The trusted time (the clock, never earlier than the persisted time floor).
    pub now: jiff::Timestamp,
    /// `(percent, detail)`: the inbox sends a PROGRESS when it moves.
    pub progress: watch::Sender<(u8, String)>,
}

impl std::fmt::Debug for FromCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromCloud").field("device_id", &self.device_id).field("now", &self.now).finish_non_exhaustive()
    }
}

impl PartialEq for FromCloud {
    fn eq(&self, other: &FromCloud) -> bool {
        self.trust == other.trust && self.device_id == other.device_id && self.now == other.now
    }
}

/// Where `TIMELINE_LOAD` downloads packages until they are imported.
pub fn downloads_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("segments").join(".downloads")
}

/// Downloads and the segment library, where `TIMELINE_LOAD` puts what it loads.
pub struct Loader {
    pub library: Library,
    pub store: Store,
    /// Where downloads are kept until imported.
    pub downloads: PathBuf,
    pub limits: Limits,
    pub ca_file: Option<PathBuf>,
}

/// A refused package as a command refusal: the threat's code leads the message.
pub fn refusal(r: Rejection) -> Refusal {
    let code = match r.threat {
        Threat::Rollback | Threat::Conflict => ErrorCode::Conflict,
        _ => ErrorCode::Failed,
    };
    Refusal::new(code, format!("{}: {}", r.threat.code(), r.message))
}

impl Loader {
    /// The daemon's loader: its segment library and download folder under the data dir.
    pub fn new(cfg: &Config, store: Store) -> Loader {
        Loader {
            library: Library::new(store.clone(), &cfg.data_dir),
            store,
            downloads: downloads_dir(&cfg.data_dir),
            limits: cfg.segments.limits,
            ca_file: cfg.segments.download_ca_file.clone(),
        }
    }

    /// Loads `t`, which the cloud inbox accepted (`from_cloud` set; refused otherwise).
    pub async fn run(&self, t: TimelineLoad) -> Result<Output, Refusal> {
        let Some(cloud) = t.from_cloud.clone() else {
            return Err(Refusal::new(
                ErrorCode::Failed,
                "TIMELINE_LOAD comes through the cloud link; on the device use `vistter-agent segment import`",
            ));
        };
        self.load(t, &cloud.trust, cloud.device_id.as_str(), cloud.now, &cloud.progress).await
    }

    async fn load(
        &self,
        t: TimelineLoad,
        trust: &TrustStore,
        device_id: &str,
        now: jiff::Timestamp,
        progress: &watch::Sender<(u8, String)>,
    ) -> Result<Output, Refusal> {
        let activate = t.activate.unwrap_or(false);
        match t.source()? {
            LoadSource::Inline(doc) => self.inline(doc).await,
            LoadSource::Package(w) => {
                // One download at a time: two loads of the same package share its `.part` file.
                static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
                let _one = LOADING.lock().await;
                if w.size > self.limits.max_compressed_bytes {
                    return Err(refusal(Rejection::new(
                        Threat::TooLarge,
                        format!("{} bytes: over the package limit of {}", w.size, self.limits.max_compressed_bytes),
                    )));
                }
                let client = download::client(self.ca_file.as_deref())
                    .map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?;
                let (bytes_tx, mut bytes_rx) = watch::channel(0u64);
                let size = w.size;
                let fetch = download::fetch(&client, &w, &self.downloads, &bytes_tx);
                tokio::pin!(fetch);
                let file = loop {
                    tokio::select! {
                        r = &mut fetch => break r.map_err(refusal)?,
                        Ok(()) = bytes_rx.changed() => {
                            let n = *bytes_rx.borrow_and_update();
                            let pct = (n.min(size) * 90 / size.max(1)) as u8;
                            progress.send_replace((pct, format!("downloading: {n} of {size} bytes")));
                        }
                    }
                };
                progress.send_replace((90, "verifying and installing".into()));
                let how = Import {
                    trust,
                    device_id,
                    now,
                    limits: self.limits,
                    allow_downgrade: false,
                    activate,
                    source: Source::Cloud,
                };
                let p = progress.clone();
                let total = size;
                let r = self
                    .library
                    .import_file(&file, how, move |n| {
                        // The reader counts unpacked bytes; the package's size is close enough.
                        let pct = 90 + (n.min(total) * 9 / total.max(1)) as u8;
                        if p.borrow().0 != pct {
                            p.send_replace((pct, format!("verifying and installing: {n} bytes")));
                        }
                    })
                    .await;
                let _ = std::fs::remove_file(&file);
                match r {
                    Ok(installed) => Ok(Output::SegmentInstalled { segment: installed }),
                    Err(e) => {
                        self.library.rejected(w.url.as_str(), &Source::Cloud, &e).await;
                        Err(refusal(e))
                    }
                }
            }
        }
    }

    async fn inline(&self, doc: serde_json::Value) -> Result<Output, Refusal> {
        let inv = Inventory {
            cameras: self.store.camera_inventory().await.map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?,
            asset_root: None,
        };
        let tl = model::check_value(&doc, &inv).map_err(|e| Refusal::field("payload.timeline", e.to_string()))?;
        if !tl.assets().is_empty() {
            return Err(Refusal::field(
                "payload.timeline",
                "an inline timeline cannot use assets: send them in a segment package (package_url)",
            ));
        }
        let json = doc.to_string();
        self.store.put_timeline(&tl.id, &tl.name, &json, None, tl.duration as f64 / 1e6).await.map_err(
            |e| match e {
                StoreError::OwnedBySegment { .. } => Refusal {
                    code: ErrorCode::Conflict,
                    field: Some("payload.timeline.id".into()),
                    message: e.to_string(),
                },
                e => Refusal::new(ErrorCode::Failed, e.to_string()),
            },
        )?;
        Ok(Output::TimelineLoaded { timeline_id: tl.id.clone() })
    }
}
