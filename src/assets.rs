//! The files a show reads (a timeline's clips and images, an overlay image, a program's slate),
//! copied into the data dir when they are loaded, as segment packages are installed there: the
//! service then reads them from `<data_dir>/assets/<digest>/` whatever becomes of the folder they
//! came from (a home folder the service may not read, a USB stick pulled out, a file edited or
//! deleted afterwards).
//!
//! A folder is named by the SHA-256 of what it holds (every relative path and every file's own
//! digest), so loading the same files again copies nothing, and a folder, once in place, never
//! changes: it is built beside its final name and renamed into place whole. The CLI writes these
//! folders (it is the one that can read the operator's files); the daemon only reads them, and
//! at start removes the ones nothing stored refers to any more.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Folders younger than this are never swept: a CLI may have just made one and not yet stored
/// what refers to it.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: not a path inside the timeline's folder")]
    Unsafe { path: String },
    #[error("storing assets in {dir}: {source}")]
    Write { dir: String, source: std::io::Error },
}

/// Where the copies live.
pub fn assets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("assets")
}

/// Copies the files at `rels` (relative to `root`) into the data dir, keeping their relative
/// paths, and returns the folder they are in. A file that is missing, unreadable or not a regular
/// file is refused with its path, and nothing is stored.
pub fn import_tree(data_dir: &Path, root: &Path, rels: &[String]) -> Result<PathBuf, AssetError> {
    let (base, staging) = staging(data_dir)?;
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    for rel in rels {
        let rel_path = Path::new(rel);
        if rel.is_empty()
            || rel_path.is_absolute()
            || rel_path.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(AssetError::Unsafe { path: rel.clone() });
        }
        let to = staging.path().join(rel_path);
        if let Some(parent) = to.parent() {
            mkdir_all(staging.path(), parent)?;
        }
        digests.insert(rel.clone(), copy_hashing(&root.join(rel_path), &to)?);
    }
    let mut tree = Sha256::new();
    for (rel, digest) in &digests {
        tree.update(rel.as_bytes());
        tree.update([0]);
        tree.update(digest.as_bytes());
        tree.update(*b"\n");
    }
    settle(staging, &base.join(hex::encode(tree.finalize())))
}

/// Copies one file into the data dir (`<digest>/<its name>`) and returns the copy's path.
pub fn import_file(data_dir: &Path, path: &Path) -> Result<PathBuf, AssetError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| AssetError::NotAFile { path: path.display().to_string() })?
        .to_string();
    let (base, staging) = staging(data_dir)?;
    let digest = copy_hashing(path, &staging.path().join(&name))?;
    let folder = settle(staging, &base.join(format!("f-{digest}")))?;
    Ok(folder.join(name))
}

/// Removes the asset folders nothing refers to (`keep`: folders, or files inside them) that are
/// older than [`SWEEP_GRACE`], and leftovers of interrupted imports. Returns how many went.
pub fn sweep(data_dir: &Path, keep: &[PathBuf]) -> usize {
    let base = assets_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&base) else { return 0 };
    let kept: HashSet<PathBuf> = keep
        .iter()
        .filter_map(|p| p.strip_prefix(&base).ok())
        .filter_map(|rel| rel.components().next())
        .map(|c| base.join(c.as_os_str()))
        .collect();
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > SWEEP_GRACE);
        if !old || kept.contains(&path) || e.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The assets folder, and a new folder in it to build an import in (removed on drop).
fn staging(data_dir: &Path) -> Result<(PathBuf, tempfile::TempDir), AssetError> {
    let base = assets_dir(data_dir);
    mkdir(&base)?;
    let staging = tempfile::Builder::new()
        .prefix(".import-")
        .tempdir_in(&base)
        .map_err(|source| AssetError::Write { dir: base.display().to_string(), source })?;
    Ok((base, staging))
}

/// Copies `from` to `to` (mode 0644) and returns its SHA-256 (hex).
fn copy_hashing(from: &Path, to: &Path) -> Result<String, AssetError> {
    let read_err = |source| AssetError::Read { path: from.display().to_string(), source };
    let mut src = std::fs::File::open(from).map_err(read_err)?;
    if !src.metadata().map_err(read_err)?.is_file() {
        return Err(AssetError::NotAFile { path: from.display().to_string() });
    }
    let write_err = |source| AssetError::Write { dir: to.display().to_string(), source };
    let mut dst = std::fs::File::create(to).map_err(write_err)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(write_err)?;
    }
    dst.sync_all().map_err(write_err)?;
    set_mode(to, 0o644)?;
    Ok(hex::encode(hash.finalize()))
}

/// Puts the staged folder in place as `dest` (or drops it when `dest` is already there: same
/// name, same content) and returns `dest`. (A root CLI hands it to the data dir's owner on exit.)
fn settle(staging: tempfile::TempDir, dest: &Path) -> Result<PathBuf, AssetError> {
    if dest.is_dir() {
        return Ok(dest.to_path_buf());
    }
    let write_err = |source| AssetError::Write { dir: dest.display().to_string(), source };
    set_mode(staging.path(), 0o755)?;
    let staged = staging.keep();
    match std::fs::rename(&staged, dest) {
        Ok(()) => Ok(dest.to_path_buf()),
        // Another import of the same files got there first.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&staged);
            Ok(dest.to_path_buf())
        }
        Err(source) => {
            let _ = std::fs::remove_dir_all(&staged);
            Err(write_err(source))
        }
    }
}

fn mkdir(dir: &Path) -> Result<(), AssetError> {
    std::fs::create_dir_all(dir).map_err(|source| AssetError::Write { dir: dir.display().to_string(), source })
}

/// `create_dir_all` for `dir` under `top`, each new folder 0755.
fn mkdir_all(top: &Path, dir: &Path) -> Result<(), AssetError> {
    mkdir(dir)?;
    let mut d = dir;
    while d != top {
        set_mode(d, 0o755)?;
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), AssetError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| AssetError::Write { dir: path.display().to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_files_make_the_same_folder_and_a_change_a_new_one() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("img")).unwrap();
        std::fs::write(src.path().join("img/logo.png"), b"logo").unwrap();
        std::fs::write(src.path().join("clip.mp4"), b"clip").unwrap();
        let rels = ["img/logo.png".to_string(), "clip.mp4".to_string()];
        let a = import_tree(data.path(), src.path(), &rels).unwrap();
        assert!(a.starts_with(assets_dir(data.path())));
        assert_eq!(std::fs::read(a.join("img/logo.png")).unwrap(), b"logo");
        let b = import_tree(data.path(), src.path(), &rels).unwrap();
        assert_eq!(a, b, "same files, same folder");
        std::fs::write(src.path().join("clip.mp4"), b"clip v2").unwrap();
        let c = import_tree(data.path(), src.path(), &rels).unwrap();
        assert_ne!(a, c, "a changed file is a new folder");
        assert_eq!(std::fs::read(a.join("clip.mp4")).unwrap(), b"clip", "the first folder is unchanged");
        let leftovers: Vec<_> = std::fs::read_dir(assets_dir(data.path()))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".import-"))
            .collect();
        assert!(leftovers.is_empty(), "no staging folder is left behind");
    }

    #[test]
    fn a_missing_or_unsafe_file_is_refused_with_its_path_and_nothing_is_stored() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("ok.png"), b"x").unwrap();
        let e = import_tree(data.path(), src.path(), &["ok.png".into(), "gone.png".into()]).unwrap_err();
        assert!(e.to_string().contains("gone.png"), "{e}");
        let e = import_tree(data.path(), src.path(), &["../etc/passwd".into()]).unwrap_err();
        assert!(matches!(e, AssetError::Unsafe { .. }), "{e}");
        std::fs::create_dir(src.path().join("dir.png")).unwrap();
        let e = import_file(data.path(), &src.path().join("dir.png")).unwrap_err();
        assert!(matches!(e, AssetError::NotAFile { .. }), "{e}");
        let stored = std::fs::read_dir(assets_dir(data.path())).unwrap().count();
        assert_eq!(stored, 0, "nothing stored");
    }

    #[test]
    fn sweep_keeps_what_is_referred_to_and_anything_recent() {
        let src = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.png"), b"a").unwrap();
        std::fs::write(src.path().join("b.png"), b"b").unwrap();
        let kept = import_file(data.path(), &src.path().join("a.png")).unwrap();
        let dropped = import_file(data.path(), &src.path().join("b.png")).unwrap();
        assert_eq!(sweep(data.path(), std::slice::from_ref(&kept)), 0, "both are recent");
        let old = std::time::SystemTime::now() - SWEEP_GRACE - Duration::from_secs(60);
        for p in [kept.parent().unwrap(), dropped.parent().unwrap()] {
            std::fs::File::open(p).unwrap().set_modified(old).unwrap();
        }
        assert_eq!(sweep(data.path(), std::slice::from_ref(&kept)), 1);
        assert!(kept.is_file() && !dropped.exists());
    }
}
