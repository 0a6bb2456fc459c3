//! Finding ONVIF cameras on the LAN: a WS-Discovery probe, then what each camera that answered offers.
//!
//! How it works: [`probe`] sends one WS-Discovery `Probe` (SOAP 1.2 over UDP, types
//! `dn:NetworkVideoTransmitter`, a fresh `MessageID`) to 239.255.255.250:3702 out of each IPv4 interface
//! (one socket; the outgoing interface is switched with `IP_MULTICAST_IF` before each send, TTL 1 so it never
//! leaves the LAN), sends it once more after [`REPEAT_AFTER`] (UDP loses packets), and collects the
//! `ProbeMatches` the cameras send back, unicast, to that socket until the wait is over. Answers are
//! de-duplicated by endpoint reference (a camera's stable `urn:uuid:…`).
//!
//! Answers are hostile input: anyone on the LAN can send anything to the socket. A datagram over
//! [`MAX_ANSWER`] bytes, or with more than [`MAX_TAGS`] tags, is not parsed; identical datagrams are parsed
//! once; at most [`MAX_ANSWERS`] are parsed per probe and [`MAX_CAMERAS`] cameras kept. The parser
//! ([`parse_probe_matches`]) is the tolerant scanner of the PTZ client, reads local names only, never panics,
//! and keeps a match only if it has an endpoint reference and at least one `http(s)` XAddr; its text is
//! bounded and stripped of control characters. An answer to another probe (`RelatesTo` not ours) is ignored.
//!
//! [`describe`] then asks each camera for its model (`GetDeviceInformation`) and its RTSP streams (Media
//! `GetProfiles` + `GetStreamUri`), with WS-Security when credentials are given, and builds the
//! `vistter-agent camera add …` line to paste. A camera is only ever contacted at the address its answer
//! came from: an XAddr naming another host (which a hostile answer could use to have us send signed requests
//! anywhere) is listed but not followed.
//!
//! - `describe`: the ONVIF calls and the report ([`Discovery`], [`DiscoveredCamera`]).

mod describe;
#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::time::Instant;

use super::soap::bounded;
use super::xml;

pub use describe::{add_commands, describe, discover, Credentials, DiscoveredCamera, Discovery, StreamProfile};

/// The WS-Discovery multicast group and port (IPv4).
pub const WS_DISCOVERY: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);
/// How long to collect answers unless told otherwise. Cameras answer within a second; some wait a random
/// delay of up to 500 ms first (WS-Discovery's APP_MAX_DELAY), as the spec asks.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);
/// The longest wait accepted: a probe is an interactive action, not a listener.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The probe goes out a second time after this long, in case the first was lost.
pub const REPEAT_AFTER: Duration = Duration::from_millis(250);
/// Largest answer parsed. Real ProbeMatches are 1 to 4 KiB; a bigger datagram is ignored.
pub const MAX_ANSWER: usize = 16 * 1024;
/// Most tags (`<`) in an answer that is parsed. Real ones have about 30; this keeps the scanner's work
/// per datagram small whatever the shape (deep nesting included).
pub const MAX_TAGS: usize = 1024;
/// Most datagrams parsed per probe; the rest of a flood is counted and dropped.
pub const MAX_ANSWERS: usize = 512;
/// Most distinct cameras kept from one probe.
pub const MAX_CAMERAS: usize = 128;
/// Most `ProbeMatch` elements read from one answer (a camera sends one).
const MAX_MATCHES_PER_ANSWER: usize = 8;
/// Most XAddrs and scopes kept per camera.
const MAX_XADDRS: usize = 4;
const MAX_SCOPES: usize = 32;
/// Longest XAddr or scope kept; longer ones are dropped, not cut.
const MAX_URL: usize = 512;

/// What went wrong before any answer could be collected.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no IPv4 network interface that is up and can multicast; name one with --interface ADDRESS")]
    NoInterface,
    #[error("cannot open a UDP socket for the probe: {0}")]
    Socket(std::io::Error),
    #[error("the probe could not be sent on any interface ({0})")]
    Send(String),
    #[error("wait {0:?} is out of range (at most {MAX_WAIT:?})")]
    Wait(Duration),
}

/// Where and how long to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub wait: Duration,
    /// Normally [`WS_DISCOVERY`]; tests use a port of their own on loopback.
    pub target: SocketAddrV4,
    /// IPv4 addresses of the interfaces to probe from; empty: every interface that is up, can multicast
    /// and is not loopback ([`default_interfaces`]).
    pub interfaces: Vec<Ipv4Addr>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions { wait: DEFAULT_WAIT, target: WS_DISCOVERY, interfaces: Vec::new() }
    }
}

/// One camera's answer, as read from a ProbeMatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeMatch {
    /// `EndpointReference/Address`: the camera's stable id (`urn:uuid:…`), the de-duplication key.
    pub endpoint: String,
    /// Its device service URLs, http(s) only.
    pub xaddrs: Vec<String>,
    pub scopes: Scopes,
}

/// What the `onvif://www.onvif.org/…` scopes say about the camera (percent-decoded).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scopes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Not a standard scope, but some vendors send `…/model/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A ProbeMatch and the address its datagram came from.
#[derive(Clone, Debug)]
pub struct Answered {
    pub from: IpAddr,
    pub found: ProbeMatch,
}

/// What one probe collected.
#[derive(Clone, Debug, Default)]
pub struct ProbeReport {
    /// In order of first answer.
    pub cameras: Vec<Answered>,
    /// Datagrams that were not a usable answer: too big, malformed, for another probe, beyond the caps.
    pub ignored: usize,
}

/// A fresh WS-Addressing MessageID.
pub fn new_message_id() -> String {
    format!("uuid:{}", uuid::Uuid::new_v4())
}

/// The Probe for NetworkVideoTransmitters, SOAP 1.2 with WS-Addressing 2004/08 and WS-Discovery 2005/04 (the
/// versions ONVIF cameras speak).
pub fn probe_message(message_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:a=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" \
         xmlns:d=\"http://schemas.xmlsoap.org/ws/2005/04/discovery\" \
         xmlns:dn=\"http://www.onvif.org/ver10/network/wsdl\">\
         <s:Header>\
         <a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>\
         <a:MessageID>{}</a:MessageID>\
         <a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>\
         <a:To s:mustUnderstand=\"1\">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>\
         </s:Header>\
         <s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body>\
         </s:Envelope>",
        super::soap::escape(message_id)
    )
}

/// The usable ProbeMatches of one datagram answering the probe `message_id`; empty if it is too big, not a
/// ProbeMatches, answers another probe, or holds nothing usable. Never panics.
pub fn parse_probe_matches(datagram: &[u8], message_id: &str) -> Vec<ProbeMatch> {
    if datagram.len() > MAX_ANSWER || datagram.iter().filter(|&&b| b == b'<').count() > MAX_TAGS {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(datagram);
    let doc = xml::Doc::parse(&text);
    if doc.find("ProbeMatches").is_none() {
        return Vec::new();
    }
    // Cameras that omit RelatesTo are taken; one that names another probe is a stale or forged answer.
    if doc.find("RelatesTo").is_some_and(|r| doc.text(r) != message_id) {
        return Vec::new();
    }
    elements(&doc)
        .filter(|&i| doc.local(i) == "ProbeMatch")
        .take(MAX_MATCHES_PER_ANSWER)
        .filter_map(|pm| probe_match(&doc, pm))
        .collect()
}

/// Every element index, in document order (linear: no parent walks).
fn elements(doc: &xml::Doc) -> impl Iterator<Item = usize> + '_ {
    (0..).take_while(|&i| !doc.local(i).is_empty())
}

fn probe_match(doc: &xml::Doc, pm: usize) -> Option<ProbeMatch> {
    let endpoint = doc
        .child(pm, "EndpointReference")
        .and_then(|e| doc.child(e, "Address"))
        .map(|a| doc.text(a))
        .filter(|a| !a.is_empty() && a.len() <= MAX_URL && !a.chars().any(char::is_control))?
        .to_string();
    let words = |name: &str| -> Vec<String> {
        doc.child(pm, name).map(|i| doc.text(i).split_whitespace().map(str::to_string).collect()).unwrap_or_default()
    };
    let xaddrs: Vec<String> = words("XAddrs").into_iter().filter_map(|x| http_url(&x)).take(MAX_XADDRS).collect();
    if xaddrs.is_empty() {
        return None;
    }
    let scopes: Vec<String> = words("Scopes").into_iter().filter(|s| s.len() <= MAX_URL).take(MAX_SCOPES).collect();
    Some(ProbeMatch { endpoint, xaddrs, scopes: read_scopes(&scopes) })
}

/// `s` if it is an absolute http(s) URL with a host, as the parser normalises it.
fn http_url(s: &str) -> Option<String> {
    if s.len() > MAX_URL {
        return None;
    }
    let u = url::Url::parse(s).ok()?;
    let ok = matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none();
    ok.then(|| u.to_string())
}

/// The name, hardware, model and location scopes (`onvif://www.onvif.org/name/Front%20door`).
fn read_scopes(scopes: &[String]) -> Scopes {
    let mut out = Scopes::default();
    for s in scopes {
        let Some(rest) = s.strip_prefix("onvif://www.onvif.org/") else { continue };
        let Some((kind, value)) = rest.split_once('/') else { continue };
        let value = percent_decode(value);
        let value = bounded(&value);
        if value.is_empty() {
            continue;
        }
        let slot = match kind {
            "name" => &mut out.name,
            "hardware" => &mut out.hardware,
            "model" => &mut out.model,
            "location" => &mut out.location,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    out
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// IPv4 addresses of the interfaces that are up, can multicast and are not loopback.
pub fn default_interfaces() -> Vec<Ipv4Addr> {
    use nix::net::if_::InterfaceFlags as F;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out = Vec::new();
    for a in addrs {
        let usable = a.flags.contains(F::IFF_UP | F::IFF_MULTICAST) && !a.flags.contains(F::IFF_LOOPBACK);
        let v4 = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip());
        if let (true, Some(ip)) = (usable, v4) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Sends the probe and collects the answers for `opts.wait`.
pub async fn probe(opts: &ProbeOptions) -> Result<ProbeReport, DiscoverError> {
    if opts.wait > MAX_WAIT {
        return Err(DiscoverError::Wait(opts.wait));
    }
    let interfaces = if opts.interfaces.is_empty() { default_interfaces() } else { opts.interfaces.clone() };
    if interfaces.is_empty() {
        return Err(DiscoverError::NoInterface);
    }
    let sock = open_socket().map_err(DiscoverError::Socket)?;
    let message_id = new_message_id();
    let msg = probe_message(&message_id);
    let deadline = Instant::now() + opts.wait;
    send_probe(&sock, &interfaces, opts.target, &msg).await?;
    let mut collector = Collector::new(message_id);
    let mut repeat_at = Some(Instant::now() + REPEAT_AFTER);
    let mut buf = vec![0u8; MAX_ANSWER + 1];
    let mut errors = 0u32;
    loop {
        let wake = repeat_at.map_or(deadline, |r| r.min(deadline));
        let received = tokio::time::timeout_at(wake, sock.recv_from(&mut buf)).await;
        match received {
            Ok(Ok((n, from))) => collector.take(&buf[..n], from, n > MAX_ANSWER),
            // An ICMP error queued on the socket, or a signal: neither ends the wait, but a socket that only
            // fails is given up on.
            Ok(Err(e)) => {
                errors += 1;
                tracing::debug!("WS-Discovery receive: {e}");
                if errors > 64 {
                    break;
                }
            }
            Err(_) if Instant::now() >= deadline => break,
            Err(_) => {
                repeat_at = None;
                // The answers to the first send are already on their way; a failed repeat changes nothing.
                let _ = send_probe(&sock, &interfaces, opts.target, &msg).await;
            }
        }
    }
    Ok(collector.report())
}

fn open_socket() -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    // The probe is for this link only.
    s.set_multicast_ttl_v4(1)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// One send per interface; Ok if at least one went out.
async fn send_probe(
    sock: &tokio::net::UdpSocket,
    interfaces: &[Ipv4Addr],
    target: SocketAddrV4,
    msg: &str,
) -> Result<(), DiscoverError> {
    let mut failures = Vec::new();
    for ip in interfaces {
        let sent = async {
            socket2::SockRef::from(sock).set_multicast_if_v4(ip)?;
            sock.send_to(msg.as_bytes(), target).await
        }
        .await;
        if let Err(e) = sent {
            tracing::debug!(interface = %ip, "WS-Discovery probe not sent: {e}");
            failures.push(format!("{ip}: {e}"));
        }
    }
    if failures.len() == interfaces.len() {
        return Err(DiscoverError::Send(failures.join("; ")));
    }
    Ok(())
}

/// The answers of one probe: de-duplicated, bounded, in order of arrival.
struct Collector {
    message_id: String,
    hasher: RandomState,
    /// Hashes of the datagrams parsed (at most [`MAX_ANSWERS`]).
    seen_datagrams: HashSet<u64>,
    by_endpoint: HashSet<String>,
    report: ProbeReport,
    parsed: usize,
}

impl Collector {
    fn new(message_id: String) -> Collector {
        Collector {
            message_id,
            hasher: RandomState::new(),
            seen_datagrams: HashSet::new(),
            by_endpoint: HashSet::new(),
            report: ProbeReport::default(),
            parsed: 0,
        }
    }

    /// One datagram from `from`; `truncated` when it was larger than the buffer.
    fn take(&mut self, datagram: &[u8], from: SocketAddr, truncated: bool) {
        if truncated || self.parsed >= MAX_ANSWERS {
            self.report.ignored += 1;
            return;
        }
        // A repeated datagram (the camera answering both sends, or a flood of copies) is read once and not
        // counted. Keyed per probe, so a sender cannot aim a collision at a camera's answer.
        if !self.seen_datagrams.insert(self.hasher.hash_one(datagram)) {
            return;
        }
        self.parsed += 1;
        let matches = parse_probe_matches(datagram, &self.message_id);
        if matches.is_empty() {
            self.report.ignored += 1;
        }
        for m in matches {
            if self.by_endpoint.contains(&m.endpoint) {
                continue;
            }
            if self.report.cameras.len() >= MAX_CAMERAS {
                self.report.ignored += 1;
                return;
            }
            self.by_endpoint.insert(m.endpoint.clone());
            self.report.cameras.push(Answered { from: from.ip(), found: m });
        }
    }

    fn report(self) -> ProbeReport {
        self.report
    }
}
