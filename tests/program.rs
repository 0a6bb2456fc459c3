//! Program mode against real components: solid-colour RTSP cameras, the agent's bus and encoder,
//! nginx-rtmp recording. Which source was on air is read back from the recording, frame by frame.

mod common;

use std::time::{Duration, Instant};

use common::*;

const FPS: f64 = 25.0;
// Decode the recording at 16x9 and sample near a corner (the slate's text is in the middle).
const W: u32 = 16;
const H: u32 = 9;

fn setup(cams: &[(&str, &RtspCamera)], ingests: &[&RtmpIngest]) -> TestAgent {
    let mut agent = TestAgent::new();
    for (id, cam) in cams {
        agent.ok(&["camera", "add", id, "--url", &cam.url()]);
    }
    for (i, ing) in ingests.iter().enumerate() {
        agent.ok(&[
            "destination",
            "add",
            &format!("d{}", i + 1),
            "--platform",
            "custom",
            "--url",
            &ing.url(),
            "--key",
            &format!("prog-key-{i}"),
        ]);
    }
    agent.spawn();
    agent
}

fn program_time(agent: &TestAgent) -> f64 {
    agent.program("main")["program_time_s"].as_f64().expect("program time")
}

fn stop_and_recording(agent: &mut TestAgent, ingest: &RtmpIngest) -> Vec<char> {
    agent.ok(&["program", "stop"]);
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1, "one publish session for the whole program (no reconnect): {recs:?}");
    classes(&decode_rgb(&recs[0], W, H), W, 2, 1)
}

/// Ten scheduled cuts A→B→A…: each lands within one frame of its scheduled program time, with one
/// recording and one encoder process for the whole run. At 30 fps, where a frame (33.3 ms) is not a
/// whole number of nanoseconds and cuts fall exactly on frame times.
#[test]
fn scheduled_cuts_are_frame_accurate_without_reconnect() {
    const FPS: f64 = 30.0;
    let a = RtspCamera::start("red");
    let b = RtspCamera::start("blue");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&ingest]);
    agent.start_program_fps(&["a", "b"], &["d1"], 30);
    let encoder_pid = agent.program("main")["encoder"]["pid"].as_u64();
    let base = program_time(&agent).ceil() + 2.0;
    let cuts: Vec<(f64, &str, char)> = (0..10)
        .map(|k| (base + k as f64 * 1.3, if k % 2 == 0 { "b" } else { "a" }, if k % 2 == 0 { 'B' } else { 'R' }))
        .collect();
    for (at, cam, _) in &cuts {
        agent.ok(&["program", "cut", cam, "--at", &format!("{at:.3}")]);
    }
    let end = cuts.last().unwrap().0 + 2.0;
    agent.wait_program(Duration::from_secs(60), "the cuts to play out", |p| {
        p["program_time_s"].as_f64().unwrap_or(0.0) > end
    });
    assert_eq!(agent.program("main")["encoder"]["pid"].as_u64(), encoder_pid, "the encoder was never restarted");
    let cls = stop_and_recording(&mut agent, &ingest);
    let mut errors = Vec::new();
    for (at, _cam, want) in &cuts {
        let expected = (at * FPS - 1e-6).ceil() as usize; // at*fps may land a hair above an integer
        let actual = first_from(&cls, expected.saturating_sub(10), *want).unwrap_or(usize::MAX);
        errors.push(actual as i64 - expected as i64);
    }
    eprintln!("cut errors in frames: {errors:?}");
    assert!(errors.iter().all(|e| e.abs() <= 1), "every cut within ±1 frame: {errors:?}");
    assert!(
        errors.iter().filter(|e| **e == 0).count() >= 9,
        "cuts on exact frame times land on that frame: {errors:?}"
    );
    agent.stop();
}

/// Kill the camera on air: the slate is on air within 1 s, without a reconnect, with an event;
/// restarted, the camera is back on air within 5 s of its first frames.
#[test]
fn a_dead_camera_goes_to_slate_and_comes_back() {
    let a = RtspCamera::start("red");
    let mut b = RtspCamera::start("blue");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&ingest]);
    agent.start_program(&["b", "a"], &["d1"]);
    std::thread::sleep(Duration::from_secs(2));
    let t_kill = program_time(&agent);
    b.kill();
    agent.wait_program(Duration::from_secs(5), "slate", |p| p["on_air"]["kind"] == "slate");
    std::thread::sleep(Duration::from_secs(2));
    b.restart();
    let p = agent.wait_program(Duration::from_secs(40), "camera b delivering again", |p| {
        p["cameras"].as_array().unwrap().iter().any(|c| {
            c["camera"] == "b"
                && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200)
                && c["ingest"]["phase"] == "running"
        })
    });
    let t_first = p["program_time_s"].as_f64().unwrap();
    agent.wait_program(Duration::from_secs(10), "b back on air", |p| p["on_air"]["camera"] == "b");
    std::thread::sleep(Duration::from_secs(1));
    // The event table tells the same story: b down, then up again; the slate on for b, then off.
    let events = agent.events();
    let find = |from: usize, ty: &str, subject: &str, detail: &str| {
        (from..events.len())
            .find(|&i| {
                let e = &events[i];
                e["event_type"] == ty && e["subject"] == subject && e["detail"].as_str().unwrap_or("").contains(detail)
            })
            .unwrap_or_else(|| {
                panic!("no {ty} event about {subject} ({detail:?}) from #{from}; events:\n{}", event_lines(&events))
            })
    };
    let down = find(0, "camera_down", "b", "program:main/camera:b");
    assert_eq!(events[down]["scope"], "program:main", "{}", events[down]);
    find(down, "camera_up", "b", "");
    let on = find(0, "fallback_on", "program:main", "camera b");
    let off = find(on, "fallback_off", "program:main", "camera b");
    assert!(off > down, "b back on air after it went down:\n{}", event_lines(&events));
    let cls = stop_and_recording(&mut agent, &ingest);
    let kill_frame = (t_kill * FPS) as usize;
    let slate = first_from(&cls, kill_frame, 'S').expect("slate on air");
    let to_slate = (slate - kill_frame) as f64 / FPS;
    let back = first_from(&cls, slate, 'B').expect("b back on air");
    let to_back = back as f64 / FPS - t_first;
    eprintln!("camera death → slate: {to_slate:.2} s; first frames → on air: {to_back:.2} s");
    // t_kill is read just before the kill: allow the CLI's round trip (tens of ms).
    assert!(to_slate <= 1.0 + 0.05, "slate after {to_slate:.2} s");
    assert!(to_back <= 5.0, "camera back after {to_back:.2} s");
    agent.stop();
}

/// SIGKILL a program camera that is not on air: the event table says `camera_down` about that
/// camera (by its id, in the program), and nothing about the healthy destination or the other camera.
#[test]
fn a_killed_program_camera_is_camera_down_with_its_id() {
    let a = RtspCamera::start("red");
    let mut b = RtspCamera::start("blue");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&ingest]);
    agent.start_program(&["a", "b"], &["d1"]);
    agent.wait_program(Duration::from_secs(20), "both cameras delivering", |p| {
        p["cameras"].as_array().is_some_and(|cams| {
            ["a", "b"].iter().all(|id| {
                cams.iter().any(|c| c["camera"] == *id && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200))
            })
        })
    });
    agent.wait_event(Duration::from_secs(10), "camera_up about b", |e| {
        e["event_type"] == "camera_up" && e["subject"] == "b"
    });
    let before = agent.events().len();
    b.kill();
    let down = agent.wait_event(Duration::from_secs(20), "camera_down about b", |e| {
        e["event_type"] == "camera_down" && e["subject"] == "b"
    });
    assert_eq!(down["scope"], "program:main", "the event says which program lost the camera: {down}");
    assert!(down["detail"].as_str().unwrap_or("").contains("program:main/camera:b"), "the job is named: {down}");
    // Give a wrong destination_down time to show up, with the destination still receiving.
    let rec = ingest.recordings()[0].clone();
    let size = || std::fs::metadata(&rec).map(|m| m.len()).unwrap_or(0);
    let s0 = size();
    std::thread::sleep(Duration::from_secs(3));
    assert!(size() > s0, "the destination keeps receiving (camera a on air)");
    let events = agent.events();
    let since: Vec<_> = events[before..].to_vec();
    let wrong: Vec<_> = since
        .iter()
        .filter(|e| {
            let ty = e["event_type"].as_str().unwrap_or("");
            ty.starts_with("destination_") || ty.starts_with("encoder_") || (ty == "camera_down" && e["subject"] != "b")
        })
        .collect();
    assert!(wrong.is_empty(), "only camera b went down; events since the kill:\n{}", event_lines(&since));
    let p = agent.program("main");
    assert_eq!(p["on_air"]["camera"], "a", "camera a stayed on air: {p:#}");
    let _ = stop_and_recording(&mut agent, &ingest);
    agent.stop();
}

/// Close a camera's connection while it is on air (its RTSP server killed: the kernel closes the
/// TCP connection): a certain loss, so its backup is on air within 3 frames at the ingest, where a
/// hang waits the fallback window. Without a backup, the slate, as fast.
#[test]
fn a_closed_camera_connection_is_replaced_within_three_frames() {
    let mut a = RtspCamera::start("red");
    let c = RtspCamera::start("green");
    let mut b = RtspCamera::start("blue");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("c", &c), ("b", &b)], &[&ingest]);
    agent.ok(&["camera", "add", "a", "--url", &a.url(), "--backup", "c"]);
    agent.start_program(&["a", "b"], &["d1"]);
    agent.wait_program(Duration::from_secs(20), "all cameras delivering", |p| {
        p["cameras"].as_array().is_some_and(|cams| {
            ["a", "b", "c"].iter().all(|id| {
                cams.iter().any(|c| c["camera"] == *id && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200))
            })
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    // The program time just before and just after the kill bound the moment of the close.
    let before_a = program_time(&agent);
    a.kill();
    let after_a = program_time(&agent);
    agent.wait_program(Duration::from_secs(5), "backup on air", |p| p["on_air"]["camera"] == "c");
    agent.ok(&["program", "cut", "b"]);
    agent.wait_program(Duration::from_secs(5), "b on air", |p| p["on_air"]["camera"] == "b");
    std::thread::sleep(Duration::from_secs(1));
    let before_b = program_time(&agent);
    b.kill();
    let after_b = program_time(&agent);
    agent.wait_program(Duration::from_secs(5), "slate", |p| p["on_air"]["kind"] == "slate");
    std::thread::sleep(Duration::from_millis(500));
    let cls = stop_and_recording(&mut agent, &ingest);
    for (what, before, after, want) in [("a → backup c", before_a, after_a, 'G'), ("b → slate", before_b, after_b, 'S')]
    {
        let (from, to) = ((before * FPS).floor() as usize, (after * FPS).ceil() as usize);
        let on = first_from(&cls, from, want).unwrap_or_else(|| panic!("{what}: never on air"));
        // Frames after the close that still showed the lost camera: at most 3, plus the frames
        // the CLI's round trip around the kill leaves uncertain.
        let late = on.saturating_sub(to);
        let cls_around: String = cls[from.saturating_sub(3)..(on + 3).min(cls.len())].iter().collect();
        eprintln!(
            "{what}: kill within frames {from}..={to}, replacement from frame {on} ({late} frames after the later bound, {} after the earlier): {cls_around}",
            on - from
        );
        assert!(late <= 3, "{what}: {late} frames of the lost camera after the close: {cls_around}");
        assert!(on - from <= 3 + (to - from), "{what}: {cls_around}");
    }
    assert!(
        !cls[(before_a * FPS) as usize..(before_b * FPS) as usize].contains(&'S'),
        "never the slate while c was healthy"
    );
    agent.stop();
}

/// Hang a camera that has a backup: the backup is on air within 1 s.
#[test]
fn a_hung_camera_is_replaced_by_its_backup() {
    let mut a = RtspCamera::start("red");
    let c = RtspCamera::start("green");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("c", &c)], &[&ingest]);
    agent.ok(&["camera", "add", "a", "--url", &a.url(), "--backup", "c"]);
    agent.start_program(&["a"], &["d1"]);
    agent.wait_program(Duration::from_secs(20), "backup pre-rolled", |p| {
        p["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["camera"] == "c" && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200))
    });
    std::thread::sleep(Duration::from_secs(1));
    // Thumbnails of the program and of each source, refreshed every second.
    let dir = tempfile::tempdir().unwrap();
    for (source, want) in [(None, 'R'), (Some("a"), 'R'), (Some("c"), 'G')] {
        let out = dir.path().join("t.jpg");
        let mut args = vec!["program", "thumbnail", "--out", out.to_str().unwrap()];
        if let Some(s) = source {
            args.extend(["--source", s]);
        }
        agent.ok(&args);
        let frames = decode_rgb(&out, W, H);
        assert_eq!(frames.len(), 1);
        assert_eq!(classify(pixel(&frames[0], W, 8, 4)), want, "thumbnail of {source:?}");
    }
    let t_hang = program_time(&agent);
    a.hang();
    agent.wait_program(Duration::from_secs(5), "backup on air", |p| p["on_air"]["camera"] == "c");
    std::thread::sleep(Duration::from_secs(1));
    a.resume();
    let cls = stop_and_recording(&mut agent, &ingest);
    let hang_frame = (t_hang * FPS) as usize;
    let green = first_from(&cls, hang_frame, 'G').expect("backup on air");
    let took = (green - hang_frame) as f64 / FPS;
    eprintln!("camera hang → backup: {took:.2} s");
    assert!(took <= 1.0 + 0.05, "backup after {took:.2} s");
    // A hang may pass: the last frame is held for the fallback window (900 ms), not cut at once.
    assert!(took >= 0.6, "a hang waits its window before the backup: {took:.2} s");
    assert!(!cls[hang_frame..green].contains(&'S'), "no slate while the backup was healthy");
    agent.stop();
}

fn write_png(path: &std::path::Path, w: u32, h: u32, rgba: [u8; 4]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().unwrap();
    wr.write_image_data(&rgba.repeat((w * h) as usize)).unwrap();
}

/// Overlays on air: a half-transparent logo blends to the expected colour, a `{{var:…}}` change is
/// visible within 2 frames, a 1 s fade-in ramps monotonically; the encoder is never restarted and
/// the ingest never reconnects.
#[test]
fn overlays_blend_change_live_and_fade_without_restarts() {
    let a = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a)], &[&ingest]);
    let dir = tempfile::tempdir().unwrap();
    let logo = dir.path().join("white.png");
    write_png(&logo, 40, 40, [255, 255, 255, 255]);
    agent.start_program(&["a"], &["d1"]);
    let encoder_pid = agent.program("main")["encoder"]["pid"].as_u64();
    let logo_s = logo.to_str().unwrap();
    agent.ok(&["overlay", "show", "logo", "--image", logo_s, "--position", "top_right", "--opacity", "0.5"]);
    agent.ok(&[
        "overlay",
        "show",
        "tide",
        "--text",
        "{{var:tide}}",
        "--position",
        "bottom_left",
        "--font-size",
        "40",
        "--color",
        "#ffffff",
        "--background",
        "#000000",
    ]);
    agent.ok(&["overlay", "set-var", "tide", "1"]);
    std::thread::sleep(Duration::from_secs(2));
    let t_var = program_time(&agent);
    agent.ok(&["overlay", "set-var", "tide", "8888888"]);
    std::thread::sleep(Duration::from_secs(1));
    let t_fade = program_time(&agent);
    agent.ok(&["overlay", "show", "fader", "--image", logo_s, "--position", "top_left", "--fade-in", "1000"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.program("main")["encoder"]["pid"].as_u64(), encoder_pid, "no encoder restart");
    agent.ok(&["program", "stop"]);
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1, "no reconnect during overlay changes");
    let (w, h) = (320, 180);
    let frames = decode_rgb(&recs[0], w, h);
    let last = frames.last().unwrap();
    // The logo: white at 50% over red → (255, 128, 128), within what H.264 keeps.
    let (r, g, b) = pixel(last, w, 300, 20);
    assert!(r > 220 && (100..160).contains(&g) && (100..160).contains(&b), "blended logo colour {:?}", (r, g, b));
    assert_eq!(classify(pixel(last, w, 250, 20)), 'R', "outside the logo the camera is untouched");
    // The variable: the text region changes within 2 frames of the command.
    let region = |f: &[u8]| -> i64 {
        (110..170).flat_map(|y| (0..200).map(move |x| (x, y))).map(|(x, y)| pixel(f, w, x, y).1 as i64).sum()
    };
    let var_frame = (t_var * FPS).floor() as usize;
    let before = region(&frames[var_frame.saturating_sub(3)]);
    let changed = (var_frame.saturating_sub(2)..frames.len())
        .find(|&i| (region(&frames[i]) - before).abs() > 20_000)
        .expect("text changed");
    let delay = changed as i64 - var_frame as i64;
    eprintln!("variable change on air after {delay} frame(s)");
    assert!(delay <= 2 + 1, "variable change took {delay} frames (≤ 2, + 1 for the command's own latency)");
    // The fade-in: the fader's centre goes from red towards white, monotonically, over ~1 s.
    let fade_frame = (t_fade * FPS).floor() as usize;
    let greens: Vec<u8> = (fade_frame..fade_frame + 35).map(|i| pixel(&frames[i], w, 20, 20).1).collect();
    eprintln!("fade-in green channel: {greens:?}");
    assert!(greens.windows(2).all(|p| p[1] as i32 >= p[0] as i32 - 6), "monotonic ramp: {greens:?}");
    assert!(greens[0] < 60 && *greens.last().unwrap() > 200, "from camera to full logo: {greens:?}");
    let start = greens.iter().position(|&g| g > 5).unwrap();
    let full = greens.iter().position(|&g| g >= 250).unwrap();
    assert!((22..=28).contains(&(full - start)), "the ramp spans 1 s (25 frames): {} frames", full - start);
    agent.stop();
}

/// Attach a destination while live: it receives within 3 s, the other gets no new recording;
/// detach it: the other carries on.
#[test]
fn destinations_attach_and_detach_while_the_program_runs() {
    let a = RtspCamera::start("red");
    let b = RtspCamera::start("blue");
    let i1 = RtmpIngest::start();
    let i2 = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&i1, &i2]);
    agent.start_program(&["a"], &["d1"]);
    let t = Instant::now();
    agent.ok(&["destination", "attach", "d2"]);
    i2.wait_for_recordings(1, Duration::from_secs(3));
    eprintln!("attached destination receiving after {:.2} s", t.elapsed().as_secs_f64());
    // A camera that was not part of the program: pre-roll it, then the cut is instant.
    agent.ok(&["program", "preroll", "b"]);
    agent.wait_program(Duration::from_secs(20), "b pre-rolled", |p| {
        p["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["camera"] == "b" && c["frame_age_ms"].as_u64().is_some_and(|a| a < 200))
    });
    agent.ok(&["program", "cut", "b"]);
    agent.wait_program(Duration::from_millis(500), "b on air at once", |p| p["on_air"]["camera"] == "b");
    agent.ok(&["destination", "detach", "d2"]);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    let (s1, s2) = (size(&i1.recordings()[0]), size(&i2.recordings()[0]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(size(&i1.recordings()[0]) > s1, "d1 carries on after the detach");
    assert_eq!(size(&i2.recordings()[0]), s2, "d2 no longer receives");
    let cls = stop_and_recording(&mut agent, &i1);
    assert!(cls.contains(&'B'), "the pre-rolled camera went on air");
    assert!(!cls.contains(&'S'), "no slate: the cut to the pre-rolled camera was instant");
    assert_eq!(i2.recordings().len(), 1);
    agent.stop();
}

/// SIGKILL the encoder: the supervisor restarts it and the destination resumes on the same
/// connection (the one recording keeps growing, fed by the new encoder) within a bounded time; the
/// gap is measured at the ingest, and the events say the encoder, not the destination, went down.
#[test]
fn a_killed_encoder_is_restarted_and_the_destination_resumes() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let a = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a)], &[&ingest]);
    agent.start_program(&["a"], &["d1"]);
    std::thread::sleep(Duration::from_secs(2));
    let pid = agent.program("main")["encoder"]["pid"].as_u64().unwrap() as i32;
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1, "one publish session before the kill: {recs:?}");
    let rec = recs[0].clone();
    let s0 = file_len(&rec);
    std::thread::sleep(Duration::from_millis(500));
    assert!(file_len(&rec) > s0, "the destination receives before the kill");
    // Sample the recording's size every 20 ms from its own thread, so slow CLI calls below do not
    // blur the gap.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, rec) = (stop.clone(), rec.clone());
        std::thread::spawn(move || {
            let mut v = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                v.push((Instant::now(), file_len(&rec)));
                std::thread::sleep(Duration::from_millis(20));
            }
            v
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    agent.wait_program(Duration::from_secs(20), "a new encoder running", |p| {
        p["encoder"]["phase"] == "running" && p["encoder"]["pid"].as_u64().is_some_and(|n| n != pid as u64)
    });
    // Whatever the old encoder had produced has long been flushed a second after the new one runs:
    // growth from then on, sustained over seconds, is the new encoder's output reaching the ingest.
    std::thread::sleep(Duration::from_secs(1));
    let base = file_len(&rec);
    let deadline = Instant::now() + Duration::from_secs(10);
    while file_len(&rec) <= base {
        assert!(
            Instant::now() < deadline,
            "the destination did not resume within 10 s of the new encoder running ({:.1} s after the kill); \
             recordings {:?}\nlog:\n{}",
            killed.elapsed().as_secs_f64(),
            ingest.recordings(),
            tail(&agent.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let resumed = killed.elapsed();
    for _ in 0..3 {
        let s = file_len(&rec);
        std::thread::sleep(Duration::from_secs(1));
        assert!(file_len(&rec) > s, "the destination keeps receiving after it resumed");
    }
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let mut gap = Duration::ZERO;
    let (mut last_change, mut last_size) = (killed, size_of_before(&samples, killed));
    for (t, s) in samples.iter().filter(|(t, _)| *t >= killed) {
        if *s != last_size {
            gap = gap.max(*t - last_change);
            (last_change, last_size) = (*t, *s);
        }
    }
    eprintln!(
        "encoder SIGKILL → destination receiving again after {:.2} s; largest gap {:.2} s",
        resumed.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(gap < Duration::from_secs(10), "gap {gap:?}");
    let events = agent.events();
    for ty in ["encoder_down", "encoder_up"] {
        let n = events.iter().filter(|e| e["event_type"] == ty && e["subject"] == "program:main").count();
        assert!(n >= 1, "{ty} about program:main; events:\n{}", event_lines(&events));
    }
    let down = events.iter().position(|e| e["event_type"] == "encoder_down").unwrap();
    assert!(
        events[down..].iter().any(|e| e["event_type"] == "encoder_up"),
        "encoder up again after it went down:\n{}",
        event_lines(&events)
    );
    assert!(
        !events.iter().any(|e| e["event_type"] == "destination_down"),
        "the destination kept its connection:\n{}",
        event_lines(&events)
    );
    let _ = stop_and_recording(&mut agent, &ingest);
    agent.stop();
}

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The last sampled size at or before `t`.
fn size_of_before(samples: &[(Instant, u64)], t: Instant) -> u64 {
    samples.iter().take_while(|(at, _)| *at <= t).last().map(|(_, s)| *s).unwrap_or(0)
}

/// Three minutes of cuts between a camera with audio and one without: the program always carries
/// AAC, and audio and video durations stay within 100 ms.
#[test]
fn audio_stays_locked_to_video_over_three_minutes_of_cuts() {
    let a = RtspCamera::start("red");
    let b = RtspCamera::start_with(CameraOpts { pattern: "blue".into(), audio: false });
    let ingest = RtmpIngest::start();
    let mut agent = setup(&[("a", &a), ("b", &b)], &[&ingest]);
    agent.start_program(&["a", "b"], &["d1"]);
    let base = program_time(&agent).ceil() + 1.0;
    for k in 0..36 {
        let cam = if k % 2 == 0 { "b" } else { "a" };
        agent.ok(&["program", "cut", cam, "--at", &format!("{:.3}", base + k as f64 * 5.0)]);
    }
    agent.wait_program(Duration::from_secs(240), "three minutes", |p| {
        p["program_time_s"].as_f64().unwrap_or(0.0) > base + 180.0
    });
    agent.ok(&["program", "stop"]);
    let recs = ingest.recordings();
    assert_eq!(recs.len(), 1);
    let streams = probe_streams(&recs[0]);
    assert_eq!(codecs_of(&streams, "audio"), vec!["aac"]);
    let v = packet_times(&recs[0], "v");
    let au = packet_times(&recs[0], "a");
    let (vd, ad) =
        (v.iter().cloned().fold(0.0, f64::max) + 1.0 / FPS, au.iter().cloned().fold(0.0, f64::max) + 1024.0 / 48000.0);
    eprintln!("video {vd:.3} s, audio {ad:.3} s, difference {:.0} ms", (vd - ad).abs() * 1000.0);
    assert!(vd > 180.0, "three minutes recorded: {vd:.1} s");
    assert!((vd - ad).abs() < 0.1, "A/V durations differ by {:.0} ms", (vd - ad).abs() * 1000.0);
    assert!(max_gap(&au) < 0.1, "audio never stops (max gap {:.3} s)", max_gap(&au));
    agent.stop();
}

/// Degraded mode, forced by configuration (any encoder speed counts as "slow"): the program steps
/// down its frame rate once, with an event, a new encoder, and no reconnect at the destination.
#[test]
fn degraded_mode_steps_down_without_reconnecting() {
    let a = RtspCamera::start("red");
    let ingest = RtmpIngest::start();
    let mut agent = TestAgent::with_config(
        "[program]\ndegrade_slow_speed = 100.0\ndegrade_window_s = 2\ndegrade_step_interval_s = 600\n",
    );
    agent.ok(&["camera", "add", "a", "--url", &a.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "deg-key"]);
    agent.spawn();
    agent.start_program(&["a"], &["d1"]);
    let pid = agent.program("main")["encoder"]["pid"].as_u64();
    let p = agent.wait_program(Duration::from_secs(20), "a step down", |p| p["format"]["fps"] == 16);
    assert_eq!(p["format"]["width"], 320, "a frame-rate step comes before a size step");
    let p =
        agent.wait_program(Duration::from_secs(20), "the new encoder running", |p| p["encoder"]["phase"] == "running");
    assert_ne!(p["encoder"]["pid"].as_u64(), pid, "the step restarted the encoder (the one deliberate restart)");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(agent.program("main")["format"]["fps"], 16, "one step only within the step interval");
    let cls = stop_and_recording(&mut agent, &ingest);
    assert!(cls.iter().filter(|c| **c == 'R').count() > 50);
    let v = packet_times(&ingest.recordings()[0], "v");
    let tail: Vec<f64> = v[v.len() - 20..].windows(2).map(|w| w[1] - w[0]).collect();
    assert!(tail.iter().all(|d| (d - 1.0 / 16.0).abs() < 0.01), "16 fps at the end: {tail:?}");
    let events = agent.events();
    let steps: Vec<_> = events
        .iter()
        .filter(|e| {
            e["event_type"] == "degraded"
                && e["subject"] == "program:main"
                && e["detail"].as_str().is_some_and(|d| d.contains("program now 320x180 at 16 fps"))
        })
        .collect();
    assert_eq!(steps.len(), 1, "the one step is one event:\n{}", event_lines(&events));
    agent.stop();
}

fn destinations_of(p: &serde_json::Value) -> Vec<String> {
    p["destinations"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The appliance's desired state is stored: an operator program (with a destination attached
/// while live) comes back after a restart of the agent, on the same destinations; an ephemeral
/// one does not; a stopped one is forgotten.
#[test]
fn an_operator_program_comes_back_after_a_restart_on_the_same_destinations() {
    let a = RtspCamera::start("red");
    let i1 = RtmpIngest::start();
    let i2 = RtmpIngest::start();
    let mut agent = setup(&[("a", &a)], &[&i1, &i2]);
    agent.start_program(&["a"], &["d1"]);
    agent.ok(&["program", "attach", "d2"]);
    i2.wait_for_recordings(1, Duration::from_secs(10));
    let out = agent.ok(&["program", "start", "--camera", "a", "--program", "scratch", "--ephemeral"]);
    assert!(out.contains("ephemeral"), "the start says the program is ephemeral: {out}");

    agent.stop();
    agent.spawn();
    let p = agent.wait_program(Duration::from_secs(40), "main restored and pushing to both", |p| {
        p["encoder"]["phase"] == "running"
            && p["outputs"].as_array().is_some_and(|o| o.len() == 2 && o.iter().all(|o| o["phase"] == "running"))
    });
    assert_eq!(destinations_of(&p), ["d1", "d2"], "the same destinations, the attached one included");
    i1.wait_for_recordings(2, Duration::from_secs(20));
    i2.wait_for_recordings(2, Duration::from_secs(20));
    assert!(agent.program("scratch").is_null(), "the ephemeral program is not restored");
    let starts = agent
        .events()
        .iter()
        .filter(|e| e["event_type"] == "program_started" && e["subject"] == "program:main")
        .count();
    assert_eq!(starts, 2, "the restore is a start like any other, through the same door");

    agent.ok(&["program", "stop"]);
    agent.stop();
    agent.spawn();
    agent.wait_up(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.program("main").is_null(), "a stopped program stays stopped after a restart");
    assert_eq!(i1.recordings().len(), 2, "no third publish to d1");
    agent.stop();
}

/// Key rotation: `destination update` gives a live program's push a new stream key; that push
/// reconnects once, with the new key, and the other destination's push is not disturbed.
#[test]
fn a_new_stream_key_reconnects_only_its_push() {
    let a = RtspCamera::start("red");
    let i1 = RtmpIngest::start();
    let i2 = RtmpIngest::start();
    let mut agent = setup(&[("a", &a)], &[&i1, &i2]);
    agent.start_program(&["a"], &["d1", "d2"]);
    i1.wait_for_recordings(1, Duration::from_secs(10));
    i2.wait_for_recordings(1, Duration::from_secs(10));
    let encoder_pid = agent.program("main")["encoder"]["pid"].as_u64();
    let out = agent.cli_stdin(&["destination", "update", "d1", "--key-stdin"], "rotated-key\n");
    assert!(out.status.success(), "update: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("new stream key") && !said.contains("rotated-key"), "the key is never printed: {said}");
    let recs = i1.wait_for_recordings(2, Duration::from_secs(10));
    let name = recs[1].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("rotated-key-"), "d1 publishes with the new key: {recs:?}");
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let s2 = size(&i2.recordings()[0]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(i1.recordings().len(), 2, "d1 reconnected once");
    assert_eq!(i2.recordings().len(), 1, "d2 was not disturbed");
    assert!(size(&i2.recordings()[0]) > s2, "d2 keeps receiving");
    assert_eq!(agent.program("main")["encoder"]["pid"].as_u64(), encoder_pid, "no encoder restart");
    let listed = agent.ok(&["destination", "list", "--json"]);
    assert!(!listed.contains("rotated-key"), "keys stay masked: {listed}");
    // A change the destination cannot take changes nothing.
    let bad = agent.cli(&["destination", "update", "d1", "--key", "has space"]);
    assert!(!bad.status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(i1.recordings().len(), 2, "a refused update does not touch the push");
    agent.stop();
}
