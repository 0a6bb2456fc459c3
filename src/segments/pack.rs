//! Making a `.vseg` segment package: hash every file, write and sign the manifest, then stream
//! `manifest.json`, `manifest.sig` and the files through tar and zstd into `OUT.part`, renamed to
//! `OUT` once synced. Files are hashed again while packed: one that changes in between fails.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use super::manifest::*;

/// Why a package could not be made. Paths are named; nothing is left at the output path.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    OutsideFolder(#[from] std::path::StripPrefixError),
    #[error("{}: the name is not UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error(transparent)]
    UnsafePath(#[from] PathError),
    #[error("{}: {name} is the package's own name", path.display())]
    ReservedName { path: PathBuf, name: String },
    #[error("{}: not a regular file or folder (a package holds files only)", .0.display())]
    NotAFile(PathBuf),
    #[error("nothing to pack")]
    Empty,
    /// The manifest would not pass the importer's checks.
    #[error("{0}")]
    BadManifest(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{}: {source} (did it change while packing?)", path.display())]
    Append { path: PathBuf, source: io::Error },
    #[error("{} changed while it was packed", .0.display())]
    Changed(PathBuf),
    /// Compressing, archiving or syncing the output failed.
    #[error("{0}")]
    Write(io::Error),
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> PackError + '_ {
    move |source| PackError::Io { path: path.to_path_buf(), source }
}

/// What the manifest says beyond its files.
#[derive(Debug, Clone)]
pub struct PackMeta {
    pub segment_id: SegmentId,
    pub version: u64,
    pub expires_at: Option<jiff::Timestamp>,
    pub device_ids: Vec<String>,
    pub entrypoint: SafeRelPath,
    pub min_agent_version: Option<String>,
}

/// The regular files under `dir`, as package paths, sorted. Symlinks and special files are refused
/// (a package carries regular files only).
pub fn collect_dir(dir: &Path) -> Result<Vec<(SafeRelPath, PathBuf)>, PackError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(SafeRelPath, PathBuf)>) -> Result<(), PackError> {
        let rd = std::fs::read_dir(dir).map_err(at(dir))?;
        for entry in rd {
            let entry = entry.map_err(at(dir))?;
            let path = entry.path();
            let t = entry.file_type().map_err(at(&path))?;
            if t.is_dir() {
                walk(root, &path, out)?;
            } else if t.is_file() {
                let rel = path.strip_prefix(root)?;
                let rel = rel.to_str().ok_or_else(|| PackError::NotUtf8(path.clone()))?;
                let safe = SafeRelPath::new(rel)?;
                if safe.as_str() == MANIFEST || safe.as_str() == SIGNATURE {
                    return Err(PackError::ReservedName { path: path.clone(), name: rel.to_string() });
                }
                out.push((safe, path));
            } else {
                return Err(PackError::NotAFile(path));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn hash_file(path: &Path, buf: &mut [u8], progress: &mut dyn FnMut(u64)) -> io::Result<(u64, Sha256Hex)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = f.read(buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        progress(k as u64);
    }
    Ok((n, Sha256Hex::of(&h.finalize())))
}

/// Hashes through a reader; the packer compares the result with the manifest.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// Packs `files` into `out`, signed by `key` (`key_id`). `progress(done, total)` counts bytes read
/// (each file is read twice: hashed, then packed). Returns the manifest written.
pub fn pack(
    files: &[(SafeRelPath, PathBuf)],
    meta: &PackMeta,
    key_id: &str,
    key: &SigningKey,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest, PackError> {
    if files.is_empty() {
        return Err(PackError::Empty);
    }
    let total: u64 = files.iter().filter_map(|(_, p)| std::fs::metadata(p).ok()).map(|m| m.len()).sum::<u64>() * 2;
    let mut done = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut entries = Vec::with_capacity(files.len());
    for (rel, path) in files {
        let (size, sha256) = hash_file(path, &mut buf, &mut |k| {
            done += k;
            progress(done, total)
        })
        .map_err(at(path))?;
        entries.push(FileEntry { path: rel.clone(), size, sha256 });
    }
    let created_at = jiff::Timestamp::now();
    let manifest = Manifest {
        format: FORMAT.into(),
        segment_id: meta.segment_id.clone(),
        version: meta.version,
        created_at,
        expires_at: meta.expires_at,
        min_agent_version: meta.min_agent_version.clone(),
        targets: (!meta.device_ids.is_empty()).then(|| Targets { device_ids: meta.device_ids.clone() }),
        entrypoint: meta.entrypoint.clone(),
        files: entries,
    };
    // The same checks an importer makes, so a package that cannot be imported is not written.
    let bytes = serde_json::to_vec_pretty(&manifest)?;
    Manifest::parse(&bytes, &super::Limits { max_entries: u64::MAX, ..super::Limits::default() })
        .map_err(|r| PackError::BadManifest(r.message))?;
    let sig = PackageSignature {
        alg: "ed25519".into(),
        key_id: key_id.into(),
        value: base64::engine::general_purpose::STANDARD.encode(key.sign(&signed_bytes(&bytes)).to_bytes()),
    };
    let sig = serde_json::to_vec(&sig)?;

    let part = out.with_extension("vseg.part");
    let mut write = || -> Result<(), PackError> {
        let file = File::create(&part).map_err(at(&part))?;
        let mut z = zstd::stream::write::Encoder::new(io::BufWriter::with_capacity(1 << 20, file), 3)
            .map_err(PackError::Write)?;
        z.include_checksum(true).map_err(PackError::Write)?;
        z.window_log(23).map_err(PackError::Write)?;
        let mut tar = tar::Builder::new(z);
        let mtime = created_at.as_second().max(0) as u64;
        let header = |size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            h
        };
        tar.append_data(&mut header(bytes.len() as u64), MANIFEST, bytes.as_slice()).map_err(PackError::Write)?;
        tar.append_data(&mut header(sig.len() as u64), SIGNATURE, sig.as_slice()).map_err(PackError::Write)?;
        for ((rel, path), listed) in files.iter().zip(&manifest.files) {
            let f = File::open(path).map_err(at(path))?;
            let mut r = Hashing { inner: f.take(listed.size), hash: Sha256::new(), n: 0 };
            tar.append_data(&mut header(listed.size), rel.as_str(), &mut r)
                .map_err(|source| PackError::Append { path: path.clone(), source })?;
            if r.n != listed.size || Sha256Hex::of(&r.hash.finalize()) != listed.sha256 {
                return Err(PackError::Changed(path.clone()));
            }
            done += listed.size;
            progress(done, total);
        }
        let z = tar.into_inner().map_err(PackError::Write)?;
        let w = z.finish().map_err(PackError::Write)?;
        let f = w.into_inner().map_err(|e| PackError::Write(e.into_error()))?;
        f.sync_all().map_err(PackError::Write)?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, out).map_err(at(out))?;
    Ok(manifest)
}
