//! A drop folder opened once, never through a link, and every name in it addressed through that
//! handle.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

/// A drop folder, opened once and never through a link; names in it are single path components
/// addressed through its descriptor (`openat`, `fstatat`, `renameat`, `unlinkat`), so replacing
/// the folder or a name in it by a link afterwards changes nothing.
pub(super) struct Folder {
    pub(super) path: PathBuf,
    pub(super) fd: OwnedFd,
}

/// What a name in a drop folder is (its own type: a link is a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Link,
    Other,
}

impl Folder {
    /// Opens `path`; a folder that is itself a link is refused (`ELOOP`).
    pub(super) fn open(path: &Path) -> std::io::Result<Folder> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty())?;
        Ok(Folder { path: path.to_path_buf(), fd })
    }

    /// `name` as a path, for messages and events.
    pub(super) fn show(&self, name: &OsStr) -> String {
        self.path.join(name).display().to_string()
    }

    /// The names in the folder (`.` and `..` left out).
    pub(super) fn names(&self) -> std::io::Result<Vec<OsString>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = nix::dir::Dir::openat(&self.fd, ".", flags, Mode::empty())?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let name = e?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                out.push(OsString::from(std::ffi::OsStr::from_bytes(&name)));
            }
        }
        Ok(out)
    }

    /// What `name` is, its size and mtime, without following a link.
    pub(super) fn look(&self, name: &OsStr) -> std::io::Result<(Kind, u64, SystemTime)> {
        one_component(name)?;
        let st = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        let kind = if fmt == SFlag::S_IFREG {
            Kind::File
        } else if fmt == SFlag::S_IFLNK {
            Kind::Link
        } else {
            Kind::Other
        };
        let mtime = SystemTime::UNIX_EPOCH
            + Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec.clamp(0, 999_999_999) as u32);
        Ok((kind, st.st_size.max(0) as u64, mtime))
    }

    /// `name` opened for reading: never through a link (`O_NOFOLLOW`), never blocking on a FIFO
    /// (`O_NONBLOCK`), and only if it is a regular file once open.
    pub(super) fn open_package(&self, name: &OsStr) -> std::io::Result<std::fs::File> {
        one_component(name)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let f = std::fs::File::from(nix::fcntl::openat(&self.fd, name, flags, Mode::empty())?);
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(f)
    }

    /// A new file `name`: created here or not at all (`O_EXCL`: an existing name, a link
    /// included, is an error, and nothing is opened through it).
    pub(super) fn create_new(&self, name: &OsStr) -> std::io::Result<std::fs::File> {
        one_component(name)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(0o644))?;
        Ok(std::fs::File::from(fd))
    }

    /// Renames `from` to `to` inside the folder. A link at `to` is replaced itself: rename never
    /// follows the link at its target name, so nothing it points to is touched.
    pub(super) fn rename(&self, from: &OsStr, to: &OsStr) -> std::io::Result<()> {
        one_component(from)?;
        one_component(to)?;
        Ok(nix::fcntl::renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Removes the name `name` (a link itself, never what it points to; never a folder).
    pub(super) fn remove(&self, name: &OsStr) -> std::io::Result<()> {
        one_component(name)?;
        Ok(nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?)
    }
}

/// Names given to [`Folder`] come from its own listing plus fixed suffixes; this makes sure none
/// can reach another folder.
pub(super) fn one_component(name: &OsStr) -> std::io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name in the folder"));
    }
    Ok(())
}
