//! Downloading a package for `TIMELINE_LOAD`: HTTPS only (rustls, plus a private
//! CA if configured), with a known size and SHA-256. Space is checked before the first byte; the
//! bytes go to `<sha256>.part`, resumed with an HTTP Range request after a dropped connection when
//! the server allows it, and retried with backoff; the file is hashed and renamed to
//! `<sha256>.vseg` only if it is exactly what was announced.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::manifest::Sha256Hex;
use super::{Rejection, Threat};

/// What the cloud announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub url: url::Url,
    pub sha256: Sha256Hex,
    pub size: u64,
}

/// Attempts before a download is given up (each resumes where the last stopped).
pub const ATTEMPTS: u32 = 6;

/// Why the HTTPS client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{}: {source}", path.display())]
    CaFile { path: std::path::PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    CaCertificates { path: std::path::PathBuf, source: reqwest::Error },
    #[error("{0}")]
    Build(#[from] reqwest::Error),
}

/// An HTTPS client trusting the public roots and `ca_file` (PEM) if given.
pub fn client(ca_file: Option<&Path>) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .https_only(true)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(3));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|source| ClientError::CaFile { path: ca.to_path_buf(), source })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|source| ClientError::CaCertificates { path: ca.to_path_buf(), source })?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

/// Downloads `w` into `dir`, reporting bytes received on `progress`. Returns the finished file.
pub async fn fetch(
    client: &reqwest::Client,
    w: &Wanted,
    dir: &Path,
    progress: &watch::Sender<u64>,
) -> Result<PathBuf, Rejection> {
    std::fs::create_dir_all(dir).map_err(|e| Rejection::local(format!("{}: {e}", dir.display())))?;
    // Both names are the announced SHA-256, a checked `Sha256Hex` (64 hex digits): no name from
    // the server or the URL reaches the file system, and `dir` is the agent's own.
    let done = dir.join(format!("{}.vseg", w.sha256.as_str()));
    let part = dir.join(format!("{}.part", w.sha256.as_str()));
    if done.exists() && hash_file(&done).await? == w.sha256 {
        let _ = progress.send(w.size);
        return Ok(done);
    }
    // Room first: downloads abandoned earlier (another package, a reboot mid-download) go.
    sweep(dir, PART_MAX_AGE, w.size.saturating_mul(2).saturating_add(super::library::SPACE_MARGIN), Some(&part));
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let free = super::library::free_bytes(dir);
    let need = w.size.saturating_sub(have).saturating_mul(2).saturating_add(super::library::SPACE_MARGIN);
    if free < need {
        return Err(Rejection::new(
            Threat::NoSpace,
            format!("{free} bytes free; a {}-byte package needs {need} (twice its size and a margin)", w.size),
        ));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match fetch_once(client, w, &part, progress).await {
            Ok(()) => break,
            Err(Fail::Final(r)) => {
                let _ = std::fs::remove_file(&part);
                return Err(r);
            }
            Err(Fail::Retry(e)) if attempt < ATTEMPTS => {
                let wait = Duration::from_secs(1 << (attempt - 1).min(4));
                tracing::warn!("download of {}: {e}; resuming in {} s", w.url, wait.as_secs());
                tokio::time::sleep(wait).await;
            }
            Err(Fail::Retry(e)) => {
                return Err(Rejection::local(format!("download of {} failed after {ATTEMPTS} attempts: {e}", w.url)))
            }
        }
    }
    let got = hash_file(&part).await?;
    if got != w.sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(Rejection::new(
            Threat::ChecksumMismatch,
            format!("the downloaded package's SHA-256 is {}, not the announced {}", got.as_str(), w.sha256.as_str()),
        ));
    }
    std::fs::rename(&part, &done).map_err(|e| Rejection::local(format!("{}: {e}", done.display())))?;
    Ok(done)
}

/// `.part` files older than this are abandoned downloads: a download resumes within minutes or is
/// given up, so a day-old one will never be finished.
pub const PART_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Below this much free space on the data disk, idle `.part` files are removed.
pub const LOW_SPACE: u64 = 4 * super::library::SPACE_MARGIN;

/// A `.part` file written to within this long may belong to a download in progress.
const ACTIVE: Duration = Duration::from_secs(120);

/// Removes abandoned downloads from `dir`: every `.part` file not changed for `max_age`, and, when
/// fewer than `low_space` bytes are free, every idle `.part` file (oldest first) until there is
/// room again. `keep` (the download about to resume) and files written to in the last two minutes
/// are never removed for space. Returns what it removed. Only regular files with the names the
/// agent writes (`<64 hex>.part`) are touched; links are never followed.
pub fn sweep(dir: &Path, max_age: Duration, low_space: u64, keep: Option<&Path>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let now = std::time::SystemTime::now();
    let mut parts: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            e.file_name().to_str().and_then(|n| n.strip_suffix(".part")).is_some_and(|h| Sha256Hex::new(h).is_ok())
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| keep != Some(e.path().as_path()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    parts.sort();
    let mut removed = Vec::new();
    for (modified, path) in parts {
        let idle = now.duration_since(modified).unwrap_or_default();
        let stale = idle >= max_age;
        let short = idle >= ACTIVE && super::library::free_bytes(dir) < low_space;
        if (stale || short) && std::fs::remove_file(&path).is_ok() {
            tracing::info!(
                file = %path.display(),
                "abandoned download removed ({})",
                if stale { "not resumed for too long" } else { "the disk is low on space" }
            );
            removed.push(path);
        }
    }
    removed
}

/// Sweeps `dir` every ten minutes until `stop` (see [`sweep`]).
pub async fn housekeeping(dir: PathBuf, stop: tokio_util::sync::CancellationToken) {
    loop {
        let d = dir.clone();
        let _ = tokio::task::spawn_blocking(move || sweep(&d, PART_MAX_AGE, LOW_SPACE, None)).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    }
}

enum Fail {
    /// Worth another attempt (a dropped connection, a server error).
    Retry(String),
    Final(Rejection),
}

async fn fetch_once(
    client: &reqwest::Client,
    w: &Wanted,
    part: &Path,
    progress: &watch::Sender<u64>,
) -> Result<(), Fail> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if have == w.size {
        return Ok(());
    }
    if have > w.size {
        let _ = std::fs::remove_file(part);
    }
    let have = have.min(w.size);
    let mut req = client.get(w.url.clone());
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(|e| Fail::Retry(e.without_url().to_string()))?;
    let status = resp.status();
    let append = match status.as_u16() {
        206 if have > 0 => true,
        200 => false,
        416 if have > 0 => {
            // The server does not take our range: start over.
            let _ = std::fs::remove_file(part);
            return Err(Fail::Retry("the server refused the range; starting over".into()));
        }
        s if (500..600).contains(&s) || s == 429 || s == 408 => return Err(Fail::Retry(format!("HTTP {status}"))),
        _ => {
            return Err(Fail::Final(Rejection::new(
                Threat::Corrupt,
                format!("the package server answered HTTP {status}"),
            )))
        }
    };
    // O_NOFOLLOW: a link at the `.part` name (which only the agent writes there) is an error,
    // never a way to write elsewhere.
    let mut file = std::fs::OpenOptions::new()
        .custom_flags(nix::libc::O_NOFOLLOW)
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| Fail::Final(Rejection::local(format!("{}: {e}", part.display()))))?;
    let mut n = if append { have } else { 0 };
    let _ = progress.send(n);
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let _ = file.sync_data();
                return Err(Fail::Retry(format!(
                    "the connection dropped at {n} of {} bytes ({})",
                    w.size,
                    e.without_url()
                )));
            }
        };
        n += chunk.len() as u64;
        if n > w.size {
            return Err(Fail::Final(Rejection::new(
                Threat::TooLarge,
                format!("the server sent more than the announced {} bytes", w.size),
            )));
        }
        file.write_all(&chunk).map_err(|e| Fail::Final(Rejection::local(format!("{}: {e}", part.display()))))?;
        let _ = progress.send(n);
    }
    file.sync_all().map_err(|e| Fail::Final(Rejection::local(format!("{}: {e}", part.display()))))?;
    if n < w.size {
        return Err(Fail::Retry(format!("the connection ended at {n} of {} bytes", w.size)));
    }
    Ok(())
}

async fn hash_file(p: &Path) -> Result<Sha256Hex, Rejection> {
    let p = p.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Sha256Hex, Rejection> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&p)
            .map_err(|e| Rejection::local(format!("{}: {e}", p.display())))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = f.read(&mut buf).map_err(|e| Rejection::local(format!("{}: {e}", p.display())))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
        Ok(Sha256Hex::of(&h.finalize()))
    })
    .await
    .map_err(|e| Rejection::local(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn part(dir: &Path, c: char, age: Duration) -> PathBuf {
        let p = dir.join(format!("{}.part", c.to_string().repeat(64)));
        let f = std::fs::File::create(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        p
    }

    #[test]
    fn abandoned_downloads_go_by_age_and_for_space_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = part(d, 'a', PART_MAX_AGE + Duration::from_secs(60));
        let idle = part(d, 'b', Duration::from_secs(600));
        let active = part(d, 'c', Duration::ZERO);
        let resumed = part(d, 'd', Duration::from_secs(600));
        let other = d.join("notes.part");
        std::fs::write(&other, "x").unwrap();
        let outside = d.join("outside");
        std::fs::write(&outside, "keep me").unwrap();
        let link = d.join(format!("{}.part", "e".repeat(64)));
        std::os::unix::fs::symlink(&outside, &link).unwrap();

        assert_eq!(sweep(d, PART_MAX_AGE, 0, None), vec![old.clone()], "plenty of space: only the day-old one");
        assert!(idle.exists() && active.exists());

        let mut gone = sweep(d, PART_MAX_AGE, u64::MAX, Some(&resumed));
        gone.sort();
        assert_eq!(gone, vec![idle.clone()], "low on space: idle parts go, the active and the resumed one stay");
        assert!(active.exists() && resumed.exists() && other.exists());
        assert!(link.symlink_metadata().is_ok() && outside.exists(), "a link is not followed nor removed");
    }
}
