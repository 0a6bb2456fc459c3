//! Reading a `.vseg` segment package: one pass over zstd → tar, bounded at every step.
//!
//! 1. The compressed bytes are counted against `max_compressed_bytes`; zstd refuses windows over
//!    `2^max_window_log`; the decompressed bytes are counted against `max_uncompressed_bytes`, so a
//!    bomb stops at the limit, not after writing it all.
//! 2. `manifest.json` must be the first entry and `manifest.sig` the second; the signature (by a
//!    trusted key with the `segment` role) is checked before the manifest is even parsed, and the
//!    manifest (expiry, target devices, limits, and the caller's own checks) before any payload.
//! 3. Each payload entry must be a regular file with a UTF-8, safe, listed, not yet seen path and
//!    the listed size; it is written into the staging dir (created new, never through a link) while
//!    hashed, and must match the listed SHA-256. Then nothing may be missing.
//!
//! The tar crate's `unpack` is never used: entries are walked and only regular files are written.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::manifest::*;
use super::{Limits, Rejection, Threat};
use crate::trust::{Role, TrustStore};

/// What a package is checked against.
pub struct Checks<'a> {
    pub trust: &'a TrustStore,
    pub device_id: &'a str,
    /// The time expiry is judged by (the control plane's trusted time).
    pub now: jiff::Timestamp,
    pub limits: Limits,
}

/// What the caller decides once the manifest is verified (the library checks versions, space and
/// whether this exact package is installed already).
pub enum Next {
    Read,
    /// Stop here: nothing more is read or written.
    Stop,
}

/// A package whose signature and manifest are verified (and, unless reading stopped early, every
/// file).
#[derive(Debug, Clone)]
pub struct Checked {
    pub manifest: Manifest,
    /// SHA-256 of `manifest.json`'s bytes: it pins every file, so it names the package's content.
    pub manifest_sha256: Sha256Hex,
    pub key_id: String,
    /// The payload was read and matched (false when the caller stopped after the manifest).
    pub complete: bool,
}

/// A package verified in full, its files staged and synced. Only [`stage`] makes one.
#[derive(Debug)]
pub struct VerifiedPackage {
    checked: Checked,
    staging: PathBuf,
}

impl VerifiedPackage {
    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    pub fn manifest(&self) -> &Manifest {
        &self.checked.manifest
    }

    /// The staged files, laid out as the package lists them.
    pub fn staging(&self) -> &Path {
        &self.staging
    }
}

/// Counts bytes through a reader, failing once past `limit`; `seen` is readable after an error.
struct Counted<R> {
    inner: R,
    seen: Arc<AtomicU64>,
    limit: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.seen.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limit {
            return Err(io::Error::other("over the size limit"));
        }
        Ok(n)
    }
}

/// Verifies a package without installing anything (`segment verify`): every check, every hash.
pub fn verify(src: impl Read, checks: &Checks, progress: &mut dyn FnMut(u64)) -> Result<Checked, Rejection> {
    read(src, checks, None, &mut |_, _| Ok(Next::Read), progress)
}

/// Verifies a package and stages its files under `staging` (which must not exist yet). `Ok(None)`:
/// `after_manifest` stopped it (nothing was written).
pub fn stage(
    src: impl Read,
    checks: &Checks,
    staging: &Path,
    after_manifest: &mut dyn FnMut(&Manifest, &Sha256Hex) -> Result<Next, Rejection>,
    progress: &mut dyn FnMut(u64),
) -> Result<Result<VerifiedPackage, Checked>, Rejection> {
    std::fs::create_dir(staging).map_err(|e| Rejection::local(format!("{}: {e}", staging.display())))?;
    let checked = read(src, checks, Some(staging), after_manifest, progress)?;
    if !checked.complete {
        return Ok(Err(checked));
    }
    Ok(Ok(VerifiedPackage { checked, staging: staging.to_path_buf() }))
}

fn read(
    src: impl Read,
    checks: &Checks,
    staging: Option<&Path>,
    after_manifest: &mut dyn FnMut(&Manifest, &Sha256Hex) -> Result<Next, Rejection>,
    progress: &mut dyn FnMut(u64),
) -> Result<Checked, Rejection> {
    let limits = checks.limits;
    let compressed = Arc::new(AtomicU64::new(0));
    let unpacked = Arc::new(AtomicU64::new(0));
    let src = Counted { inner: src, seen: compressed.clone(), limit: limits.max_compressed_bytes };
    let classify = |e: io::Error, what: &str| -> Rejection {
        if compressed.load(Ordering::Relaxed) > limits.max_compressed_bytes {
            return Rejection::new(
                Threat::TooLarge,
                format!("the package is over the limit of {} bytes", limits.max_compressed_bytes),
            );
        }
        let seen = unpacked.load(Ordering::Relaxed);
        // The tar layer adds 512-byte headers and padding to what the files hold.
        if seen > limits.max_uncompressed_bytes {
            return Rejection::new(
                Threat::TooLarge,
                format!(
                    "the package expands past the limit of {} bytes (stopped there: a decompression bomb?)",
                    limits.max_uncompressed_bytes
                ),
            );
        }
        let text = e.to_string();
        if text.contains("too much memory") || text.contains("window") {
            return Rejection::new(
                Threat::WindowTooLarge,
                format!("the zstd window is over 2^{} bytes ({text})", limits.max_window_log),
            );
        }
        if e.kind() == io::ErrorKind::UnexpectedEof || text.contains("incomplete") || text.contains("Truncated") {
            return Rejection::new(Threat::Truncated, format!("the package ends early ({what}: {text})"));
        }
        Rejection::new(Threat::Corrupt, format!("{what}: {text}"))
    };
    let mut zstd = zstd::stream::read::Decoder::new(src).map_err(|e| classify(e, "zstd"))?;
    zstd.window_log_max(limits.max_window_log).map_err(|e| classify(e, "zstd"))?;
    // Headers and padding count too: a tar of many empty files is bounded as well. Per entry: its
    // header and padding, and at most two long-name or pax headers of their own (see `next_member`).
    let overhead =
        (1024 + MAX_NAME_HEADERS * (512 + MAX_NAME_RECORD)).saturating_mul(limits.max_entries.saturating_add(2));
    let inner =
        Counted { inner: zstd, seen: unpacked.clone(), limit: limits.max_uncompressed_bytes.saturating_add(overhead) };
    let mut archive = tar::Archive::new(inner);
    // Raw: long names and pax records are read here, bounded; the tar crate would buffer them
    // whole, whatever their size.
    let mut entries = archive.entries().map_err(|e| classify(e, "tar"))?.raw(true);
    let mut count = 0u64;

    // 1-2: the manifest and its signature.
    let manifest_bytes = {
        let (name, mut e) = next_member(&mut entries, &mut count, &limits, &classify)?
            .ok_or_else(|| Rejection::new(Threat::ManifestNotFirst, "the package is empty"))?;
        small_entry(&name, &mut e, MANIFEST, MAX_MANIFEST_BYTES, Threat::ManifestNotFirst)
            .map_err(|r| fold(r, &classify))?
    };
    let sig_bytes = {
        let (name, mut e) = next_member(&mut entries, &mut count, &limits, &classify)?
            .ok_or_else(|| Rejection::new(Threat::SignatureNotSecond, "the package has no manifest.sig"))?;
        small_entry(&name, &mut e, SIGNATURE, MAX_SIGNATURE_BYTES, Threat::SignatureNotSecond)
            .map_err(|r| fold(r, &classify))?
    };
    let key_id = check_signature(&manifest_bytes, &sig_bytes, checks.trust)?;
    let manifest = Manifest::parse(&manifest_bytes, &limits)?;
    if let Some(exp) = manifest.expires_at {
        if checks.now >= exp {
            return Err(Rejection::new(Threat::Expired, format!("the package expired at {exp}")));
        }
    }
    if let Some(t) = &manifest.targets {
        if !t.device_ids.is_empty() && !t.device_ids.iter().any(|d| d == checks.device_id) {
            return Err(Rejection::new(
                Threat::NotForThisDevice,
                format!("the package is for other devices, not {}", checks.device_id),
            ));
        }
    }
    let manifest_sha256 = Sha256Hex::of(&Sha256::digest(&manifest_bytes));
    let mut checked = Checked { manifest, manifest_sha256, key_id, complete: false };
    if let Next::Stop = after_manifest(&checked.manifest, &checked.manifest_sha256)? {
        return Ok(checked);
    }

    // 3: the payload.
    let mut seen = std::collections::HashSet::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    while let Some((raw, mut e)) = next_member(&mut entries, &mut count, &limits, &classify)? {
        let name = std::str::from_utf8(&raw).map_err(|_| {
            Rejection::new(
                Threat::NonUtf8Name,
                format!("an entry's name is not UTF-8 ({})", String::from_utf8_lossy(&raw)),
            )
        })?;
        let path = SafeRelPath::new(name).map_err(|m| Rejection::new(Threat::UnsafePath, m.to_string()))?;
        let kind = e.header().entry_type();
        if !kind.is_file() {
            return Err(Rejection::new(
                Threat::NotARegularFile,
                format!("{path} is a {}, not a regular file", entry_kind(kind)),
            ));
        }
        let Some(listed) = checked.manifest.file(path.as_str()).cloned() else {
            let threat = if path.as_str() == MANIFEST || path.as_str() == SIGNATURE {
                Threat::DuplicateEntry
            } else {
                Threat::ExtraFile
            };
            return Err(Rejection::new(threat, format!("{path} is in the package but not in the manifest")));
        };
        if !seen.insert(path.clone()) {
            return Err(Rejection::new(Threat::DuplicateEntry, format!("{path} is in the package twice")));
        }
        let size = e.header().size().map_err(|err| classify(err, "tar"))?;
        if size != listed.size {
            return Err(Rejection::new(
                Threat::SizeMismatch,
                format!("{path}: {size} bytes in the package, {} in the manifest", listed.size),
            ));
        }
        let mut out = match staging {
            Some(dir) => Some(create_staged(dir, &path)?),
            None => None,
        };
        let mut hash = Sha256::new();
        let mut got = 0u64;
        loop {
            let k = e.read(&mut buf).map_err(|err| classify(err, &path.to_string()))?;
            if k == 0 {
                break;
            }
            got += k as u64;
            hash.update(&buf[..k]);
            if let Some(f) = out.as_mut() {
                f.write_all(&buf[..k]).map_err(|err| Rejection::local(format!("staging {path}: {err}")))?;
            }
            done += k as u64;
            progress(done);
        }
        if got != listed.size {
            return Err(Rejection::new(Threat::Truncated, format!("{path}: {got} of {} bytes", listed.size)));
        }
        if Sha256Hex::of(&hash.finalize()) != listed.sha256 {
            return Err(Rejection::new(Threat::ChecksumMismatch, format!("{path}: its SHA-256 is not the manifest's")));
        }
        if let Some(f) = out {
            f.sync_all().map_err(|err| Rejection::local(format!("staging {path}: {err}")))?;
        }
    }
    if let Some(missing) = checked.manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(Rejection::new(
            Threat::MissingFile,
            format!("{} is in the manifest but not in the package", missing.path),
        ));
    }
    // After the end of the archive only its zero padding may follow, and the zstd stream must end
    // there with its checksum right: read it out (bounded by the same counters).
    let mut rest = archive.into_inner();
    loop {
        let k = rest.read(&mut buf).map_err(|err| classify(err, "after the archive"))?;
        if k == 0 {
            break;
        }
        if buf[..k].iter().any(|b| *b != 0) {
            return Err(Rejection::new(Threat::Corrupt, "data follows the end of the archive"));
        }
    }
    checked.complete = true;
    Ok(checked)
}

/// A long-name or pax record larger than this is refused unread.
const MAX_NAME_RECORD: u64 = 4096;
/// Long-name and pax headers allowed before one entry (a GNU long name, a pax header).
const MAX_NAME_HEADERS: u64 = 2;

/// An entry and its full name.
type Member<'a, R> = (Vec<u8>, tar::Entry<'a, R>);

/// The next member of the archive with its name (a GNU long name or a pax `path` before it
/// applied), or none at the end. Members count against `max_entries`, as the manifest's files do;
/// each may have at most [`MAX_NAME_HEADERS`] long-name or pax headers, refused past a few KiB.
fn next_member<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    count: &mut u64,
    limits: &Limits,
    classify: &dyn Fn(io::Error, &str) -> Rejection,
) -> Result<Option<Member<'a, R>>, Rejection> {
    let mut name: Option<Vec<u8>> = None;
    let mut headers = 0u64;
    loop {
        let mut e = match entries.next() {
            None if headers > 0 => {
                return Err(Rejection::new(Threat::Truncated, "the package ends after a long name or pax header"))
            }
            None => return Ok(None),
            Some(Err(e)) => return Err(classify(e, "tar")),
            Some(Ok(e)) => e,
        };
        let kind = e.header().entry_type();
        let meta = kind.is_gnu_longname() || kind.is_pax_local_extensions();
        if !meta {
            *count += 1;
            if *count > limits.max_entries {
                return Err(Rejection::new(
                    Threat::TooManyEntries,
                    format!("more than the limit of {} entries", limits.max_entries),
                ));
            }
            let own = e.path_bytes().into_owned();
            return Ok(Some((name.unwrap_or(own), e)));
        }
        headers += 1;
        if headers > MAX_NAME_HEADERS {
            return Err(Rejection::new(
                Threat::TooManyEntries,
                format!("more than {MAX_NAME_HEADERS} long-name or pax headers before one entry"),
            ));
        }
        if name.is_some() {
            return Err(Rejection::new(Threat::Corrupt, "two long names for one entry"));
        }
        let size = e.header().size().map_err(|err| classify(err, "tar"))?;
        if size > MAX_NAME_RECORD {
            return Err(Rejection::new(
                Threat::TooLarge,
                format!("a long-name or pax record of {size} bytes (over {MAX_NAME_RECORD})"),
            ));
        }
        let mut data = Vec::with_capacity(size as usize);
        e.by_ref().take(size).read_to_end(&mut data).map_err(|err| classify(err, "tar"))?;
        if kind.is_gnu_longname() {
            while data.last() == Some(&0) {
                data.pop();
            }
            name = Some(data);
        } else {
            let mut path = None;
            for ext in tar::PaxExtensions::new(&data) {
                let ext = ext.map_err(|err| Rejection::new(Threat::Corrupt, format!("a pax record: {err}")))?;
                match ext.key_bytes() {
                    b"path" => path = Some(ext.value_bytes().to_vec()),
                    b"mtime" | b"atime" | b"ctime" | b"uid" | b"gid" | b"uname" | b"gname" | b"comment" => {}
                    other => {
                        return Err(Rejection::new(
                            Threat::Corrupt,
                            format!("pax record {:?} is not supported in a package", String::from_utf8_lossy(other)),
                        ))
                    }
                }
            }
            // Records without a path: the entry keeps its own name.
            name = path.filter(|p| !p.is_empty());
        }
    }
}

/// `Err(Ok(r))`: a rejection as is; `Err(Err(e))`: an I/O error to classify.
type EntryError = Result<Rejection, io::Error>;

fn fold(r: EntryError, classify: &dyn Fn(io::Error, &str) -> Rejection) -> Rejection {
    match r {
        Ok(r) => r,
        Err(e) => classify(e, "tar"),
    }
}

/// The whole of a small entry that must be `name`, a regular file of at most `max` bytes.
fn small_entry<R: Read>(
    path: &[u8],
    e: &mut tar::Entry<'_, R>,
    name: &str,
    max: u64,
    wrong: Threat,
) -> Result<Vec<u8>, EntryError> {
    if path != name.as_bytes() || !e.header().entry_type().is_file() {
        let shown = String::from_utf8_lossy(path);
        return Err(Ok(Rejection::new(
            wrong,
            format!(
                "entry {} must be {name} (a regular file), found {}",
                if name == MANIFEST { 1 } else { 2 },
                crate::values::shorten(&shown)
            ),
        )));
    }
    let size = e.header().size().map_err(Err)?;
    if size > max {
        return Err(Ok(Rejection::new(Threat::BadManifest, format!("{name} is {size} bytes, over {max}"))));
    }
    let mut v = Vec::with_capacity(size as usize);
    e.by_ref().take(max + 1).read_to_end(&mut v).map_err(Err)?;
    if v.len() as u64 != size {
        return Err(Ok(Rejection::new(Threat::Truncated, format!("{name} ends early"))));
    }
    Ok(v)
}

/// The key that signed `manifest` (trusted, with the `segment` role), or why not.
fn check_signature(manifest: &[u8], sig: &[u8], trust: &TrustStore) -> Result<String, Rejection> {
    let sig: PackageSignature = serde_json::from_slice(sig)
        .map_err(|e| Rejection::new(Threat::BadSignature, format!("manifest.sig is not a signature: {e}")))?;
    if sig.alg != "ed25519" {
        return Err(Rejection::new(
            Threat::BadSignature,
            format!("manifest.sig: algorithm {:?} is not ed25519", crate::values::shorten(&sig.alg)),
        ));
    }
    let shown = crate::values::shorten(&sig.key_id);
    let Some(entry) = trust.get(&sig.key_id) else {
        return Err(Rejection::new(Threat::UnknownKey, format!("key {shown:?} is not in the trust store")));
    };
    if !entry.roles.contains(&Role::Segment) {
        return Err(Rejection::new(
            Threat::KeyNotForSegments,
            format!("key {shown:?} is trusted, but not to sign segments (it lacks the segment role)"),
        ));
    }
    let key = trust
        .key_for(&sig.key_id, Role::Segment)
        .ok_or_else(|| Rejection::new(Threat::UnknownKey, format!("key {shown:?} is not a valid ed25519 key")))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&sig.value)
        .map_err(|_| Rejection::new(Threat::BadSignature, "manifest.sig: the value is not base64"))?;
    let bytes: [u8; 64] =
        raw.try_into().map_err(|_| Rejection::new(Threat::BadSignature, "manifest.sig: the value is not 64 bytes"))?;
    key.verify_strict(&signed_bytes(manifest), &ed25519_dalek::Signature::from_bytes(&bytes)).map_err(|_| {
        Rejection::new(Threat::BadSignature, format!("manifest.json does not match its signature by {shown:?}"))
    })?;
    Ok(sig.key_id)
}

fn create_staged(dir: &Path, path: &SafeRelPath) -> Result<std::fs::File, Rejection> {
    let target = path.under(dir);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Rejection::local(format!("staging {path}: {e}")))?;
    }
    // New files only: nothing in staging is replaced, and no link is followed.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .map_err(|e| Rejection::local(format!("staging {path}: {e}")))
}

fn entry_kind(t: tar::EntryType) -> &'static str {
    match t {
        tar::EntryType::Symlink => "symlink",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::Directory => "directory",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "special entry",
    }
}
