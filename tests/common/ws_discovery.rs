//! Simulated cameras for `camera discover`: each answers WS-Discovery probes on loopback multicast
//! (239.255.255.250 joined on 127.0.0.1, on a port of the test's own, never 3702) and the ONVIF calls
//! discovery makes (GetDeviceInformation, GetCapabilities, GetProfiles, GetStreamUri) over HTTP on
//! 127.0.0.1, checking each WS-Security PasswordDigest. A [`Responder`] with a closure answers probes with
//! whatever datagrams a test wants (hostile ones).
//!
//! Plain threads, not tasks: the fakes serve while a test blocks on the agent's CLI or on the broker. Every
//! thread polls a stop flag (short socket timeouts) and is joined on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest as _, Sha1};

pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
const POLL: Duration = Duration::from_millis(50);

/// A UDP port free on this machine a moment ago, for the probes of one test.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").expect("bind udp").local_addr().expect("addr").port()
}

/// The MessageID of a probe, if it is one for NetworkVideoTransmitters.
pub fn probe_id(datagram: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(datagram).ok()?;
    if !text.contains("discovery/Probe<") || !text.contains("NetworkVideoTransmitter") {
        return None;
    }
    let start = text.find("MessageID>")? + "MessageID>".len();
    let len = text[start..].find('<')?;
    Some(text[start..start + len].trim().to_string())
}

/// A ProbeMatches answering `relates_to`, as gSOAP-based cameras write it.
pub fn probe_matches(relates_to: &str, endpoint: &str, xaddrs: &str, scopes: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:wsa=\"http://schemas.xmlsoap.org/ws/2004/08/addressing\" \
         xmlns:d=\"http://schemas.xmlsoap.org/ws/2005/04/discovery\" \
         xmlns:dn=\"http://www.onvif.org/ver10/network/wsdl\"><SOAP-ENV:Header>\
         <wsa:MessageID>uuid:{}</wsa:MessageID><wsa:RelatesTo>{relates_to}</wsa:RelatesTo>\
         <wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>\
         <wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>\
         </SOAP-ENV:Header><SOAP-ENV:Body><d:ProbeMatches><d:ProbeMatch>\
         <wsa:EndpointReference><wsa:Address>{endpoint}</wsa:Address></wsa:EndpointReference>\
         <d:Types>dn:NetworkVideoTransmitter</d:Types><d:Scopes>{scopes}</d:Scopes>\
         <d:XAddrs>{xaddrs}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>\
         </d:ProbeMatch></d:ProbeMatches></SOAP-ENV:Body></SOAP-ENV:Envelope>",
        uuid::Uuid::new_v4()
    )
}

/// Answers every probe sent to the group on `port` with the datagrams `answer(message_id)` returns.
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Probes seen (the same probe is sent twice).
    pub probes: Arc<Mutex<Vec<String>>>,
}

impl Responder {
    pub fn start(port: u16, answer: impl Fn(&str) -> Vec<Vec<u8>> + Send + 'static) -> Responder {
        Self::start_after(port, Duration::ZERO, answer)
    }

    /// Like `start`, answering each probe `delay` after it came (real cameras wait a random 0 to 500 ms).
    pub fn start_after(
        port: u16,
        delay: Duration,
        answer: impl Fn(&str) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Responder {
        Self::start_on(Ipv4Addr::LOCALHOST, port, delay, answer)
    }

    /// Listening on the interface with address `ip` and answering from it.
    pub fn start_on(
        ip: Ipv4Addr,
        port: u16,
        delay: Duration,
        answer: impl Fn(&str) -> Vec<Vec<u8>> + Send + 'static,
    ) -> Responder {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp socket");
        // Several simulated cameras share the port, as real ones share 3702.
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        // Bound to the group itself: only datagrams sent to it arrive, nothing unicast from elsewhere.
        s.bind(&SocketAddr::from((GROUP, port)).into()).expect("bind the group");
        s.join_multicast_v4(&GROUP, &ip).expect("join the group");
        s.set_read_timeout(Some(POLL)).expect("timeout");
        let listen: UdpSocket = s.into();
        let reply = UdpSocket::bind((ip, 0)).expect("bind the reply socket");
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (stop2, probes2) = (stop.clone(), probes.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::SeqCst) {
                let Ok((n, from)) = listen.recv_from(&mut buf) else { continue };
                let Some(id) = probe_id(&buf[..n]) else { continue };
                probes2.lock().unwrap().push(id.clone());
                std::thread::sleep(delay);
                for d in answer(&id) {
                    // A full receive buffer at the prober drops datagrams, as a real network would.
                    let _ = reply.send_to(&d, from);
                }
            }
        });
        Responder { stop, thread: Some(thread), probes }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One media profile of a simulated camera.
#[derive(Clone, Debug)]
pub struct Profile {
    pub token: String,
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// What GetStreamUri answers for it; empty: a fault (a profile the camera cannot stream).
    pub uri: String,
}

#[derive(Clone, Debug)]
pub struct CameraSpec {
    pub endpoint: String,
    pub manufacturer: String,
    pub model: String,
    /// The `onvif://www.onvif.org/name/…` scope (percent-encoded as sent).
    pub scope_name: String,
    /// Empty: no authentication.
    pub username: String,
    pub password: String,
    /// The camera wants HTTP Digest (MD5, `qop=auth`) on every ONVIF call and ignores WS-Security, as many
    /// Reolink and OEM cameras do: a request without a valid `Authorization` gets a 401 challenge.
    pub http_digest: bool,
    pub profiles: Vec<Profile>,
}

/// A simulated ONVIF camera: a [`Responder`] announcing `http://127.0.0.1:PORT/onvif/device_service`, and
/// the HTTP server behind it (Media at `/onvif/Media`, as Hikvision cameras have it, to show that the path
/// from GetCapabilities is followed).
pub struct FakeCamera {
    pub http_port: u16,
    _responder: Responder,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// (action, credentials ok) of every request.
    pub requests: Arc<Mutex<Vec<(String, bool)>>>,
}

impl FakeCamera {
    pub fn start(discovery_port: u16, spec: CameraSpec) -> FakeCamera {
        Self::start_on(Ipv4Addr::LOCALHOST, discovery_port, spec)
    }

    /// On the interface with address `ip` (its HTTP server too).
    pub fn start_on(ip: Ipv4Addr, discovery_port: u16, spec: CameraSpec) -> FakeCamera {
        let listener = TcpListener::bind((ip, 0)).expect("bind the HTTP port");
        let http_port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, requests2, spec2) = (stop.clone(), requests.clone(), spec.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => serve(conn, ip, http_port, &spec2, &requests2),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let xaddr = format!("http://{ip}:{http_port}/onvif/device_service");
        let scopes = format!(
            "onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/hardware/{} onvif://www.onvif.org/name/{}",
            spec.model, spec.scope_name
        );
        let endpoint = spec.endpoint.clone();
        let responder = Responder::start_on(ip, discovery_port, Duration::ZERO, move |id| {
            vec![probe_matches(id, &endpoint, &xaddr, &scopes).into_bytes()]
        });
        FakeCamera { http_port, _responder: responder, stop, thread: Some(thread), requests }
    }

    pub fn actions(&self) -> Vec<(String, bool)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeCamera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One HTTP/1.1 request, one answer, then the connection is closed.
fn serve(mut conn: TcpStream, ip: Ipv4Addr, port: u16, spec: &CameraSpec, requests: &Mutex<Vec<(String, bool)>>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_end, length) = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                .unwrap_or(0);
            break (end + 4, length);
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if Instant::now() > deadline || raw.len() > 1 << 20 {
            return;
        }
    };
    while raw.len() < head_end + length && Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let body = String::from_utf8_lossy(&raw[head_end..]).to_string();
    let action = body
        .find("Body>")
        .and_then(|b| body[b + 5..].find('<').map(|i| b + 5 + i + 1))
        .map(|s| {
            let name: String = body[s..].chars().take_while(|c| c.is_alphanumeric() || *c == ':').collect();
            name.rsplit(':').next().unwrap_or("").to_string()
        })
        .unwrap_or_default();
    let http_auth = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("authorization").then(|| v.trim().to_string())
    });
    // The clock is read before anything else and, as ONVIF requires, without authentication.
    let auth_ok = spec.username.is_empty()
        || action == "GetSystemDateAndTime"
        || if spec.http_digest {
            http_auth.as_deref().is_some_and(|a| http_digest_ok(a, "POST", &path, spec))
        } else {
            digest_ok(&body, spec)
        };
    requests.lock().unwrap().push((action.clone(), auth_ok));
    let (status, answer) = match (auth_ok, spec.http_digest) {
        (false, true) => (401, "<html><body>401 Unauthorized</body></html>".to_string()),
        (false, false) => (400, fault("ter:NotAuthorized", "Sender not Authorized")),
        (true, _) => respond(&path, &action, &body, ip, port, spec),
    };
    let text = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Bad Request",
    };
    let challenge = if status == 401 {
        format!("WWW-Authenticate: Digest realm=\"{DIGEST_REALM}\", qop=\"auth\", algorithm=MD5, nonce=\"{DIGEST_NONCE}\"\r\n")
    } else {
        String::new()
    };
    let reply = format!(
        "HTTP/1.1 {status} {text}\r\n{challenge}Content-Type: application/soap+xml; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let _ = conn.write_all(reply.as_bytes());
}

fn respond(path: &str, action: &str, body: &str, ip: Ipv4Addr, port: u16, spec: &CameraSpec) -> (u16, String) {
    let ok = |b: String| (200, envelope(&b));
    match (path, action) {
        ("/onvif/device_service", "GetSystemDateAndTime") => {
            let t = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
            ok(super::onvif::system_date_and_time(&t, "NTP"))
        }
        ("/onvif/device_service", "GetDeviceInformation") => ok(format!(
            "<tds:GetDeviceInformationResponse><tds:Manufacturer>{}</tds:Manufacturer><tds:Model>{}</tds:Model>\
             <tds:FirmwareVersion>V5.5.82 build 190220</tds:FirmwareVersion><tds:SerialNumber>X1</tds:SerialNumber>\
             <tds:HardwareId>88</tds:HardwareId></tds:GetDeviceInformationResponse>",
            spec.manufacturer, spec.model
        )),
        ("/onvif/device_service", "GetCapabilities") => ok(format!(
            "<tds:GetCapabilitiesResponse><tds:Capabilities><tt:Media>\
             <tt:XAddr>http://{ip}:{port}/onvif/Media</tt:XAddr></tt:Media></tds:Capabilities>\
             </tds:GetCapabilitiesResponse>"
        )),
        ("/onvif/Media", "GetProfiles") => ok(format!(
            "<trt:GetProfilesResponse>{}</trt:GetProfilesResponse>",
            spec.profiles
                .iter()
                .map(|p| format!(
                    "<trt:Profiles token=\"{}\" fixed=\"true\"><tt:Name>{}</tt:Name>\
                     <tt:VideoEncoderConfiguration token=\"V{}\"><tt:Name>enc</tt:Name><tt:Encoding>H264</tt:Encoding>\
                     <tt:Resolution><tt:Width>{}</tt:Width><tt:Height>{}</tt:Height></tt:Resolution>\
                     </tt:VideoEncoderConfiguration></trt:Profiles>",
                    p.token, p.name, p.token, p.width, p.height
                ))
                .collect::<String>()
        )),
        ("/onvif/Media", "GetStreamUri") => {
            let token = text_of(body, "ProfileToken").unwrap_or_default();
            match spec.profiles.iter().find(|p| p.token == token) {
                Some(p) if p.uri.is_empty() => (400, fault("ter:InvalidArgVal", "Stream setup not supported")),
                Some(p) => ok(format!(
                    "<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>{}</tt:Uri>\
                     <tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false\
                     </tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>",
                    p.uri.replace('&', "&amp;")
                )),
                None => (400, fault("ter:NoProfile", "The requested profile does not exist")),
            }
        }
        _ => (400, fault("ter:ActionNotSupported", "Optional Action Not Implemented")),
    }
}

/// The text of the first element named `local` (any prefix).
fn text_of(body: &str, local: &str) -> Option<String> {
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt + 1..];
        let gt = rest.find('>')?;
        let tag = &rest[..gt];
        let name = tag.split_whitespace().next().unwrap_or("");
        if name.rsplit(':').next() == Some(local) && !tag.starts_with('/') {
            let after = &rest[gt + 1..];
            return Some(after[..after.find('<').unwrap_or(after.len())].trim().to_string());
        }
    }
    None
}

const DIGEST_REALM: &str = "IPC discovery test";
const DIGEST_NONCE: &str = "6b1f0c2a9d8e7f60";

/// An `Authorization: Digest` header checked the way the camera would (RFC 7616, MD5, `qop=auth`), computed
/// independently of the agent's code.
fn http_digest_ok(header: &str, method: &str, target: &str, spec: &CameraSpec) -> bool {
    let Some(rest) = header.strip_prefix("Digest ") else { return false };
    let params = super::onvif::auth_params(rest);
    let p = |k: &str| params.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str());
    let (Some(user), Some(realm), Some(nonce), Some(uri), Some(response), Some(qop), Some(nc), Some(cnonce)) =
        (p("username"), p("realm"), p("nonce"), p("uri"), p("response"), p("qop"), p("nc"), p("cnonce"))
    else {
        return false;
    };
    if user != spec.username || realm != DIGEST_REALM || nonce != DIGEST_NONCE || uri != target || qop != "auth" {
        return false;
    }
    let h = |s: String| hex::encode(md5::Md5::digest(s.as_bytes()));
    let ha1 = h(format!("{user}:{realm}:{}", spec.password));
    let ha2 = h(format!("{method}:{uri}"));
    h(format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")) == response
}

/// The UsernameToken's PasswordDigest recomputed from its Nonce and Created and the password the camera knows.
fn digest_ok(body: &str, spec: &CameraSpec) -> bool {
    let (Some(user), Some(pw), Some(nonce), Some(created)) =
        (text_of(body, "Username"), text_of(body, "Password"), text_of(body, "Nonce"), text_of(body, "Created"))
    else {
        return false;
    };
    let Ok(nonce) = BASE64.decode(nonce) else { return false };
    let mut h = Sha1::new();
    h.update(&nonce);
    h.update(created.as_bytes());
    h.update(spec.password.as_bytes());
    user == spec.username && BASE64.encode(h.finalize()) == pw
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:tt=\"http://www.onvif.org/ver10/schema\" xmlns:tds=\"http://www.onvif.org/ver10/device/wsdl\" \
         xmlns:trt=\"http://www.onvif.org/ver10/media/wsdl\" xmlns:ter=\"http://www.onvif.org/ver10/error\">\
         <env:Body>{body}</env:Body></env:Envelope>"
    )
}

fn fault(subcode: &str, reason: &str) -> String {
    envelope(&format!(
        "<env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>{subcode}</env:Value>\
         </env:Subcode></env:Code><env:Reason><env:Text xml:lang=\"en\">{reason}</env:Text></env:Reason></env:Fault>"
    ))
}

/// A network namespace of the test's own with a veth pair inside it (`10.213.N.1/24` and `10.213.N.2/24`,
/// both up), so probes go out of real, non-loopback interfaces to the real port 3702 and stay inside it.
/// Deleted on drop.
pub struct Netns {
    pub name: String,
    pub near: Ipv4Addr,
    pub far: Ipv4Addr,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("vsa-{tag}-{}", std::process::id());
        let n = (std::process::id() % 200) as u8 + 20;
        let (near, far) = (Ipv4Addr::new(10, 213, n, 1), Ipv4Addr::new(10, 213, n, 2));
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip").args(args).output().expect("ip (iproute2) is installed");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = std::process::Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name: name.clone(), near, far };
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&["-n", &name, "link", "add", "vd0", "type", "veth", "peer", "name", "vd1"]);
        ip(&["-n", &name, "addr", "add", &format!("{near}/24"), "dev", "vd0"]);
        ip(&["-n", &name, "addr", "add", &format!("{far}/24"), "dev", "vd1"]);
        ip(&["-n", &name, "link", "set", "vd0", "up", "multicast", "on"]);
        ip(&["-n", &name, "link", "set", "vd1", "up", "multicast", "on"]);
        ns
    }

    /// Runs `f` on a thread that entered the namespace: the sockets it opens (and the threads it starts)
    /// belong to the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the test's namespace");
            f()
        })
        .join()
        .expect("the namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
