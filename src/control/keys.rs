//! The device's own keys: an ed25519 key that signs everything the device sends and an
//! X25519 key that opens the sealed secrets the cloud sends. Both are made on first start and kept
//! 0600 in the data dir; only their public halves ever leave it (STATE, `device show`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::crypto::{key_file, CryptoError};

pub const SIGNING_FILE: &str = "device_ed25519.key";
pub const SEALING_FILE: &str = "device_x25519.key";

pub struct DeviceKeys {
    signing: SigningKey,
    sealing: crypto_box::SecretKey,
}

/// The public halves, as they are published (base64 of 32 bytes each).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevicePublic {
    pub device_public_key: String,
    pub device_sealing_key: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("a sealed value is not base64")]
    NotBase64,
    #[error("a sealed value does not open with this device's key (sealed to another device?)")]
    Open,
    #[error("a sealed value is not UTF-8 text")]
    NotText,
}

/// A device key file that cannot be used (named; its content never shown).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{}: not a 32-byte key", .0.display())]
    NotAKey(PathBuf),
}

impl DeviceKeys {
    pub fn load_or_create(data_dir: &Path) -> Result<DeviceKeys, CryptoError> {
        let signing = SigningKey::from_bytes(&key_file(&data_dir.join(SIGNING_FILE))?);
        let sealing = crypto_box::SecretKey::from(key_file(&data_dir.join(SEALING_FILE))?);
        Ok(DeviceKeys { signing, sealing })
    }

    /// The keys as the files hold them now, made by nobody: a missing or broken file is an error
    /// (naming the file, never its content).
    pub fn load(data_dir: &Path) -> Result<DeviceKeys, KeyFileError> {
        let read = |name: &str| -> Result<[u8; 32], KeyFileError> {
            let path = data_dir.join(name);
            let bytes =
                std::fs::read(&path).map_err(|source| KeyFileError::Unreadable { path: path.clone(), source })?;
            bytes.try_into().map_err(|_| KeyFileError::NotAKey(path))
        };
        Ok(DeviceKeys {
            signing: SigningKey::from_bytes(&read(SIGNING_FILE)?),
            sealing: crypto_box::SecretKey::from(read(SEALING_FILE)?),
        })
    }

    pub fn signing(&self) -> &SigningKey {
        &self.signing
    }

    pub fn public(&self) -> DevicePublic {
        DevicePublic {
            device_public_key: super::envelope::b64(self.signing.verifying_key().as_bytes()),
            device_sealing_key: super::envelope::b64(self.sealing.public_key().as_bytes()),
        }
    }

    /// Opens a `{"sealed": "<base64>"}` value (a libsodium sealed box to this device).
    pub fn open(&self, sealed_b64: &str) -> Result<crate::secret::Secret, OpenError> {
        use base64::Engine;
        let ct = base64::engine::general_purpose::STANDARD.decode(sealed_b64).map_err(|_| OpenError::NotBase64)?;
        let pt = self.sealing.unseal(&ct).map_err(|_| OpenError::Open)?;
        String::from_utf8(pt).map(crate::secret::Secret::new).map_err(|_| OpenError::NotText)
    }
}

/// The device's keys in use, replaced when their files change (a re-provisioned device, a restored
/// backup) without a restart. Whoever signs or opens takes [`Keyring::current`] each time.
pub struct Keyring {
    dir: PathBuf,
    current: RwLock<Arc<DeviceKeys>>,
    changed: watch::Sender<DevicePublic>,
}

impl Keyring {
    pub fn load_or_create(data_dir: &Path) -> Result<Keyring, CryptoError> {
        let keys = DeviceKeys::load_or_create(data_dir)?;
        let (changed, _) = watch::channel(keys.public());
        Ok(Keyring { dir: data_dir.to_path_buf(), current: RwLock::new(Arc::new(keys)), changed })
    }

    pub fn current(&self) -> Arc<DeviceKeys> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The public keys, updated when the keys change (the links reconnect to announce them).
    pub fn changes(&self) -> watch::Receiver<DevicePublic> {
        self.changed.subscribe()
    }

    /// Reads the files again. `Ok(true)`: other keys are in use now. An error keeps the keys in use.
    pub fn reload(&self) -> Result<bool, KeyFileError> {
        let keys = DeviceKeys::load(&self.dir)?;
        let public = keys.public();
        if public == self.current().public() {
            return Ok(false);
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.changed.send_replace(public);
        Ok(true)
    }

    fn fingerprint(&self) -> Vec<Option<(SystemTime, u64)>> {
        [SIGNING_FILE, SEALING_FILE]
            .iter()
            .map(|f| std::fs::metadata(self.dir.join(f)).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }
}

/// Checks the key files every `every` and reloads them when they change, until `stop`.
pub async fn watch(ring: Arc<Keyring>, every: Duration, stop: CancellationToken) {
    let mut seen = ring.fingerprint();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = ring.fingerprint();
        if now == seen {
            continue;
        }
        seen = now;
        match ring.reload() {
            Ok(true) => {
                let p = ring.current().public();
                tracing::warn!(
                    device_public_key = %p.device_public_key,
                    device_sealing_key = %p.device_sealing_key,
                    "the device key files changed: the new keys are in use (the links reconnect to announce them)"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::error!("the device key files changed but cannot be used ({e}); the keys in use stay"),
        }
    }
}

/// Seals `text` to a device's X25519 public key (base64): what the cloud side does.
pub fn seal_to(sealing_key_b64: &str, text: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(sealing_key_b64).ok()?;
    let bytes: [u8; 32] = raw.try_into().ok()?;
    let pk = crypto_box::PublicKey::from(bytes);
    let ct = pk.seal(&mut rand::rngs::OsRng, text.as_bytes()).ok()?;
    Some(super::envelope::b64(&ct))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_made_once_kept_0600_and_open_what_was_sealed_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let k = DeviceKeys::load_or_create(dir.path()).unwrap();
        let again = DeviceKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(k.public(), again.public(), "the same keys on the next start");
        for f in [SIGNING_FILE, SEALING_FILE] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let sealed = seal_to(&k.public().device_sealing_key, "live_abc123").unwrap();
        assert!(!sealed.contains("live_abc123"));
        assert_eq!(k.open(&sealed).unwrap().expose(), "live_abc123");
        let other = DeviceKeys::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.open(&sealed).err(), Some(OpenError::Open), "sealed to another device");
        assert_eq!(k.open("not base64!").err(), Some(OpenError::NotBase64));
    }

    #[tokio::test]
    async fn changed_key_files_are_used_without_a_restart_and_broken_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Arc::new(Keyring::load_or_create(dir.path()).unwrap());
        let first = ring.current().public();
        let mut changes = ring.changes();
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(ring.clone(), Duration::from_millis(20), stop.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A broken signing key (wrong length): refused, the keys in use stay.
        std::fs::write(dir.path().join(SIGNING_FILE), b"short").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ring.current().public(), first);
        assert!(ring.reload().unwrap_err().to_string().contains(SIGNING_FILE), "the file is named");
        // New keys (another device's files copied in): in use, and announced.
        let other = tempfile::tempdir().unwrap();
        let next = DeviceKeys::load_or_create(other.path()).unwrap().public();
        for f in [SIGNING_FILE, SEALING_FILE] {
            std::fs::copy(other.path().join(f), dir.path().join(f)).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.unwrap().unwrap();
        assert_eq!(*changes.borrow(), next);
        assert_eq!(ring.current().public(), next);
        let sealed = seal_to(&next.device_sealing_key, "k").unwrap();
        assert_eq!(ring.current().open(&sealed).unwrap().expose(), "k");
        stop.cancel();
        task.await.unwrap();
    }
}
