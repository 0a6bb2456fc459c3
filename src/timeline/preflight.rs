//! Pre-flight: what is checked before a show goes live (DESIGN §5). Blockers (unknown or
//! disabled-only destinations, an invalid timeline, no usable encoder) stop the start; warnings
//! (a camera that does not answer a probe) are reported and the show goes on, the fallback
//! standing in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::director::{load_timeline, Ctx};
use crate::store::Severity;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Preflight {
    pub blockers: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks a show before it goes live (see the module doc).
pub async fn preflight(ctx: &Ctx<'_>, timeline_id: &str, destinations: &[String]) -> Preflight {
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
        match ctx.store.destination(d).await {
            Ok(dest) if dest.enabled => enabled += 1,
            Ok(_) => p.warnings.push(format!("destination {d:?} is disabled")),
            Err(e) => p.blockers.push(e.to_string()),
        }
    }
    if !destinations.is_empty() && enabled == 0 {
        p.blockers.push("every destination is disabled".into());
    }
    if let Err(e) =
        crate::media::hwaccel::cached(&ctx.cfg.ffmpeg.path, &ctx.cfg.data_dir.join("hwaccel.json"), false).await
    {
        p.blockers.push(format!("no usable encoder: {e}"));
    }
    if let Some(tl) = tl {
        let mut probes = Vec::new();
        for id in tl.cameras() {
            if let Ok(c) = ctx.store.camera(&id).await {
                let src = c.source();
                let ffprobe = ctx.env.ffprobe.clone();
                probes.push(async move {
                    let r = crate::media::probe::probe_camera(&ffprobe, &src, Duration::from_secs(4)).await;
                    (id, r)
                });
            }
        }
        for (id, r) in futures_util::future::join_all(probes).await {
            if let Err(e) = r {
                p.warnings.push(format!("camera {id:?} does not answer ({e}): its fallback will stand in"));
            }
        }
    }
    p
}

/// Pre-flight as a start runs it: warnings become events (the show goes on, the fallback standing
/// in); blockers become a `preflight_failed` event and the report comes back as the error.
pub async fn checked(ctx: &Ctx<'_>, timeline_id: &str, destinations: &[String]) -> Result<Preflight, Preflight> {
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
