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
