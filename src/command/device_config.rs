//! `DEVICE_CONFIG`: declarative state from the cloud. Everything is read and checked first: each
//! destination and camera validated, the trust change worked out on a copy. Only then is anything
//! changed, so a refusal changes nothing. `replace` removes what is not listed, but never a
//! destination that is on air. Secrets stay in `Secret` from the moment they are opened.
//!
//! Only the cloud link sends it. Its sealed secrets (stream keys) are opened by the cloud inbox
//! with the device's key once every check passed, and lent to the command with the trust store in
//! [`Opened`], a field no other origin can set: this handler never sees the device's key, and the
//! dispatcher refuses a `DEVICE_CONFIG` that has no `Opened`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use super::{ConfigMode, DeviceConfig, ErrorCode, Output, Refusal};
use crate::media::destination::{DestinationInput, DestinationSettings, Platform};
use crate::secret::Secret;
use crate::store::Store;
use crate::trust::{Role, TrustEntry, TrustStore};
use crate::values::DestinationId;

/// What the cloud inbox lends a `DEVICE_CONFIG` it accepted. Never read from or written to the
/// wire (`#[serde(skip)]`): no other origin can set it.
#[derive(Clone)]
pub struct Opened {
    /// Each `destinations[i].stream_key`, opened with the device's key (or why it could not be),
    /// by `i`.
    pub stream_keys: BTreeMap<usize, Result<Secret, Refusal>>,
    /// The daemon's trust store in memory: set to what is written when `trust` changes it.
    pub trust: Arc<RwLock<TrustStore>>,
    /// Its file.
    pub trust_path: PathBuf,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("stream_keys", &self.stream_keys)
            .field("trust_path", &self.trust_path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Opened {
    fn eq(&self, other: &Opened) -> bool {
        self.stream_keys == other.stream_keys && self.trust_path == other.trust_path
    }
}

/// The sealed field of a destination item, as the cloud inbox finds it to open it: `None` when
/// the item has none (or not in the sealed form: the handler refuses the item then).
pub fn sealed_stream_key(item: &serde_json::Value) -> Option<super::SealedField> {
    item.get("stream_key").and_then(|k| serde_json::from_value(k.clone()).ok())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationItem {
    id: DestinationId,
    platform: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    stream_key: Option<super::SealedField>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct TrustChange {
    #[serde(default)]
    add: Vec<TrustEntry>,
    #[serde(default)]
    revoke: Vec<String>,
}

impl From<crate::trust::TrustError> for Refusal {
    fn from(e: crate::trust::TrustError) -> Refusal {
        Refusal::new(ErrorCode::Failed, e.to_string())
    }
}

/// A `DEVICE_CONFIG.trust` change made on `store`; refused with the field at fault.
fn change_trust(store: &mut TrustStore, change: &TrustChange) -> Result<(), Refusal> {
    for (i, e) in change.add.iter().enumerate() {
        store.add(e.clone()).map_err(|e| field(format!("payload.trust.add.{i}"), e.to_string()))?;
    }
    for (i, id) in change.revoke.iter().enumerate() {
        store.remove(id).map_err(|e| {
            let code = if matches!(e, crate::trust::TrustError::NotFound(_)) {
                ErrorCode::NotFound
            } else {
                ErrorCode::Conflict
            };
            Refusal { code, field: Some(format!("payload.trust.revoke.{i}")), message: e.to_string() }
        })?;
    }
    if !store.keys.iter().any(|e| e.roles.contains(&Role::TrustAdmin)) {
        return Err(Refusal::new(ErrorCode::Conflict, "the trust store would have no trust_admin key left"));
    }
    Ok(())
}

/// Destinations that something on air pushes to (the show, operator programs, live relay
/// streams): `replace` never removes them, and they are not changed.
pub fn destinations_on_air(on_air: &super::on_air::OnAir) -> Vec<DestinationId> {
    on_air.users.iter().flat_map(|u| u.destinations.iter().cloned()).collect()
}

pub struct Apply<'a> {
    pub store: &'a Store,
    /// Destinations that are on air now: `replace` never removes them, and they are not changed.
    pub on_air: Vec<DestinationId>,
}

fn field(path: String, message: impl Into<String>) -> Refusal {
    Refusal::field(path, message)
}

impl Apply<'_> {
    pub async fn run(&self, c: DeviceConfig) -> Result<Output, Refusal> {
        let Some(opened) = c.opened.clone() else {
            return Err(Refusal::new(
                ErrorCode::Failed,
                "DEVICE_CONFIG carries sealed secrets and signed trust changes: it is applied through the cloud link",
            ));
        };
        let trust_path: &Path = &opened.trust_path;
        if c.settings.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(field("payload.settings".into(), "settings are not applied by this agent version"));
        }
        if c.schedules.is_some() {
            return Err(field("payload.schedules".into(), "schedules are not applied by this agent version"));
        }
        if c.cameras.is_some() {
            return Err(field(
                "payload.cameras".into(),
                "cameras are changed with CAMERA_ACTION add/update/remove by this agent version",
            ));
        }
        if c.apply_after.is_some() {
            return Err(field("payload.apply_after".into(), "apply_after is not supported by this agent version"));
        }
        // 1. Read and check everything.
        let mut dests: Vec<(DestinationId, Option<DestinationSettings>, bool)> = Vec::new();
        for (i, v) in c.destinations.clone().unwrap_or_default().into_iter().enumerate() {
            let at = format!("payload.destinations.{i}");
            let d: DestinationItem = serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." { at.clone() } else { format!("{at}.{path}") };
                field(at, e.into_inner().to_string())
            })?;
            let id = d.id.clone();
            let platform: Platform = d.platform.parse().map_err(|e: crate::media::destination::DestinationError| {
                field(format!("{at}.platform"), e.to_string())
            })?;
            let settings = match &d.stream_key {
                Some(_) => {
                    let key = match opened.stream_keys.get(&i) {
                        Some(Ok(key)) => key.clone(),
                        Some(Err(refusal)) => return Err(refusal.clone()),
                        None => return Err(field(format!("{at}.stream_key"), "the sealed stream key was not opened")),
                    };
                    // What the contract does not carry stays as the operator set it on the box: the
                    // publisher, and for an RTMPS ingest a private CA and certificate checking (a key
                    // rotated from the cloud must not drop the CA its ingest is verified with).
                    let local = self.store.destination(&id).await.ok().map(|d| d.settings);
                    let tls = d.url.as_deref().or(platform.ingest_url()).is_some_and(|u| u.starts_with("rtmps://"));
                    let input = DestinationInput {
                        platform,
                        url: d.url.clone(),
                        key,
                        backup_ingest: local.as_ref().is_some_and(|l| l.backup_ingest)
                            && platform.backup_url().is_some(),
                        ca_file: local.as_ref().and_then(|l| l.ca_file.clone()).filter(|_| tls),
                        tls_verify: local.as_ref().is_none_or(|l| l.tls_verify || !tls),
                        publisher: local.as_ref().map(|l| l.publisher).unwrap_or_default(),
                    };
                    Some(input.validate().map_err(|e| field(at.clone(), e.to_string()))?)
                }
                None => None,
            };
            if settings.is_none() && self.store.destination(&id).await.is_err() {
                return Err(field(format!("{at}.stream_key"), "a new destination needs its stream key (sealed)"));
            }
            if settings.is_some() && self.on_air.contains(&d.id) {
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    format!("destination {} is on air: stop what streams to it before changing it", d.id),
                ));
            }
            dests.push((id, settings, d.enabled.unwrap_or(true)));
        }
        let trust = match &c.trust {
            None => None,
            Some(t) => {
                let change: TrustChange =
                    serde_json::from_value(t.clone()).map_err(|e| field("payload.trust".into(), e.to_string()))?;
                // Checked on the store as it is now; applied again, under the store's lock, when
                // the change is made (below), in case another writer changed it meanwhile.
                let mut now =
                    TrustStore::load(trust_path).map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?;
                change_trust(&mut now, &change)?;
                Some(change)
            }
        };
        let existing: Vec<DestinationId> = self.store.destinations().await?.into_iter().map(|d| d.id).collect();
        let removals: Vec<DestinationId> = match c.mode {
            ConfigMode::Merge => Vec::new(),
            ConfigMode::Replace if c.destinations.is_none() => Vec::new(),
            ConfigMode::Replace => existing
                .iter()
                .filter(|id| !dests.iter().any(|(d, _, _)| d == *id) && !self.on_air.iter().any(|a| a == id.as_str()))
                .cloned()
                .collect(),
        };

        // 2. Apply. The trust store first: a writer that changed it since the check can still
        // make this change refused, and then nothing else has changed.
        if let Some(change) = trust {
            let path = trust_path.to_path_buf();
            let (_, written) =
                tokio::task::spawn_blocking(move || TrustStore::update(&path, |s| change_trust(s, &change)))
                    .await
                    .map_err(|e| Refusal::new(ErrorCode::Failed, format!("trust store: {e}")))??;
            *opened.trust.write().unwrap_or_else(|e| e.into_inner()) = written;
        }
        let mut changed = Vec::new();
        for (id, settings, enabled) in dests {
            match settings {
                Some(s) => {
                    if existing.contains(&id) {
                        self.store.remove_destination(&id).await?;
                    }
                    self.store.add_destination(&id, &s, enabled).await?;
                }
                None => self.store.set_destination_enabled(&id, enabled).await?,
            }
            changed.push(id.clone());
        }
        for id in &removals {
            self.store.remove_destination(id).await?;
        }
        tracing::info!(destinations = ?changed, removed = ?removals, "DEVICE_CONFIG applied");
        Ok(Output::Destinations { destinations: changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::keys::{seal_to, DeviceKeys};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    async fn setup(dir: &Path) -> (DeviceKeys, Store, Arc<RwLock<TrustStore>>) {
        let keys = DeviceKeys::load_or_create(dir).unwrap();
        let store = Store::open(dir).await.unwrap();
        let mut t = TrustStore::default();
        let admin =
            crate::control::envelope::b64(ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key().as_bytes());
        t.add(TrustEntry::new("admin", &admin, &[Role::TrustAdmin]).unwrap()).unwrap();
        (keys, store, Arc::new(RwLock::new(t)))
    }

    /// A hostile DEVICE_CONFIG is refused, and the destinations and the trust store are as before.
    async fn refused_and_unchanged(payload: Value) {
        let dir = tempfile::tempdir().unwrap();
        let (keys, store, trust) = setup(dir.path()).await;
        let Ok(mut cfg) = serde_json::from_value::<DeviceConfig>(payload.clone()) else { return };
        let path = dir.path().join("trust.json");
        let before = trust.read().unwrap().clone();
        crate::control::inbox::open_device_config(&keys, &mut cfg, trust.clone(), path.clone());
        let apply = Apply { store: &store, on_air: vec![DestinationId::new("live").unwrap()] };
        let r = apply.run(cfg).await;
        assert!(r.is_err(), "accepted: {payload}");
        assert!(store.destinations().await.unwrap().is_empty(), "changed by {payload}");
        assert_eq!(*trust.read().unwrap(), before, "trust changed by {payload}");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_device_config_the_cloud_inbox_did_not_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let cfg: DeviceConfig = serde_json::from_value(json!({"mode": "merge", "destinations": []})).unwrap();
        let r = Apply { store: &store, on_air: vec![] }.run(cfg).await;
        assert!(r.unwrap_err().message.contains("through the cloud link"));
    }

    /// The contract carries a destination's platform, URL, key and enabled flag; what only the box knows
    /// (the publisher, a private CA for an RTMPS ingest, certificate checking) stays as the operator set it
    /// when the cloud changes the key.
    #[tokio::test]
    async fn a_new_key_from_the_cloud_keeps_what_only_the_box_knows() {
        use crate::media::destination::Publisher;
        let dir = tempfile::tempdir().unwrap();
        let (keys, store, trust) = setup(dir.path()).await;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let url = "rtmps://ingest.example:443/live";
        let id = DestinationId::new("fb").unwrap();
        let local = DestinationInput {
            platform: Platform::Custom,
            url: Some(url.into()),
            key: Secret::new("old-key"),
            backup_ingest: false,
            ca_file: Some(ca.clone()),
            tls_verify: true,
            publisher: Publisher::Ffmpeg,
        };
        store.add_destination(&id, &local.validate().unwrap(), true).await.unwrap();
        let sealed = seal_to(&keys.public().device_sealing_key, "new-key").unwrap();
        let mut cfg: DeviceConfig = serde_json::from_value(json!({"mode": "merge", "destinations": [
            {"id": "fb", "platform": "custom", "url": url, "stream_key": {"sealed": sealed}}]}))
        .unwrap();
        crate::control::inbox::open_device_config(&keys, &mut cfg, trust, dir.path().join("trust.json"));
        Apply { store: &store, on_air: vec![] }.run(cfg).await.expect("applied");
        let s = store.destination(&id).await.unwrap().settings;
        assert_eq!(s.key.expose(), "new-key");
        assert_eq!((s.publisher, s.ca_file.as_deref()), (Publisher::Ffmpeg, Some(ca.as_path())));
    }

    #[tokio::test]
    async fn hostile_device_configs_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sealing = DeviceKeys::load_or_create(dir.path()).unwrap().public().device_sealing_key;
        let other = seal_to(&sealing, "key-for-another-device").unwrap();
        let ok =
            json!({"id": "ok", "platform": "custom", "url": "rtmp://127.0.0.1/live", "stream_key": {"sealed": other}});
        for bad in [
            json!({"mode": "merge", "destinations": [ok.clone(), {"id": "x", "platform": "myspace", "stream_key": {"sealed": "AAAA"}}]}),
            json!({"mode": "merge", "destinations": [{"id": "new", "platform": "custom", "url": "rtmp://h/l"}]}),
            json!({"mode": "merge", "destinations": [{"id": "../x", "platform": "custom"}]}),
            json!({"mode": "merge", "destinations": [{"id": "y", "platform": "custom", "stream_key": {"sealed": "!!!"}}]}),
            json!({"mode": "merge", "destinations": [{"id": "y", "platform": "custom", "evil": 1}]}),
            json!({"mode": "merge", "destinations": [ok.clone()], "trust": {"revoke": ["admin"]}}),
            json!({"mode": "merge", "destinations": [ok.clone()], "trust": {"add": [{"key_id": "k", "public_key": "short", "roles": ["command"]}]}}),
            json!({"mode": "replace", "settings": {"x": 1}}),
            json!({"mode": "merge", "schedules": []}),
        ] {
            refused_and_unchanged(bad).await;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_destination_items_never_panic(id in ".{0,80}", platform in ".{0,20}", sealed in "[A-Za-z0-9+/=!]{0,200}") {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let (keys, store, trust) = setup(dir.path()).await;
                let mut cfg: DeviceConfig = serde_json::from_value(json!({"mode": "merge", "destinations": [
                    {"id": id, "platform": platform, "stream_key": {"sealed": sealed}}]})).unwrap();
                let path = dir.path().join("trust.json");
                crate::control::inbox::open_device_config(&keys, &mut cfg, trust, path);
                let apply = Apply { store: &store, on_air: vec![] };
                // Nothing random opens with this device's key: always refused, never applied.
                prop_assert!(apply.run(cfg).await.is_err());
                prop_assert!(store.destinations().await.unwrap().is_empty());
                Ok(())
            })?;
        }
    }
}
