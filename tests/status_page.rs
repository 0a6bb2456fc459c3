//! The status page of a real daemon playing a show to a real ingest (nginx-rtmp), looked at in
//! headless Chromium on a desktop and a 390 px phone, and its controls tried from outside:
//! without a password, without a session, without the CSRF token, from another site, and with
//! repeated wrong passwords. The daemon runs in a time zone other than the test machine's
//! (`Asia/Kolkata`, UTC+05:30): the events read as sentences in that zone's clock, the same words
//! as the CLI's; a camera killed with the show on air shows its last picture greyed with its age.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::browser::{artifact_dir, Browser};
use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "marina-admin-42";

/// The box's time zone in this test (never UTC, so a UTC clock on the page would show).
const ZONE: &str = "Asia/Kolkata";

/// `at` (an event's RFC 3339 UTC stamp) as the clock time in [`ZONE`], worked out here.
fn zone_clock(at: &str) -> String {
    let t: jiff::Timestamp = at.parse().unwrap_or_else(|e| panic!("{at:?} is not a timestamp: {e}"));
    t.to_zoned(jiff::tz::TimeZone::get(ZONE).unwrap()).strftime("%H:%M:%S").to_string()
}

/// A CLI command of `agent` run in [`ZONE`], as an operator on the box would; its stdout.
fn cli_in_zone(agent: &TestAgent, args: &[&str]) -> String {
    let out = std::process::Command::new(AGENT_BIN)
        .arg("--config")
        .arg(agent.config_path())
        .args(args)
        .env_remove("VISTTER_CONFIG")
        .env("TZ", ZONE)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vistter-agent");
    assert!(out.status.success(), "vistter-agent {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The event list as the page shows it: each item's type, id, shown time, `datetime`, sentence,
/// JSON (behind its `<details>`), and whether that JSON is showing.
const EVENT_ITEMS: &str = "[...document.querySelectorAll('#event-list li')].map(li => ({ \
    type: li.dataset.type, id: li.dataset.id, time: li.querySelector('time').textContent, \
    datetime: li.querySelector('time').getAttribute('datetime'), said: li.querySelector('.said').textContent, \
    json: li.querySelector('details pre').textContent, open: li.querySelector('details').open, \
    shown: li.querySelector('details pre').checkVisibility() }))";

/// What sticks out to the right of a `width` px viewport (each element's right edge), and the
/// document's scroll width.
fn overflow(b: &mut Browser, width: u32) -> (u64, Vec<String>) {
    let v = b.eval(&format!(
        "[document.documentElement.scrollWidth, [...document.querySelectorAll('body *')] \
         .filter(e => e.getBoundingClientRect().right > {width}.5) \
         .map(e => e.tagName + '#' + e.id + '.' + e.className.baseVal + e.className + ' ' + \
         Math.round(e.getBoundingClientRect().right))]"
    ));
    let wide = v[1].as_array().unwrap().iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect();
    (v[0].as_u64().unwrap(), wide)
}

/// At a `width` px phone, with every event's JSON open: nothing wider than the screen.
fn fits_a_phone(b: &mut Browser, width: u32) {
    b.eval("document.querySelectorAll('#event-list details').forEach(d => d.open = true); true");
    let (scroll, wide) = overflow(b, width);
    assert!(scroll <= width as u64, "the page scrolls sideways at {width} px: scrollWidth {scroll}; wide: {wide:?}");
    assert!(wide.is_empty(), "elements stick out of a {width} px screen: {wide:?}");
    assert_eq!(
        b.eval("getComputedStyle(document.querySelector('#destinations thead')).display"),
        json!("none"),
        "the destinations are cards on a phone, not a table"
    );
    b.eval("document.querySelectorAll('#event-list details').forEach(d => d.open = false); true");
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    took: Duration,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request (the server closes the connection after the body).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Resp { status, headers, body: body.to_string(), took: start.elapsed() }
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Families of a Prometheus text exposition as the reference parser (`prometheus_client`, in
/// the test virtual environment that scripts/setup.sh makes) reads them: name → samples
/// (`{"name", "labels", "value"}`). A text it cannot parse fails the test.
fn prometheus_families(text: &str) -> std::collections::HashMap<String, Vec<Value>> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh (it installs prometheus-client)", python.display());
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families as p\n\
        out = {}\nfor f in p(sys.stdin.read()):\n    for s in f.samples:\n\
        \x20       out.setdefault(s.name, []).append({'name': s.name, 'labels': s.labels, 'value': s.value})\n\
        print(json.dumps(out))\n";
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the venv's python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

fn cam(id: &str, start: f64, dur: f64, camera: &str) -> Value {
    json!({"id": id, "start_time": start, "duration": dur, "action": "show_camera", "params": {"camera_id": camera}})
}

/// The page's program picture: is its centre pixel mostly red or mostly green?
const THUMB_COLOUR: &str = "(function(){ var i = document.getElementById('program-thumb'); \
    if (!i || !i.complete || !i.naturalWidth) return null; var c = document.createElement('canvas'); \
    c.width = i.naturalWidth; c.height = i.naturalHeight; var x = c.getContext('2d'); x.drawImage(i, 0, 0); \
    var p = x.getImageData(c.width >> 1, c.height >> 1, 1, 1).data; \
    return p[0] > 150 && p[1] < 100 ? 'red' : (p[1] > 100 && p[0] < 100 ? 'green' : 'other'); })()";

fn shot(b: &mut Browser, name: &str) {
    let p = artifact_dir().join(name);
    b.screenshot(&p);
    let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
    assert!(len > 10_000, "the screenshot {} has {len} bytes", p.display());
    eprintln!("screenshot: {}", p.display());
}

#[test]
fn the_status_page_shows_the_show_and_guards_its_controls() {
    let (r, mut g) = (RtspCamera::start("red"), RtspCamera::start("green"));
    let ingest = RtmpIngest::start();
    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"));
    agent.ok(&["camera", "add", "r", "--url", &r.url()]);
    agent.ok(&["camera", "add", "g", "--url", &g.url()]);
    agent.ok(&["destination", "add", "d1", "--platform", "custom", "--url", &ingest.url(), "--key", "page-key-123"]);
    let dir = tempfile::tempdir().unwrap();
    let tl = json!({"id": "harbour", "name": "Harbour view", "duration": 6.0, "fps": 25, "resolution": "320x180",
        "loop": true, "tracks": {"video": {"cues": [cam("c-red", 0.0, 3.0, "r"), cam("c-green", 3.0, 3.0, "g")]}}});
    let tl_path = dir.path().join("harbour.json");
    std::fs::write(&tl_path, tl.to_string()).unwrap();
    agent.ok(&["timeline", "load", tl_path.to_str().unwrap()]);
    agent.spawn_with_env(&[("TZ", ZONE)]);
    agent.ok_when_up(&["timeline", "play", "harbour", "--destination", "d1"]);
    agent.wait_show(Duration::from_secs(40), "the show playing", |s| s["status"]["engine"]["state"] == "playing");
    let base = format!("http://127.0.0.1:{port}");

    // ---- The page in a desktop browser.
    let mut b = Browser::start(1280, 900);
    b.goto(&format!("{base}/"));
    b.wait(
        Duration::from_secs(20),
        "both cameras listed",
        "document.querySelector('#cameras li[data-camera=\"r\"]') && document.querySelector('#cameras li[data-camera=\"g\"]')",
    );
    b.wait(
        Duration::from_secs(30),
        "d1 shown running",
        "document.querySelector('#destinations tr[data-destination=\"d1\"] .badge').textContent === 'running'",
    );
    b.wait(
        Duration::from_secs(10),
        "the current cue",
        "['c-red', 'c-green'].includes(document.getElementById('current-cue').textContent)",
    );
    let text = b.eval("document.body.innerText").as_str().unwrap_or_default().to_string();
    assert!(text.contains("Harbour view"), "the timeline's name: {text}");
    assert!(!text.contains("page-key-123"), "the stream key is on the page");
    assert!(text.contains("vistter-agent admin set-password"), "with no password the page says how to set one: {text}");
    assert_eq!(
        b.eval("document.querySelectorAll('#controls form').length"),
        json!(0),
        "no controls without a password"
    );

    // The program picture refreshes by itself: red during the red cue, green during the green one.
    b.wait(Duration::from_secs(20), "a red picture", &format!("{THUMB_COLOUR} === 'red'"));
    let src_red = b.eval("document.getElementById('program-thumb').src");
    b.wait(Duration::from_secs(20), "then a green picture", &format!("{THUMB_COLOUR} === 'green'"));
    let src_green = b.eval("document.getElementById('program-thumb').src");
    assert_ne!(src_red, src_green, "the thumbnail was loaded again");

    // The graphs fill up (a sample every 5 s).
    b.wait(
        Duration::from_secs(30),
        "graphs with points",
        "[...document.querySelectorAll('#destinations svg[data-points]')].some(s => +s.dataset.points >= 2)",
    );

    // A new event reaches the open page by itself (SSE): a package refused by the CLI.
    let junk = dir.path().join("junk.vseg");
    std::fs::write(&junk, b"not a package").unwrap();
    let out = agent.cli(&["segment", "import", junk.to_str().unwrap()]);
    assert!(!out.status.success(), "junk is refused");
    let t = Instant::now();
    b.wait(
        Duration::from_secs(10),
        "the event on the page, in words",
        "[...document.querySelectorAll('#event-list li[data-type=\"segment_rejected\"] .said')] \
         .some(x => x.textContent.startsWith('A segment package was refused: '))",
    );
    let took = t.elapsed();
    eprintln!("event on the page {took:?} after the CLI returned");
    assert!(took < Duration::from_secs(2), "the event took {took:?} to appear");

    // ---- The events read as sentences in the box's clock, each with its JSON one click away.
    b.wait(
        Duration::from_secs(20),
        "a cue event in words",
        "[...document.querySelectorAll('#event-list li[data-type=\"cue_started\"] .said')] \
         .some(x => /^Cue c-(red|green) started (on time|[0-9]+ ms late)$/.test(x.textContent))",
    );
    let items = b.eval(EVENT_ITEMS);
    let items = items.as_array().expect("the event list");
    assert!(items.len() >= 3, "{items:?}");
    for it in items {
        let (said, time, at) =
            (it["said"].as_str().unwrap(), it["time"].as_str().unwrap(), it["datetime"].as_str().unwrap());
        let ty = it["type"].as_str().unwrap();
        assert!(!said.is_empty() && !said.contains("{\"") && !said.contains(ty), "{ty} is not in words: {said:?}");
        assert!(time.ends_with(&zone_clock(at)), "{ty}: {time:?} is not {at} on a {ZONE} clock");
        let json: Value = serde_json::from_str(it["json"].as_str().unwrap()).expect("the event's JSON");
        assert_eq!((json["event_type"].as_str(), json["at"].as_str()), (Some(ty), Some(at)), "{json}");
        assert_eq!(json["id"].to_string(), it["id"].as_str().unwrap());
        assert_eq!((&it["open"], &it["shown"]), (&json!(false), &json!(false)), "the JSON waits for a click: {it}");
    }
    let cue = items.iter().find(|it| it["type"] == "cue_started").expect("a cue event").clone();
    b.eval(&format!(
        "document.querySelector('#event-list li[data-id=\"{}\"] summary').click(); true",
        cue["id"].as_str().unwrap()
    ));
    let shown = b.eval(&format!(
        "(function(){{ var p = document.querySelector('#event-list li[data-id=\"{}\"] details pre'); \
         return p.checkVisibility() && p.getBoundingClientRect().height > 20; }})()",
        cue["id"].as_str().unwrap()
    ));
    assert_eq!(shown, json!(true), "one click shows the JSON");
    // The terminal says the same words at the same time.
    let cli = cli_in_zone(&agent, &["events", "--limit", "200"]);
    let want = format!("{} {}", cue["time"].as_str().unwrap(), cue["said"].as_str().unwrap());
    assert!(cli.lines().any(|l| l == want), "`events` lacks the page's line {want:?}:\n{cli}");
    assert!(!cli.contains("cue_started") && !cli.contains("{\""), "`events` prints raw rows:\n{cli}");
    shot(&mut b, "status-page-1280.png");

    // ---- The same page on a 390 px phone: everything there, nothing wider than the screen.
    b.viewport(390, 844, true);
    b.goto(&format!("{base}/"));
    b.wait(Duration::from_secs(20), "cameras on the phone", "document.querySelectorAll('#cameras li').length === 2");
    b.wait(
        Duration::from_secs(20),
        "graphs on the phone",
        "document.querySelectorAll('#destinations svg').length >= 3",
    );
    fits_a_phone(&mut b, 390);
    shot(&mut b, "status-page-390.png");

    // ---- /metrics of the live show, read by Prometheus' own client library's parser.
    let metrics = request(port, "GET", "/metrics", &[], "");
    assert_eq!(metrics.status, 200);
    let families = prometheus_families(&metrics.body);
    let family = |name: &str| -> &Vec<Value> {
        families.get(name).unwrap_or_else(|| panic!("/metrics has no {name}:\n{}", metrics.body))
    };
    let labelled = |name: &str, key: &str, value: &str| -> f64 {
        family(name)
            .iter()
            .find(|s| s["labels"][key] == value)
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("{name} has no sample with {key}={value}:\n{}", metrics.body))
    };
    assert_eq!(labelled("vistter_destination_up", "destination", "d1"), 1.0);
    assert!(labelled("vistter_program_fps", "program", "show") > 10.0);
    assert!(labelled("vistter_ingest_frame_age_seconds", "camera", "r") < 5.0);
    assert!(labelled("vistter_ingest_frame_age_seconds", "camera", "g") < 5.0);
    assert_eq!(labelled("vistter_fallback_active", "program", "show"), 0.0);
    for role in ["camera", "encoder", "pusher"] {
        assert_eq!(labelled("vistter_ffmpeg_restarts_total", "role", role), 0.0, "no restarts of the {role}");
    }
    assert!(labelled("vistter_cues_total", "timeline", "harbour") >= 2.0);
    assert_eq!(labelled("vistter_cues_late_total", "timeline", "harbour"), 0.0);
    assert!(family("vistter_cue_lateness_max_seconds").len() == 1);
    assert!(labelled("vistter_commands_total", "type", "TIMELINE_EXECUTE") >= 1.0, "the play was counted");
    assert_eq!(family("vistter_outbox_depth")[0]["value"], 0.0);
    assert_eq!(family("vistter_build_info")[0]["labels"]["version"], env!("CARGO_PKG_VERSION"));

    // The same picture as JSON, valid against its contract while a show plays.
    let api = request(port, "GET", "/api/v1/status", &[], "");
    let body: Value = serde_json::from_str(&api.body).expect("/api/v1/status is JSON");
    let validator = common::openapi::status_validator();
    let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "/api/v1/status does not match its schema: {errors:?}\n{body:#}");
    assert_eq!(body["show"]["timeline_id"], "harbour", "{body:#}");
    assert_eq!(body["cameras"].as_array().map(Vec::len), Some(2), "{body:#}");

    // And in a terminal: `vistter-agent status` prints the same picture.
    let text = cli_in_zone(&agent, &["status"]);
    for want in ["Harbour view (harbour) playing", "camera    r", "camera    g", "push      d1", "system    cpu"] {
        assert!(text.contains(want), "`status` lacks {want:?}:\n{text}");
    }
    let recent: Vec<&str> = text.lines().filter(|l| l.starts_with("event     ")).collect();
    assert!(!recent.is_empty(), "`status` shows the recent events:\n{text}");
    for l in &recent {
        assert!(!l.contains("{\"") && !l.contains("_started"), "`status` prints a raw event: {l:?}");
    }
    let j: Value = serde_json::from_str(&agent.ok(&["status", "--json"])).expect("status --json");
    assert_eq!(j["daemon_running"], true, "{j:#}");
    assert_eq!(j["live"]["show"]["timeline_id"], "harbour");

    // ---- Controls, from outside the browser.
    let stop = |extra: &[(&str, &str)], body: &str| request(port, "POST", "/control/stop", extra, body);
    let r0 = stop(&[], "csrf=x");
    assert_eq!(r0.status, 403, "no password set: controls are off: {}", r0.body);
    let out = agent.cli_stdin(&["admin", "set-password"], "short\n");
    assert!(!out.status.success(), "a short password is refused");
    let out = agent.cli_stdin(&["admin", "set-password"], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "set-password: {}", String::from_utf8_lossy(&out.stderr));
    let page = request(port, "GET", "/", &[], "");
    assert!(page.body.contains("id=\"login\""), "a login form once a password is set");
    assert!(!page.body.contains("admin set-password"), "the hint is gone");
    assert!(page.header("content-security-policy").is_some_and(|c| c.contains("script-src 'self'")));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));

    // Without a session, and with a forged one.
    assert_eq!(stop(&[], "csrf=x").status, 403, "no session");
    assert_eq!(stop(&[("Cookie", "vsa_session=forged")], "csrf=x").status, 403, "a forged session");

    // Wrong passwords are slowed down, then locked out.
    let login = |pw: &str, extra: &[(&str, &str)]| request(port, "POST", "/login", extra, &form(&[("password", pw)]));
    for i in 0..4 {
        let w = login("guess-guess", &[]);
        assert_eq!(w.status, 401, "wrong password {i}: {}", w.status);
        assert!(w.took >= Duration::from_millis(400), "a wrong password is answered slowly ({:?})", w.took);
        assert!(w.body.contains("Wrong password"), "the page says so");
    }
    let locked = login(PASSWORD, &[]);
    assert_eq!(locked.status, 429, "locked out after repeated wrong passwords, even with the right one");
    assert!(locked.header("retry-after").is_some(), "with Retry-After");
    let other_site = login(PASSWORD, &[("Origin", "http://evil.example")]);
    assert_eq!(other_site.status, 403, "a login posted from another site");
    std::thread::sleep(Duration::from_millis(2600));
    let ok = login(PASSWORD, &[]);
    assert_eq!(ok.status, 303, "the right password after the lock: {} {}", ok.status, ok.body);
    let cookie_header = ok.header("set-cookie").expect("a session cookie").to_string();
    assert!(cookie_header.contains("HttpOnly") && cookie_header.contains("SameSite=Strict"), "{cookie_header}");
    let cookie = cookie_header.split(';').next().unwrap().to_string();
    let page = request(port, "GET", "/", &[("Cookie", &cookie)], "");
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the controls carry a CSRF token")
        .to_string();
    assert!(csrf.len() >= 32);

    // A session without the token, with a wrong one, or posted from another site: refused.
    let slate = |extra: &[(&str, &str)], body: &str| request(port, "POST", "/control/slate", extra, body);
    assert_eq!(slate(&[("Cookie", &cookie)], "on=true").status, 403, "no CSRF token");
    assert_eq!(slate(&[("Cookie", &cookie)], "on=true&csrf=0000").status, 403, "a wrong CSRF token");
    let body = form(&[("on", "true"), ("csrf", &csrf)]);
    assert_eq!(slate(&[("Cookie", &cookie), ("Origin", "http://evil.example")], &body).status, 403, "cross-site");
    assert_eq!(request(port, "POST", "/control/launch-rockets", &[("Cookie", &cookie)], &body).status, 404);
    assert_eq!(agent.show()["status"]["emergency_slate"], false, "none of that changed the show");

    // The real thing: the slate goes up, through the same dispatcher as every command.
    let r = slate(&[("Cookie", &cookie)], &body);
    assert_eq!(r.status, 303, "{}", r.body);
    agent.wait_show(Duration::from_secs(10), "the emergency slate", |s| s["status"]["emergency_slate"] == true);
    let page = request(port, "GET", "/", &[("Cookie", &cookie)], "");
    assert!(page.body.contains("slate: done"), "the page reports the control's outcome");
    let r = slate(&[("Cookie", &cookie)], &form(&[("on", "false"), ("csrf", &csrf)]));
    assert_eq!(r.status, 303);
    agent.wait_show(Duration::from_secs(10), "the slate down", |s| s["status"]["emergency_slate"] == false);

    // In the browser too: log in on the page and clear the overlays.
    b.viewport(1280, 900, false);
    b.goto(&format!("{base}/"));
    b.eval(&format!(
        "document.querySelector('#login input[name=password]').value = '{PASSWORD}'; \
         document.getElementById('login').submit(); true"
    ));
    b.wait(
        Duration::from_secs(20),
        "the controls",
        "document.querySelector('form[action=\"/control/clear-overlays\"]')",
    );
    b.eval("document.querySelector('form[action=\"/control/clear-overlays\"]').submit(); true");
    b.wait(Duration::from_secs(20), "the outcome", "document.getElementById('flash') && document.getElementById('flash').textContent.includes('clear-overlays: done')");
    shot(&mut b, "status-page-controls.png");

    // Removing the password turns the controls off and ends the sessions.
    agent.ok(&["admin", "clear-password"]);
    let body = form(&[("on", "true"), ("csrf", &csrf)]);
    assert_eq!(slate(&[("Cookie", &cookie)], &body).status, 403, "the session ended with the password");
    assert_eq!(agent.show()["status"]["emergency_slate"], false);

    // Through all of it the show kept going to the ingest.
    assert!(agent.pid().is_some_and(alive), "the daemon is alive");
    agent.wait_show(Duration::from_secs(10), "still playing", |s| s["status"]["engine"]["state"] == "playing");

    // ---- A camera dies with the show on air: its last picture, greyed, with its age.
    g.kill();
    b.goto(&format!("{base}/"));
    b.wait(
        Duration::from_secs(30),
        "camera g marked as down",
        "document.querySelector('#cameras li[data-camera=\"g\"].stale') && \
         /^last picture [0-9]+ s ago$/.test(document.querySelector('#cameras li[data-camera=\"g\"] .age').textContent)",
    );
    // The section is redrawn every 2 s with a new picture URL: read it once the image has finished loading
    // (a missing picture never does: a 404 leaves it without a size).
    let t = Instant::now();
    let tile = loop {
        let tile = b.eval(
            "(function(){ var g = document.querySelector('#cameras li[data-camera=\"g\"] img.thumb'); \
             var r = document.querySelector('#cameras li[data-camera=\"r\"]'); \
             return { filter: getComputedStyle(g).filter, picture: g.complete && g.naturalWidth > 0, \
             r_stale: r.classList.contains('stale'), r_filter: getComputedStyle(r.querySelector('img.thumb')).filter, \
             r_text: r.innerText }; })()",
        );
        if tile["picture"] == json!(true) || t.elapsed() > Duration::from_secs(10) {
            break tile;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(tile["filter"].as_str().unwrap_or_default().contains("grayscale"), "g's picture is greyed: {tile}");
    assert_eq!(tile["picture"], true, "g shows its last picture, not a blank: {tile}");
    assert_eq!((&tile["r_stale"], &tile["r_filter"]), (&json!(false), &json!("none")), "r is live: {tile}");
    assert!(tile["r_text"].as_str().unwrap_or_default().contains("frame age"), "{tile}");
    b.wait(
        Duration::from_secs(20),
        "the loss of g in words",
        "[...document.querySelectorAll('#event-list li[data-type=\"camera_down\"] .said')] \
         .some(x => x.textContent.startsWith('Camera g lost: ') && / retrying in [0-9.]+ s/.test(x.textContent))",
    );
    shot(&mut b, "status-page-camera-down-1280.png");
    let lost = b.eval(EVENT_ITEMS).as_array().unwrap().iter().find(|it| it["type"] == "camera_down").unwrap().clone();
    eprintln!("camera g on the page: {} {}", lost["time"], lost["said"]);
    let cli = cli_in_zone(&agent, &["events", "--limit", "200"]);
    let want = format!("{} [warning] {}", lost["time"].as_str().unwrap(), lost["said"].as_str().unwrap());
    assert!(cli.lines().any(|l| l == want), "`events` lacks the page's line {want:?}:\n{cli}");
    b.viewport(390, 844, true);
    b.goto(&format!("{base}/"));
    b.wait(
        Duration::from_secs(20),
        "g down on the phone",
        "document.querySelector('#cameras li[data-camera=\"g\"].stale')",
    );
    fits_a_phone(&mut b, 390);
    shot(&mut b, "status-page-camera-down-390.png");
    assert!(agent.pid().is_some_and(alive), "the daemon is alive");
}

/// The page's input paths with hostile values, through a logged-in session (so every check past
/// the session is reached): arbitrary actions, field names and values (any Unicode, percent
/// escapes, huge), oversize bodies, odd thumbnail paths and event-stream queries. Each gets a
/// 3xx/4xx answer, never a 5xx or a dropped connection; nothing starts; the daemon lives on.
#[test]
fn the_page_controls_answer_hostile_forms_and_the_daemon_lives_on() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"));
    let out = agent.cli_stdin(&["admin", "set-password"], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "set-password: {}", String::from_utf8_lossy(&out.stderr));
    agent.spawn();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "the status server never listened:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = request(port, "POST", "/login", &[], &form(&[("password", PASSWORD)]));
    assert_eq!(ok.status, 303, "login: {}", ok.body);
    let cookie = ok.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    let page = request(port, "GET", "/", &[("Cookie", &cookie)], "");
    let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();

    let actions = prop_oneof![
        Just("go-live".to_string()),
        Just("stop".to_string()),
        Just("slate".to_string()),
        Just("cut".to_string()),
        Just("unpin".to_string()),
        Just("clear-overlays".to_string()),
        "[a-zA-Z0-9%._~-]{0,40}",
    ];
    let keys = prop_oneof![
        Just("timeline_id".to_string()),
        Just("destination".to_string()),
        Just("on".to_string()),
        Just("target".to_string()),
        Just("csrf".to_string()),
        "\\PC{0,12}",
    ];
    let values = prop_oneof![
        "\\PC{0,64}",
        "[a-z0-9|_-]{0,20}",
        Just("show|r".to_string()),
        Just("true".to_string()),
        Just("NaN".to_string()),
        Just("x".repeat(5000)),
    ];
    let fields = proptest::collection::vec((keys, values), 0..6);
    let raw_tail = proptest::collection::vec(any::<u8>(), 0..64);
    let mut runner = TestRunner::new(Config { cases: 400, failure_persistence: None, ..Config::default() });
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::new());
    runner
        .run(&(actions, fields, raw_tail), |(action, fields, raw)| {
            let enc = |s: &str| -> String {
                s.bytes()
                    .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                    .collect()
            };
            let mut body: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
            body.push(format!("csrf={csrf}"));
            // Sometimes raw bytes (broken escapes, '&', '=') at the end.
            let mut body = body.join("&");
            if raw.first().is_some_and(|b| b % 2 == 0) {
                body.push('&');
                body.push_str(&String::from_utf8_lossy(&raw));
            }
            let path = format!("/control/{action}");
            let r = request(port, "POST", &path, &[("Cookie", &cookie)], &body);
            *statuses.borrow_mut().entry(r.status).or_insert(0u32) += 1;
            prop_assert!((300..500).contains(&r.status), "POST {path} {body:?} answered {} {}", r.status, r.body);
            Ok(())
        })
        .unwrap();
    let statuses = statuses.into_inner();
    eprintln!("hostile controls: answers by status {statuses:?}");
    assert!(statuses.get(&303).copied().unwrap_or(0) > 50, "most hostile forms reached the command checks");

    // Oversize, wrong content type, odd paths and queries.
    let big = format!("csrf={csrf}&timeline_id={}", "a".repeat(100_000));
    assert_eq!(request(port, "POST", "/control/go-live", &[("Cookie", &cookie)], &big).status, 413);
    for path in [
        "/thumb/show/program.jpg",
        "/thumb/%00/program.jpg",
        "/thumb/..%2F..%2Fetc/camera/passwd.jpg",
        "/thumb/show/camera/.jpg",
        "/thumb/show/camera/program.jpg",
        "/api/v1/events/stream?after=abc",
        "/api/v1/events/stream?after=99999999999999999999999",
        "/static/..%2F..%2Fsrc%2Fmain.rs",
    ] {
        let r = request(port, "GET", path, &[], "");
        assert!((400..500).contains(&r.status), "GET {path} answered {} {}", r.status, r.body);
    }
    let r = request(port, "POST", "/login", &[], "password=%ZZ%");
    assert!((400..500).contains(&r.status), "a broken login form: {}", r.status);

    assert!(agent.pid().is_some_and(alive), "the daemon survived");
    assert_eq!(request(port, "GET", "/healthz", &[], "").status, 200);
    assert_eq!(agent.program("show").get("id"), None, "no show started");
    agent.stop();
}
