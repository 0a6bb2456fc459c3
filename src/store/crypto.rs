//! Encryption at rest for camera passwords and stream keys.
//!
//! A 32-byte device key lives in `<data_dir>/device.key` (mode 0600, created on first use).
//! Values are sealed with XChaCha20-Poly1305 (random 24-byte nonces are safe at this size) and bound
//! to their place (`camera:<id>:password`) as associated data, so a ciphertext copied into another
//! row fails to open instead of decrypting to the wrong secret.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::secret::Secret;

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("device key {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("device key {0} is corrupt (expected 32 bytes)")]
    BadKey(String),
    #[error("a stored secret cannot be decrypted (device key changed or data corrupted)")]
    Open,
}

/// 32 secret bytes kept in `path` (mode 0600), made from the OS's random source on first use. Two
/// processes starting at once (CLI and daemon) end up with the same key. A file readable by
/// others is restricted to 0600 (with a warning).
pub fn key_file(path: &Path) -> Result<[u8; 32], CryptoError> {
    let err = |source| CryptoError::KeyFile { path: path.display().to_string(), source };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            // Written whole to a private file, then linked into place: a process opening the key
            // at the same moment (CLI and daemon) sees either no file or the whole key.
            let tmp = path.with_extension(format!("tmp-{}-{:x}", std::process::id(), rand::random::<u32>()));
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err)?;
            let written = f.write_all(&key).and_then(|_| f.sync_all());
            drop(f);
            let linked = written.and_then(|_| std::fs::hard_link(&tmp, path));
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                // Another process made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return key_file(path),
                Err(e) => return Err(err(e)),
            }
            key.to_vec()
        }
        Err(e) => return Err(err(e)),
    };
    let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey(path.display().to_string()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!("key file {} was readable by others; restricting to 0600", path.display());
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(key)
}

#[derive(Clone)]
pub struct DeviceKey {
    cipher: XChaCha20Poly1305,
}

impl DeviceKey {
    /// Loads the key, creating it (0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<DeviceKey, CryptoError> {
        let bytes = key_file(path)?;
        Ok(DeviceKey { cipher: XChaCha20Poly1305::new_from_slice(&bytes).expect("32-byte key") })
    }

    pub fn seal(&self, secret: &Secret, context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret.expose().as_bytes(), aad: context.as_bytes() })
            .expect("encryption cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Secret, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(pt).map(Secret::new).map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_context_binding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.key");
        let k = DeviceKey::load_or_create(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = k.seal(&Secret::new("hunter22"), "camera:a:password");
        assert!(!sealed.windows(8).any(|w| w == b"hunter22"));
        assert_eq!(k.open(&sealed, "camera:a:password").unwrap().expose(), "hunter22");
        assert!(k.open(&sealed, "camera:b:password").is_err());
        let k2 = DeviceKey::load_or_create(&p).unwrap();
        assert_eq!(k2.open(&sealed, "camera:a:password").unwrap().expose(), "hunter22");
    }
}
