use super::*;
use serde_json::json;

fn inv() -> Inventory {
    let mut inv = Inventory::default();
    inv.cameras.insert(CameraId::new("cam-a").unwrap(), [PresetId::new("dock").unwrap()].into_iter().collect());
    inv.cameras.insert(CameraId::new("cam-b").unwrap(), HashSet::new());
    inv
}

fn good() -> Value {
    json!({"id": "marina", "name": "Marina", "duration": 20, "fps": 30, "resolution": "1280x720", "loop": true,
        "tracks": {"video": {"cues": [
            {"id": "c1", "start_time": 0, "duration": 10, "action": "show_camera",
             "params": {"camera_id": "cam-a", "preset_id": "dock", "transition": "cut"}},
            {"id": "c2", "start_time": 10, "duration": 10, "action": "show_camera",
             "params": {"camera_id": "cam-b", "transition": "fade", "transition_duration": 0.5}}]},
          "overlays": [{"layer": 2, "cues": [{"id": "clock", "start_time": 0, "duration": 20, "action": "show_overlay",
             "params": {"type": "text", "text": "{{time}}", "position": "top_right", "opacity": 0.9,
                        "offset": {"x": 12, "y": "5%"}, "fade_in": 0.5}}]}]},
        "fallback": {"backup_camera_id": "cam-b"}})
}

fn errors(doc: Value) -> Vec<String> {
    check_value(&doc, &inv()).expect_err("must be rejected").0.iter().map(|e| e.to_string()).collect()
}

#[test]
fn a_stored_timeline_is_typed_and_checked_against_the_appliance_without_the_schema() {
    let json = good().to_string();
    assert_eq!(parse_stored(&json, &inv()).unwrap(), check_value(&good(), &inv()).unwrap());
    let mut gone = inv();
    gone.cameras.remove("cam-b");
    let e = parse_stored(&json, &gone).unwrap_err().to_string();
    assert!(e.contains("cam-b"), "a camera removed since the load is still caught: {e}");
    let mut d = good();
    d["tracks"]["video"]["cues"][0]["params"]["zoom"] = json!(2);
    assert!(parse_stored(&d.to_string(), &inv()).is_err(), "a tampered row is refused, not played");
    assert!(parse_stored("{not json", &inv()).is_err());
}

#[test]
fn a_good_timeline_is_typed_in_microseconds() {
    let t = check_value(&good(), &inv()).unwrap();
    assert_eq!(t.duration, 20_000_000);
    assert_eq!(t.video[1].fade, 500_000);
    assert_eq!(t.cameras().iter().map(|c| c.as_str()).collect::<Vec<_>>(), vec!["cam-a", "cam-b"]);
    assert_eq!((t.width, t.height, t.fps, t.looping), (1280, 720, 30, true));
    assert_eq!(t.overlays[0].cues[0].fade_in, 500_000);
}

#[test]
fn schema_errors_name_the_cue() {
    let mut d = good();
    d["tracks"]["video"]["cues"][1]["params"].as_object_mut().unwrap().remove("camera_id");
    let e = errors(d);
    assert!(e.iter().any(|m| m.starts_with("video cue \"c2\"") && m.contains("camera_id")), "{e:?}");
    let mut d = good();
    d["tracks"]["overlays"][0]["cues"][0]["params"]["opacity"] = json!(3);
    let e = errors(d);
    assert!(e.iter().any(|m| m.starts_with("overlay layer 2 cue \"clock\"")), "{e:?}");
    let mut d = good();
    d["tracks"]["video"]["cues"][0]["duration"] = json!(0);
    assert!(errors(d).iter().any(|m| m.starts_with("video cue \"c1\"")), "non-positive duration");
    let mut d = good();
    d["surprise"] = json!(1);
    assert!(errors(d).iter().any(|m| m.starts_with("timeline:")), "unknown members are refused");
}

#[test]
fn overlapping_cues_in_one_track_are_refused() {
    let mut d = good();
    d["tracks"]["video"]["cues"][1]["start_time"] = json!(9.5);
    let e = errors(d);
    assert!(e.iter().any(|m| m == "video cue \"c2\": overlaps cue \"c1\" in the same track"), "{e:?}");
}

#[test]
fn cues_past_the_end_unknown_cameras_presets_and_assets_are_refused() {
    let mut d = good();
    d["tracks"]["video"]["cues"][1]["duration"] = json!(11);
    assert!(errors(d).iter().any(|m| m.starts_with("video cue \"c2\": ends at 21.000 s, past")));
    let mut d = good();
    d["tracks"]["video"]["cues"][1]["params"]["camera_id"] = json!("cam-x");
    assert!(errors(d).iter().any(|m| m == "video cue \"c2\": camera \"cam-x\" is not configured on this appliance"));
    let mut d = good();
    d["tracks"]["video"]["cues"][0]["params"]["preset_id"] = json!("beach");
    assert!(errors(d).iter().any(|m| m == "video cue \"c1\": camera \"cam-a\" has no preset \"beach\""));
    let dir = tempfile::tempdir().unwrap();
    let inv = Inventory { asset_root: Some(dir.path().to_path_buf()), ..inv() };
    let mut d = good();
    d["tracks"]["video"]["cues"][1] =
        json!({"id": "c2", "start_time": 10, "duration": 10, "action": "show_media", "params": {"asset": "clip.mp4"}});
    let e = check_value(&d, &inv).unwrap_err().to_string();
    assert!(e.contains("video cue \"c2\": asset \"clip.mp4\" is missing"), "{e}");
    d["tracks"]["video"]["cues"][1]["params"]["asset"] = json!("../../etc/passwd");
    assert!(check_value(&d, &inv).unwrap_err().to_string().contains("video cue \"c2\""));
}

#[test]
fn fades_longer_than_the_cue_and_bad_colours_are_refused() {
    let mut d = good();
    d["tracks"]["overlays"][0]["cues"][0]["params"]["fade_out"] = json!(19.6);
    assert!(errors(d).iter().any(|m| m.contains("\"clock\": fade_in + fade_out")));
    let mut d = good();
    d["tracks"]["overlays"][0]["cues"][0]["params"]["color"] = json!("red");
    assert!(errors(d).iter().any(|m| m.starts_with("overlay layer 2 cue \"clock\"")));
}

#[test]
fn garbage_is_refused_with_a_clear_message() {
    let e = parse("{not json", &inv()).unwrap_err().to_string();
    assert!(e.starts_with("invalid timeline: timeline: not JSON"), "{e}");
    assert!(parse("[]", &inv()).is_err());
}

#[test]
fn a_picture_size_commands_refuse_is_refused_naming_the_field() {
    let mut d = good();
    d["resolution"] = json!("10x10");
    let e = errors(d.clone());
    assert!(e.iter().any(|m| m.starts_with("timeline: resolution \"10x10\"") && m.contains("64x36")), "{e:?}");
    assert!(parse_stored(&d.to_string(), &inv()).is_err(), "a stored row is held to the same rule");
}

#[test]
fn a_cue_id_that_breaks_the_id_rule_is_refused_naming_the_field() {
    let mut d = good();
    d["tracks"]["video"]["cues"][0]["id"] = json!("c 1!");
    let e = check_value(&d, &inv()).unwrap_err();
    assert!(e.0.iter().any(|e| e.pointer.as_deref() == Some("/tracks/video/cues/0/id")), "{e}");
    // A stored row skips the schema: the id type refuses it, named the same way.
    let e = parse_stored(&d.to_string(), &inv()).unwrap_err();
    assert!(e.0.iter().any(|e| e.pointer.as_deref() == Some("/tracks/video/cues/0/id")), "{e}");
    assert!(e.to_string().contains("is not an id"), "{e}");
    // The same JSON comes back out: ids are plain strings on the wire.
    let t = check_value(&good(), &inv()).unwrap();
    let out = serde_json::to_value(&t.doc).unwrap();
    assert_eq!(out["id"], json!("marina"));
    assert_eq!(out["tracks"]["video"]["cues"][0]["id"], json!("c1"));
    assert_eq!(out["fallback"]["backup_camera_id"], json!("cam-b"));
    assert_eq!(serde_json::from_value::<TimelineDoc>(out).unwrap(), t.doc);
}
