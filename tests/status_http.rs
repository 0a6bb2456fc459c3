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
