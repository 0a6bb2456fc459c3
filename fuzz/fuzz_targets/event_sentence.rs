//! Arbitrary rows of the event table (any stamp, severity, kind, subject and detail) read as the
//! status page and the CLI read them: a sentence and a local time. Nothing may panic, and the
//! words are one line without control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vistter_agent::events::sentence;
use vistter_agent::store::events::Event;

fuzz_target!(|input: (&str, &str, &str, &str, &str)| {
    let (at, severity, kind, subject, detail) = input;
    let e = Event {
        id: 1,
        at: at.into(),
        severity: severity.into(),
        event_type: kind.into(),
        subject: Some(subject.into()),
        scope: None,
        detail: Some(detail.into()),
    };
    let said = sentence::sentence(&e);
    assert!(!said.is_empty() && !said.chars().any(char::is_control), "{said:?}");
    let line = sentence::line(&e, &jiff::tz::TimeZone::UTC, jiff::Timestamp::UNIX_EPOCH);
    assert!(!line.chars().any(char::is_control), "{line:?}");
    let _ = vistter_agent::events::down_detail(detail);
    let _ = vistter_agent::events::degraded_failures(detail);
});
