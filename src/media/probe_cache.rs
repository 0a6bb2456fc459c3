//! What each source sent when it was last probed, remembered across restarts.
//!
//! Probing a camera with ffprobe takes 1 to 2 s, and it used to stand in front of every ingest
//! start and of every pre-flight: a cold `timeline play` paid for it twice before the first frame.
//! Cameras rarely change what they send, so the agent keeps the last successful probe of each
//! source in `DATA_DIR/camera_probes.json` and starts from it at once; a fresh probe runs in the
//! background and, if the camera did change (audio appeared or disappeared), the ingest is
//! restarted with the right arguments and the file is corrected.
//!
//! An entry is keyed by the source id and a fingerprint of what would be opened: a salted SHA-1 of
//! the camera URL with its credentials (a new host, path, user or password invalidates it) or of a
//! media file's path, size and modification time. The URL itself is never written; the salt is
//! random per data dir, so the fingerprint cannot be looked up in a table of known URLs.
//!
//! Concurrent probes of the same source share one ffprobe (pre-flight's background check and the
//! ingest's verification of a cold start usually overlap).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::probe::{probe_camera, CameraProbe, CameraSource, ProbeError, SourceKind};
use crate::values::SourceId;

/// The file's name inside the data dir.
pub const FILE_NAME: &str = "camera_probes.json";

/// A remembered probe older than this is not trusted to start from: the source is probed first.
pub const TRUST_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// A probe this recent needs no background check (the knowledge was just confirmed).
pub const FRESH_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Hex salted SHA-1 of what the source opens (see the module doc).
    fingerprint: String,
    probe: CameraProbe,
    /// When the probe succeeded, Unix seconds (it leaves the process, so wall clock).
    probed_unix: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    /// Hex, random per data dir.
    salt: String,
    /// By source id.
    sources: BTreeMap<String, Entry>,
}

impl CacheFile {
    fn fresh() -> CacheFile {
        let salt: [u8; 16] = rand::random();
        CacheFile { salt: hex(&salt), sources: BTreeMap::new() }
    }
}

type ProbeFuture = Shared<BoxFuture<'static, Result<CameraProbe, ProbeError>>>;

struct Inner {
    /// None: in memory only (unit tests).
    path: Option<PathBuf>,
    file: Mutex<CacheFile>,
    /// Probes under way, by source id and fingerprint.
    inflight: Mutex<HashMap<(SourceId, String), ProbeFuture>>,
}

/// What is remembered about a source, with how old it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub probe: CameraProbe,
    pub age: Duration,
}

/// The remembered probes; cheap to clone, shared by every ingest and pre-flight of the agent.
#[derive(Clone)]
pub struct ProbeCache {
    inner: Arc<Inner>,
}

impl ProbeCache {
    /// Loads `path` (a missing or unreadable file is an empty cache; it is rewritten on the next
    /// successful probe).
    pub fn open(path: PathBuf) -> ProbeCache {
        let file = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .unwrap_or_else(CacheFile::fresh);
        ProbeCache::with(Some(path), file)
    }

    /// A cache that is never written to disk.
    pub fn in_memory() -> ProbeCache {
        ProbeCache::with(None, CacheFile::fresh())
    }

    fn with(path: Option<PathBuf>, file: CacheFile) -> ProbeCache {
        ProbeCache { inner: Arc::new(Inner { path, file: Mutex::new(file), inflight: Mutex::new(HashMap::new()) }) }
    }

    fn file(&self) -> std::sync::MutexGuard<'_, CacheFile> {
        self.inner.file.lock().expect("probe cache lock")
    }

    /// What the source sent at its last successful probe, if that was within `max_age` and it
    /// still opens the same thing. None for synthetic sources (nothing to probe).
    pub fn known(&self, cam: &CameraSource, max_age: Duration) -> Option<Known> {
        let file = self.file();
        let fp = fingerprint(&file.salt, &cam.kind)?;
        let e = file.sources.get(cam.camera_id.as_str()).filter(|e| e.fingerprint == fp)?;
        let age = Duration::from_secs(unix_now().saturating_sub(e.probed_unix));
        (age <= max_age).then(|| Known { probe: e.probe.clone(), age })
    }

    /// Probes the source now (joining a probe of it already under way) and remembers a success.
    pub async fn probe(
        &self,
        ffprobe: &Path,
        cam: &CameraSource,
        timeout: Duration,
    ) -> Result<CameraProbe, ProbeError> {
        let salt = self.file().salt.clone();
        let Some(fp) = fingerprint(&salt, &cam.kind) else {
            return probe_camera(ffprobe, cam, timeout).await;
        };
        let key = (cam.camera_id.clone(), fp.clone());
        let fut = {
            let mut inflight = self.inner.inflight.lock().expect("probe cache lock");
            inflight
                .entry(key.clone())
                .or_insert_with(|| {
                    let (ffprobe, cam, this) = (ffprobe.to_path_buf(), cam.clone(), self.clone());
                    async move {
                        let r = probe_camera(&ffprobe, &cam, timeout).await;
                        // A camera in trouble may answer with a video stream of no size: that does
                        // not replace what it sent when it was well.
                        if let Some(p) =
                            r.as_ref().ok().filter(|p| p.width.unwrap_or(0) > 0 && p.height.unwrap_or(0) > 0)
                        {
                            this.record(cam.camera_id.as_str(), &fp, p);
                        }
                        this.inner.inflight.lock().expect("probe cache lock").remove(&(cam.camera_id.clone(), fp));
                        r
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        fut.await
    }

    fn record(&self, camera_id: &str, fp: &str, probe: &CameraProbe) {
        let mut file = self.file();
        let entry = Entry { fingerprint: fp.to_string(), probe: probe.clone(), probed_unix: unix_now() };
        file.sources.insert(camera_id.to_string(), entry);
        let Some(path) = &self.inner.path else { return };
        // A few hundred bytes: written under the lock (so writes land in order), temp → rename.
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&*file).expect("serializes");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(path = %path.display(), "cannot remember camera probes: {e}");
        }
    }
}

/// The salted fingerprint of what a source opens; None for synthetic sources.
fn fingerprint(salt: &str, kind: &SourceKind) -> Option<String> {
    let mut h = Sha1::new();
    h.update(salt.as_bytes());
    match kind {
        SourceKind::Rtsp { url, .. } => {
            h.update(b"\0rtsp\0");
            h.update(url.expose().as_bytes());
        }
        SourceKind::Media(path) => {
            h.update(b"\0media\0");
            h.update(path.as_os_str().as_encoded_bytes());
            // A file replaced under the same name is probed again.
            if let Ok(m) = std::fs::metadata(path) {
                h.update(m.len().to_le_bytes());
                let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
                h.update(mtime.as_nanos().to_le_bytes());
            }
        }
        SourceKind::Lavfi { .. } => return None,
    }
    Some(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn cam(url: &str) -> CameraSource {
        CameraSource::rtsp(SourceId::new("c1").unwrap(), Secret::new(url), "shown".into(), vec![])
    }

    fn probe(audio: Option<&str>) -> CameraProbe {
        CameraProbe {
            video_codec: Some("h264".into()),
            width: Some(320),
            height: Some(180),
            audio_codec: audio.map(Into::into),
        }
    }

    #[test]
    fn a_changed_url_or_password_forgets_the_camera() {
        let c = ProbeCache::in_memory();
        let a = cam("rtsp://u:pw1@10.0.0.5/s");
        let salt = c.file().salt.clone();
        c.record("c1", &fingerprint(&salt, &a.kind).unwrap(), &probe(Some("aac")));
        assert_eq!(c.known(&a, TRUST_FOR).map(|k| k.probe), Some(probe(Some("aac"))));
        assert!(c.known(&cam("rtsp://u:pw2@10.0.0.5/s"), TRUST_FOR).is_none(), "new password");
        assert!(c.known(&cam("rtsp://u:pw1@10.0.0.6/s"), TRUST_FOR).is_none(), "new host");
        let other = CameraSource { camera_id: SourceId::new("c2").unwrap(), ..a.clone() };
        assert!(c.known(&other, TRUST_FOR).is_none(), "another camera id");
    }

    #[test]
    fn the_file_never_holds_the_url_or_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let c = ProbeCache::open(path.clone());
        let a = cam("rtsp://admin:s3cret-pw@10.0.0.5:554/stream1");
        let salt = c.file().salt.clone();
        c.record("c1", &fingerprint(&salt, &a.kind).unwrap(), &probe(None));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("10.0.0.5") && !text.contains("admin"), "{text}");
        // Another agent start reads the same knowledge back.
        let again = ProbeCache::open(path);
        assert_eq!(again.known(&a, TRUST_FOR).map(|k| k.probe), Some(probe(None)));
    }

    #[test]
    fn old_knowledge_is_not_trusted_and_unreadable_files_start_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let c = ProbeCache::open(path.clone());
        let a = cam("rtsp://10.0.0.5/s");
        let salt = c.file().salt.clone();
        c.record("c1", &fingerprint(&salt, &a.kind).unwrap(), &probe(None));
        c.file().sources.get_mut("c1").unwrap().probed_unix -= 3600;
        assert!(c.known(&a, Duration::from_secs(60)).is_none());
        assert!(c.known(&a, TRUST_FOR).is_some_and(|k| k.age >= Duration::from_secs(3600)));
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(ProbeCache::open(path).known(&a, TRUST_FOR).is_none());
    }

    proptest::proptest! {
        /// The file is the agent's, but a disk can hand back anything: arbitrary bytes, or a
        /// well-formed file with hostile values (a probe time in the future or at the epoch), are
        /// read without a panic and the camera still gets an answer.
        #[test]
        fn a_hostile_file_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
                                       t in proptest::prelude::any::<i64>(), w in proptest::prelude::any::<u32>()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            let a = cam("rtsp://10.0.0.5/s");
            std::fs::write(&path, &bytes).unwrap();
            let _ = ProbeCache::open(path.clone()).known(&a, TRUST_FOR);
            let c = ProbeCache::open(path.clone());
            let salt = c.file().salt.clone();
            c.record("c1", &fingerprint(&salt, &a.kind).unwrap(), &CameraProbe { width: Some(w), ..probe(None) });
            let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            v["sources"]["c1"]["probed_unix"] = serde_json::json!(t);
            std::fs::write(&path, v.to_string()).unwrap();
            let _ = ProbeCache::open(path).known(&a, TRUST_FOR);
        }
    }

    #[test]
    fn synthetic_sources_are_not_remembered() {
        let c = ProbeCache::in_memory();
        let s = CameraSource {
            camera_id: SourceId::new("demo").unwrap(),
            kind: SourceKind::Lavfi { video: "testsrc2".into(), audio: None },
            shown: "built-in".into(),
        };
        assert!(fingerprint("x", &s.kind).is_none());
        assert!(c.known(&s, TRUST_FOR).is_none());
    }

    #[tokio::test]
    async fn an_answer_without_a_picture_size_keeps_what_the_camera_sent_when_well() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A camera in trouble: ffprobe finds its H.264 stream but not its size.
        let ffprobe = dir.path().join("ffprobe");
        std::fs::write(
            &ffprobe,
            "#!/bin/sh\necho '{\"streams\":[{\"codec_name\":\"h264\",\"codec_type\":\"video\",\"width\":0,\"height\":0}]}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&ffprobe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = ProbeCache::in_memory();
        let a = cam("rtsp://127.0.0.1:1/cam");
        let salt = c.file().salt.clone();
        c.record("c1", &fingerprint(&salt, &a.kind).unwrap(), &probe(Some("aac")));
        let r = c.probe(&ffprobe, &a, Duration::from_secs(5)).await.expect("ffprobe answered");
        assert_eq!(r.width, Some(0), "the caller sees the answer as it was");
        assert_eq!(c.known(&a, TRUST_FOR).map(|k| k.probe), Some(probe(Some("aac"))), "the good knowledge stays");
    }

    #[tokio::test]
    async fn a_failed_probe_is_not_remembered() {
        let c = ProbeCache::in_memory();
        let a = cam("rtsp://127.0.0.1:1/none");
        let r = c.probe(Path::new("/nonexistent/ffprobe"), &a, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(ProbeError::Tool(_))));
        assert!(c.known(&a, TRUST_FOR).is_none());
        assert!(c.inner.inflight.lock().unwrap().is_empty(), "the finished probe is forgotten");
    }
}
