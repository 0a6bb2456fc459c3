//! What the segment unit tests share: a data dir with a store, a library and a trust store that
//! trusts one signing key, and signed packages made by the real packer.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::library::Library;
use super::manifest::{SafeRelPath, SegmentId};
use super::pack::{self, PackMeta};
use crate::store::Store;
use crate::trust::{Role, TrustEntry, TrustStore};

pub const KEY_ID: &str = "seg-key";

pub struct Kit {
    pub dir: tempfile::TempDir,
    pub trust_path: PathBuf,
    pub trust: TrustStore,
    pub store: Store,
    pub library: Library,
    key: SigningKey,
}

impl Kit {
    pub async fn new() -> Kit {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("the data dir");
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let public = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.verifying_key().as_bytes());
        let mut trust = TrustStore::default();
        trust.add(TrustEntry::new(KEY_ID, &public, &[Role::Segment]).expect("a trust entry")).expect("added");
        let trust_path = data_dir.join("trust.json");
        let t = trust.clone();
        TrustStore::update(&trust_path, move |s| {
            *s = t;
            Ok::<_, crate::trust::TrustError>(())
        })
        .expect("trust.json");
        let store = Store::open(&data_dir).await.expect("the store");
        let library = Library::new(store.clone(), &data_dir);
        Kit { dir, trust_path, trust, store, library, key }
    }

    /// A package of segment `id` at `version` (its timeline `tl-<id>`), written to `out`.
    pub fn package(&self, id: &str, version: u64, out: &Path) {
        let src = self.dir.path().join(format!("src-{id}-{version}"));
        std::fs::create_dir_all(&src).expect("a package source dir");
        let timeline = serde_json::json!({"id": format!("tl-{id}"), "name": format!("{id} v{version}"),
            "duration": 10, "fps": 25, "resolution": "320x180", "loop": true,
            "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 10,
            "action": "show_slate", "params": {}}]}, "overlays": []}});
        std::fs::write(src.join("timeline.json"), timeline.to_string()).expect("timeline.json");
        let files = pack::collect_dir(&src).expect("the package's files");
        let meta = PackMeta {
            segment_id: SegmentId::new(id).expect("a segment id"),
            version,
            expires_at: None,
            device_ids: Vec::new(),
            entrypoint: SafeRelPath::new("timeline.json").expect("a path"),
            min_agent_version: None,
        };
        pack::pack(&files, &meta, KEY_ID, &self.key, out, &mut |_, _| {}).expect("packed");
    }

    /// The active version of segment `id`, if it is installed.
    pub async fn active(&self, id: &str) -> Option<u64> {
        self.library.active_timeline(id).await.ok().map(|(v, _)| v)
    }

    /// The details of the events of type `ty`.
    pub async fn events(&self, ty: &str) -> Vec<String> {
        self.store
            .events(None, 10_000)
            .await
            .expect("the events")
            .into_iter()
            .filter(|e| e.event_type == ty)
            .map(|e| e.detail.unwrap_or_default())
            .collect()
    }
}
