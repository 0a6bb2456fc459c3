//! The status server (`[status]`) of a real daemon: health, readiness, the Prometheus text format
//! and the status JSON against its schema in `schemas/openapi.yaml`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

struct Resp {
    status: u16,
    content_type: String,
    body: String,
    took: Duration,
}

/// One HTTP/1.0 GET (the server closes the connection after the body); `None` if nothing listens.
fn get(port: u16, path: &str) -> Option<Resp> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("reading the answer to {path}: {e}"));
    let took = start.elapsed();
    let text = String::from_utf8(raw).unwrap_or_else(|e| panic!("{path}: the answer is not UTF-8: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{path}: no header end in {text:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status =
        status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{status_line:?}"));
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Some(Resp { status, content_type, body: body.to_string(), took })
}

/// One sample: its name, its labels and its value.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict reader of the Prometheus text format 0.0.4: every line is blank, a `# HELP`/`# TYPE`
/// comment, or `name{label="value",…} value`. Returns the samples as (name, labels, value), and
/// checks every sample's family has HELP and TYPE before it.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let is_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(is_name(name), "{at}: bad metric name");
            assert!(helped.insert(name.to_string()), "{at}: HELP repeated");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or(""));
            assert!(is_name(name), "{at}: bad metric name");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{at}: bad type");
            assert!(it.next().is_none(), "{at}: trailing text");
            assert!(typed.insert(name.to_string()), "{at}: TYPE repeated");
            continue;
        }
        assert!(!line.starts_with('#'), "{at}: an unknown comment");
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{at}: no value"));
        let name = &line[..name_end];
        assert!(is_name(name), "{at}: bad metric name");
        assert!(typed.contains(name) && helped.contains(name), "{at}: sample before its HELP and TYPE");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                let (start, c) = chars.next().unwrap_or_else(|| panic!("{at}: unterminated labels"));
                if c == '}' {
                    rest = &r[start + 1..];
                    break;
                }
                let eq = r[start..].find('=').unwrap_or_else(|| panic!("{at}: label without '='")) + start;
                let key = &r[start..eq];
                assert!(is_name(key) && !key.contains(':'), "{at}: bad label name {key:?}");
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{at}: label value not quoted");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap_or_else(|| panic!("{at}: unterminated label value")).1 {
                        '"' => break,
                        '\\' => match chars.next().unwrap_or_else(|| panic!("{at}: dangling escape")).1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            e => panic!("{at}: bad escape \\{e}"),
                        },
                        '\n' => panic!("{at}: raw newline in a label value"),
                        c => value.push(c),
                    }
                }
                labels.push((key.to_string(), value));
                match chars.peek().map(|(_, c)| *c) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    other => panic!("{at}: expected ',' or '}}' after a label, got {other:?}"),
                }
            }
        }
        let mut it = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{at}: no space before the value")).split(' ');
        let value = it.next().unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: bad value {v:?}")),
        };
        if let Some(ts) = it.next() {
            ts.parse::<i64>().unwrap_or_else(|_| panic!("{at}: bad timestamp"));
        }
        assert!(it.next().is_none(), "{at}: trailing text");
        samples.push((name.to_string(), labels, value));
    }
    samples
}

#[test]
fn the_status_server_answers_health_readiness_metrics_and_status() {
    let validator = common::openapi::status_validator();
    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"));
    agent.spawn();

    let start = Instant::now();
    let health = loop {
        if let Some(r) = get(port, "/healthz") {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the status server never listened; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"), "/healthz");

    let ready = get(port, "/readyz").expect("/readyz");
    assert_eq!(ready.status, 200, "/readyz: {}", ready.body);
    let ready_json: Value = serde_json::from_str(&ready.body).expect("/readyz answers JSON");
    assert_eq!(ready_json["ready"], true, "{ready_json}");

    let metrics = get(port, "/metrics").expect("/metrics");
    assert_eq!(metrics.status, 200, "/metrics: {}", metrics.body);
    assert!(metrics.content_type.starts_with("text/plain; version=0.0.4"), "content type {:?}", metrics.content_type);
    let samples = parse_prometheus(&metrics.body);
    let one = |name: &str| -> &Sample {
        samples.iter().find(|s| s.0 == name).unwrap_or_else(|| panic!("/metrics has no {name}:\n{}", metrics.body))
    };
    let build = one("vistter_build_info");
    assert_eq!(build.1, vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]);
    assert_eq!(build.2, 1.0);
    assert_eq!(one("vistter_up").2, 1.0);
    assert_eq!(one("vistter_outbox_depth").2, 0.0, "no cloud link, nothing queued");
    assert_eq!(one("vistter_segments_installed").2, 0.0, "a fresh device has no segments");
    assert!(one("vistter_events_total").2 >= 1.0, "agent_started was recorded");
    assert_eq!(one("vistter_programs").2, 0.0, "nothing runs yet");

    let status = get(port, "/api/v1/status").expect("/api/v1/status");
    assert_eq!(status.status, 200, "/api/v1/status: {}", status.body);
    assert!(status.content_type.starts_with("application/json"), "content type {:?}", status.content_type);
    let body: Value = serde_json::from_str(&status.body).expect("/api/v1/status answers JSON");
    let errors: Vec<String> = validator.iter_errors(&body).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "/api/v1/status does not match its schema: {errors:?}\n{body:#}");
    assert_eq!(body["cloud_links"], "not configured", "{body:#}");
    assert_eq!(body["agent_version"], env!("CARGO_PKG_VERSION"));
    // The schema is strict enough to refuse a wrong shape.
    let mut wrong = body.clone();
    wrong["outbox"] = serde_json::json!({"messages": "many"});
    assert!(!validator.is_valid(&wrong), "the schema takes a malformed outbox");

    for (path, r) in [("/healthz", &health), ("/readyz", &ready), ("/metrics", &metrics), ("/api/v1/status", &status)] {
        eprintln!("{path}: {} in {:?}", r.status, r.took);
        assert!(r.took < Duration::from_secs(3), "{path} took {:?}", r.took);
    }

    // Hostile requests: garbage, a huge header, a half request left open, odd paths and methods.
    // Each is answered or closed; the daemon and the server carry on.
    use std::io::{Read, Write};
    let hostile: Vec<Vec<u8>> = vec![
        b"\xff\xfe\x00garbage\r\n\r\n".to_vec(),
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000)).into_bytes(),
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /api/v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"GET /api/v1/status?x=%ZZ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        b"GET /metr".to_vec(),
    ];
    for h in &hostile {
        if let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)) {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(h);
            // Whatever it answers (an error, or the page for a harmless variant), it must answer or close.
            let mut answer = Vec::new();
            let t = Instant::now();
            let _ = s.read_to_end(&mut answer);
            assert!(t.elapsed() < Duration::from_secs(10), "a hostile request held the connection");
        }
    }
    assert!(agent.pid().is_some_and(alive), "the daemon survived the hostile requests");
    let again = get(port, "/healthz").expect("/healthz after hostile requests");
    assert_eq!(again.status, 200, "the server still answers");
    agent.stop();
}

/// One raw HTTP request with the given `Host` (none: no header) and extra headers; the status
/// code, the headers and the body. HTTP/1.0 without a `Host` header, else HTTP/1.1 with
/// `Connection: close`.
fn raw(port: u16, method: &str, path: &str, host: Option<&str>, headers: &[(&str, &str)], body: &str) -> Resp2 {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = match host {
        Some(h) => format!("{method} {path} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n"),
        None => format!("{method} {path} HTTP/1.0\r\n"),
    };
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
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    Resp2 { status, headers, body: body.to_string() }
}

struct Resp2 {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp2 {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

const PASSWORD: &str = "marina-admin-42";

fn start_status_agent(extra: &str) -> (TestAgent, u16) {
    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n{extra}"));
    let out = agent.cli_stdin(&["admin", "set-password"], &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "set-password: {}", String::from_utf8_lossy(&out.stderr));
    agent.spawn();
    let start = Instant::now();
    while get(port, "/healthz").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the status server never listened; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    (agent, port)
}

/// A page on another site rebinds its DNS name to this machine: the browser then sends that name
/// as `Host`. Every route refuses it with 421 before doing anything: no status, no metrics, no
/// page, no thumbnail, no event stream, no login (wrong guesses do not count against the
/// address), no logout of a live session. Names the machine knows still work.
#[test]
fn dns_rebinding_host_is_refused() {
    let (mut agent, port) = start_status_agent("");
    let evil = format!("evil.example:{port}");
    let login = |host: &str, password: &str| {
        let origin = format!("http://{host}");
        raw(port, "POST", "/login", Some(host), &[("Origin", &origin)], &format!("password={password}"))
    };

    // A session made the ordinary way, to see that the rebinding page cannot end it.
    let ok = login(&format!("127.0.0.1:{port}"), PASSWORD);
    assert_eq!(ok.status, 303, "login by IP: {} {}", ok.status, ok.body);
    let cookie = ok.header("set-cookie").expect("a session cookie").split(';').next().unwrap().to_string();
    let page = raw(port, "GET", "/", Some(&format!("127.0.0.1:{port}")), &[("Cookie", &cookie)], "");
    let csrf = page.body.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf");

    for path in [
        "/api/v1/status",
        "/metrics",
        "/",
        "/partial",
        "/thumb/show/program.jpg",
        "/thumb/show/camera/c1.jpg",
        "/api/v1/events/stream",
        "/healthz",
        "/readyz",
        "/static/page.js",
    ] {
        let r = raw(port, "GET", path, Some(&evil), &[], "");
        assert_eq!(r.status, 421, "GET {path} with Host {evil}: {} {}", r.status, r.body);
        assert!(r.body.contains("allowed_hosts"), "GET {path}: the body names the setting: {:?}", r.body);
        assert!(!r.body.contains("vistter_") && !r.body.contains("device_id"), "GET {path} leaked: {}", r.body);
    }
    for host in ["EVIL.EXAMPLE", "evil.example.", "127.0.0.1.evil.example", "localhost.evil.example", "vm.evil.example"]
    {
        let r = raw(port, "GET", "/api/v1/status", Some(host), &[], "");
        assert_eq!(r.status, 421, "Host {host}: {} {}", r.status, r.body);
    }
    // No Host (HTTP/1.0), two of them, a malformed one.
    let r = raw(port, "GET", "/api/v1/status", None, &[], "");
    assert_eq!(r.status, 421, "no Host: {} {}", r.status, r.body);
    let r = raw(port, "GET", "/api/v1/status", Some(&format!("127.0.0.1:{port}")), &[("Host", "evil.example")], "");
    assert!(r.status == 421 || r.status == 400, "two Hosts: {} {}", r.status, r.body);
    let r = raw(port, "GET", "/api/v1/status", Some("127.0.0.1:8787:1"), &[], "");
    assert!(r.status == 421 || r.status == 400, "a malformed Host: {} {}", r.status, r.body);
    // X-Forwarded-Host does not help.
    let r = raw(port, "GET", "/api/v1/status", Some(&evil), &[("X-Forwarded-Host", "127.0.0.1")], "");
    assert_eq!(r.status, 421, "X-Forwarded-Host is not trusted");

    // Login guesses through the rebound name: refused, and they do not lock the address out.
    for _ in 0..6 {
        let r = login(&evil, "guess");
        assert_eq!(r.status, 421, "POST /login with Host {evil}: {} {}", r.status, r.body);
        assert!(r.header("set-cookie").is_none());
    }
    let r = login(&evil, PASSWORD);
    assert_eq!((r.status, r.header("set-cookie").is_some()), (421, false), "the right password via {evil}");
    // Controls and logout through it, with the session's own cookie and token: refused, the
    // session lives on.
    let form = format!("on=true&csrf={csrf}");
    let r = raw(
        port,
        "POST",
        "/control/slate",
        Some(&evil),
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        &form,
    );
    assert_eq!(r.status, 421, "a control via {evil}: {} {}", r.status, r.body);
    let r = raw(port, "POST", "/logout", Some(&evil), &[("Cookie", &cookie)], &format!("csrf={csrf}"));
    assert_eq!(r.status, 421, "logout via {evil}");
    let page = raw(port, "GET", "/", Some(&format!("127.0.0.1:{port}")), &[("Cookie", &cookie)], "");
    assert!(page.body.contains(csrf), "the session is still logged in");
    assert!(agent.program("show").get("id").is_none(), "nothing started");
    assert!(agent.show().is_null(), "no show, no slate");
    let ok = login(&format!("127.0.0.1:{port}"), PASSWORD);
    assert_eq!(ok.status, 303, "the guesses via {evil} did not lock the address out: {} {}", ok.status, ok.body);

    // The names the machine answers to.
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let short = machine.split('.').next().unwrap().to_string();
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "LocalHost.".to_string(),
        "[::1]".to_string(),
        format!("[::1]:{port}"),
        format!("{machine}:{port}"),
        machine.to_uppercase(),
        format!("{short}.local:{port}"),
    ] {
        let r = raw(port, "GET", "/api/v1/status", Some(&host), &[], "");
        assert_eq!(r.status, 200, "Host {host}: {} {}", r.status, r.body);
        let origin = format!("http://{host}");
        let r = raw(port, "POST", "/login", Some(&host), &[("Origin", &origin)], "password=guess");
        assert_eq!(r.status, 401, "a login via Host {host} reaches the password check: {}", r.status);
        std::thread::sleep(Duration::from_millis(10));
        let ok = login(&host, PASSWORD);
        assert_eq!(ok.status, 303, "login via Host {host}: {} {}", ok.status, ok.body);
    }
    assert!(agent.pid().is_some_and(alive), "the daemon lives on");
    agent.stop();
}

/// A name listed in `[status] allowed_hosts` is answered (any case, trailing dot, any port);
/// others still are not.
#[test]
fn a_name_in_allowed_hosts_is_answered() {
    let (mut agent, port) = start_status_agent("allowed_hosts = [\"Status.Venue.Test\"]\n");
    for host in ["status.venue.test", &format!("STATUS.venue.test.:{port}")] {
        let r = raw(port, "GET", "/api/v1/status", Some(host), &[], "");
        assert_eq!(r.status, 200, "Host {host}: {} {}", r.status, r.body);
        let r = raw(port, "GET", "/metrics", Some(host), &[], "");
        assert_eq!(r.status, 200, "Host {host}: {} {}", r.status, r.body);
    }
    for host in ["other.venue.test", "venue.test", "x.status.venue.test"] {
        let r = raw(port, "GET", "/api/v1/status", Some(host), &[], "");
        assert_eq!(r.status, 421, "Host {host}: {} {}", r.status, r.body);
    }
    let out = agent.cli(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("allowed_hosts") && text.contains("Status.Venue.Test"), "check-config shows it: {text}");
    agent.stop();
}

/// Readers never go through the command path: `/metrics` and `/readyz` read typed views, so a
/// thousand scrapes dispatch no command (each dispatched command is counted in
/// `vistter_commands_total` and runs on a task of its own).
#[test]
fn a_thousand_scrapes_dispatch_no_command() {
    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"));
    agent.spawn();
    // One command the operator sends, so the counter exists and is known.
    agent.ok_when_up(&["program", "status"]);
    let start = Instant::now();
    while get(port, "/healthz").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the status server never listened; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let commands = || -> f64 {
        let m = get(port, "/metrics").expect("/metrics");
        assert_eq!(m.status, 200, "/metrics: {}", m.body);
        parse_prometheus(&m.body).iter().filter(|s| s.0 == "vistter_commands_total").map(|s| s.2).sum()
    };
    let before = commands();
    assert!(before >= 1.0, "the operator's command is counted");
    for i in 0..1000 {
        if i % 10 == 0 {
            assert_eq!(get(port, "/readyz").expect("/readyz").status, 200);
        }
        commands();
    }
    assert_eq!(commands(), before, "a thousand scrapes of /metrics and a hundred of /readyz dispatched no command");
}

/// The event stream gives each event with its time on the box's clock (`local_time`) and its
/// words (`sentence`), as the page shows them; `vistter-agent events` prints the same line. The
/// daemon runs in `Asia/Kolkata` (UTC+05:30), so a UTC clock would show.
#[test]
fn the_event_stream_carries_each_events_words_and_local_time() {
    const ZONE: &str = "Asia/Kolkata";
    let port = free_port();
    let mut agent = TestAgent::with_config(&format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"));
    agent.spawn_with_env(&[("TZ", ZONE)]);
    let start = Instant::now();
    while get(port, "/healthz").is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "the status server never listened; log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // HTTP/1.0: the stream is the body as it comes (no chunking), until the server closes it.
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write!(s, "GET /api/v1/events/stream?after=0 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let (mut text, mut buf, start) = (String::new(), [0u8; 4096], Instant::now());
    let started = loop {
        let found = text.lines().filter_map(|l| l.strip_prefix("data: ")).find_map(|d| {
            let v: Value = serde_json::from_str(d).ok()?;
            (v["event_type"] == "agent_started").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no agent_started on the event stream:\n{text}");
        if let Ok(n) = s.read(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    assert_eq!(started["sentence"], format!("The agent {} started", env!("CARGO_PKG_VERSION")), "{started}");
    let at: jiff::Timestamp = started["at"].as_str().unwrap().parse().unwrap();
    let clock = at.to_zoned(jiff::tz::TimeZone::get(ZONE).unwrap()).strftime("%H:%M:%S").to_string();
    let local = started["local_time"].as_str().unwrap();
    assert!(local.ends_with(&clock), "{local:?} is not {at} on a {ZONE} clock");
    for field in ["id", "at", "severity", "event_type", "subject", "scope", "detail"] {
        assert!(started.get(field).is_some(), "the event itself is there too ({field}): {started}");
    }
    let out = std::process::Command::new(AGENT_BIN)
        .arg("--config")
        .arg(agent.config_path())
        .args(["events", "--limit", "100"])
        .env_remove("VISTTER_CONFIG")
        .env("TZ", ZONE)
        .output()
        .expect("run vistter-agent");
    let cli = String::from_utf8_lossy(&out.stdout);
    let want = format!("{local} {}", started["sentence"].as_str().unwrap());
    assert!(cli.lines().any(|l| l == want), "`events` lacks the stream's line {want:?}:\n{cli}");
    agent.stop();
}
