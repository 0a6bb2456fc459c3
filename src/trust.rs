//! The trust store: which keys may command this device, sign its packages, or change this list
//! (each key holds roles; a key is rotated by adding the new one before revoking the old). A JSON file (`<data_dir>/trust.json` by default),
//! replaced atomically on every change.
//!
//! Every change goes through [`TrustStore::update`]: under an exclusive lock on
//! `<file>.lock` (held by the daemon's `DEVICE_CONFIG` and the CLI alike), the file is read
//! afresh, changed and written back. No writer starts from a copy it read earlier, so a revocation
//! is never written over by a change computed on the store as it was before it.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::values::is_valid_id as is_valid_key_id;

/// An Ed25519 public key written in standard base64 (32 bytes), or `None`.
pub fn public_key_from_b64(s: &str) -> Option<VerifyingKey> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    let bytes: [u8; 32] = raw.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// May send commands.
    Command,
    /// May sign segment packages.
    Segment,
    /// May also change the trust store (`DEVICE_CONFIG.trust`).
    TrustAdmin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustEntry {
    pub key_id: String,
    /// Base64 of the ed25519 public key's 32 bytes.
    pub public_key: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    pub keys: Vec<TrustEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("key id {0:?} is not valid (1-64 letters, digits, '_', '-', starting with a letter or digit)")]
    BadKeyId(String),
    #[error("public key of {0:?} is not base64 of a 32-byte ed25519 key")]
    BadPublicKey(String),
    #[error("key {0:?} has no role")]
    NoRole(String),
    #[error("key id {0:?} is already trusted with another public key; remove it first")]
    Conflict(String),
    #[error("key {0:?} is not in the trust store")]
    NotFound(String),
    #[error("{0:?} is the last trust_admin key: revoking it would lock the trust store")]
    LastAdmin(String),
    #[error("trust store {path}: {message}")]
    File { path: String, message: String },
}

impl TrustEntry {
    pub fn new(key_id: &str, public_key: &str, roles: &[Role]) -> Result<TrustEntry, TrustError> {
        if !is_valid_key_id(key_id) {
            return Err(TrustError::BadKeyId(crate::values::shorten(key_id)));
        }
        if public_key_from_b64(public_key).is_none() {
            return Err(TrustError::BadPublicKey(key_id.into()));
        }
        if roles.is_empty() {
            return Err(TrustError::NoRole(key_id.into()));
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        Ok(TrustEntry { key_id: key_id.into(), public_key: public_key.into(), roles })
    }
}

impl TrustStore {
    /// Reads the store; a missing file is an empty store. Every entry is checked again.
    pub fn load(path: &Path) -> Result<TrustStore, TrustError> {
        let file_err = |message: String| TrustError::File { path: path.display().to_string(), message };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrustStore::default()),
            Err(e) => return Err(file_err(e.to_string())),
        };
        let store: TrustStore = serde_json::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        for e in &store.keys {
            TrustEntry::new(&e.key_id, &e.public_key, &e.roles)?;
        }
        Ok(store)
    }

    /// Changes the stored trust store: `change` runs on the file as it is now, under the store's
    /// lock, and what it leaves is written back. A refusal from `change` writes nothing. Returns
    /// `change`'s value and the store as written. Blocking (file lock and fsync): call it from a
    /// blocking thread in async code.
    pub fn update<R, E: From<TrustError>>(
        path: &Path,
        change: impl FnOnce(&mut TrustStore) -> Result<R, E>,
    ) -> Result<(R, TrustStore), E> {
        let file_err = |e: String| TrustError::File { path: path.display().to_string(), message: e };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(format!("{}: {e}", dir.display())))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| file_err(format!("{}: {e}", lock_path.display())))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| file_err(format!("{}: {e}", lock_path.display())))?;
        let mut store = TrustStore::load(path)?;
        let out = change(&mut store)?;
        store.save(path)?;
        Ok((out, store))
    }

    /// Writes the store: a temporary file, fsync, rename. Only [`TrustStore::update`] (which
    /// holds the lock) and tests call it.
    fn save(&self, path: &Path) -> Result<(), TrustError> {
        use std::io::Write;
        let file_err =
            |e: std::io::Error| TrustError::File { path: path.display().to_string(), message: e.to_string() };
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let mut f = std::fs::File::create(&tmp).map_err(file_err)?;
        f.write_all(serde_json::to_string_pretty(self).expect("serialises").as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(file_err)?;
        std::fs::rename(&tmp, path).map_err(file_err)
    }

    pub fn get(&self, key_id: &str) -> Option<&TrustEntry> {
        self.keys.iter().find(|e| e.key_id == key_id)
    }

    /// The public key of `key_id` if it holds `role`.
    pub fn key_for(&self, key_id: &str, role: Role) -> Option<VerifyingKey> {
        let e = self.get(key_id).filter(|e| e.roles.contains(&role))?;
        public_key_from_b64(&e.public_key)
    }

    /// Adds a key; the same key again with other roles replaces its roles.
    pub fn add(&mut self, entry: TrustEntry) -> Result<(), TrustError> {
        let entry = TrustEntry::new(&entry.key_id, &entry.public_key, &entry.roles)?;
        match self.keys.iter_mut().find(|e| e.key_id == entry.key_id) {
            Some(e) if e.public_key != entry.public_key => Err(TrustError::Conflict(entry.key_id)),
            Some(e) => {
                e.roles = entry.roles;
                Ok(())
            }
            None => {
                self.keys.push(entry);
                Ok(())
            }
        }
    }

    /// Removes a key; the last `trust_admin` key cannot go.
    pub fn remove(&mut self, key_id: &str) -> Result<TrustEntry, TrustError> {
        let i = self.keys.iter().position(|e| e.key_id == key_id).ok_or_else(|| TrustError::NotFound(key_id.into()))?;
        let admins = self.keys.iter().filter(|e| e.roles.contains(&Role::TrustAdmin)).count();
        if self.keys[i].roles.contains(&Role::TrustAdmin) && admins == 1 {
            return Err(TrustError::LastAdmin(key_id.into()));
        }
        Ok(self.keys.remove(i))
    }
}

/// Keeps `shared` equal to the file at `path`: checked every `every`, re-read when its modification
/// time or size changes (`trust add` while the daemon runs takes effect without a restart). A file
/// that does not read cleanly leaves the last good store in place, with an error in the log.
pub async fn watch(
    path: PathBuf,
    shared: std::sync::Arc<std::sync::RwLock<TrustStore>>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let stamp = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len()));
    // Nothing seen yet: the first check reads the file, so a change made between the caller's
    // own load and this task's start is not missed.
    let mut seen = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        let first = seen.is_none();
        seen = now;
        match TrustStore::load(&path) {
            Ok(t) => {
                if !first {
                    tracing::info!(keys = t.keys.len(), "trust store changed: reloaded");
                }
                *shared.write().unwrap_or_else(|e| e.into_inner()) = t;
            }
            Err(e) => tracing::error!("trust store changed but cannot be used ({e}); keeping the last good one"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(seed: u8) -> String {
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key().as_bytes(),
        )
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.json");
        let shared = std::sync::Arc::new(std::sync::RwLock::new(TrustStore::default()));
        let stop = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(watch(path.clone(), shared.clone(), std::time::Duration::from_millis(20), stop.clone()));
        let mut t = TrustStore::default();
        t.add(TrustEntry::new("studio-a", &pk(1), &[Role::Command]).unwrap()).unwrap();
        TrustStore::update(&path, |s| {
            *s = t.clone();
            Ok::<_, TrustError>(())
        })
        .unwrap();
        let wait = |n: usize| {
            let shared = shared.clone();
            async move {
                for _ in 0..200 {
                    if shared.read().unwrap().keys.len() == n {
                        return true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(wait(1).await, "the new key is seen");
        std::fs::write(&path, "{broken").unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(shared.read().unwrap().keys.len(), 1, "a broken file keeps the last good store");
        stop.cancel();
        task.await.unwrap();
    }

    #[test]
    fn keys_are_checked_roles_matter_and_the_last_admin_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trust.json");
        let mut t = TrustStore::load(&path).unwrap();
        assert!(t.keys.is_empty(), "no file: empty");
        t.add(TrustEntry::new("studio-a", &pk(1), &[Role::Command]).unwrap()).unwrap();
        t.add(TrustEntry::new("admin", &pk(2), &[Role::TrustAdmin, Role::Command]).unwrap()).unwrap();
        assert!(t.key_for("studio-a", Role::Command).is_some());
        assert!(t.key_for("studio-a", Role::TrustAdmin).is_none(), "a command key is not an admin");
        assert!(t.key_for("nobody", Role::Command).is_none());
        assert_eq!(
            t.add(TrustEntry::new("studio-a", &pk(3), &[Role::Command]).unwrap()),
            Err(TrustError::Conflict("studio-a".into()))
        );
        assert_eq!(t.remove("admin"), Err(TrustError::LastAdmin("admin".into())));
        t.save(&path).unwrap();
        assert_eq!(TrustStore::load(&path).unwrap(), t, "saved and read back");
        t.add(TrustEntry::new("admin2", &pk(4), &[Role::TrustAdmin]).unwrap()).unwrap();
        assert!(t.remove("admin").is_ok(), "another admin remains");
        assert_eq!(TrustEntry::new("bad id!", &pk(1), &[Role::Command]), Err(TrustError::BadKeyId("bad id!".into())));
        assert!(matches!(TrustEntry::new("k", "AAAA", &[Role::Command]), Err(TrustError::BadPublicKey(_))));
        assert!(matches!(TrustEntry::new("k", &pk(1), &[]), Err(TrustError::NoRole(_))));
        std::fs::write(&path, "{\"keys\": [{\"key_id\": \"x\", \"public_key\": \"AA\", \"roles\": [\"command\"]}]}")
            .unwrap();
        assert!(TrustStore::load(&path).is_err(), "a bad file is refused, not half read");
    }
}
