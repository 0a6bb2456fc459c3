//! `TIMELINE_LOAD` (DESIGN §3): a package downloaded over HTTPS then imported like any other, or
//! an inline timeline (no assets) checked and stored. Progress goes out as `(percent, detail)`:
//! the download is the first 90 %, verifying and installing the rest.

use std::path::PathBuf;

use tokio::sync::watch;

use super::library::{Import, Library, Source};
use super::{download, Limits, Rejection, Threat};
use crate::command::{ErrorCode, LoadSource, Output, Refusal, TimelineLoad};
use crate::control::trust::TrustStore;
use crate::store::{Store, StoreError};
use crate::timeline::model::{self, Inventory};
use crate::values::TimelineId;

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
    pub async fn run(
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
                let client =
                    download::client(self.ca_file.as_deref()).map_err(|e| Refusal::new(ErrorCode::Failed, e))?;
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
        let timeline_id =
            TimelineId::new(tl.id.as_str()).map_err(|e| Refusal::field("payload.timeline.id", e.to_string()))?;
        self.store.put_timeline(&timeline_id, &tl.name, &json, None, tl.duration as f64 / 1e6).await.map_err(|e| {
            match e {
                StoreError::OwnedBySegment { .. } => Refusal {
                    code: ErrorCode::Conflict,
                    field: Some("payload.timeline.id".into()),
                    message: e.to_string(),
                },
                e => Refusal::new(ErrorCode::Failed, e.to_string()),
            }
        })?;
        Ok(Output::TimelineLoaded { timeline_id: tl.id })
    }
}
