use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::ffmpeg::job::{JobEvent, JobKind};
use crate::values::{DestinationId, SourceId};

fn ev(severity: &str, kind: &str, subject: &str, detail: &str) -> Event {
    Event {
        id: 1,
        at: "2026-12-06T07:11:35.123456789Z".into(),
        severity: severity.into(),
        event_type: kind.into(),
        subject: Some(subject.into()),
        scope: None,
        detail: Some(detail.into()),
    }
}

/// The row the sink writes for a job event, as the table gives it back.
fn stored(e: JobEvent) -> Event {
    let r = crate::events::row(e).expect("a row");
    let sev = serde_json::to_value(r.severity).unwrap().as_str().unwrap().to_string();
    Event { scope: r.scope, ..ev(&sev, &r.event_type, &r.subject, &r.detail) }
}

fn camera(id: &str) -> JobKind {
    JobKind::Camera { owner: "program:show".into(), camera_id: SourceId::new(id).unwrap() }
}

#[test]
fn the_briefs_two_examples_read_as_written() {
    let cue = ev(
        "info",
        "cue_started",
        "timeline:marina",
        r#"{"cue":"c1","scheduled_s":32.0,"actual_s":32.04,"lateness_ms":4.0}"#,
    );
    let kolkata = TimeZone::get("Asia/Kolkata").unwrap();
    let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
    assert_eq!(line(&cue, &kolkata, now), "12:41:35 Cue c1 started on time");
    let lost = stored(JobEvent::Failed {
        job: camera("harbour").to_string(),
        kind: camera("harbour"),
        reason: "connection refused".into(),
        permanent: false,
        retry_in: Duration::from_millis(7000),
        failures: 1,
    });
    assert_eq!(sentence(&lost), "Camera harbour lost: connection refused, retrying in 7 s");
    assert_eq!(
        line(&lost, &kolkata, now),
        "12:41:35 [warning] Camera harbour lost: connection refused, retrying in 7 s",
        "the terminal marks what the page colours"
    );
}

#[test]
fn the_date_shows_when_it_is_not_today_in_the_box_zone() {
    let e = ev("info", "agent_stopped", "agent", "");
    let utc = TimeZone::UTC;
    let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
    // 07:11 UTC on the 6th is 16:11 in Tokyo on the 6th; at 16:00 UTC it is already the 7th there.
    let now: Timestamp = "2026-12-06T16:00:00Z".parse().unwrap();
    assert_eq!(local_time(&e.at, &utc, now), "07:11:35");
    assert_eq!(local_time(&e.at, &tokyo, now), "2026-12-06 16:11:35");
    assert_eq!(local_time("not a time\u{1b}[2J", &utc, now), "not a time [2J", "unreadable: shown cleaned");
}

#[test]
fn late_cues_say_how_late_and_other_cue_events_say_what_happened() {
    let late = ev("warning", "cue_started", "timeline:t", r#"{"cue":"c2","lateness_ms":123.4}"#);
    assert_eq!(sentence(&late), "Cue c2 started 123 ms late");
    let done = ev("info", "cue_completed", "timeline:t", r#"{"cue":"c2","lateness_ms":0.0}"#);
    assert_eq!(sentence(&done), "Cue c2 ended on time");
}

#[test]
fn job_events_read_as_what_happened_to_the_camera_destination_or_encoder() {
    let yt =
        JobKind::Pusher { owner: "program:show".into(), destination: DestinationId::new("yt").unwrap(), backup: true };
    let up = stored(JobEvent::Healthy { job: yt.to_string(), kind: yt.clone(), pid: 0 });
    assert_eq!(sentence(&up), "Destination yt (backup ingest) is live");
    let refused = stored(JobEvent::Failed {
        job: yt.to_string(),
        kind: yt.clone(),
        reason: "publish refused by the ingest (check the stream key)".into(),
        permanent: true,
        retry_in: Duration::from_secs(60),
        failures: 4,
    });
    assert_eq!(
        sentence(&refused),
        "Destination yt (backup ingest) failed: publish refused by the ingest (check the stream key); next try in \
         60 s (failure 4)"
    );
    let enc = JobKind::Encoder { owner: "program:show".into() };
    let down = stored(JobEvent::Failed {
        job: enc.to_string(),
        kind: enc.clone(),
        reason: "ffmpeg exited (exit status: 1)".into(),
        permanent: false,
        retry_in: Duration::from_millis(400),
        failures: 1,
    });
    assert_eq!(
        sentence(&down),
        "The encoder of program show stopped: ffmpeg exited (exit status: 1), restarting in 0.4 s"
    );
    let deg = stored(JobEvent::Degraded { job: camera("g").to_string(), kind: camera("g"), failures: 10 });
    assert_eq!(sentence(&deg), "Camera g keeps failing (10 failures in a row); still retrying");
    let back = stored(JobEvent::Recovered { job: camera("g").to_string(), kind: camera("g") });
    assert_eq!(sentence(&back), "Camera g recovered");
    // An older row without the writer's shape still reads as words.
    assert_eq!(sentence(&ev("warning", "camera_down", "g", "gone away")), "Camera g lost: gone away");
}

#[test]
fn program_and_show_notes_read_as_sentences() {
    let cases = [
        (ev("info", "cut", "program:show", "cut to slate"), "Cut to the slate"),
        (ev("info", "cut", "program:p1", "cut to cam2"), "Cut to camera cam2 (program p1)"),
        (
            ev("warning", "fallback_on", "program:show", "camera g stalled: the slate on air"),
            "Camera g stalled: the slate on air",
        ),
        (ev("info", "pin", "program:show", "pinned: none"), "Unpinned: back to the timeline"),
        (ev("info", "timeline_started", "timeline:harbour", "harbour at 0.000 s"), "Timeline harbour started"),
        (ev("info", "timeline_paused", "timeline:harbour", "at 12.340 s"), "Timeline harbour paused at 12 s"),
        (ev("info", "timeline_seek", "timeline:harbour", "Cue(CueId(\"c2\"))"), "Timeline harbour jumped to cue c2"),
        (ev("info", "timeline_seek", "timeline:harbour", "Seconds(95.0)"), "Timeline harbour jumped to 2 min"),
        (
            ev("info", "show_started", "timeline:harbour", "by the schedule at 32.500 s"),
            "Show harbour started by the schedule at 32 s into the timeline",
        ),
        (
            ev("info", "operator_override", "timeline:harbour", "Pin { camera: \"cam-a\" } by the cloud"),
            "Show harbour pinned to camera cam-a by the cloud",
        ),
        (
            ev(
                "info",
                "operator_override",
                "timeline:harbour",
                "Seek { cue: None, seconds: Some(4.0) } by the operator",
            ),
            "Show harbour jumped to 4 s by the operator",
        ),
        (
            ev(
                "info",
                "timeline_updated",
                "timeline:harbour",
                r#"{"timeline":"harbour","at_s":60.0,"replaced_loop":2}"#,
            ),
            "The new version of timeline harbour took over at 60 s, from loop 3",
        ),
        (ev("info", "agent_started", "agent", "0.1.0"), "The agent 0.1.0 started"),
        (ev("info", "stream_started", "relay:r1", ""), "Relay r1 started"),
        (ev("info", "program_started", "program:p1", "ephemeral"), "Program p1 started (not kept over a restart)"),
    ];
    for (e, want) in cases {
        assert_eq!(sentence(&e), want, "{e:?}");
    }
}

#[test]
fn an_unknown_kind_reads_as_words_with_its_json_spelled_out() {
    let e = ev("info", "camera_discovered", "cam3", r#"{"address":"10.0.0.5","model":"RLC-510A","ptz":false}"#);
    assert_eq!(sentence(&e), "Camera discovered (cam3): address 10.0.0.5, model RLC-510A, ptz no");
    let odd = Event { subject: None, detail: None, ..ev("info", "9-Odd Type", "", "") };
    assert_eq!(sentence(&odd), "9 Odd Type");
    let none = Event { event_type: String::new(), ..ev("info", "", "", "") };
    assert_eq!(sentence(&none), "Event");
    // A known kind whose JSON detail is not the expected one: words too.
    let wrong = ev("info", "cue_started", "timeline:t", r#"{"x":{"y":[1,2.5,"z"]}}"#);
    assert_eq!(sentence(&wrong), "Cue started (timeline:t): x (y (1, 2.5, z))");
}

#[test]
fn hostile_text_is_one_clean_line() {
    let e = ev(
        "warning",
        "camera_down",
        "cam\u{1b}[31mred\u{202e}evil",
        "program:show/camera:x: bad\r\nthing\u{7}; failure 1, retry in 2.0 s",
    );
    let s = sentence(&e);
    assert_eq!(s, "Camera cam [31mredevil lost: bad thing, retrying in 2 s");
    let long = ev("info", "orphans_reaped", "agent", &"x".repeat(10_000));
    assert!(sentence(&long).chars().count() <= MAX_DETAIL + 1, "cut");
    assert!(sentence(&long).ends_with('…'));
}

/// The kinds of event the agent writes, found in its source: the first argument of every
/// `add_event(…)` (after the severity), `note(…)`, `note_about(…)`, a cue `tag(…)`, a segment
/// library `event(tx, …)` and an `event_type: "…"` literal; plus the job kinds' `{subject}_{what}`.
fn written_kinds() -> std::collections::BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![root];
    let mut kinds = std::collections::BTreeSet::new();
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|x| x != "rs") || p.ends_with("events/sentence/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for (marker, arg) in [
            ("add_event(", 1),
            (".note(", 0),
            ("note_about(", 1),
            ("self.tag(", 1),
            ("event(tx,", 2),
            ("event(&mut tx,", 2),
        ] {
            for (at, _) in text.match_indices(marker) {
                let open = at + marker.find('(').unwrap();
                // A `format!` there is a log line's text (the RTMP publisher's own `note`), not a kind.
                if let Some(a) = call_args(&text[open..]).get(arg).filter(|a| !a.contains("format!")) {
                    kinds.extend(literals(a));
                }
            }
        }
        for (at, m) in text.match_indices("event_type: \"") {
            let first = text[at + m.len()..].split('"').next().unwrap_or_default();
            kinds.extend(literals(&format!("\"{first}\"")));
        }
    }
    for subject in ["camera", "encoder", "destination"] {
        for what in ["up", "down", "degraded", "recovered"] {
            kinds.insert(format!("{subject}_{what}"));
        }
    }
    // `if status == "completed" { "timeline_completed" } …`: a status compared, not a kind.
    kinds.remove("completed");
    kinds
}

/// The arguments of the call whose `(` starts `s`, as text (to its matching `)`).
fn call_args(s: &str) -> Vec<String> {
    let mut chars = s.chars();
    if chars.next() != Some('(') {
        return Vec::new();
    }
    let (mut depth, mut args, mut cur, mut in_str, mut esc) = (1i32, Vec::new(), String::new(), false, false);
    for c in chars {
        if in_str {
            cur.push(c);
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    args.push(cur);
                    return args;
                }
            }
            ',' if depth == 1 => {
                args.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    args
}

/// The snake_case string literals in `s` (event kinds look like that; messages do not).
fn literals(s: &str) -> Vec<String> {
    s.split('"')
        .skip(1)
        .step_by(2)
        .filter(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !l.starts_with('_')
                && !l.ends_with('_')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_kind_the_agent_writes_has_its_own_sentence() {
    let kinds = written_kinds();
    for must in ["cue_started", "camera_down", "segment_rejected", "probe_corrected", "timeline_completed", "cut"] {
        assert!(kinds.contains(must), "the source scan missed {must}: {kinds:?}");
    }
    assert!(kinds.len() > 50, "the scan found only {kinds:?}");
    let mut missing = Vec::new();
    for k in &kinds {
        // A detail in the writer's usual shape is not needed to be known: the kind decides.
        let samples = [
            ev("info", k, "program:show", "x at 1.000 s"),
            ev("info", k, "timeline:t", r#"{"cue":"c1","lateness_ms":1.0,"at_s":1.0,"replaced_loop":0}"#),
            ev("info", k, "program:show", "cut to slate"),
            ev("info", k, "program:show", "pinned: c1"),
            ev("info", k, "timeline:t", "to 1.000 s"),
            ev("info", k, "timeline:t", "Pause by the operator"),
            ev("info", k, "timeline:t", "Cue(CueId(\"c1\"))"),
        ];
        if !samples.iter().any(|e| known(&parts(e)).is_some()) {
            missing.push(k.clone());
        }
    }
    assert!(missing.is_empty(), "kinds the agent writes without a sentence in src/events/sentence.rs: {missing:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any event renders to one clean line without panicking, whatever its text.
    #[test]
    fn any_event_is_one_clean_line(
        kind in prop_oneof![
            Just("camera_down".to_string()), Just("cue_started".to_string()), Just("operator_override".to_string()),
            Just("timeline_seek".to_string()), Just("cut".to_string()), Just("pin".to_string()),
            Just("destination_degraded".to_string()), Just("show_started".to_string()), "\\PC{0,20}", ".{0,20}",
        ],
        severity in prop_oneof![Just("info"), Just("warning"), Just("error"), Just("critical"), Just("")],
        subject in proptest::option::of(".{0,100}"),
        detail in proptest::option::of(prop_oneof![
            ".{0,300}",
            "[a-z:/]{0,20}: .{0,40}; failure [0-9]{1,12}, retry in [0-9.e+-]{1,12} s",
            "(cut to|pinned:|at|to|by the) .{0,40}",
        ]),
        at in ".{0,40}",
    ) {
        let e = Event { id: 7, at, severity: severity.into(), event_type: kind, subject, scope: None, detail };
        let s = sentence(&e);
        prop_assert!(!s.is_empty());
        prop_assert!(!s.chars().any(|c| c.is_control()), "{s:?}");
        prop_assert!(s.chars().count() < 1500, "{} chars", s.chars().count());
        let t = local_time(&e.at, &TimeZone::UTC, Timestamp::UNIX_EPOCH);
        prop_assert!(!t.chars().any(|c| c.is_control()));
    }

    /// A JSON detail is never shown as JSON.
    #[test]
    fn json_details_are_spelled_out(
        kind in "[a-z_]{0,20}",
        v in proptest::collection::btree_map("[a-z_]{1,8}", prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "[a-zA-Z0-9 .:]{0,20}".prop_map(serde_json::Value::from),
            proptest::collection::vec("[a-z0-9]{0,5}", 0..4).prop_map(serde_json::Value::from),
        ], 1..6),
    ) {
        let detail = serde_json::to_string(&v).unwrap();
        let s = sentence(&ev("info", &kind, "s", &detail));
        prop_assert!(!s.contains(['{', '}', '"', '[']), "{s}");
    }
}
