//! The device's own keys (DESIGN §3): an ed25519 key that signs everything the device sends and an
//! X25519 key that opens the sealed secrets the cloud sends. Both are made on first start and kept
//! 0600 in the data dir; only their public halves ever leave it (STATE, `device show`).

use std::path::Path;

use ed25519_dalek::SigningKey;

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

impl DeviceKeys {
    pub fn load_or_create(data_dir: &Path) -> Result<DeviceKeys, CryptoError> {
        let signing = SigningKey::from_bytes(&key_file(&data_dir.join(SIGNING_FILE))?);
        let sealing = crypto_box::SecretKey::from(key_file(&data_dir.join(SEALING_FILE))?);
        Ok(DeviceKeys { signing, sealing })
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
}
