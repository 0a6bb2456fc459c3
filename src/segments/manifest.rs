//! The manifest of a segment package (`manifest.json`, signed by `manifest.sig`) and the values in it, checked into types: a
//! [`SafeRelPath`] cannot name anything outside the package, a [`SegmentId`] is a valid id, and a
//! [`Manifest`] only exists with every file listed once, within the limits.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Limits, Rejection, Threat};
use crate::values::ValueError;

pub const FORMAT: &str = "vistter-segment/1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// What a package signature covers: this line, then the exact bytes of `manifest.json`.
pub const SIGNED_PREFIX: &[u8] = b"vistter.segment.v1\n";
/// `manifest.json` and `manifest.sig` are small; larger ones are refused before being read.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// A path inside a package: UTF-8, relative, `/`-separated normal components only (no `..`, `.`,
/// empty or absolute parts, no backslash or control characters), at most 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SafeRelPath(String);

/// Why a name is not a [`SafeRelPath`] (the name shown cut to a readable length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path {0:?}: 1-255 bytes")]
    Length(String),
    #[error("path {0:?} is absolute")]
    Absolute(String),
    #[error("path {0:?} has a backslash or a control character")]
    BadCharacter(String),
    #[error("path {0:?} has an empty or '.' part")]
    EmptyPart(String),
    #[error("path {0:?} leaves the package ('..')")]
    LeavesPackage(String),
}

impl SafeRelPath {
    pub fn new(s: &str) -> Result<SafeRelPath, PathError> {
        let shown = crate::values::shorten(s);
        if s.is_empty() || s.len() > 255 {
            return Err(PathError::Length(shown));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(shown));
        }
        if s.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(PathError::BadCharacter(shown));
        }
        for part in s.split('/') {
            match part {
                "" | "." => return Err(PathError::EmptyPart(shown)),
                ".." => return Err(PathError::LeavesPackage(shown)),
                _ => {}
            }
        }
        Ok(SafeRelPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `root` joined with this path: always inside `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }
}

impl TryFrom<String> for SafeRelPath {
    type Error = PathError;
    fn try_from(s: String) -> Result<Self, PathError> {
        SafeRelPath::new(&s)
    }
}

impl From<SafeRelPath> for String {
    fn from(p: SafeRelPath) -> String {
        p.0
    }
}

impl fmt::Display for SafeRelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A segment's id: the store's id rule (it names a directory).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SegmentId(String);

impl SegmentId {
    pub fn new(s: &str) -> Result<SegmentId, ValueError> {
        if crate::values::is_valid_id(s) {
            Ok(SegmentId(s.to_string()))
        } else {
            Err(crate::values::bad(format!(
                "segment id {:?}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit",
                crate::values::shorten(s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SegmentId {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        SegmentId::new(&s)
    }
}

impl From<SegmentId> for String {
    fn from(p: SegmentId) -> String {
        p.0
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lowercase hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn new(s: &str) -> Result<Sha256Hex, ValueError> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Sha256Hex(s.to_string()))
        } else {
            Err(crate::values::bad(format!("{:?} is not a lowercase hex SHA-256", crate::values::shorten(s))))
        }
    }

    pub fn of(digest: &[u8]) -> Sha256Hex {
        Sha256Hex(hex::encode(digest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, ValueError> {
        Sha256Hex::new(&s)
    }
}

impl From<Sha256Hex> for String {
    fn from(p: Sha256Hex) -> String {
        p.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: SafeRelPath,
    pub size: u64,
    pub sha256: Sha256Hex,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_ids: Vec<String>,
}

/// `manifest.json`, exactly as the package format defines it (unknown fields are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub segment_id: SegmentId,
    pub version: u64,
    pub created_at: jiff::Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Targets>,
    pub entrypoint: SafeRelPath,
    pub files: Vec<FileEntry>,
}

/// `manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSignature {
    pub alg: String,
    pub key_id: String,
    pub value: String,
}

/// The bytes a package signature covers.
pub fn signed_bytes(manifest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNED_PREFIX.len() + manifest.len());
    v.extend_from_slice(SIGNED_PREFIX);
    v.extend_from_slice(manifest);
    v
}

impl Manifest {
    /// Parses and checks everything that does not depend on the device: the format, one entry per
    /// file, no file inside another's path, the entrypoint listed, and the limits.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Manifest, Rejection> {
        let bad = |m: String| Rejection::new(Threat::BadManifest, m);
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(format!("manifest.json: {e}")))?;
        if m.format != FORMAT {
            return Err(bad(format!(
                "manifest.json: format {:?} is not {FORMAT:?}",
                crate::values::shorten(&m.format)
            )));
        }
        if m.version == 0 || m.version > (1 << 53) {
            return Err(bad("manifest.json: version must be 1..2^53".into()));
        }
        if m.files.is_empty() {
            return Err(bad("manifest.json: no files".into()));
        }
        if m.files.len() as u64 + 2 > limits.max_entries {
            return Err(Rejection::new(
                Threat::TooManyEntries,
                format!("{} files: more than the limit of {} entries", m.files.len(), limits.max_entries),
            ));
        }
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for f in &m.files {
            if f.path.as_str() == MANIFEST || f.path.as_str() == SIGNATURE {
                return Err(bad(format!("manifest.json lists {}", f.path)));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(Rejection::new(Threat::DuplicateEntry, format!("manifest.json lists {} twice", f.path)));
            }
            if f.size > limits.max_file_bytes {
                return Err(Rejection::new(
                    Threat::TooLarge,
                    format!("{}: {} bytes, over the per-file limit of {}", f.path, f.size, limits.max_file_bytes),
                ));
            }
            total = total.saturating_add(f.size);
        }
        if total > limits.max_uncompressed_bytes {
            return Err(Rejection::new(
                Threat::TooLarge,
                format!("the files total {total} bytes, over the limit of {}", limits.max_uncompressed_bytes),
            ));
        }
        for f in &m.files {
            // "a" and "a/b" cannot both be files.
            let mut prefix = String::new();
            for part in f.path.as_str().split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if seen.contains(prefix.as_str()) {
                    return Err(bad(format!("manifest.json lists {prefix} as a file and as a folder of {}", f.path)));
                }
            }
        }
        if !seen.contains(m.entrypoint.as_str()) {
            return Err(bad(format!("the entrypoint {} is not among the files", m.entrypoint)));
        }
        if let Some(v) = &m.min_agent_version {
            let need = semver::Version::parse(v)
                .map_err(|_| bad(format!("min_agent_version {:?} is not a version", crate::values::shorten(v))))?;
            let have = semver::Version::parse(env!("CARGO_PKG_VERSION")).expect("our own version parses");
            if have < need {
                return Err(Rejection::new(
                    Threat::AgentTooOld,
                    format!("the package needs agent {need} or later; this is {have}"),
                ));
            }
        }
        Ok(m)
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path.as_str() == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_leave_the_package() {
        for ok in ["timeline.json", "assets/logo.png", "a/b/c.d", "über.png"] {
            assert!(SafeRelPath::new(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", "a\\b", "a\nb", "a/", &"x".repeat(256)]
        {
            assert!(SafeRelPath::new(bad).is_err(), "{bad:?}");
        }
        let root = Path::new("/data/staging/x");
        assert!(SafeRelPath::new("a/b").unwrap().under(root).starts_with(root));
    }

    fn manifest(files: serde_json::Value) -> Vec<u8> {
        serde_json::json!({"format": FORMAT, "segment_id": "s1", "version": 1, "created_at": "2026-11-24T12:00:00Z",
            "entrypoint": "timeline.json", "files": files})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_manifest_lists_each_file_once_within_the_limits() {
        let h = "0".repeat(64);
        let limits = Limits::default();
        let ok = manifest(serde_json::json!([{"path": "timeline.json", "size": 10, "sha256": h}]));
        assert_eq!(Manifest::parse(&ok, &limits).unwrap().total_bytes(), 10);
        let cases = [
            (
                serde_json::json!([{"path": "timeline.json", "size": 1, "sha256": h}, {"path": "timeline.json", "size": 1, "sha256": h}]),
                Threat::DuplicateEntry,
            ),
            (serde_json::json!([{"path": "../timeline.json", "size": 1, "sha256": h}]), Threat::BadManifest),
            (serde_json::json!([{"path": "timeline.json", "size": 1, "sha256": "ABC"}]), Threat::BadManifest),
            (serde_json::json!([{"path": "other.json", "size": 1, "sha256": h}]), Threat::BadManifest),
            (serde_json::json!([{"path": "timeline.json", "size": 1u64 << 40, "sha256": h}]), Threat::TooLarge),
            (
                serde_json::json!([{"path": "timeline.json", "size": 1, "sha256": h}, {"path": "timeline.json/x", "size": 1, "sha256": h}]),
                Threat::BadManifest,
            ),
            (serde_json::json!([{"path": "timeline.json", "size": 1, "sha256": h, "mode": 4095}]), Threat::BadManifest),
        ];
        for (files, threat) in cases {
            let e = Manifest::parse(&manifest(files.clone()), &limits).unwrap_err();
            assert_eq!(e.threat, threat, "{files}: {e}");
        }
        let mut newer: serde_json::Value = serde_json::from_slice(&ok).unwrap();
        newer["min_agent_version"] = "999.0.0".into();
        assert_eq!(Manifest::parse(newer.to_string().as_bytes(), &limits).unwrap_err().threat, Threat::AgentTooOld);
    }
}
