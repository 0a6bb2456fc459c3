//! Which `Host` the status server answers to.
//!
//! A web page on another site can point a DNS name of its own at this machine (DNS rebinding);
//! the browser then treats the status server as that site and lets the page read it. The browser
//! still sends the page's name in `Host`, so every request is checked before any route runs
//! ([`check`]) and one naming a host the machine does not know is refused with
//! `421 Misdirected Request`.
//!
//! Accepted: an IPv4 or IPv6 literal (`10.0.0.5:8787`, `[::1]:8787`), `localhost` and names under
//! `.localhost`, the machine's host name as read at start (and its first label, and that label
//! under `.local`, the mDNS name a Pi is usually reached by), and each name of
//! `[status] allowed_hosts`. Names compare case-insensitively, without a trailing dot and without
//! the port. A request without a `Host` header (HTTP/1.0) or with a malformed one is refused too;
//! so is an absolute request target (`GET http://name/ …`) naming an unknown host. Forwarding
//! headers (`X-Forwarded-Host`) are not read: anyone can send them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::config::host_name::{check_name, normalize, HostNameError};

/// What a refused request is told.
pub const REFUSED: &str = "421 Misdirected Request: this status server does not answer to that host name. \
Use its IP address, or add the name to [status] allowed_hosts in the agent's config.\n";

/// The host part of a `Host` header value (`host[:port]`, RFC 9110 §7.2), or `None` when the value
/// is malformed. IP literals come back as [`Host::Ip`].
fn parse(value: &[u8]) -> Option<Host> {
    let value = std::str::from_utf8(value).ok()?;
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        // A zone (`%eth0`) is not allowed in a URI's host: the address alone parses.
        inside.parse::<Ipv6Addr>().ok()?;
        let port = if after.is_empty() { "" } else { after.strip_prefix(':')? };
        return valid_port(port).then_some(Host::Ip);
    }
    let (host, port) = value.rsplit_once(':').unwrap_or((value, ""));
    // A second ':' means an IPv6 address without its brackets: not a valid Host.
    if host.contains(':') || !valid_port(port) {
        return None;
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        return Some(Host::Ip);
    }
    normalize(host).map(Host::Name)
}

#[derive(Debug, PartialEq, Eq)]
enum Host {
    Ip,
    Name(String),
}

/// A `Host` port: empty (`host:` is allowed) or digits up to 65535.
fn valid_port(port: &str) -> bool {
    port.is_empty() || (port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
}

/// The names the status server answers to, besides IP literals and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// `machine`: the host name (`None` or an unusable one adds nothing); `configured`:
    /// `[status] allowed_hosts` (entries that are not names are skipped; config load refuses them).
    pub fn new(machine: Option<&str>, configured: &[String]) -> AllowedHosts {
        let mut names = Vec::new();
        if let Some(m) = machine.and_then(normalize) {
            let short = m.split('.').next().unwrap_or_default().to_string();
            names.push(format!("{short}.local"));
            names.push(short);
            names.push(m);
        }
        names.extend(configured.iter().filter_map(|n| normalize(n)));
        names.sort();
        names.dedup();
        AllowedHosts { names }
    }

    /// The machine's host name as the kernel has it now, with `configured`.
    pub fn of_this_machine(configured: &[String]) -> AllowedHosts {
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok());
        AllowedHosts::new(host.as_deref(), configured)
    }

    /// Whether a `Host` header value names this server.
    pub fn allows(&self, value: &[u8]) -> bool {
        match parse(value) {
            Some(Host::Ip) => true,
            Some(Host::Name(n)) => n == "localhost" || n.ends_with(".localhost") || self.names.contains(&n),
            None => false,
        }
    }
}

/// Refuses a request whose `Host` (or absolute target) this server does not answer to, before any
/// route or extractor runs.
pub async fn check(State(allowed): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => allowed.allows(h.as_bytes()),
        // HTTP/2 carries the host in the request target (`:authority`) instead.
        (None, None) if req.version() >= Version::HTTP_2 => {
            req.uri().authority().is_some_and(|a| allowed.allows(a.as_str().as_bytes()))
        }
        _ => false,
    };
    let target = req.uri().authority().is_none_or(|a| allowed.allows(a.as_str().as_bytes()));
    if host && target {
        return next.run(req).await;
    }
    tracing::debug!(host = ?req.headers().get(header::HOST), path = %req.uri().path(), "status server: unknown Host refused");
    (StatusCode::MISDIRECTED_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], REFUSED).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hosts() -> AllowedHosts {
        AllowedHosts::new(Some("Venue-Pi"), &["status.venue.example".into(), "Box7.LAN.".into()])
    }

    #[test]
    fn known_hosts_and_ip_literals_are_allowed() {
        let h = hosts();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8787",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:8787",
            "[2001:db8::7]:1",
            "localhost",
            "LOCALHOST:8787",
            "localhost.",
            "app.localhost:3000",
            "venue-pi",
            "venue-pi.local",
            "VENUE-PI.LOCAL.:8787",
            "status.venue.example",
            "Status.Venue.Example.:443",
            "box7.lan",
            "127.0.0.1:",
        ] {
            assert!(h.allows(ok.as_bytes()), "{ok} is refused");
        }
    }

    #[test]
    fn unknown_and_malformed_hosts_are_refused() {
        let h = hosts();
        for bad in [
            "",
            "evil.example",
            "evil.example:8787",
            "venue-pi.evil.example",
            "localhost.evil.example",
            "status.venue.example.evil",
            "127.0.0.1.evil.example",
            "127.0.0.1:8787:1",
            "127.0.0.1:99999",
            "127.0.0.1:-1",
            "127.0.0.1 ",
            " 127.0.0.1",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:abc",
            "[fe80::1%25eth0]",
            "[evil.example]",
            "user@127.0.0.1",
            "127.0.0.1/",
            "localhost..",
            "-localhost",
            "venue-pi.local.local",
            "\u{0}",
            "ünicode.example",
        ] {
            assert!(!h.allows(bad.as_bytes()), "{bad:?} is allowed");
        }
        assert!(!h.allows(b"\xff\xfe"), "not UTF-8");
        // Without a machine name only IPs and localhost pass.
        let none = AllowedHosts::new(None, &[]);
        assert!(none.allows(b"localhost:1") && none.allows(b"192.168.1.2"));
        assert!(!none.allows(b"venue-pi.local"));
    }

    #[test]
    fn configured_names_are_checked() {
        assert_eq!(check_name("Status.Venue.Example."), Ok("status.venue.example".into()));
        for bad in ["", ".", "a..b", "host:8787", "http://host", "-a", "a b", &"a".repeat(64), "[::1]"] {
            assert_eq!(check_name(bad), Err(HostNameError::Invalid(bad.to_string())), "{bad:?}");
        }
    }

    /// What `allows` may let through, decided independently of its parser: a URL parser must read
    /// the value as a host (and port), and that host is an IP address or one of the known names.
    fn oracle(h: &AllowedHosts, value: &str) -> bool {
        let Ok(u) = url::Url::parse(&format!("http://{value}/")) else { return false };
        if u.username() != "" || u.password().is_some() || u.path() != "/" || u.query().is_some() {
            return false;
        }
        match u.host() {
            Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => true,
            Some(url::Host::Domain(d)) => {
                let d = d.strip_suffix('.').unwrap_or(d);
                d == "localhost" || d.ends_with(".localhost") || h.names.iter().any(|n| n == d)
            }
            None => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_host_values_never_panic_and_only_allowed_forms_pass(value in ".{0,40}") {
            let h = hosts();
            if h.allows(value.as_bytes()) {
                prop_assert!(oracle(&h, &value), "{:?} passed", value);
            }
        }

        #[test]
        fn host_like_values_pass_only_when_known(
            name in "[a-zA-Z0-9.:\\[\\]_-]{0,30}",
            port in proptest::option::of(0u32..70000),
        ) {
            let h = hosts();
            let value = match port { Some(p) => format!("{name}:{p}"), None => name.clone() };
            if h.allows(value.as_bytes()) {
                prop_assert!(oracle(&h, &value), "{:?} passed", value);
            }
        }

        #[test]
        fn known_names_pass_in_any_case_with_any_port(
            i in 0usize..5,
            upper in any::<u64>(),
            dot in any::<bool>(),
            port in proptest::option::of(any::<u16>()),
        ) {
            let h = hosts();
            let name = ["localhost", "venue-pi", "venue-pi.local", "status.venue.example", "box7.lan"][i];
            let mut v: String = name
                .chars()
                .enumerate()
                .map(|(k, c)| if upper >> (k % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c })
                .collect();
            if dot { v.push('.'); }
            if let Some(p) = port { v.push_str(&format!(":{p}")); }
            prop_assert!(h.allows(v.as_bytes()), "{:?} refused", v);
        }

        #[test]
        fn ip_literals_always_pass(ip in any::<std::net::IpAddr>(), port in proptest::option::of(any::<u16>())) {
            let host = match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            };
            let v = match port { Some(p) => format!("{host}:{p}"), None => host };
            prop_assert!(hosts().allows(v.as_bytes()), "{:?} refused", v);
        }

        /// Well-formed names pass exactly when they are known (a listed name, the machine's,
        /// localhost): a name that merely contains or ends with a known one does not.
        #[test]
        fn well_formed_names_pass_exactly_when_known(
            name in prop_oneof![
                "[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?(\\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?){0,3}",
                "(evil\\.|x\\.)?(localhost|venue-pi|venue-pi\\.local|status\\.venue\\.example|box7\\.lan)(\\.evil|\\.local)?",
            ],
            dot in any::<bool>(),
        ) {
            let h = hosts();
            let lower = name.to_ascii_lowercase();
            let known = lower == "localhost"
                || lower.ends_with(".localhost")
                || h.names.contains(&lower)
                || (!dot && name.parse::<Ipv4Addr>().is_ok());
            let v = if dot { format!("{name}.") } else { name.clone() };
            prop_assert_eq!(h.allows(v.as_bytes()), known, "{:?}", v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = hosts().allows(&value);
        }
    }
}
