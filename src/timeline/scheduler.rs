//! The scheduler: [`plan`] decides, purely, what the schedules want now; its task, at every change
//! of a schedule window (at least every second), asks [`plan`] what should play and has the director do it, with the schedule as origin
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
use super::ctx::Ctx;
use super::director::{DesiredShow, DirectorError, DirectorHandle};
use super::preflight;
use super::schedule::{self, ValidSchedule};
use crate::config::Config;
use crate::media::MediaEnv;
use crate::store::{Severity, Store};
use crate::values::{ScheduleId, TimelineId};

/// What the schedules want now, given what plays.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Keep,
    Start(DesiredShow),
    Stop,
}

/// The scheduler's decision, pure: active window → which timeline (round-robin) and where in it.
/// `durations_s` of each timeline id (missing: not loaded, skipped); `current` is what plays and
/// whether it has ended.
pub fn plan(
    schedules: &[ValidSchedule],
    durations_s: &HashMap<TimelineId, f64>,
    now: Timestamp,
    current: Option<(&DesiredShow, bool)>,
) -> Plan {
    let Some(w) = schedule::active(schedules, now) else {
        return match current {
            Some((d, _)) if d.origin == Origin::Schedule => Plan::Stop,
            _ => Plan::Keep,
        };
    };
    if let Some((d, _)) = current {
        if d.origin > Origin::Schedule {
            return Plan::Keep;
        }
    }
    let Some(s) = schedules.iter().find(|s| *s.id() == w.schedule_id) else { return Plan::Keep };
    let sched = s.schedule();
    let playable: Vec<(TimelineId, f64)> =
        sched.timelines.iter().filter_map(|t| Some((t.clone(), *durations_s.get(t.as_str())?))).collect();
    if playable.is_empty() {
        return Plan::Keep;
    }
    let since = now.duration_since(w.start).as_secs_f64();
    let durs: Vec<f64> = playable.iter().map(|p| p.1).collect();
    let (i, offset) = schedule::rotation(&durs, since);
    let timeline_id = playable[i].0.clone();
    if let Some((d, ended)) = current {
        let same = d.origin == Origin::Schedule
            && d.schedule_id.as_ref() == Some(&w.schedule_id)
            && d.timeline_id == timeline_id;
        // The same timeline keeps playing; a finished one starts again when its turn comes round.
        if same && !(ended && offset < durs[i] / 2.0) {
            return Plan::Keep;
        }
    }
    Plan::Start(DesiredShow {
        timeline_id,
        origin: Origin::Schedule,
        schedule_id: Some(w.schedule_id.clone()),
        destinations: sched.destinations.clone(),
        anchor_unix_us: now.as_microsecond() - (offset * 1e6) as i64,
        paused_pos_us: None,
        pinned: None,
        bitrate_kbps: None,
        emergency_slate: false,
    })
}

struct Scheduler {
    cfg: Config,
    store: Store,
    env: MediaEnv,
    director: DirectorHandle,
    /// Schedules as last loaded (reloaded when the table changes).
    schedules: Vec<ValidSchedule>,
    schedules_sig: String,
    /// A scheduled start that failed is retried from this time (timeline id, when).
    retry_at: Option<(TimelineId, Timestamp)>,
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
        let p = plan(&self.schedules, &durations, now, view.desired.as_ref().map(|d| (d, ended)));
        if !matches!(p, Plan::Start(_)) && view.desired.is_none() {
            self.prepare_next(&durations, now, view.prepared.as_ref().map(TimelineId::as_str)).await;
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
                tracing::info!(timeline = %d.timeline_id, schedule = ?d.schedule_id.as_ref().map(ScheduleId::as_str), "schedule: starting the show");
                let view = self.director.view();
                let checked = view.prepared.as_ref() == Some(&d.timeline_id) && view.program.is_some();
                if let Err(e) = self.start(d.clone(), checked).await {
                    // Not every second: a misconfigured schedule must not flood the log or the disk.
                    self.retry_at = Some((d.timeline_id.clone(), now + jiff::SignedDuration::from_secs(30)));
                    tracing::error!(timeline = %d.timeline_id, "schedule could not start the show (retry in 30 s): {e}");
                    let _ = self
                        .store
                        .add_event(
                            Severity::Error,
                            "schedule_failed",
                            &format!("schedule:{}", d.schedule_id.as_ref().map(ScheduleId::as_str).unwrap_or_default()),
                            &e.to_string(),
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

    async fn start(&self, d: DesiredShow, checked: bool) -> Result<(), DirectorError> {
        let epoch = self.director.epoch();
        if !checked {
            preflight::checked(&self.ctx(), d.timeline_id.as_str(), &d.destinations)
                .await
                .map_err(DirectorError::Blocked)?;
        }
        let retired = self.director.start(d, None, epoch).await?;
        retired.finish().await;
        Ok(())
    }

    /// Prepares the show of a window opening within `timeline.prepare_lead_ms`, or drops a
    /// preparation nobody needs any more.
    async fn prepare_next(&mut self, durations: &HashMap<TimelineId, f64>, now: Timestamp, prepared: Option<&str>) {
        let lead = Duration::from_millis(self.cfg.timeline.prepare_lead_ms);
        let next = schedule::next_change(&self.schedules, now)
            .filter(|t| t.duration_since(now).unsigned_abs() <= lead)
            .and_then(|t| match plan(&self.schedules, durations, t, None) {
                Plan::Start(d) => Some(d),
                _ => None,
            });
        match (next, prepared) {
            (Some(d), Some(p)) if d.timeline_id.as_str() == p => {}
            (Some(d), _) => {
                // Pre-flight now, while nothing decodes the cameras yet; the start then skips it.
                if let Err(r) = preflight::checked(&self.ctx(), d.timeline_id.as_str(), &d.destinations).await {
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
            match schedule::from_json(&json).and_then(|s| schedule::validate(&s)) {
                Ok(v) => self.schedules.push(v),
                Err(e) => tracing::error!(schedule = %id, "ignored: {e}"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The scheduler's decisions under a fake wall clock: every instant is given, none is read.
    use super::*;
    use crate::timeline::schedule::{LocalTime, Schedule, Weekday};
    use crate::values::DestinationId;

    fn sched(id: &str, tz: &str, start: &str, end: &str, timelines: &[&str]) -> ValidSchedule {
        use Weekday::*;
        schedule::validate(&Schedule {
            id: ScheduleId::new(id).unwrap(),
            name: id.into(),
            enabled: true,
            timezone: tz.into(),
            days_of_week: vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun],
            window_start: start.parse::<LocalTime>().unwrap(),
            window_end: end.parse::<LocalTime>().unwrap(),
            timelines: timelines.iter().map(|s| TimelineId::new(*s).unwrap()).collect(),
            destinations: vec![DestinationId::new("d1").unwrap()],
        })
        .unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn durations() -> HashMap<TimelineId, f64> {
        [("t1", 600.0), ("t2", 1200.0)].into_iter().map(|(t, d)| (TimelineId::new(t).unwrap(), d)).collect()
    }

    fn show(timeline: &str, origin: Origin, schedule: Option<&str>) -> DesiredShow {
        DesiredShow {
            timeline_id: TimelineId::new(timeline).unwrap(),
            origin,
            schedule_id: schedule.map(|s| ScheduleId::new(s).unwrap()),
            destinations: vec![DestinationId::new("d1").unwrap()],
            anchor_unix_us: 0,
            paused_pos_us: None,
            pinned: None,
            bitrate_kbps: None,
            emergency_slate: false,
        }
    }

    /// Runs the scheduler from `from` to `to` the way the daemon does: evaluate, then sleep to the
    /// next change (the fake clock jumps there), applying each plan to the "running" show.
    fn walk(s: &[ValidSchedule], from: &str, to: &str) -> Vec<(Timestamp, String)> {
        let (mut now, end) = (ts(from), ts(to));
        let mut current: Option<DesiredShow> = None;
        let mut log = Vec::new();
        while now < end {
            match plan(s, &durations(), now, current.as_ref().map(|d| (d, false))) {
                Plan::Keep => {}
                Plan::Stop => {
                    current = None;
                    log.push((now, "stop".to_string()));
                }
                Plan::Start(d) => {
                    log.push((now, format!("start {}", d.timeline_id)));
                    current = Some(d);
                }
            }
            // Round-robin turns are not window changes: look at least every minute as well.
            let next = schedule::next_change(s, now).unwrap_or(end);
            now = next.min(now + jiff::SignedDuration::from_secs(60));
        }
        log
    }

    #[test]
    fn an_overnight_window_across_london_spring_forward_starts_and_stops_at_the_right_instants() {
        let s = [sched("night", "Europe/London", "22:00", "06:00", &["t1"])];
        let log = walk(&s, "2026-03-28T20:00:00Z", "2026-03-29T12:00:00Z");
        // 22:00 GMT = 22:00Z; 06:00 BST = 05:00Z: a 7 h night.
        assert_eq!(
            log,
            vec![(ts("2026-03-28T22:00:00Z"), "start t1".into()), (ts("2026-03-29T05:00:00Z"), "stop".into())]
        );
    }

    #[test]
    fn new_york_fall_back_makes_a_nine_hour_night_and_rotates_timelines_in_turn() {
        let s = [sched("night", "America/New_York", "22:00", "06:00", &["t1", "t2"])];
        let log = walk(&s, "2026-11-01T01:00:00Z", "2026-11-01T12:00:00Z");
        // 22:00 EDT = 02:00Z; 06:00 EST = 11:00Z. t1 600 s then t2 1200 s, round and round.
        assert_eq!(log.first().unwrap(), &(ts("2026-11-01T02:00:00Z"), "start t1".to_string()));
        assert_eq!(log[1], (ts("2026-11-01T02:10:00Z"), "start t2".to_string()));
        assert_eq!(log[2], (ts("2026-11-01T02:30:00Z"), "start t1".to_string()));
        assert_eq!(log.last().unwrap(), &(ts("2026-11-01T11:00:00Z"), "stop".to_string()));
        assert_eq!(log.len(), 9 * 2 * 2 + 1, "a t1+t2 pair every 30 min for 9 h, then the stop: {log:?}");
    }

    #[test]
    fn a_daily_window_keeps_its_local_time_across_both_changes() {
        let s = [sched("day", "Europe/London", "09:00", "17:00", &["t1"])];
        for (day, start_utc) in [
            ("2026-03-28", "2026-03-28T09:00:00Z"),
            ("2026-03-29", "2026-03-29T08:00:00Z"),
            ("2026-10-24", "2026-10-24T08:00:00Z"),
            ("2026-10-25", "2026-10-25T09:00:00Z"),
        ] {
            let log = walk(&s, &format!("{day}T00:00:00Z"), &format!("{day}T23:00:00Z"));
            assert_eq!(log[0], (ts(start_utc), "start t1".to_string()), "{day}");
            assert_eq!(log.last().unwrap().0, ts(start_utc) + jiff::SignedDuration::from_hours(8), "{day}");
        }
    }

    #[test]
    fn cloud_outranks_a_schedule_and_a_schedule_outranks_the_operator() {
        let s = [sched("day", "UTC", "09:00", "17:00", &["t1"])];
        let noon = ts("2026-06-01T12:00:00Z");
        let cloud = show("other", Origin::Cloud, None);
        assert_eq!(plan(&s, &durations(), noon, Some((&cloud, false))), Plan::Keep);
        let op = show("other", Origin::Operator, None);
        assert!(
            matches!(plan(&s, &durations(), noon, Some((&op, false))), Plan::Start(d) if d.timeline_id.as_str() == "t1")
        );
        // Outside the window: the operator's show is left alone, a scheduled one stops.
        let evening = ts("2026-06-01T18:00:00Z");
        assert_eq!(plan(&s, &durations(), evening, Some((&op, false))), Plan::Keep);
        let mine = show("t1", Origin::Schedule, Some("day"));
        assert_eq!(plan(&s, &durations(), evening, Some((&mine, false))), Plan::Stop);
        // The same show keeps playing (no restart) while its window lasts.
        assert_eq!(plan(&s, &durations(), noon, Some((&mine, false))), Plan::Keep);
    }

    #[test]
    fn a_scheduled_show_is_anchored_to_its_window_not_to_when_it_was_noticed() {
        let s = [sched("day", "UTC", "09:00", "17:00", &["t1", "t2"])];
        // Noticed 25 min into the window (an agent that just rebooted): t2, 15 min in.
        let Plan::Start(d) = plan(&s, &durations(), ts("2026-06-01T09:25:00Z"), None) else { panic!() };
        assert_eq!(d.timeline_id.as_str(), "t2");
        assert_eq!(d.position_at(ts("2026-06-01T09:25:00Z")), 900_000_000);
    }
}
