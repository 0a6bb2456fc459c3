//! Cameras over ONVIF from the command side: one [`PtzClient`] kept per camera (so what it learned of the
//! camera's clock and authentication serves the next command), and snapshots from the camera itself for a
//! camera no program decodes.
//!
//! How it works: [`CameraOnvif`] maps a camera id to its client, made anew when the camera's ONVIF settings
//! change. A snapshot is fetched through that client ([`PtzClient::snapshot`]: `GetSnapshotUri`, then the
//! picture, bounded in size and time) and cached for [`SNAPSHOT_FRESH`], so a page polling several times a
//! second and a cloud asking at once cost the camera one fetch. `CAMERA_ACTION snapshot` waits for a fetch;
//! the status page's thumbnail route is synchronous, so there [`Dispatcher::thumbnail`] answers from the cache
//! (a picture up to [`SNAPSHOT_SHOWN`] old) and starts a refresh in the background when it is no longer fresh:
//! the page's next poll shows the new one.

use std::collections::HashMap;
use std::time::Instant;

use super::*;
use crate::ptz::{OnvifEndpoint, PtzClient, PtzError};
use crate::store::cameras::Camera;

/// A snapshot younger than this is served without asking the camera.
pub const SNAPSHOT_FRESH: Duration = Duration::from_secs(3);
/// The thumbnail route shows a cached snapshot up to this old (while a refresh is under way).
pub const SNAPSHOT_SHOWN: Duration = Duration::from_secs(30);

/// Largest camera snapshot `CAMERA_ACTION snapshot` answers with (DESIGN: a JPEG of at most 200 KiB).
pub const MAX_RESULT_JPEG: usize = 200 * 1024;

/// One camera's last snapshot.
struct Snap {
    jpeg: Arc<Vec<u8>>,
    at: Instant,
}

/// Per-camera ONVIF clients and snapshot cache. Cheap to share behind the dispatcher's `Arc`.
#[derive(Default)]
pub(super) struct CameraOnvif {
    clients: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<PtzClient>>>>,
    snaps: std::sync::Mutex<HashMap<String, Snap>>,
    /// Cameras whose background refresh is under way (one at a time per camera).
    refreshing: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When a camera's last background refresh failed: not tried again within [`SNAPSHOT_FRESH`], so a page
    /// polling a camera without ONVIF (or a dead one) does not make a request of each poll.
    failed: std::sync::Mutex<HashMap<String, Instant>>,
}

impl CameraOnvif {
    /// The client for `camera`, the same one as last time unless its endpoint changed.
    pub(super) fn client(&self, camera: &CameraId, endpoint: OnvifEndpoint) -> Arc<tokio::sync::Mutex<PtzClient>> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(camera.as_str()) {
            // A client busy with a long settle is still the right one; only a changed endpoint replaces it.
            if c.try_lock().map(|c| *c.endpoint() == endpoint).unwrap_or(true) {
                return c.clone();
            }
        }
        let c = Arc::new(tokio::sync::Mutex::new(PtzClient::new(endpoint)));
        clients.insert(camera.as_str().to_string(), c.clone());
        c
    }

    fn cached(&self, camera: &CameraId, max_age: Duration) -> Option<Arc<Vec<u8>>> {
        let snaps = self.snaps.lock().unwrap_or_else(|e| e.into_inner());
        snaps.get(camera.as_str()).filter(|s| s.at.elapsed() <= max_age).map(|s| s.jpeg.clone())
    }

    fn store_snap(&self, camera: &CameraId, jpeg: Vec<u8>) -> Arc<Vec<u8>> {
        let jpeg = Arc::new(jpeg);
        let mut snaps = self.snaps.lock().unwrap_or_else(|e| e.into_inner());
        snaps.insert(camera.as_str().to_string(), Snap { jpeg: jpeg.clone(), at: Instant::now() });
        jpeg
    }
}

/// A camera's ONVIF endpoint, or None when it has no ONVIF address.
pub(super) fn endpoint_of(cam: &Camera, default_port: u16, profile_token: Option<String>) -> Option<OnvifEndpoint> {
    let host = cam.onvif_host.clone()?;
    let port = cam.onvif_port.unwrap_or(default_port);
    Some(OnvifEndpoint {
        host,
        port,
        https: crate::ptz::is_https_port(port),
        username: cam.username.clone(),
        password: cam.password.clone(),
        profile_token,
    })
}

impl Dispatcher {
    /// The ONVIF client of a camera from the store, or a refusal saying it has no ONVIF address.
    pub(super) async fn onvif_client(&self, id: &CameraId) -> Result<Arc<tokio::sync::Mutex<PtzClient>>, Refusal> {
        let store = &self.inner.store;
        let cam = store.camera(id).await?;
        let (profile, _) = store.camera_ptz(id).await?;
        let endpoint = endpoint_of(&cam, self.inner.cfg.timeline.onvif_port, profile)
            .ok_or_else(|| Refusal::new(ErrorCode::Conflict, format!("camera {id} has no ONVIF address")))?;
        Ok(self.inner.onvif.client(id, endpoint))
    }

    /// The camera's own snapshot (fresh from the cache, else fetched now).
    pub(super) async fn camera_snapshot(&self, id: &CameraId) -> Result<Arc<Vec<u8>>, Refusal> {
        if let Some(j) = self.inner.onvif.cached(id, SNAPSHOT_FRESH) {
            return Ok(j);
        }
        let client = self.onvif_client(id).await?;
        let mut client = client.lock().await;
        // Another caller may have fetched it while this one waited for the client.
        if let Some(j) = self.inner.onvif.cached(id, SNAPSHOT_FRESH) {
            return Ok(j);
        }
        let jpeg = client.snapshot().await.map_err(|e| snapshot_refusal(id, &e))?;
        Ok(self.inner.onvif.store_snap(id, jpeg))
    }

    /// The thumbnail of a camera no program decodes: the cached snapshot, refreshed in the background when it
    /// is no longer fresh. None until a first snapshot arrived, or for a camera without ONVIF.
    pub(super) fn snapshot_thumbnail(&self, name: &str) -> Option<Arc<Vec<u8>>> {
        let id = CameraId::new(name).ok()?;
        let shown = self.inner.onvif.cached(&id, SNAPSHOT_SHOWN);
        if self.inner.onvif.cached(&id, SNAPSHOT_FRESH).is_none() {
            self.refresh_snapshot(id);
        }
        shown
    }

    /// [`Dispatcher::thumbnail`] for a reader that can wait (the status page's picture routes): the JPEG is
    /// encoded on a blocking thread, and a camera whose first snapshot is being fetched is waited for (the
    /// fetch is bounded by its own timeout) rather than answered with nothing.
    pub async fn thumbnail_waiting(&self, program: String, name: String) -> Option<Arc<Vec<u8>>> {
        let d = self.clone();
        let asked = name.clone();
        let now = tokio::task::spawn_blocking(move || d.thumbnail(&program, &asked)).await.ok().flatten();
        if now.is_some() || name == "program" {
            return now;
        }
        let id = CameraId::new(&name).ok()?;
        if self.decoded(&id) {
            return None;
        }
        let deadline = tokio::time::Instant::now() + crate::ptz::SNAPSHOT_TIMEOUT + Duration::from_millis(500);
        let refreshing = || self.inner.onvif.refreshing.lock().unwrap_or_else(|e| e.into_inner()).contains(id.as_str());
        while refreshing() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.onvif.cached(&id, SNAPSHOT_SHOWN)
    }

    fn refresh_snapshot(&self, id: CameraId) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let failed_lately = |o: &CameraOnvif| {
            let failed = o.failed.lock().unwrap_or_else(|e| e.into_inner());
            failed.get(id.as_str()).is_some_and(|at| at.elapsed() < SNAPSHOT_FRESH)
        };
        if failed_lately(&self.inner.onvif) {
            return;
        }
        if !self.inner.onvif.refreshing.lock().unwrap_or_else(|e| e.into_inner()).insert(id.as_str().to_string()) {
            return;
        }
        let this = self.clone();
        rt.spawn(async move {
            if let Err(r) = this.camera_snapshot(&id).await {
                tracing::debug!(camera = %id, "no snapshot for the thumbnail: {}", r.message);
                this.inner
                    .onvif
                    .failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.to_string(), Instant::now());
            }
            this.inner.onvif.refreshing.lock().unwrap_or_else(|e| e.into_inner()).remove(id.as_str());
        });
    }

    /// Whether any running program decodes this camera.
    pub(super) fn decoded(&self, id: &CameraId) -> bool {
        !self.users_of(id).is_empty()
    }
}

fn snapshot_refusal(id: &CameraId, e: &PtzError) -> Refusal {
    // PtzError never holds the password, the nonce or a digest: its words are safe to send back.
    Refusal::new(ErrorCode::Failed, format!("camera {id}: no snapshot from the camera: {e}"))
}
