//! The ONVIF PTZ client: service discovery, SOAP requests with bounded replies, and waiting for a
//! move to settle.

use std::time::Duration;

use rand::RngCore as _;
use tokio::time::Instant;

use super::soap::{
    authority, bounded, check_reply, created_stamp, escape, first_profile_token, parse_capabilities, parse_status,
    Capabilities, SecurityHeader,
};
use super::xml;
use super::{MoveStatus, OnvifEndpoint, PtzError, DEFAULT_REQUEST_TIMEOUT, MAX_BODY};

/// GetStatus polling period while waiting for a move to settle.
const POLL_PERIOD: Duration = Duration::from_millis(200);

const DEVICE_PATH: &str = "/onvif/device_service";
pub(super) const PTZ_PATH: &str = "/onvif/ptz_service";
const MEDIA_PATH: &str = "/onvif/media_service";

const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
const NS_TPTZ: &str = "http://www.onvif.org/ver20/ptz/wsdl";

/// What discovery learns, once per client. The media service is only needed for GetProfiles during discovery,
/// so its address is not kept.
#[derive(Clone, Debug)]
struct Services {
    ptz_url: String,
    profile_token: String,
}

/// An async ONVIF PTZ client for one camera. Not `Clone`: it caches discovery, so share it behind the camera's
/// own task rather than copying it around.
#[derive(Debug)]
pub struct PtzClient {
    /// No proxy, no redirects: requests go to the camera and nowhere else.
    http: reqwest::Client,
    /// Applied to each request as a whole (connect + send + reading the body).
    request_timeout: Duration,
    endpoint: OnvifEndpoint,
    /// `host:port`, as errors and logs name the camera.
    camera: String,
    /// Filled by the first successful discovery.
    services: Option<Services>,
}

impl PtzClient {
    pub fn new(endpoint: OnvifEndpoint) -> PtzClient {
        let http = reqwest::Client::builder()
            // Cameras sit on the LAN: an HTTP(S)_PROXY meant for the cloud link must not capture them.
            .no_proxy()
            // A redirect would carry our signed request to a host we never configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Fails only if the TLS backend cannot initialise, which with bundled webpki roots is a broken
            // build, not something a camera or a config can cause.
            .expect("building the HTTP client for ONVIF");
        let camera = authority(&endpoint.host, endpoint.port);
        PtzClient { http, request_timeout: DEFAULT_REQUEST_TIMEOUT, endpoint, camera, services: None }
    }

    #[must_use]
    pub fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// `host:port` of the camera, as it appears in errors.
    pub fn camera(&self) -> &str {
        &self.camera
    }

    /// Starts a move to `preset` and returns as soon as the camera accepted it (the move goes on).
    pub async fn goto_preset(&mut self, preset: &str) -> Result<(), PtzError> {
        let svc = self.services().await?;
        let body = format!(
            "<tptz:GotoPreset xmlns:tptz=\"{NS_TPTZ}\"><tptz:ProfileToken>{}</tptz:ProfileToken>\
             <tptz:PresetToken>{}</tptz:PresetToken></tptz:GotoPreset>",
            escape(&svc.profile_token),
            escape(preset)
        );
        let doc = self.call(&svc.ptz_url, "GotoPreset", &body).await?;
        // Anything but the response element means we are not talking to an ONVIF PTZ service at all.
        doc.find("GotoPresetResponse").ok_or_else(|| self.bad("GotoPreset", "no GotoPresetResponse element"))?;
        tracing::debug!(camera = %self.camera, preset, "PTZ GotoPreset accepted");
        Ok(())
    }

    /// The camera's current pan/tilt and zoom motion.
    pub async fn status(&mut self) -> Result<MoveStatus, PtzError> {
        let svc = self.services().await?;
        let body = format!(
            "<tptz:GetStatus xmlns:tptz=\"{NS_TPTZ}\"><tptz:ProfileToken>{}</tptz:ProfileToken></tptz:GetStatus>",
            escape(&svc.profile_token)
        );
        let doc = self.call(&svc.ptz_url, "GetStatus", &body).await?;
        parse_status(&doc).ok_or_else(|| self.bad("GetStatus", "no GetStatusResponse element"))
    }

    /// GotoPreset, then GetStatus every 200 ms until both pan/tilt and zoom are idle or `settle_timeout` has
    /// passed. Ok(elapsed) when idle; Err(PtzError::Timeout{..}) on timeout.
    ///
    /// `elapsed` and the timeout both count from before the GotoPreset request (discovery included), so the
    /// caller's budget is the whole operation. The first poll waits one period: right after GotoPreset many
    /// cameras still report the IDLE of before the move.
    pub async fn goto_preset_and_settle(
        &mut self,
        preset: &str,
        settle_timeout: Duration,
    ) -> Result<Duration, PtzError> {
        let start = Instant::now();
        let deadline = start + settle_timeout;
        let timeout = |camera: &str| PtzError::Timeout {
            camera: camera.to_string(),
            preset: preset.to_string(),
            waited: settle_timeout,
        };
        match tokio::time::timeout_at(deadline, self.goto_preset(preset)).await {
            Ok(r) => r?,
            Err(_) => return Err(timeout(&self.camera)),
        }
        let mut next_poll = start + POLL_PERIOD;
        loop {
            // Never sleep past the deadline: the caller is waiting on us to cut to this camera.
            tokio::time::sleep_until(next_poll.min(deadline)).await;
            if Instant::now() >= deadline {
                return Err(timeout(&self.camera));
            }
            // A slow GetStatus must not overrun the settle budget either.
            let st = match tokio::time::timeout_at(deadline, self.status()).await {
                Ok(r) => r?,
                Err(_) => return Err(timeout(&self.camera)),
            };
            if st.is_idle() {
                let elapsed = start.elapsed();
                tracing::debug!(camera = %self.camera, preset, ?elapsed, "PTZ settled");
                return Ok(elapsed);
            }
            // Fixed cadence from the start, not from each reply, so slow replies do not stretch the period.
            next_poll += POLL_PERIOD;
            let now = Instant::now();
            if next_poll < now {
                next_poll = now;
            }
        }
    }

    /// Cached service addresses and profile token, discovering them on first use.
    async fn services(&mut self) -> Result<Services, PtzError> {
        if let Some(s) = &self.services {
            return Ok(s.clone());
        }
        let s = self.discover().await?;
        tracing::debug!(
            camera = %self.camera, ptz = %s.ptz_url, profile = %s.profile_token,
            "ONVIF services discovered"
        );
        self.services = Some(s.clone());
        Ok(s)
    }

    async fn discover(&self) -> Result<Services, PtzError> {
        let device_url = format!("http://{}{DEVICE_PATH}", self.camera);
        let body = format!(
            "<tds:GetCapabilities xmlns:tds=\"{NS_TDS}\"><tds:Category>All</tds:Category></tds:GetCapabilities>"
        );
        let caps = match self.call(&device_url, "GetCapabilities", &body).await {
            Ok(doc) => parse_capabilities(&doc),
            // Some cameras only implement GetServices; the well-known paths work on nearly all of them.
            Err(PtzError::Fault { code, .. }) => {
                tracing::debug!(
                    camera = %self.camera, %code,
                    "GetCapabilities refused; using the default service paths"
                );
                Capabilities::default()
            }
            Err(e) => return Err(e),
        };
        let ptz_url = self.service_url(caps.ptz.as_deref(), PTZ_PATH);
        let media_url = self.service_url(caps.media.as_deref(), MEDIA_PATH);
        let profile_token = match &self.endpoint.profile_token {
            Some(t) => t.clone(),
            None => {
                let body = format!("<trt:GetProfiles xmlns:trt=\"{NS_TRT}\"/>");
                let doc = self.call(&media_url, "GetProfiles", &body).await?;
                first_profile_token(&doc).ok_or_else(|| self.bad("GetProfiles", "no profile with a token"))?
            }
        };
        Ok(Services { ptz_url, profile_token })
    }

    /// The URL for a service: the path (and query) of the camera's XAddr, on the host:port we were configured
    /// with. Cameras behind NAT or port forwarding advertise their private address (`http://192.168.1.64/…`),
    /// and following an XAddr to another host would hand that host a signed request.
    pub(super) fn service_url(&self, xaddr: Option<&str>, default_path: &str) -> String {
        let path = xaddr
            .and_then(|x| url::Url::parse(x.trim()).ok())
            .filter(|u| u.scheme() == "http" || u.scheme() == "https")
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            })
            .filter(|p| p.starts_with('/') && p.len() > 1)
            .unwrap_or_else(|| default_path.to_string());
        format!("http://{}{path}", self.camera)
    }

    /// POSTs one SOAP request and returns the parsed reply, or the error it amounts to.
    async fn call(&self, url: &str, action: &'static str, body: &str) -> Result<xml::Doc, PtzError> {
        let security = self.security_header();
        let envelope = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\">{}<s:Body>{body}</s:Body></s:Envelope>",
            security.as_ref().map(|s| s.xml.as_str()).unwrap_or("")
        );
        let resp = self
            .http
            .post(url)
            .timeout(self.request_timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")
            .body(envelope)
            .send()
            .await
            .map_err(|e| self.unreachable(action, e))?;
        let status = resp.status().as_u16();
        let bytes = self.read_bounded(resp, action).await?;
        let text = String::from_utf8_lossy(&bytes);
        let doc = xml::Doc::parse(&text);
        check_reply(&self.camera, action, status, &doc, security.as_ref())?;
        Ok(doc)
    }

    /// Reads a reply body, refusing to hold more than [`MAX_BODY`] of it.
    async fn read_bounded(&self, mut resp: reqwest::Response, action: &'static str) -> Result<Vec<u8>, PtzError> {
        let too_big = || self.bad(action, &format!("reply larger than {} KiB", MAX_BODY / 1024));
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(action, e))? {
            if buf.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// A fresh WS-Security header, or None without a username.
    fn security_header(&self) -> Option<SecurityHeader> {
        let user = self.endpoint.username.as_deref()?;
        let password = self.endpoint.password.as_ref().map(|p| p.expose()).unwrap_or("");
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let created = created_stamp(time::OffsetDateTime::now_utc());
        Some(SecurityHeader::new(user, password, &nonce, &created))
    }

    fn unreachable(&self, action: &'static str, e: reqwest::Error) -> PtzError {
        let reason = if e.is_timeout() {
            format!("no answer within {:?}", self.request_timeout)
        } else {
            // The innermost cause ("Connection refused", "No route to host"), without the URL reqwest adds.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            bounded(&cause.to_string())
        };
        PtzError::Unreachable { camera: self.camera.clone(), action, reason }
    }

    fn bad(&self, action: &'static str, detail: &str) -> PtzError {
        PtzError::BadResponse { camera: self.camera.clone(), action, detail: detail.to_string() }
    }
}
