//! What the library asks of the file system: free space, and folders made durable (fsync).

use std::path::Path;

/// Bytes available to this user on the file system holding `path` (or its nearest existing parent).
pub fn free_bytes(path: &Path) -> u64 {
    let mut p = path;
    loop {
        if let Ok(s) = nix::sys::statvfs::statvfs(p) {
            // The field types differ between targets (32-bit ARM has 32-bit counts).
            #[allow(clippy::unnecessary_cast)]
            return (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64);
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return u64::MAX,
        }
    }
}

pub(super) fn sync_dir(p: &Path) -> std::io::Result<()> {
    std::fs::File::open(p)?.sync_all()
}

/// fsyncs every folder under (and including) `root` (the files were synced as written).
pub(super) fn sync_dirs(root: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(root)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_dirs(&e.path())?;
        }
    }
    sync_dir(root)
}
