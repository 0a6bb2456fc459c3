use super::*;
use proptest::prelude::*;
use serde_json::json;

fn refused(ty: &str, payload: serde_json::Value) -> Refusal {
    from_parts(ty, payload).unwrap_err()
}

#[test]
fn a_refusal_names_the_field_and_the_allowed_range() {
    let r = refused(
        "OVERLAY_UPDATE",
        json!({"action": "show", "overlay_id": "x", "overlay": {"text": "hi", "color": "#aébbb"}}),
    );
    assert_eq!(r.field.as_deref(), Some("payload.overlay.color"), "{r}");
    assert!(r.message.contains("#rrggbb"), "{r}");
    let r = refused("PROGRAM", json!({"action": "cut", "program_id": "main", "camera_id": "a", "at_s": 1e300}));
    assert_eq!(r.field.as_deref(), Some("payload.at_s"), "{r}");
    assert!(r.message.contains("from 0 to"), "{r}");
    let r = refused("PROGRAM", json!({"action": "start", "program_id": "main", "fps": 29}));
    assert_eq!(r.field.as_deref(), Some("payload.fps"));
    let r = refused("TIMELINE_EXECUTE", json!({"action": "play", "timeline_id": "../x"}));
    assert_eq!(r.field.as_deref(), Some("payload.timeline_id"));
    let r = refused("PING", json!({"x": 1}));
    assert_eq!(r.code, ErrorCode::SchemaViolation);
    assert_eq!(refused("NOPE", json!({})).code, ErrorCode::UnsupportedType);
}

#[test]
fn checks_name_the_missing_field() {
    let c = TimelineExecute::new(TimelineAction::Play);
    assert_eq!(c.check().unwrap_err().field.as_deref(), Some("payload.timeline_id"));
    let mut s = TimelineExecute::new(TimelineAction::Seek);
    assert!(s.check().is_err());
    s.position_s = Some(ProgramTime::from_secs(3.0).unwrap());
    assert_eq!(s.check().unwrap(), ShowAction::Seek(SeekTo::Position(ProgramTime::from_secs(3.0).unwrap())));
}

#[test]
fn commands_round_trip_through_their_wire_form() {
    let mut p = ProgramCommand::new(ProgramVerb::Cut, Some(ProgramId::new("main").unwrap()));
    p.camera_id = Some(CameraId::new("a").unwrap());
    p.at_s = Some(ProgramTime::from_secs(2.5).unwrap());
    let cmd = Command::Program(p);
    let line = serde_json::to_string(&cmd).unwrap();
    assert_eq!(parse(&line).unwrap(), cmd);
}

#[test]
fn a_diagnostics_request_is_bounded() {
    let Command::Diagnostics(d) = parse(r#"{"type": "DIAGNOSTICS"}"#).unwrap() else { panic!("not DIAGNOSTICS") };
    assert_eq!(d.check(), Ok(50));
    let Command::Diagnostics(d) = from_parts("DIAGNOSTICS", json!({"stderr_lines": 0})).unwrap() else {
        panic!("not DIAGNOSTICS")
    };
    assert_eq!(d.check().unwrap_err().field.as_deref(), Some("payload.stderr_lines"));
    assert_eq!(refused("DIAGNOSTICS", json!({"lines": 3})).field.as_deref(), Some("payload.lines"));
}

proptest! {
    #[test]
    fn arbitrary_lines_are_refused_never_panic(s in "\\PC{0,200}") {
        let _ = parse(&s);
    }

    #[test]
    fn arbitrary_json_payloads_are_refused_or_checked(v in arb_json(), ty in prop::sample::select(vec![
        "PING", "STREAM_CONTROL", "TIMELINE_EXECUTE", "OVERLAY_UPDATE", "CAMERA_ACTION", "DEVICE_CONFIG",
        "PROGRAM", "SHOW_QUERY", "DIAGNOSTICS"])) {
        if let Ok(c) = from_parts(ty, v) {
            match c {
                Command::StreamControl(s) => { let _ = s.check(); }
                Command::TimelineExecute(t) => { let _ = t.check(); }
                Command::OverlayUpdate(o) => { let _ = o.check(); }
                _ => {}
            }
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)),
        any::<i64>().prop_map(|i| json!(i)),
        "\\PC{0,10}".prop_map(serde_json::Value::String),
        prop::sample::select(vec!["play", "show", "cut", "start", "kill_all", "#ffffff", "a", "main", "1e300"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop::sample::select(vec![
            "action",
            "command",
            "timeline_id",
            "destination_ids",
            "overlay",
            "overlay_id",
            "text",
            "color",
            "opacity",
            "at_s",
            "program_id",
            "camera_id",
            "position_s",
            "vars",
            "query",
            "fps",
            "size",
            "offset",
            "x",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}
