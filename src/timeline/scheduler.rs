//! The scheduler's task: every change of a schedule window (at least every second) it asks
//! [`director::plan`] what should play and has the director do it, with the schedule as origin
//! (below the cloud, above the operator). Pre-flight (which probes cameras) runs here, never on
//! the director's task, so an emergency is never held up behind a scheduled start.
//!
//! A scheduled show is prepared `timeline.prepare_lead_ms` before its window (cameras decoding,
//! encoder warm, no destination), so going live at the window start is connecting the
//! destinations. A start that fails is retried every 30 s, not every second.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::actor::Origin;
use super::director::{self, Ctx, DesiredShow, DirectorHandle, Plan};
use super::preflight;
use super::schedule::{self, ValidSchedule};
use crate::config::Config;
use crate::media::MediaEnv;
use crate::store::{Severity, Store};

struct Scheduler {
    cfg: Config,
    store: Store,
    env: MediaEnv,
    director: DirectorHandle,
    /// Schedules as last loaded (reloaded when the table changes).
    schedules: Vec<ValidSchedule>,
    schedules_sig: String,
    /// A scheduled start that failed is retried from this time (timeline id, when).
    retry_at: Option<(String, Timestamp)>,
}

pub fn spawn(cfg: Config, store: Store, env: MediaEnv, director: DirectorHandle, shutdown: CancellationToken) {
    let mut s =
        Scheduler { cfg, store, env, director, schedules: Vec::new(), schedules_sig: String::new(), retry_at: None };
    tokio::spawn(async move {
        loop {
            let next = s.tick(Timestamp::now()).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(next) => {}
            }
        }
    });
}

impl Scheduler {
    fn ctx(&self) -> Ctx<'_> {
        Ctx { cfg: &self.cfg, store: &self.store, env: &self.env }
    }

    /// Reloads schedules if they changed, then applies the plan. Returns when to look again.
    async fn tick(&mut self, now: Timestamp) -> Duration {
        if let Err(e) = self.reload().await {
            tracing::error!("schedules: {e}");
        }
        let view = self.director.view();
        let scheduled_show = view.desired.as_ref().is_some_and(|d| d.origin == Origin::Schedule);
        if self.schedules.is_empty() && view.prepared.is_none() && !scheduled_show {
            // Nothing to schedule: no database reads every second.
            return Duration::from_secs(1);
        }
        let durations = match self.store.timeline_durations().await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("schedules: {e}");
                return Duration::from_secs(1);
            }
        };
        let ended = view.ended();
        let p = director::plan(&self.schedules, &durations, now, view.desired.as_ref().map(|d| (d, ended)));
        if !matches!(p, Plan::Start(_)) && view.desired.is_none() {
            self.prepare_next(&durations, now, view.prepared.as_deref()).await;
        }
        match p {
            Plan::Keep => {}
            Plan::Stop => {
                tracing::info!("schedule window over: stopping the show");
                if let Ok(retired) = self.director.stop(Origin::Schedule).await {
                    retired.finish().await;
                }
            }
            Plan::Start(d) if self.retry_at.as_ref().is_some_and(|(k, t)| *k == d.timeline_id && now < *t) => {}
            Plan::Start(d) => {
                tracing::info!(timeline = %d.timeline_id, schedule = ?d.schedule_id, "schedule: starting the show");
                let view = self.director.view();
                let checked = view.prepared.as_deref() == Some(d.timeline_id.as_str()) && view.program.is_some();
                if let Err(e) = self.start(d.clone(), checked).await {
                    // Not every second: a misconfigured schedule must not flood the log or the disk.
                    self.retry_at = Some((d.timeline_id.clone(), now + jiff::SignedDuration::from_secs(30)));
                    tracing::error!(timeline = %d.timeline_id, "schedule could not start the show (retry in 30 s): {e}");
                    let _ = self
                        .store
                        .add_event(
                            Severity::Error,
                            "schedule_failed",
                            &format!("schedule:{}", d.schedule_id.unwrap_or_default()),
                            &e,
                        )
                        .await;
                }
            }
        }
        let next = schedule::next_change(&self.schedules, now)
            .map(|t| t.duration_since(now).unsigned_abs())
            .unwrap_or(Duration::from_secs(60));
        next.clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    async fn start(&self, d: DesiredShow, checked: bool) -> Result<(), String> {
        let epoch = self.director.epoch();
        if !checked {
            preflight::checked(&self.ctx(), &d.timeline_id, &d.destinations)
                .await
                .map_err(|r| format!("pre-flight failed: {}", r.blockers.join("; ")))?;
        }
        let retired = self.director.start(d, None, epoch).await.map_err(|e| e.to_string())?;
        retired.finish().await;
        Ok(())
    }

    /// Prepares the show of a window opening within `timeline.prepare_lead_ms`, or drops a
    /// preparation nobody needs any more.
    async fn prepare_next(&mut self, durations: &HashMap<String, f64>, now: Timestamp, prepared: Option<&str>) {
        let lead = Duration::from_millis(self.cfg.timeline.prepare_lead_ms);
        let next = schedule::next_change(&self.schedules, now)
            .filter(|t| t.duration_since(now).unsigned_abs() <= lead)
            .and_then(|t| match director::plan(&self.schedules, durations, t, None) {
                Plan::Start(d) => Some(d),
                _ => None,
            });
        match (next, prepared) {
            (Some(d), Some(p)) if d.timeline_id == p => {}
            (Some(d), _) => {
                // Pre-flight now, while nothing decodes the cameras yet; the start then skips it.
                if let Err(r) = preflight::checked(&self.ctx(), &d.timeline_id, &d.destinations).await {
                    tracing::warn!(timeline = %d.timeline_id, "cannot prepare the scheduled show: {}", r.blockers.join("; "));
                    return;
                }
                match self.director.prepare(d.clone()).await {
                    Ok(retired) => retired.finish().await,
                    Err(e) => tracing::warn!(timeline = %d.timeline_id, "cannot prepare the scheduled show: {e}"),
                }
            }
            (None, Some(_)) => {
                if let Ok(retired) = self.director.unprepare().await {
                    retired.finish().await;
                }
            }
            (None, None) => {}
        }
    }

    async fn reload(&mut self) -> Result<(), crate::store::StoreError> {
        let rows = self.store.schedules().await?;
        let sig: String = rows.iter().map(|(id, j)| format!("{id}={j};")).collect();
        if sig == self.schedules_sig {
            return Ok(());
        }
        self.schedules_sig = sig;
        self.schedules.clear();
        for (id, json) in rows {
            match serde_json::from_str::<schedule::Schedule>(&json)
                .map_err(|e| e.to_string())
                .and_then(|s| schedule::validate(&s).map_err(|e| e.to_string()))
            {
                Ok(v) => self.schedules.push(v),
                Err(e) => tracing::error!(schedule = %id, "ignored: {e}"),
            }
        }
        Ok(())
    }
}
