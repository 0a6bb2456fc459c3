//! Pre-flight: what is checked before a show goes live. Blockers (unknown or
//! disabled-only destinations, an invalid timeline, no usable encoder) stop the start; warnings
//! (a camera that does not answer a probe) are reported and the show goes on, the fallback
//! standing in.
//!
//! A camera whose last probe succeeded recently (see [`probe_cache`](crate::media::probe_cache))
//! does not hold the start up: it is probed in the background and a failure is recorded as a
//! `preflight_warning` event once known. A camera never probed is probed now. The encoder check
//! and the camera probes run side by side.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ctx::Ctx;
use super::load::load_timeline;
use super::model::Timeline;
use crate::media::probe_cache::TRUST_FOR;
use crate::store::Severity;

/// How long pre-flight waits for a camera that was never probed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Preflight {
    pub blockers: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks a show before it goes live (see the module doc).
pub async fn preflight(ctx: &Ctx<'_>, timeline_id: &str, destinations: &[impl AsRef<str>]) -> Preflight {
    let mut p = Preflight::default();
    let tl = match load_timeline(ctx.store, timeline_id).await {
        Ok((tl, _)) => Some(tl),
        Err(e) => {
            p.blockers.push(e.to_string());
            None
        }
    };
    if destinations.is_empty() {
        p.blockers.push("no destination: the show would go nowhere".into());
    }
    let mut enabled = 0;
    for d in destinations {
        let d = d.as_ref();
        let found = match crate::values::DestinationId::new(d) {
            Ok(id) => ctx.store.destination(&id).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match found {
            Ok(dest) if dest.enabled => enabled += 1,
            Ok(_) => p.warnings.push(format!("destination {d:?} is disabled")),
            Err(e) => p.blockers.push(e),
        }
    }
    if !destinations.is_empty() && enabled == 0 {
        p.blockers.push("every destination is disabled".into());
    }
    let hwaccel_cache = ctx.cfg.data_dir.join("hwaccel.json");
    let encoder = crate::media::hwaccel::cached(&ctx.cfg.ffmpeg.path, &hwaccel_cache, false);
    let (encoder, cameras) = tokio::join!(encoder, check_cameras(ctx, tl.as_deref()));
    if let Err(e) = encoder {
        p.blockers.push(format!("no usable encoder: {e}"));
    }
    p.warnings.extend(cameras);
    p
}

/// Pre-flight as a start runs it: warnings become events (the show goes on, the fallback standing
/// in); blockers become a `preflight_failed` event and the report comes back as the error.
pub async fn checked(
    ctx: &Ctx<'_>,
    timeline_id: &str,
    destinations: &[impl AsRef<str>],
) -> Result<Preflight, Preflight> {
    let report = preflight(ctx, timeline_id, destinations).await;
    let subject = format!("timeline:{timeline_id}");
    for w in &report.warnings {
        let _ = ctx.store.add_event(Severity::Warning, "preflight_warning", &subject, w).await;
    }
    if report.blockers.is_empty() {
        return Ok(report);
    }
    let _ = ctx.store.add_event(Severity::Error, "preflight_failed", &subject, &report.blockers.join("; ")).await;
    Err(report)
}

fn not_answering(id: &str, e: &crate::media::probe::ProbeError) -> String {
    format!("camera {id:?} does not answer ({e}): its fallback will stand in")
}

/// Probes the timeline's cameras that were not probed recently; the others are checked in the
/// background. The warnings of the cameras probed now.
async fn check_cameras(ctx: &Ctx<'_>, tl: Option<&Timeline>) -> Vec<String> {
    let Some(tl) = tl else { return vec![] };
    let mut probes = Vec::new();
    for id in tl.cameras() {
        let Ok(c) = ctx.store.camera(&id).await else { continue };
        let src = c.source();
        let (cache, ffprobe) = (ctx.env.probes.clone(), ctx.env.ffprobe.clone());
        if let Some(k) = cache.known(&src, TRUST_FOR) {
            tracing::info!(camera = %id, age_s = k.age.as_secs(), "pre-flight: camera known from its last probe; checking it in the background");
            let (store, subject) = (ctx.store.clone(), format!("timeline:{}", tl.id));
            tokio::spawn(async move {
                if let Err(e) = cache.probe(&ffprobe, &src, PROBE_TIMEOUT).await {
                    let _ = store
                        .add_event(Severity::Warning, "preflight_warning", &subject, &not_answering(id.as_str(), &e))
                        .await;
                }
            });
        } else {
            probes.push(async move { (id.clone(), cache.probe(&ffprobe, &src, PROBE_TIMEOUT).await) });
        }
    }
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .filter_map(|(id, r)| r.err().map(|e| not_answering(id.as_str(), &e)))
        .collect()
}
