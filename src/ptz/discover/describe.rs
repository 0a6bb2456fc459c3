//! What a camera that answered the probe offers: its model (`GetDeviceInformation`), its Media service
//! (`GetCapabilities`), its profiles (`GetProfiles`) and each profile's RTSP URL (`GetStreamUri`), asked with a
//! WS-Security UsernameToken when credentials are given, and the `camera add` line that uses them.
//!
//! Replies are read as the PTZ client reads them (bounded body, the tolerant scanner, faults and 401s turned
//! into [`PtzError`]s that never hold the password), plus a cap on their number of tags, and the scanner is
//! only walked linearly. Stream URLs must be `rtsp(s)://` with a host; any user or password a camera puts in
//! one is dropped (it is the operator's to give, with `--password-stdin`).

use std::net::IpAddr;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::super::soap::{bounded, escape, parse_capabilities};
use super::super::{xml, OnvifEndpoint, PtzClient, PtzError, DEFAULT_REQUEST_TIMEOUT};
use super::{probe, Answered, DiscoverError, ProbeOptions, Scopes};
use crate::secret::Secret;

/// Most profiles asked for their stream URL.
const MAX_PROFILES: usize = 8;
/// Longest stream URL kept.
const MAX_URI: usize = 1024;
/// Cameras described at once.
const PARALLEL: usize = 8;
/// The whole description of one camera, all its requests together.
const PER_CAMERA: Duration = Duration::from_secs(12);
const MEDIA_PATH: &str = "/onvif/media_service";

const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_TT: &str = "http://www.onvif.org/ver10/schema";

/// The login the cameras are asked with. `Debug` masks the password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// The result of `camera discover` and of the cloud's `CAMERA_ACTION discover`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    pub cameras: Vec<DiscoveredCamera>,
    /// Datagrams that were not a usable answer (malformed, too big, for another probe, beyond the caps).
    pub ignored_answers: usize,
}

/// One camera found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredCamera {
    /// The address its answer came from.
    pub address: String,
    /// Its WS-Discovery endpoint reference (`urn:uuid:…`), stable across reboots and address changes.
    pub endpoint: String,
    /// Its ONVIF device service URLs as announced.
    pub xaddrs: Vec<String>,
    /// The device service used: the announced URL on the answering address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif_url: Option<String>,
    /// For `camera add --onvif-host/--onvif-port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// From GetDeviceInformation, else the `hardware` (or `model`) scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    pub scopes: Scopes,
    pub streams: Vec<StreamProfile>,
    /// Why something is missing: the camera wants a login, refused it, did not answer, or was not contacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The `vistter-agent camera add …` line for its first stream (no password: `--password-stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_command: Option<String>,
}

/// One media profile and its RTSP URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamProfile {
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// Probes, then describes every camera that answered (a few at a time).
pub async fn discover(opts: &ProbeOptions, creds: Option<&Credentials>) -> Result<Discovery, DiscoverError> {
    let report = probe(opts).await?;
    let mut cameras: Vec<DiscoveredCamera> = futures_util::stream::iter(report.cameras)
        .map(|a| async move { describe(&a, creds, DEFAULT_REQUEST_TIMEOUT).await })
        .buffered(PARALLEL)
        .collect()
        .await;
    add_commands(&mut cameras, creds.map(|c| c.username.as_str()));
    Ok(Discovery { cameras, ignored_answers: report.ignored })
}

/// Each camera's `camera add` line, under an id made from its address (`cam-192-168-1-20`), made unique
/// among the cameras found (`cam-192-168-1-20-2` for a second camera behind the same address).
pub fn add_commands(cameras: &mut [DiscoveredCamera], username: Option<&str>) {
    let mut used = std::collections::HashSet::new();
    for cam in cameras {
        let base: String = format!("cam-{}", cam.address)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(56)
            .collect();
        let id = (1..).map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") }).find(|id| !used.contains(id));
        let Some(id) = id else { continue };
        cam.add_command = add_command(cam, &id, username);
        if cam.add_command.is_some() {
            used.insert(id);
        }
    }
}

/// What one camera offers (its `add_command` is left to [`add_commands`]). Never fails: what could not be
/// learned is said in `note`.
pub async fn describe(answered: &Answered, creds: Option<&Credentials>, timeout: Duration) -> DiscoveredCamera {
    let found = &answered.found;
    let mut cam = DiscoveredCamera {
        address: answered.from.to_string(),
        endpoint: bounded(&found.endpoint),
        xaddrs: found.xaddrs.clone(),
        onvif_url: None,
        onvif_host: None,
        onvif_port: None,
        manufacturer: None,
        model: found.scopes.hardware.clone().or_else(|| found.scopes.model.clone()),
        firmware: None,
        scopes: found.scopes.clone(),
        streams: Vec::new(),
        note: None,
        add_command: None,
    };
    let Some(device) = found.xaddrs.iter().filter_map(|x| url::Url::parse(x).ok()).find(|u| is_host(u, answered.from))
    else {
        cam.note = Some(format!(
            "its ONVIF address ({}) is not the address that answered ({}): not contacted",
            found.xaddrs.join(" "),
            answered.from
        ));
        return cam;
    };
    cam.onvif_url = Some(device.to_string());
    cam.onvif_host = device.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
    cam.onvif_port = device.port_or_known_default();
    let mut client = Onvif::new(&device, creds, timeout);
    match tokio::time::timeout(PER_CAMERA, client.describe(&mut cam)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => cam.note = Some(note_for(&e, creds.is_some())),
        Err(_) => cam.note = Some(format!("no complete answer within {PER_CAMERA:?}")),
    }
    cam
}

fn is_host(u: &url::Url, ip: IpAddr) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a) == ip,
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a) == ip,
        _ => false,
    }
}

fn note_for(e: &PtzError, had_credentials: bool) -> String {
    match e {
        PtzError::Auth { .. } if !had_credentials => {
            format!("{e}; give --username (and the password) to list its streams")
        }
        _ => e.to_string(),
    }
}

/// `vistter-agent camera add cam-192-168-1-20 --url 'rtsp://…' --username 'admin' --password-stdin
/// --onvif-host 192.168.1.20 --onvif-port 80`, for the first stream.
fn add_command(cam: &DiscoveredCamera, id: &str, username: Option<&str>) -> Option<String> {
    let stream = cam.streams.first()?;
    let mut line = format!("vistter-agent camera add {id} --url {}", shell_quote(&stream.url));
    if let Some(u) = username {
        line.push_str(&format!(" --username {} --password-stdin", shell_quote(u)));
    }
    if let (Some(h), Some(p)) = (&cam.onvif_host, cam.onvif_port) {
        line.push_str(&format!(" --onvif-host {} --onvif-port {p}", shell_quote(h)));
    }
    Some(line)
}

/// Single quotes for a POSIX shell (a quote inside becomes `'\''`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The few ONVIF calls discovery makes, to one camera, through the same client as PTZ (the camera's
/// clock read first, HTTP Digest and WS-Security as the camera wants them, bounded replies).
struct Onvif {
    client: PtzClient,
    device_url: String,
    /// `scheme://host:port` of the device service: every other service is reached on it.
    origin: String,
}

impl Onvif {
    fn new(device: &url::Url, creds: Option<&Credentials>, timeout: Duration) -> Onvif {
        let host = device.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
        let endpoint = OnvifEndpoint {
            host,
            port: device.port_or_known_default().unwrap_or(80),
            https: device.scheme() == "https",
            username: creds.map(|c| c.username.clone()),
            password: creds.map(|c| c.password.clone()),
            profile_token: None,
        };
        let client = PtzClient::new(endpoint).with_request_timeout(timeout);
        Onvif { origin: format!("{}://{}", device.scheme(), client.camera()), device_url: device.to_string(), client }
    }

    async fn describe(&mut self, cam: &mut DiscoveredCamera) -> Result<(), PtzError> {
        let info = self
            .call(
                &self.device_url.clone(),
                "GetDeviceInformation",
                &format!("<tds:GetDeviceInformation xmlns:tds=\"{NS_TDS}\"/>"),
            )
            .await?;
        let text = |name: &str| info.find(name).map(|i| bounded(info.text(i))).filter(|t| !t.is_empty());
        cam.manufacturer = text("Manufacturer");
        if let Some(model) = text("Model") {
            cam.model = Some(model);
        }
        cam.firmware = text("FirmwareVersion");

        let body = format!(
            "<tds:GetCapabilities xmlns:tds=\"{NS_TDS}\"><tds:Category>Media</tds:Category></tds:GetCapabilities>"
        );
        let device_url = self.device_url.clone();
        let media = match self.call(&device_url, "GetCapabilities", &body).await {
            Ok(doc) => parse_capabilities(&doc).media,
            // Cameras that only implement GetServices serve Media at the well-known path.
            Err(PtzError::Fault { .. }) => None,
            Err(e) => return Err(e),
        };
        let media_url = self.service_url(media.as_deref());
        let doc = self.call(&media_url, "GetProfiles", &format!("<trt:GetProfiles xmlns:trt=\"{NS_TRT}\"/>")).await?;
        let mut skipped = None;
        for p in profiles(&doc) {
            let body = format!(
                "<trt:GetStreamUri xmlns:trt=\"{NS_TRT}\" xmlns:tt=\"{NS_TT}\"><trt:StreamSetup>\
                 <tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>\
                 </trt:StreamSetup><trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
                escape(&p.profile)
            );
            // A profile the camera cannot stream (a fault, an odd reply) is skipped; a refused login or a
            // camera gone quiet ends the description.
            let doc = match self.call(&media_url, "GetStreamUri", &body).await {
                Ok(doc) => doc,
                Err(e @ (PtzError::Fault { .. } | PtzError::BadResponse { .. })) => {
                    skipped.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(url) = stream_uri(&doc) {
                cam.streams.push(StreamProfile { url, ..p });
            }
        }
        if let (true, Some(e)) = (cam.streams.is_empty(), skipped) {
            return Err(e);
        }
        if cam.streams.is_empty() {
            cam.note = Some(format!("camera {}: no profile with an RTSP stream URL", self.client.camera()));
        }
        Ok(())
    }

    /// The path of the camera's Media XAddr on the device service's own scheme, host and port (an XAddr
    /// naming another host is not followed, as the PTZ client does).
    fn service_url(&self, xaddr: Option<&str>) -> String {
        let path = xaddr
            .and_then(|x| url::Url::parse(x.trim()).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .filter(|p| p.starts_with('/') && p.len() > 1)
            .unwrap_or_else(|| MEDIA_PATH.to_string());
        format!("{}{path}", self.origin)
    }

    async fn call(&mut self, url: &str, action: &'static str, body: &str) -> Result<xml::Doc, PtzError> {
        self.client.soap(url, action, body).await
    }
}

/// Every element index, in document order.
fn elements(doc: &xml::Doc) -> impl Iterator<Item = usize> + '_ {
    (0..).take_while(|&i| !doc.local(i).is_empty())
}

/// The first [`MAX_PROFILES`] profiles of a GetProfiles reply with a usable token (no URL yet).
pub(super) fn profiles(doc: &xml::Doc) -> Vec<StreamProfile> {
    if doc.find("GetProfilesResponse").is_none() {
        return Vec::new();
    }
    let text = |parent: Option<usize>, name: &str| {
        parent.and_then(|p| doc.child(p, name)).map(|i| bounded(doc.text(i))).filter(|t| !t.is_empty())
    };
    elements(doc)
        .filter(|&i| doc.local(i) == "Profiles")
        .filter_map(|i| {
            let token = doc.attr(i, "token").filter(|t| !t.trim().is_empty() && t.len() <= 64)?;
            let enc = doc.child(i, "VideoEncoderConfiguration");
            let res = enc.and_then(|e| doc.child(e, "Resolution"));
            let number = |name: &str| text(res, name).and_then(|t| t.parse::<u32>().ok());
            Some(StreamProfile {
                profile: token,
                name: text(Some(i), "Name"),
                url: String::new(),
                encoding: text(enc, "Encoding"),
                width: number("Width"),
                height: number("Height"),
            })
        })
        .take(MAX_PROFILES)
        .collect()
}

/// `MediaUri/Uri` of a GetStreamUri reply, if it is an `rtsp(s)://` URL with a host; any user and password
/// in it are dropped.
pub(super) fn stream_uri(doc: &xml::Doc) -> Option<String> {
    let resp = doc.find("GetStreamUriResponse")?;
    let media = doc.child(resp, "MediaUri")?;
    let raw = doc.text(doc.child(media, "Uri")?);
    if raw.len() > MAX_URI || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let mut u = url::Url::parse(raw).ok()?;
    if !matches!(u.scheme(), "rtsp" | "rtsps") || u.host_str().is_none_or(str::is_empty) {
        return None;
    }
    let _ = u.set_username("");
    let _ = u.set_password(None);
    Some(u.to_string())
}
