//! Segment packages: signed, zstd-compressed tar files that carry a timeline and its
//! assets to the appliance, from the cloud (`TIMELINE_LOAD`), a USB stick (drop folders) or the
//! CLI, and the library they are installed into.
//!
//! The reader ([`package`]) is streaming and bounded: it checks the manifest's signature before a
//! payload byte is written, hashes and counts every file while writing it into a staging dir, and
//! refuses anything a package must not contain. Only the reader makes a [`package::VerifiedPackage`],
//! and only a `VerifiedPackage` can be installed ([`library`]): fsync, rename, one DB transaction.

pub mod download;
pub mod drop;
pub mod library;
pub mod manifest;
pub mod pack;
pub mod package;
#[cfg(test)]
mod testkit;

use serde::{Deserialize, Serialize};

/// How big a package may be. Checked while reading, before anything is written past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The `.vseg` file itself.
    pub max_compressed_bytes: u64,
    /// All its files together, uncompressed.
    pub max_uncompressed_bytes: u64,
    pub max_file_bytes: u64,
    /// Tar entries (the manifest and its signature included).
    pub max_entries: u64,
    /// The largest zstd window accepted, as a power of two (the contract's ceiling is 27).
    pub max_window_log: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_compressed_bytes: 4 << 30,
            max_uncompressed_bytes: 8 << 30,
            max_file_bytes: 4 << 30,
            max_entries: 10_000,
            max_window_log: 27,
        }
    }
}

/// Why a package was refused. The code (snake_case) is what events, result files and RESULTs carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threat {
    /// Not a zstd stream, or not a tar inside it.
    Corrupt,
    Truncated,
    /// The zstd window is larger than `max_window_log` allows.
    WindowTooLarge,
    /// Over a size limit (the package, a file, or everything unpacked: a decompression bomb).
    TooLarge,
    TooManyEntries,
    ManifestNotFirst,
    SignatureNotSecond,
    BadManifest,
    BadSignature,
    UnknownKey,
    /// Signed by a trusted key that does not hold the `segment` role.
    KeyNotForSegments,
    Expired,
    NotForThisDevice,
    AgentTooOld,
    /// Its version is not above the installed one.
    Rollback,
    UnsafePath,
    NonUtf8Name,
    /// A symlink, hard link, device, FIFO, directory or other non-regular entry.
    NotARegularFile,
    DuplicateEntry,
    ExtraFile,
    MissingFile,
    SizeMismatch,
    ChecksumMismatch,
    /// The timeline inside does not check against this appliance (cameras, assets, values).
    TimelineInvalid,
    /// A timeline of that id exists and does not belong to this segment.
    Conflict,
    NoSpace,
    /// Something on this side failed (disk, database): the package may be fine.
    Local,
}

impl Threat {
    pub fn code(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", message, threat.code())]
pub struct Rejection {
    pub threat: Threat,
    pub message: String,
}

impl Rejection {
    pub fn new(threat: Threat, message: impl Into<String>) -> Rejection {
        Rejection { threat, message: message.into() }
    }

    pub fn local(e: impl std::fmt::Display) -> Rejection {
        Rejection::new(Threat::Local, e.to_string())
    }
}
