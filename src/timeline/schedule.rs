//! Schedules: when the show is on air, and which timeline plays, computed from a wall clock the caller passes in.
//!
//! This is the wall-clock scheduler's pure core (the timelines it plays are checked by
//! [`model`](super::model)). Nothing here reads a clock or does I/O: "now" is always a [`Timestamp`] argument, so
//! the actor can inject a fake clock and the tests can pin every instant.
//!
//! A [`Schedule`] is the operator's input; [`validate`] is the only way to a [`ValidSchedule`], which holds the
//! parsed IANA zone and is the only input the evaluator accepts. Every day `D` listed in `days_of_week` gives one
//! window, from `window_start` on `D` to `window_end` on `D` — or on `D + 1` when `window_end <= window_start`
//! (an overnight window; equal times make a 24 h window). An overnight window belongs to the day it starts on:
//! `mon 22:00–06:00` is on air from Monday night to Tuesday morning, and not on Monday morning. Each local end
//! of a window is turned into an instant with the schedule's zone, and windows are half-open: on air from
//! `start` inclusive to `end` exclusive.
//!
//! DST rules. The window's ends are local clock times, so a window at 09:00 starts at 09:00 local on both sides
//! of a change (its UTC instant moves by an hour), and a 22:00–06:00 window spanning a change lasts 7 h (spring
//! forward) or 9 h (fall back) of real time. **A local time that does not exist (spring-forward gap) is moved
//! forward by the length of the gap (01:30 in London on its spring-forward day is 02:30 BST), and a local time
//! that occurs twice (fall-back fold) is its first, earlier occurrence (01:30 BST, not 01:30 GMT)** — jiff's
//! `compatible` disambiguation, the rule of RFC 5545 and JavaScript's Temporal. When that makes a window's end
//! not later than its start (only possible for a short window touching a gap, e.g. 01:30–02:15 in London on
//! that day), the window is empty: that day has no window.
//!
//! Several schedules: list order is priority, and [`active`] is the containing window of the first schedule
//! that has one. [`next_change`] is the earliest window start or end of any schedule after now, so the caller
//! sleeps until then and evaluates again; it may return an instant where nothing visible changes (a window of a
//! lower-priority schedule under a higher one), never miss one where something does. Within a window the
//! timelines play in order, round-robin, from the window's start ([`rotation`]).

use std::fmt;
use std::str::FromStr;

use jiff::civil::{self, Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::values::{DestinationId, ScheduleId, TimelineId};

/// How far ahead [`ValidSchedule::next_window_after`] and [`next_change`] look. A schedule plays at least one
/// day a week, so an enabled schedule always has a window within 8 days, whatever the DST changes.
const HORIZON_DAYS: i64 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule \"{schedule}\": timezone: unknown IANA time zone {zone:?}")]
    UnknownTimeZone { schedule: ScheduleId, zone: String },
    #[error("schedule \"{schedule}\": {field}: must not be empty")]
    Empty { schedule: ScheduleId, field: &'static str },
    /// Not a schedule: the JSON does not parse, or a value breaks its rule (an id, a time); the
    /// message names the field.
    #[error("not a schedule: {0}")]
    Invalid(String),
    #[error("schedule \"{schedule}\": destinations: \"{value}\" is listed twice")]
    DuplicateDestination { schedule: ScheduleId, value: DestinationId },
    #[error("invalid local time {0:?}: expected HH:MM or HH:MM:SS, from 00:00 to 23:59:59")]
    BadLocalTime(String),
}

/// A day of the week, on the wire as `"mon"` … `"sun"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The wire name (`"mon"` … `"sun"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }
}

impl From<Weekday> for civil::Weekday {
    fn from(d: Weekday) -> Self {
        match d {
            Weekday::Mon => civil::Weekday::Monday,
            Weekday::Tue => civil::Weekday::Tuesday,
            Weekday::Wed => civil::Weekday::Wednesday,
            Weekday::Thu => civil::Weekday::Thursday,
            Weekday::Fri => civil::Weekday::Friday,
            Weekday::Sat => civil::Weekday::Saturday,
            Weekday::Sun => civil::Weekday::Sunday,
        }
    }
}

/// A local clock time of day, on the wire as `"HH:MM"` or `"HH:MM:SS"` (24-hour, zero-padded). There is no
/// `"24:00"`: a window ending at midnight ends at `"00:00"` (the next day, being not after its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LocalTime(Time);

impl LocalTime {
    pub fn new(hour: u8, minute: u8, second: u8) -> Result<Self, ScheduleError> {
        let bad = || ScheduleError::BadLocalTime(format!("{hour:02}:{minute:02}:{second:02}"));
        let field = |v: u8| i8::try_from(v).map_err(|_| bad());
        Time::new(field(hour)?, field(minute)?, field(second)?, 0).map(LocalTime).map_err(|_| bad())
    }

    pub fn time(self) -> Time {
        self.0
    }
}

impl FromStr for LocalTime {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError::BadLocalTime(s.to_string());
        // Strict fixed-width parsing: "9:00", "09:00:00.5" or "+9:00" in a config is a typo, not a time.
        let two = |part: &str| -> Result<u8, ScheduleError> {
            match part.as_bytes() {
                [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Ok((a - b'0') * 10 + (b - b'0')),
                _ => Err(bad()),
            }
        };
        let mut parts = s.split(':');
        let (hour, minute) = match (parts.next(), parts.next()) {
            (Some(h), Some(m)) => (two(h)?, two(m)?),
            _ => return Err(bad()),
        };
        let second = parts.next().map(two).transpose()?.unwrap_or(0);
        if parts.next().is_some() {
            return Err(bad());
        }
        LocalTime::new(hour, minute, second).map_err(|_| bad())
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(f, "{:02}:{:02}", t.hour(), t.minute())?;
        if t.second() != 0 {
            write!(f, ":{:02}", t.second())?;
        }
        Ok(())
    }
}

impl TryFrom<String> for LocalTime {
    type Error = ScheduleError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<LocalTime> for String {
    fn from(t: LocalTime) -> Self {
        t.to_string()
    }
}

fn yes() -> bool {
    true
}

/// A schedule as the operator (or the cloud) gives it; [`validate`] turns it into something the evaluator uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub id: ScheduleId,
    /// For people; the agent refers to a schedule by `id`.
    pub name: String,
    /// A disabled schedule is kept (and validated) but never has a window.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// IANA zone name, e.g. `"Europe/London"`: the zone the window's clock times are read in.
    pub timezone: String,
    /// The days a window STARTS on (an overnight window runs into the next day). Not empty.
    pub days_of_week: Vec<Weekday>,
    pub window_start: LocalTime,
    /// `<= window_start`: the window ends the next day; `== window_start`: it lasts a whole (local) day.
    pub window_end: LocalTime,
    /// Timeline ids, played in this order and round-robin for as long as the window lasts. Not empty.
    pub timelines: Vec<TimelineId>,
    /// Destination ids the program goes to while the window is on air. Not empty.
    pub destinations: Vec<DestinationId>,
}

/// A schedule that passed [`validate`]: the only input of the evaluator.
#[derive(Debug, Clone)]
pub struct ValidSchedule {
    schedule: Schedule,
    /// Parsed once: every evaluation converts local times to instants with it.
    tz: TimeZone,
    /// `days_of_week` as a set, indexed by days from Monday; duplicates in the input are harmless.
    days: [bool; 7],
}

/// One on-air window of a schedule: `start <= t < end`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    pub schedule_id: ScheduleId,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }

    /// Real (elapsed) length: 7 h or 9 h for a 22:00–06:00 window across a DST change.
    pub fn duration(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }
}

/// A schedule from its JSON (the store's rows, a command's payload). Its ids are held to the id
/// rule by their types; a value that breaks it is refused naming its field (`timelines[1]: ...`).
pub fn from_json(json: &str) -> Result<Schedule, ScheduleError> {
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json))
        .map_err(|e| ScheduleError::Invalid(e.to_string()))
}

/// Checks a schedule and resolves its zone. Errors name the schedule (by id) and the field.
pub fn validate(s: &Schedule) -> Result<ValidSchedule, ScheduleError> {
    let schedule = || s.id.clone();
    let empty = |field| ScheduleError::Empty { schedule: schedule(), field };

    // `Etc/Unknown` is jiff's placeholder for "no zone": it behaves like UTC, which would silently shift the show.
    let tz = TimeZone::get(&s.timezone)
        .ok()
        .filter(|tz| !tz.is_unknown())
        .ok_or_else(|| ScheduleError::UnknownTimeZone { schedule: schedule(), zone: s.timezone.clone() })?;
    if s.days_of_week.is_empty() {
        return Err(empty("days_of_week"));
    }
    if s.timelines.is_empty() {
        return Err(empty("timelines"));
    }
    if s.destinations.is_empty() {
        return Err(empty("destinations"));
    }
    // Two pushers to one destination would be two sessions on one stream key: the platform drops one of them.
    if let Some((_, d)) = s.destinations.iter().enumerate().find(|(i, d)| s.destinations[..*i].contains(d)) {
        return Err(ScheduleError::DuplicateDestination { schedule: schedule(), value: d.clone() });
    }

    let mut days = [false; 7];
    for d in &s.days_of_week {
        days[civil::Weekday::from(*d).to_monday_zero_offset() as usize] = true;
    }
    Ok(ValidSchedule { schedule: s.clone(), tz, days })
}

impl ValidSchedule {
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn id(&self) -> &ScheduleId {
        &self.schedule.id
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The window containing `now` (`start <= now < end`), if the schedule is enabled and on air.
    pub fn window_at(&self, now: Timestamp) -> Option<Window> {
        self.windows_around(now).find(|w| w.contains(now))
    }

    /// The first window that starts after `now` (strictly) and at most 8 days (192 h) later; None when disabled.
    pub fn next_window_after(&self, now: Timestamp) -> Option<Window> {
        // Starts are the same local time on successive days, so they increase with the day: the first is the
        // earliest.
        self.windows_around(now).find(|w| w.start > now).filter(|w| w.start <= horizon(now))
    }

    /// The windows starting on the local days around `now`, in order: from two days before (a window lasts at
    /// most one local day, so the one containing `now` started today or yesterday; one more day is margin for
    /// zones that move their clocks around midnight) to the horizon, plus a day because a DST change can push
    /// `now + 8 days` onto the next local date.
    fn windows_around(&self, now: Timestamp) -> impl Iterator<Item = Window> + '_ {
        let today = self.tz.to_datetime(now).date();
        let enabled = self.schedule.enabled;
        (-2..=HORIZON_DAYS + 1)
            .take_while(move |_| enabled)
            .filter_map(move |n| today.checked_add(n.days()).ok())
            .filter_map(|d| self.window_starting_on(d))
    }

    /// The window starting on local date `day`, if `day` is a schedule day and the window is not empty.
    fn window_starting_on(&self, day: Date) -> Option<Window> {
        if !self.days[day.weekday().to_monday_zero_offset() as usize] {
            return None;
        }
        let (start_t, end_t) = (self.schedule.window_start.time(), self.schedule.window_end.time());
        let end_day = if end_t <= start_t { day.tomorrow().ok()? } else { day };
        // `compatible`: a gap moves the time forward by the gap's length, a fold takes the earlier instant.
        let start = self.tz.to_ambiguous_timestamp(day.to_datetime(start_t)).compatible().ok()?;
        let end = self.tz.to_ambiguous_timestamp(end_day.to_datetime(end_t)).compatible().ok()?;
        (start < end).then(|| Window { schedule_id: self.schedule.id.clone(), start, end })
    }
}

/// The last instant the look-ahead covers.
fn horizon(now: Timestamp) -> Timestamp {
    now.checked_add(SignedDuration::from_hours(24 * HORIZON_DAYS)).unwrap_or(Timestamp::MAX)
}

/// Of several schedules, the active window: the containing window of the first schedule in list order (list
/// order is priority).
pub fn active(schedules: &[ValidSchedule], now: Timestamp) -> Option<Window> {
    schedules.iter().find_map(|s| s.window_at(now))
}

/// The next instant after `now` at which [`active`] may change (a window of any schedule starts or ends); None
/// if none within 8 days. None is "not soon", not "never" (a weekly window can be lost to a DST gap, see the
/// module doc): a caller with nothing to wait for evaluates again 8 days later.
pub fn next_change(schedules: &[ValidSchedule], now: Timestamp) -> Option<Timestamp> {
    let horizon = horizon(now);
    schedules
        .iter()
        .flat_map(|s| s.windows_around(now))
        .flat_map(|w| [w.start, w.end])
        .filter(|&t| now < t && t <= horizon)
        .min()
}

/// Round-robin: given the timelines' durations (seconds, > 0) in order and the time since the window started,
/// which timeline plays and at which offset into it. One timeline: it loops. Several: each plays once, in order,
/// then wrap.
///
/// The offset is always in `[0, duration)` of the returned timeline. Durations that are not finite and > 0 are
/// skipped (the timeline validator never lets one through); with none left, or an empty slice, the answer is
/// `(0, 0.0)`.
pub fn rotation(durations_s: &[f64], since_window_start_s: f64) -> (usize, f64) {
    let playable = |d: f64| d.is_finite() && d > 0.0;
    let cycle: f64 = durations_s.iter().copied().filter(|&d| playable(d)).sum();
    if !(cycle.is_finite() && cycle > 0.0) {
        return (0, 0.0);
    }
    // rem_euclid keeps a (bogus) negative elapsed time inside the cycle instead of producing a negative offset.
    let mut t = since_window_start_s.rem_euclid(cycle);
    for (i, &d) in durations_s.iter().enumerate() {
        if !playable(d) {
            continue;
        }
        if t < d {
            return (i, t);
        }
        t -= d;
    }
    // Rounding put `t` at (or past) the cycle's end: that is the wrap to the first playable timeline.
    let first = durations_s.iter().position(|&d| playable(d)).unwrap_or(0);
    (first, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn t(s: &str) -> LocalTime {
        s.parse().unwrap()
    }

    fn ident<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    const ALL_DAYS: [Weekday; 7] =
        [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];

    fn schedule(id: &str, zone: &str, days: &[Weekday], start: &str, end: &str) -> Schedule {
        Schedule {
            id: ident(id),
            name: format!("{id} show"),
            enabled: true,
            timezone: zone.into(),
            days_of_week: days.to_vec(),
            window_start: t(start),
            window_end: t(end),
            timelines: vec![ident("tl-main")],
            destinations: vec![ident("yt")],
        }
    }

    fn valid(id: &str, zone: &str, days: &[Weekday], start: &str, end: &str) -> ValidSchedule {
        validate(&schedule(id, zone, days, start, end)).unwrap()
    }

    /// The window from `start` to `end` exists, is found from just before it, opens exactly at `start` and
    /// closes exactly at `end` (checked at start − 1 s, start, end − 1 s, end).
    #[track_caller]
    fn assert_window(s: &ValidSchedule, start: &str, end: &str) {
        let (start, end) = (ts(start), ts(end));
        let w = Window { schedule_id: s.id().clone(), start, end };
        let second = SignedDuration::from_secs(1);
        assert_eq!(s.next_window_after(start - second), Some(w.clone()), "next window after start - 1 s");
        assert_eq!(s.window_at(start - second), None, "before start");
        assert_eq!(s.window_at(start), Some(w.clone()), "at start");
        assert_eq!(s.window_at(end - second), Some(w.clone()), "at end - 1 s");
        assert_eq!(s.window_at(end), None, "at end");
    }

    // --- Europe/London 2026: BST from 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC. ---

    #[test]
    fn london_day_window_follows_local_clock_across_both_changes() {
        let s = valid("day", "Europe/London", &ALL_DAYS, "09:00", "17:00");
        assert_window(&s, "2026-03-28T09:00:00Z", "2026-03-28T17:00:00Z"); // Sat, GMT
        assert_window(&s, "2026-03-30T08:00:00Z", "2026-03-30T16:00:00Z"); // Mon, BST
        assert_window(&s, "2026-10-24T08:00:00Z", "2026-10-24T16:00:00Z"); // Sat, BST
        assert_window(&s, "2026-10-26T09:00:00Z", "2026-10-26T17:00:00Z"); // Mon, GMT
    }

    #[test]
    fn london_overnight_window_lasts_7h_in_spring_and_9h_in_autumn() {
        let s = valid("night", "Europe/London", &ALL_DAYS, "22:00", "06:00");
        assert_window(&s, "2026-03-28T22:00:00Z", "2026-03-29T05:00:00Z");
        assert_eq!(s.window_at(ts("2026-03-29T01:00:00Z")).unwrap().duration(), SignedDuration::from_hours(7));
        assert_window(&s, "2026-10-24T21:00:00Z", "2026-10-25T06:00:00Z");
        assert_eq!(s.window_at(ts("2026-10-25T01:00:00Z")).unwrap().duration(), SignedDuration::from_hours(9));
    }

    #[test]
    fn london_start_in_gap_moves_forward_and_in_fold_takes_the_earlier() {
        // 01:30 does not exist on 2026-03-29: it is read as 02:30 BST = 01:30 UTC. 03:00 BST = 02:00 UTC.
        let s = valid("gap", "Europe/London", &[Weekday::Sun], "01:30", "03:00");
        assert_window(&s, "2026-03-29T01:30:00Z", "2026-03-29T02:00:00Z");
        // 01:30 happens twice on 2026-10-25: the first one, 01:30 BST = 00:30 UTC. 03:00 GMT = 03:00 UTC.
        assert_window(&s, "2026-10-25T00:30:00Z", "2026-10-25T03:00:00Z");
        // The same rule for an end: Saturday 23:00 to Sunday 01:30.
        let s = valid("end", "Europe/London", &[Weekday::Sat], "23:00", "01:30");
        assert_window(&s, "2026-03-28T23:00:00Z", "2026-03-29T01:30:00Z");
        assert_window(&s, "2026-10-24T22:00:00Z", "2026-10-25T00:30:00Z");
    }

    #[test]
    fn a_window_emptied_by_the_gap_is_skipped() {
        // 01:30 → 01:30 UTC but 02:15 BST = 01:15 UTC: the end is before the start, so no window that Sunday.
        let s = valid("short", "Europe/London", &[Weekday::Sun], "01:30", "02:15");
        assert_eq!(s.window_at(ts("2026-03-29T01:20:00Z")), None);
        assert_eq!(s.window_at(ts("2026-03-29T01:40:00Z")), None);
        // The next Sunday is back to normal (BST): 00:30–01:15 UTC.
        assert_window(&s, "2026-04-05T00:30:00Z", "2026-04-05T01:15:00Z");
        assert_eq!(s.next_window_after(ts("2026-03-29T00:00:00Z")).unwrap().start, ts("2026-04-05T00:30:00Z"));
        // Seen from Saturday that is more than 8 days away: beyond the look-ahead.
        assert_eq!(s.next_window_after(ts("2026-03-28T00:00:00Z")), None);
        assert_eq!(next_change(&[s], ts("2026-03-28T00:00:00Z")), None);
    }

    // --- America/New_York 2026: EDT from 2026-03-08 07:00 UTC to 2026-11-01 06:00 UTC. ---

    #[test]
    fn new_york_day_window_follows_local_clock_across_both_changes() {
        let s = valid("day", "America/New_York", &ALL_DAYS, "09:00", "17:00");
        assert_window(&s, "2026-03-07T14:00:00Z", "2026-03-07T22:00:00Z"); // Sat, EST
        assert_window(&s, "2026-03-09T13:00:00Z", "2026-03-09T21:00:00Z"); // Mon, EDT
        assert_window(&s, "2026-10-31T13:00:00Z", "2026-10-31T21:00:00Z"); // Sat, EDT
        assert_window(&s, "2026-11-02T14:00:00Z", "2026-11-02T22:00:00Z"); // Mon, EST
    }

    #[test]
    fn new_york_overnight_window_lasts_7h_in_spring_and_9h_in_autumn() {
        let s = valid("night", "America/New_York", &ALL_DAYS, "22:00", "06:00");
        assert_window(&s, "2026-03-08T03:00:00Z", "2026-03-08T10:00:00Z");
        assert_eq!(s.window_at(ts("2026-03-08T07:00:00Z")).unwrap().duration(), SignedDuration::from_hours(7));
        assert_window(&s, "2026-11-01T02:00:00Z", "2026-11-01T11:00:00Z");
        assert_eq!(s.window_at(ts("2026-11-01T06:00:00Z")).unwrap().duration(), SignedDuration::from_hours(9));
    }

    #[test]
    fn new_york_start_in_gap_moves_forward_and_in_fold_takes_the_earlier() {
        // 02:30 does not exist on 2026-03-08: read as 03:30 EDT = 07:30 UTC. 04:00 EDT = 08:00 UTC.
        let s = valid("gap", "America/New_York", &[Weekday::Sun], "02:30", "04:00");
        assert_window(&s, "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z");
        // 01:30 happens twice on 2026-11-01: the first one, 01:30 EDT = 05:30 UTC. 04:00 EST = 09:00 UTC.
        let s = valid("fold", "America/New_York", &[Weekday::Sun], "01:30", "04:00");
        assert_window(&s, "2026-11-01T05:30:00Z", "2026-11-01T09:00:00Z");
    }

    // --- Window shape. ---

    #[test]
    fn overnight_window_belongs_to_the_day_it_starts_on() {
        let s = valid("mon-night", "Europe/London", &[Weekday::Mon], "22:00", "06:00");
        let monday = civil::date(2026, 6, 1);
        assert_eq!(monday.weekday(), civil::Weekday::Monday);
        assert_eq!(s.window_at(ts("2026-06-01T02:00:00Z")), None, "Monday 03:00 BST");
        let w = s.window_at(ts("2026-06-02T02:00:00Z")).expect("Tuesday 03:00 BST");
        assert_eq!((w.start, w.end), (ts("2026-06-01T21:00:00Z"), ts("2026-06-02T05:00:00Z")));
        assert_window(&s, "2026-06-01T21:00:00Z", "2026-06-02T05:00:00Z");
    }

    #[test]
    fn equal_start_and_end_is_a_whole_local_day() {
        let s = valid("allday", "Europe/London", &[Weekday::Sat], "06:00", "06:00");
        let w = s.window_at(ts("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!((w.start, w.end), (ts("2026-03-28T06:00:00Z"), ts("2026-03-29T05:00:00Z")));
        assert_eq!(w.duration(), SignedDuration::from_hours(23));
        // Every day: back-to-back windows, each ending where the next starts.
        let s = valid("always", "Europe/London", &ALL_DAYS, "00:00", "00:00");
        let w = s.window_at(ts("2026-07-01T22:59:59Z")).unwrap();
        assert_eq!(s.window_at(w.end).unwrap().start, w.end);
    }

    #[test]
    fn disabled_schedule_has_no_window() {
        let mut raw = schedule("off", "Europe/London", &ALL_DAYS, "00:00", "00:00");
        raw.enabled = false;
        let s = validate(&raw).unwrap();
        let now = ts("2026-07-01T12:00:00Z");
        assert_eq!(s.window_at(now), None);
        assert_eq!(s.next_window_after(now), None);
        assert_eq!(next_change(&[s], now), None);
    }

    // --- Several schedules. ---

    #[test]
    fn list_order_is_priority_when_windows_overlap() {
        // London 09:00–17:00 weekdays over New York 08:00–20:00 daily; 2026-03-24 is a Tuesday (GMT and EDT).
        let london = valid("london", "Europe/London", &ALL_DAYS[..5], "09:00", "17:00");
        let new_york = valid("new-york", "America/New_York", &ALL_DAYS, "08:00", "20:00");
        let both = ts("2026-03-24T15:00:00Z");
        let list = [london.clone(), new_york.clone()];
        assert_eq!(active(&list, both).unwrap().schedule_id.as_str(), "london");
        assert_eq!(active(&[new_york, london], both).unwrap().schedule_id.as_str(), "new-york");
        assert_eq!(active(&list, ts("2026-03-24T17:30:00Z")).unwrap().schedule_id.as_str(), "new-york");
        assert_eq!(active(&list, ts("2026-03-24T08:30:00Z")), None);
    }

    #[test]
    fn next_change_walks_a_week_without_missing_or_inventing_changes() {
        // The week of London's spring-forward change, New York already on EDT.
        let list = [
            valid("london", "Europe/London", &ALL_DAYS[..5], "09:00", "17:00"),
            valid("new-york", "America/New_York", &ALL_DAYS, "08:00", "20:00"),
        ];
        let (from, until) = (ts("2026-03-23T00:00:00Z"), ts("2026-03-30T00:00:00Z"));
        let boundaries: Vec<Timestamp> =
            list.iter().flat_map(|s| s.windows_around(from)).flat_map(|w| [w.start, w.end]).collect();
        let minute = SignedDuration::from_mins(1);
        let mut now = from;
        let mut changes = Vec::new();
        while now < until {
            let next = next_change(&list, now).expect("two enabled schedules always have a next change");
            assert!(next > now);
            assert!(boundaries.contains(&next), "{next} is not a window boundary");
            // Nothing changes between two returned instants (all boundaries are whole minutes).
            let current = active(&list, now);
            let mut probe = now + minute;
            while probe < next {
                assert_eq!(active(&list, probe), current, "active changed at {probe}, before {next}");
                probe += minute;
            }
            if active(&list, next) != current {
                changes.push((next, active(&list, next).map(|w| w.schedule_id.to_string())));
            }
            now = next;
        }
        // Monday to Friday: London from 09:00 to 17:00 UTC (GMT); New York opens at 12:00 UTC (08:00 EDT) under
        // London, so it only shows from London's close to its own (20:00 EDT = 00:00 UTC).
        let at = |s: &str, id: Option<&str>| (ts(s), id.map(String::from));
        let monday = [
            at("2026-03-23T09:00:00Z", Some("london")),
            at("2026-03-23T17:00:00Z", Some("new-york")),
            at("2026-03-24T00:00:00Z", None),
        ];
        assert_eq!(changes[..3], monday);
        // Saturday and Sunday: New York alone, 12:00–00:00 UTC.
        assert_eq!(
            changes[changes.len() - 4..],
            [
                at("2026-03-28T12:00:00Z", Some("new-york")),
                at("2026-03-29T00:00:00Z", None),
                at("2026-03-29T12:00:00Z", Some("new-york")),
                at("2026-03-30T00:00:00Z", None),
            ]
        );
        assert_eq!(changes.len(), 5 * 3 + 4);
    }

    #[test]
    fn next_change_is_none_without_enabled_schedules() {
        assert_eq!(next_change(&[], ts("2026-03-24T00:00:00Z")), None);
    }

    // --- Rotation. ---

    #[test]
    fn one_timeline_loops() {
        assert_eq!(rotation(&[30.0], 0.0), (0, 0.0));
        assert_eq!(rotation(&[30.0], 45.0), (0, 15.0));
        assert_eq!(rotation(&[30.0], 90.0), (0, 0.0));
    }

    #[test]
    fn several_timelines_play_in_order_then_wrap() {
        let d = [10.0, 20.0, 30.0];
        assert_eq!(rotation(&d, 5.0), (0, 5.0));
        assert_eq!(rotation(&d, 10.0), (1, 0.0));
        assert_eq!(rotation(&d, 15.0), (1, 5.0));
        assert_eq!(rotation(&d, 45.0), (2, 15.0));
        assert_eq!(rotation(&d, 60.0), (0, 0.0));
        assert_eq!(rotation(&d, 65.0), (0, 5.0));
    }

    #[test]
    fn rotation_survives_bad_input() {
        assert_eq!(rotation(&[], 5.0), (0, 0.0));
        assert_eq!(rotation(&[10.0, 0.0, 20.0], 15.0), (2, 5.0));
        assert_eq!(rotation(&[10.0], f64::NAN), (0, 0.0));
        assert_eq!(rotation(&[10.0], -3.0), (0, 7.0));
    }

    proptest! {
        #[test]
        fn rotation_offset_is_within_the_returned_timeline(
            durations in prop::collection::vec(0.001f64..100_000.0, 1..8),
            since in 0.0f64..10_000_000.0,
        ) {
            let (i, offset) = rotation(&durations, since);
            prop_assert!(i < durations.len());
            prop_assert!(offset >= 0.0 && offset < durations[i], "{offset} not in [0, {})", durations[i]);
        }
    }

    // --- Validation and wire format. ---

    #[test]
    fn unknown_zone_is_rejected_naming_schedule_and_field() {
        for zone in ["Mars/Base", "Etc/Unknown", ""] {
            let err = validate(&schedule("evening", zone, &ALL_DAYS, "09:00", "17:00")).unwrap_err();
            assert!(matches!(err, ScheduleError::UnknownTimeZone { .. }), "{zone}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("\"evening\"") && msg.contains("timezone"), "{msg}");
        }
    }

    #[test]
    fn empty_lists_are_rejected_naming_schedule_and_field() {
        let mut raw = schedule("evening", "Europe/London", &[], "09:00", "17:00");
        let msg = validate(&raw).unwrap_err().to_string();
        assert!(msg.contains("\"evening\"") && msg.contains("days_of_week"), "{msg}");
        raw.days_of_week = vec![Weekday::Mon];
        raw.timelines.clear();
        let msg = validate(&raw).unwrap_err().to_string();
        assert!(msg.contains("\"evening\"") && msg.contains("timelines"), "{msg}");
        raw.timelines = vec![ident("a")];
        raw.destinations.clear();
        let msg = validate(&raw).unwrap_err().to_string();
        assert!(msg.contains("\"evening\"") && msg.contains("destinations"), "{msg}");
    }

    #[test]
    fn bad_and_duplicate_ids_are_rejected() {
        let long = "a".repeat(65);
        let good = serde_json::to_value(schedule("ok", "Europe/London", &ALL_DAYS, "09:00", "17:00")).unwrap();
        assert!(from_json(&good.to_string()).is_ok());
        for id in ["", "-lead", "_lead", "has space", "slash/y", "é", long.as_str()] {
            let mut raw = good.clone();
            raw["id"] = id.into();
            let msg = from_json(&raw.to_string()).unwrap_err().to_string();
            assert!(msg.contains("id") && msg.contains("is not an id"), "{id:?}: {msg}");
            let mut raw = good.clone();
            raw["timelines"] = serde_json::json!(["tl-main", id]);
            let msg = from_json(&raw.to_string()).unwrap_err().to_string();
            assert!(msg.contains("timelines") && msg.contains("is not an id"), "{id:?}: {msg}");
            let mut raw = good.clone();
            raw["destinations"] = serde_json::json!([id, "yt"]);
            let msg = from_json(&raw.to_string()).unwrap_err().to_string();
            assert!(msg.contains("destinations") && msg.contains("is not an id"), "{id:?}: {msg}");
        }
        let mut raw = schedule("ok", "Europe/London", &ALL_DAYS, "09:00", "17:00");
        raw.destinations = vec![ident("yt"), ident("fb"), ident("yt")];
        assert_eq!(
            validate(&raw).unwrap_err(),
            ScheduleError::DuplicateDestination { schedule: ident("ok"), value: ident("yt") }
        );
        // A timeline may come back in the rotation; days listed twice are one day.
        raw.destinations = vec![ident("yt")];
        raw.timelines = vec![ident("a"), ident("b"), ident("a")];
        raw.days_of_week = vec![Weekday::Mon, Weekday::Mon];
        validate(&raw).unwrap();
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::json!({
            "id": "late-show",
            "name": "Late show",
            "timezone": "Europe/London",
            "days_of_week": ["mon", "fri", "sun"],
            "window_start": "22:00",
            "window_end": "06:00:30",
            "timelines": ["harbour", "weather"],
            "destinations": ["yt", "twitch"],
        });
        let s: Schedule = serde_json::from_value(json.clone()).unwrap();
        assert!(s.enabled, "enabled defaults to true");
        assert_eq!(s.days_of_week, [Weekday::Mon, Weekday::Fri, Weekday::Sun]);
        assert_eq!(s.window_start, LocalTime::new(22, 0, 0).unwrap());
        assert_eq!(s.window_end, LocalTime::new(6, 0, 30).unwrap());
        let mut expected = json;
        expected["enabled"] = true.into();
        assert_eq!(serde_json::to_value(&s).unwrap(), expected);
        let back: Schedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        validate(&back).unwrap();
    }

    #[test]
    fn wire_format_is_strict() {
        let base = serde_json::json!({
            "id": "s", "name": "", "timezone": "UTC", "days_of_week": ["mon"],
            "window_start": "22:00", "window_end": "06:00", "timelines": ["t"], "destinations": ["d"],
        });
        serde_json::from_value::<Schedule>(base.clone()).unwrap();
        let with = |key: &str, value: serde_json::Value| {
            let mut v = base.clone();
            v[key] = value;
            serde_json::from_value::<Schedule>(v)
        };
        assert!(with("surprise", true.into()).is_err(), "unknown field");
        assert!(with("days_of_week", serde_json::json!(["monday"])).is_err());
        assert!(with("days_of_week", serde_json::json!(["Mon"])).is_err());
        for bad in ["24:00", "9:00", "09:60", "09:00:60", "09:00:00.5", "0900", "09:00:", "", "09:00:00:00", "+9:00"] {
            assert!(bad.parse::<LocalTime>().is_err(), "{bad:?}");
            assert!(with("window_start", bad.into()).is_err(), "{bad:?}");
        }
        assert_eq!(t("23:59:59").to_string(), "23:59:59");
        assert_eq!(t("00:00:00").to_string(), "00:00");
    }
}
