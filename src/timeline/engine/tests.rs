use super::*;
use crate::timeline::model::{parse, Inventory};
use proptest::prelude::*;
use serde_json::json;

use crate::values::{CameraId, CueId, PresetId};

fn cue(id: &str) -> CueId {
    CueId::new(id).unwrap()
}

const CAMS: [&str; 3] = ["cam-a", "cam-b", "cam-c"];

fn inventory() -> Inventory {
    let mut inv = Inventory::default();
    for c in CAMS {
        inv.cameras.insert(CameraId::new(c).unwrap(), [PresetId::new("p1").unwrap()].into_iter().collect());
    }
    inv
}

/// A random valid timeline: back-to-back or gapped video cues, up to two overlay tracks.
fn arb_timeline() -> impl Strategy<Value = Timeline> {
    let video = prop::collection::vec((0u32..3, 1u32..4000, 0u32..4, 0u32..1500), 1..8);
    let overlay = prop::collection::vec((0u32..2000, 200u32..3000, 0u32..100, 0u32..100), 0..5);
    (video, prop::collection::vec(overlay, 0..3), any::<bool>(), 0u32..3000).prop_map(
        |(video, overlays, looping, tail)| {
            let mut t = 0u32;
            let mut vcues = Vec::new();
            for (i, (gap, dur, src, fade)) in video.into_iter().enumerate() {
                t += if i == 0 { gap % 2 * 300 } else { gap * 250 };
                let (action, params) = match src {
                    3 => ("show_slate", json!({})),
                    c => (
                        "show_camera",
                        json!({"camera_id": CAMS[c as usize], "transition": if fade > 700 { "fade" } else { "cut" },
                               "transition_duration": (fade.min(dur) as f64) / 1000.0 / 2.0}),
                    ),
                };
                vcues.push(json!({"id": format!("v{i}"), "start_time": t as f64 / 1000.0,
                                  "duration": dur as f64 / 1000.0, "action": action, "params": params}));
                t += dur;
            }
            let mut tracks = Vec::new();
            let mut end = t;
            for (l, cues) in overlays.into_iter().enumerate() {
                let mut t = 0u32;
                let mut ocues = Vec::new();
                for (i, (gap, dur, fi, fo)) in cues.into_iter().enumerate() {
                    t += gap;
                    let (fi, fo) = (dur * fi / 300, dur * fo / 300);
                    ocues.push(json!({"id": format!("o{l}-{i}"), "start_time": t as f64 / 1000.0,
                        "duration": dur as f64 / 1000.0, "action": "show_overlay",
                        "params": {"type": "text", "text": "x", "position": "top_left", "opacity": 1.0,
                                   "fade_in": fi as f64 / 1000.0, "fade_out": fo as f64 / 1000.0}}));
                    t += dur;
                }
                end = end.max(t);
                tracks.push(json!({"layer": l, "cues": ocues}));
            }
            let doc = json!({"id": "t", "name": "t", "duration": (end + tail) as f64 / 1000.0, "fps": 25,
                "resolution": "320x180", "loop": looping,
                "tracks": {"video": {"cues": vcues}, "overlays": tracks}});
            parse(&doc.to_string(), &inventory()).expect("generated timelines are valid")
        },
    )
}

/// Polls in uneven steps from program time `from` to `to`, collecting everything.
fn run(e: &mut Engine, from: Us, to: Us, steps: &[u32]) -> Vec<Scheduled> {
    let mut out = Vec::new();
    let mut now = from;
    let mut i = 0;
    while now < to {
        now = (now + 1 + steps[i % steps.len()] as Us * 1000).min(to);
        out.extend(e.poll(now));
        i += 1;
    }
    out
}

fn fold(state: &mut ShowState, effects: &[Scheduled]) {
    for s in effects {
        state.apply(&s.effect);
    }
}

fn track_of(tl: &Timeline, id: &str) -> i64 {
    if tl.video.iter().any(|c| c.id.as_str() == id) {
        return -1;
    }
    tl.overlays.iter().find(|t| t.cues.iter().any(|c| c.id.as_str() == id)).map(|t| t.layer as i64).unwrap()
}

fn cue_of(e: &Effect) -> Option<&str> {
    match e {
        Effect::Cut { cue_id, .. }
        | Effect::ShowOverlay { cue_id, .. }
        | Effect::HideOverlay { cue_id }
        | Effect::CueEnded { cue_id } => Some(cue_id.as_str()),
        _ => None,
    }
}

fn without_prerolls(v: &[Scheduled]) -> Vec<Scheduled> {
    v.iter().filter(|s| !matches!(s.effect, Effect::Preroll { .. })).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn effects_come_in_order_and_match_the_pure_state(
        tl in arb_timeline(), steps in prop::collection::vec(1u32..700, 1..6), t0 in 0i64..10_000_000,
    ) {
        let tl = Arc::new(tl);
        let mut e = Engine::new(tl.clone(), 1_000_000);
        e.play(t0);
        let span = tl.duration * if tl.looping { 3 } else { 1 } + 500_000;
        let mut state = ShowState::default();
        let mut last_at = i64::MIN;
        let mut last_pos_per_track: std::collections::HashMap<i64, Us> = Default::default();
        let mut playing_video: BTreeSet<CueId> = BTreeSet::new();
        let mut now = t0;
        let mut i = 0;
        while now < t0 + span {
            now = (now + steps[i % steps.len()] as Us * 1000).min(t0 + span);
            i += 1;
            let batch = e.poll(now);
            for s in &batch {
                prop_assert!(s.at <= now, "nothing is emitted beyond the horizon");
                if !matches!(s.effect, Effect::Preroll { .. }) {
                    prop_assert!(s.at >= last_at, "effects come in time order");
                    last_at = s.at;
                }
                if let Some(id) = cue_of(&s.effect) {
                    let track = track_of(&tl, id);
                    let prev = last_pos_per_track.insert(track, s.pos).unwrap_or(i64::MIN);
                    prop_assert!(s.pos >= prev, "effects of one track come in order");
                }
                match &s.effect {
                    Effect::Cut { cue_id, .. } => { playing_video.insert(cue_id.clone()); }
                    Effect::CueEnded { cue_id } => { playing_video.remove(cue_id); }
                    _ => {}
                }
                prop_assert!(playing_video.len() <= 1, "never two video cues at once: {:?}", playing_video);
            }
            fold(&mut state, &batch);
            if e.state() == PlayState::Playing {
                prop_assert_eq!(&state, &state_at(&tl, e.position(now)), "incremental state = pure state");
            }
        }
        if !tl.looping {
            prop_assert_eq!(e.state(), PlayState::Ended);
        }
    }

    #[test]
    fn seek_then_play_reaches_the_state_of_playing_from_zero(
        tl in arb_timeline(), frac in 0.0f64..1.0, steps in prop::collection::vec(1u32..500, 1..4),
    ) {
        let tl = Arc::new(tl);
        let d = tl.duration;
        let t = ((d as f64 * frac) as Us).min(d - 1);
        // A plays from 0 to t.
        let mut a = Engine::new(tl.clone(), 1_000_000);
        a.play(0);
        let mut sa = ShowState::default();
        fold(&mut sa, &run(&mut a, 0, t, &steps));
        // B starts by seeking to t.
        let mut b = Engine::new(tl.clone(), 1_000_000);
        let mut sb = ShowState::default();
        fold(&mut sb, &b.seek(0, SeekTarget::Seconds(t as f64 / 1e6)).unwrap());
        prop_assert_eq!(&sb, &sa, "seek({}) = play 0..{}", t, t);
        prop_assert_eq!(b.position(0), a.position(t));
        // And from there on both emit the same effects, B's shifted by t.
        let after_a = without_prerolls(&run(&mut a, t, t + 2 * d, &steps));
        let after_b: Vec<Scheduled> = without_prerolls(&run(&mut b, 0, 2 * d, &steps))
            .into_iter().map(|s| Scheduled { at: s.at + t, ..s }).collect();
        prop_assert_eq!(after_a, after_b);
    }

    #[test]
    fn pause_and_resume_shift_later_cues_by_exactly_the_pause(
        tl in arb_timeline(), p_frac in 0.0f64..1.0, pause in 1i64..5_000_000, steps in prop::collection::vec(1u32..500, 1..4),
    ) {
        let tl = Arc::new(tl);
        let d = tl.duration;
        let p = ((d as f64 * p_frac) as Us).min(d - 1);
        let mut a = Engine::new(tl.clone(), 1_000_000);
        let mut b = Engine::new(tl.clone(), 1_000_000);
        a.play(0);
        b.play(0);
        let _ = run(&mut a, 0, p, &steps);
        let _ = run(&mut b, 0, p, &steps);
        a.pause(p);
        prop_assert!(a.poll(p + pause).is_empty(), "nothing happens while paused");
        prop_assert_eq!(a.position(p + pause), p);
        a.resume(p + pause);
        let after_a = without_prerolls(&run(&mut a, p + pause, p + pause + 2 * d, &steps));
        let after_b: Vec<Scheduled> = without_prerolls(&run(&mut b, p, p + 2 * d, &steps))
            .into_iter().map(|s| Scheduled { at: s.at + pause, ..s }).collect();
        prop_assert_eq!(after_a, after_b);
    }
}

fn two_cue_timeline(looping: bool) -> Arc<Timeline> {
    let doc = json!({"id": "t", "name": "t", "duration": 10, "fps": 25, "resolution": "320x180", "loop": looping,
        "tracks": {"video": {"cues": [
            {"id": "a", "start_time": 0, "duration": 4, "action": "show_camera", "params": {"camera_id": "cam-a"}},
            {"id": "b", "start_time": 4, "duration": 6, "action": "show_camera",
             "params": {"camera_id": "cam-b", "preset_id": "p1"}}]},
          "overlays": [{"layer": 1, "cues": [{"id": "logo", "start_time": 2, "duration": 6, "action": "show_overlay",
             "params": {"type": "text", "text": "hi", "position": "top_left", "opacity": 1, "fade_out": 1}}]}]}});
    Arc::new(parse(&doc.to_string(), &inventory()).unwrap())
}

#[test]
fn prerolls_come_lead_before_their_cue_and_at_once_when_closer() {
    let mut e = Engine::new(two_cue_timeline(false), 1_500_000);
    e.play(100);
    let first = e.poll(100);
    let pre: Vec<_> = first.iter().filter(|s| matches!(s.effect, Effect::Preroll { .. })).collect();
    assert_eq!(pre.len(), 1, "only cue a is within the lead: {first:?}");
    assert_eq!(pre[0].at, 100, "cue a starts now: pre-rolled at once");
    let more = e.poll(100 + 2_500_000);
    let b = more.iter().find(|s| matches!(&s.effect, Effect::Preroll { cue_id, .. } if cue_id == "b")).unwrap();
    assert_eq!(b.at, 100 + 4_000_000 - 1_500_000, "cue b's pre-roll comes 1.5 s ahead");
}

#[test]
fn overlays_hide_early_enough_for_the_fade_out_to_end_with_the_cue() {
    let mut e = Engine::new(two_cue_timeline(false), 0);
    e.play(0);
    let all = e.poll(20_000_000);
    let at = |want: &Effect| all.iter().find(|s| &s.effect == want).map(|s| s.at);
    assert_eq!(at(&Effect::ShowOverlay { cue_id: cue("logo"), layer: 1 }), Some(2_000_000));
    assert_eq!(at(&Effect::HideOverlay { cue_id: cue("logo") }), Some(7_000_000));
    assert_eq!(at(&Effect::CueEnded { cue_id: cue("logo") }), Some(8_000_000));
    assert_eq!(all.last().unwrap().effect, Effect::Ended);
    assert_eq!(e.state(), PlayState::Ended);
}

#[test]
fn the_next_loop_boundary_comes_after_what_was_handed_out_and_only_while_looping() {
    let mut e = Engine::new(two_cue_timeline(true), 0);
    assert_eq!(e.next_boundary(0), None, "idle");
    e.play(500);
    let _ = e.poll(3_000_500);
    assert_eq!(e.next_boundary(3_000_500), Some((10_000_000, 10_000_500)));
    // Effects already handed out up to 10.2 s (a look-ahead past the boundary): the next one.
    let _ = e.poll(10_200_500);
    assert_eq!(e.next_boundary(9_900_500), Some((20_000_000, 20_000_500)));
    e.pause(10_300_500);
    assert_eq!(e.next_boundary(10_300_500), None, "paused");
    let mut once = Engine::new(two_cue_timeline(false), 0);
    once.play(0);
    assert_eq!(once.next_boundary(0), None, "not looping");
}

#[test]
fn a_new_version_takes_over_at_the_boundary_hiding_what_it_does_not_show() {
    // v1: cam-a, logo (2-8 s, fading out from 7 s) and a tag for the whole loop.
    let v1 = json!({"id": "t", "name": "t", "duration": 10, "fps": 25, "resolution": "320x180", "loop": true,
        "tracks": {"video": {"cues": [
            {"id": "a", "start_time": 0, "duration": 10, "action": "show_camera", "params": {"camera_id": "cam-a"}}]},
          "overlays": [{"layer": 1, "cues": [{"id": "tag", "start_time": 0, "duration": 10, "action": "show_overlay",
             "params": {"type": "text", "text": "v1", "position": "top_left", "opacity": 1}}]},
            {"layer": 2, "cues": [{"id": "old", "start_time": 5, "duration": 5, "action": "show_overlay",
             "params": {"type": "text", "text": "old", "position": "top_right", "opacity": 1}}]}]}});
    // v2: cam-b, the same `tag` cue (a new look), no `old`; 6 s long.
    let v2 = json!({"id": "t", "name": "t", "duration": 6, "fps": 25, "resolution": "320x180", "loop": true,
        "tracks": {"video": {"cues": [
            {"id": "b", "start_time": 0, "duration": 6, "action": "show_camera", "params": {"camera_id": "cam-b"}}]},
          "overlays": [{"layer": 1, "cues": [{"id": "tag", "start_time": 0, "duration": 6, "action": "show_overlay",
             "params": {"type": "text", "text": "v2", "position": "top_left", "opacity": 1}}]}]}});
    let v1 = Arc::new(parse(&v1.to_string(), &inventory()).unwrap());
    let v2 = Arc::new(parse(&v2.to_string(), &inventory()).unwrap());
    let mut e = Engine::new(v1, 1_000_000);
    e.play(100);
    let _ = e.pin(Some(CameraId::new("cam-c").unwrap()));
    let _ = e.poll(13_000_100);
    let b = e.next_boundary(13_000_100).unwrap();
    assert_eq!(b, (20_000_000, 20_000_100));
    let before = e.poll(b.1 - 1);
    assert!(before.iter().all(|s| s.at < b.1), "nothing of v1 at or after the boundary: {before:?}");
    let (mut n, first) = e.hand_over(v2.clone(), b);
    let at = |want: &Effect| first.iter().find(|s| &s.effect == want).map(|s| s.at);
    assert_eq!(at(&Effect::HideOverlay { cue_id: cue("old") }), Some(b.1), "{first:?}");
    assert_eq!(at(&Effect::HideOverlay { cue_id: cue("tag") }), None, "replaced, not hidden: {first:?}");
    assert_eq!(at(&Effect::ShowOverlay { cue_id: cue("tag"), layer: 1 }), Some(b.1), "{first:?}");
    assert!(first.iter().any(|s| s.at == b.1 && matches!(&s.effect, Effect::Cut { cue_id, .. } if cue_id == "b")));
    assert_eq!(n.pinned(), Some("cam-c"), "the pin stays");
    assert_eq!(n.position(b.1 + 2_000_000), 2_000_000, "v2's position 0 is the boundary");
    assert_eq!(n.status(b.1 + 7_000_000).loop_index, 1, "and it loops on its own duration");
    assert_eq!(n.next_boundary(b.1 + 1_000_000), Some((6_000_000, b.1 + 6_000_000)));
    let mut st = ShowState { video: Some(cue("a")), overlays: [cue("tag"), cue("old")].into() };
    fold(&mut st, &first);
    assert_eq!(st, state_at(&v2, 0));
    assert!(n.poll(b.1 + 5_000_000).iter().all(|s| s.at > b.1), "nothing emitted twice");
}

#[test]
fn skip_goes_to_the_next_video_cue_and_wraps_when_looping() {
    let mut e = Engine::new(two_cue_timeline(true), 0);
    e.play(0);
    let _ = e.poll(1_000_000);
    let jump = e.skip(1_000_000).unwrap();
    assert!(jump.iter().any(|s| matches!(&s.effect, Effect::Cut { cue_id, .. } if cue_id == "b")));
    assert_eq!(e.position(1_000_000), 4_000_000);
    let jump = e.skip(2_000_000).unwrap();
    assert!(jump.iter().any(|s| matches!(&s.effect, Effect::Cut { cue_id, .. } if cue_id == "a")));
    assert!(jump.iter().any(|s| s.effect == Effect::HideOverlay { cue_id: cue("logo") }));
    assert_eq!(e.position(2_000_000), 10_000_000, "wrapped into loop 1");
    assert_eq!(e.status(2_000_000).loop_index, 1);
}

#[test]
fn seeking_to_an_unknown_cue_or_outside_the_timeline_changes_nothing() {
    let mut e = Engine::new(two_cue_timeline(false), 0);
    e.play(0);
    let _ = e.poll(3_000_000);
    assert_eq!(e.seek(3_000_000, SeekTarget::Cue(cue("nope"))), Err(EngineError::UnknownCue(cue("nope"))));
    assert!(e.seek(3_000_000, SeekTarget::Seconds(11.0)).is_err());
    assert!(e.seek(3_000_000, SeekTarget::Seconds(-1.0)).is_err());
    assert_eq!(e.position(3_000_000), 3_000_000);
    assert_eq!(e.state(), PlayState::Playing);
}

#[test]
fn seeking_while_paused_shows_the_target_and_stays_paused() {
    let mut e = Engine::new(two_cue_timeline(false), 0);
    e.play(0);
    let _ = e.poll(1_000_000);
    e.pause(1_000_000);
    let jump = e.seek(5_000_000, SeekTarget::Cue(cue("b"))).unwrap();
    assert_eq!(jump.len(), 2, "cut to b and show the logo: {jump:?}");
    assert_eq!(e.state(), PlayState::Paused);
    assert!(e.poll(9_000_000).is_empty());
    e.resume(9_000_000);
    let next = e.poll(9_000_000 + 3_000_000);
    let hide = Scheduled { at: 12_000_000, pos: 7_000_000, effect: Effect::HideOverlay { cue_id: cue("logo") } };
    assert_eq!(next[0], hide, "the logo's hide (at 7 s) comes 3 s after the resume at 4 s");
}
