//! On the appliance the data dir belongs to the service's user, and operators run the CLI with
//! `sudo`. Whatever a root CLI command creates there (the device keys on first use, the database
//! while the service is stopped, copied show files) is handed to the data dir's owner, or the
//! service could no longer read or replace it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// When running as root and `data_dir` belongs to another user: gives everything under it that
/// root owns to that user (and group). Symbolic links are changed themselves, never followed.
pub fn hand_over(data_dir: &Path) -> std::io::Result<usize> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(0);
    }
    let owner = std::fs::symlink_metadata(data_dir)?;
    if owner.uid() == 0 || !owner.is_dir() {
        return Ok(0);
    }
    let mut changed = 0;
    for p in walk(data_dir)? {
        let m = std::fs::symlink_metadata(&p)?;
        if m.uid() == 0 {
            std::os::unix::fs::lchown(&p, Some(owner.uid()), Some(owner.gid()))?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// `dir` and everything below it, without following symbolic links.
pub fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let is_dir = std::fs::symlink_metadata(&out[i]).map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            for e in std::fs::read_dir(&out[i])? {
                out.push(e?.path());
            }
        }
        i += 1;
    }
    Ok(out)
}
