//! The configuration, the service's user, its data dir, and the files the configuration names:
//! who owns them, who may read them, and the `chown`/`chmod` that fixes them.
//!
//! The rule the agent's installer follows: the configuration is `root:vistter` 0640, the data dir
//! belongs to `vistter` (0700), and a file that holds a secret (a private key, a password in a URL)
//! is readable by the service and by no one else. What a user may do with a file is decided the
//! kernel's way, in [`may`]: owner bits for its owner, group bits for its groups, the rest for the
//! others; root may do anything; every folder on the way must let the user through (`x`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use super::Check;
use crate::config::{Config, ConfigError};

/// The name the systemd unit's `User=` has (`deploy/systemd/vistter-agent.service`).
const SERVICE_USER: &str = "vistter";
/// At most this many entries of the data dir are looked at (a large segment library).
const MAX_WALK: usize = 10_000;

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// A user as the kernel sees it when it checks a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    /// The primary group and the supplementary ones.
    pub gids: Vec<u32>,
}

/// The user the service runs as.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    pub name: String,
    /// Its primary group's name (what `chgrp` is given).
    pub group: String,
    pub who: Who,
}

impl ServiceUser {
    /// `--service-user`, else `vistter` if it exists, else the current user; with the line that
    /// says which. A `--service-user` that does not exist fails, and the current user stands in.
    pub fn resolve(flag: Option<&str>) -> (ServiceUser, Check) {
        let current = || {
            User::from_uid(Uid::effective()).ok().flatten().map(ServiceUser::of).unwrap_or_else(|| {
                let uid = Uid::effective().as_raw();
                let gid = Gid::effective().as_raw();
                ServiceUser { name: uid.to_string(), group: gid.to_string(), who: Who { uid, gids: vec![gid] } }
            })
        };
        match flag {
            Some(name) => match User::from_name(name) {
                Ok(Some(u)) => {
                    let s = ServiceUser::of(u);
                    let line = Check::ok("service user", format!("{} (--service-user)", s.describe()));
                    (s, line)
                }
                _ => {
                    let s = current();
                    let line = Check::fail(
                        "service user",
                        format!("there is no user {name:?}; the checks below use the current user {}", s.name),
                        "give the user the service runs as (systemctl show -p User vistter-agent)",
                    );
                    (s, line)
                }
            },
            None => match User::from_name(SERVICE_USER) {
                Ok(Some(u)) => {
                    let s = ServiceUser::of(u);
                    let line = Check::ok("service user", format!("{} (the systemd unit's user)", s.describe()));
                    (s, line)
                }
                _ => {
                    let s = current();
                    let line = Check::ok(
                        "service user",
                        format!(
                            "{} (there is no {SERVICE_USER} user: the agent runs as whoever starts it)",
                            s.describe()
                        ),
                    );
                    (s, line)
                }
            },
        }
    }

    fn of(u: User) -> ServiceUser {
        let group = Group::from_gid(u.gid).ok().flatten().map_or_else(|| u.gid.to_string(), |g| g.name);
        let mut gids = vec![u.gid.as_raw()];
        if let Ok(name) = std::ffi::CString::new(u.name.clone()) {
            if let Ok(all) = nix::unistd::getgrouplist(&name, u.gid) {
                gids.extend(all.into_iter().map(Gid::as_raw).filter(|g| *g != u.gid.as_raw()));
            }
        }
        ServiceUser { name: u.name, group, who: Who { uid: u.uid.as_raw(), gids } }
    }

    fn describe(&self) -> String {
        format!("{} (uid {}, group {})", self.name, self.who.uid, self.group)
    }

    fn is_root(&self) -> bool {
        self.who.uid == 0
    }
}

/// Whether `who` may `want` (`R`, `W`, `X`, or'ed) a file with these `mode`, `uid` and `gid`.
#[must_use]
pub fn may(mode: u32, uid: u32, gid: u32, who: &Who, want: u32) -> bool {
    if who.uid == 0 {
        return true;
    }
    let bits = if who.uid == uid {
        mode >> 6
    } else if who.gids.contains(&gid) {
        mode >> 3
    } else {
        mode
    } & 0o7;
    bits & want == want
}

/// The first folder above `path` that `who` may not pass through, if any (`Err`: it cannot be
/// looked at by whoever runs doctor).
fn blocked_at(path: &Path, who: &Who) -> std::io::Result<Option<PathBuf>> {
    let mut blocked = None;
    for dir in path.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
        let m = std::fs::metadata(dir)?;
        if !may(m.mode(), m.uid(), m.gid(), who, X) {
            blocked = Some(dir.to_path_buf());
        }
    }
    Ok(blocked)
}

fn user_name(uid: u32) -> String {
    User::from_uid(Uid::from_raw(uid)).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name)
}

fn group_name(gid: u32) -> String {
    Group::from_gid(Gid::from_raw(gid)).ok().flatten().map_or_else(|| gid.to_string(), |g| g.name)
}

fn owner_mode(m: &std::fs::Metadata) -> String {
    format!("owner {}:{}, mode {:04o}", user_name(m.uid()), group_name(m.gid()), m.mode() & 0o7777)
}

/// `sudo ` unless the person running doctor owns the file (and is not root already running it
/// through sudo, where the fix is typed again with sudo).
fn sudo(owner: u32) -> &'static str {
    let me = Uid::effective().as_raw();
    if me != 0 && me == owner {
        ""
    } else {
        "sudo "
    }
}

fn cannot_look(check: &str, path: &Path, e: &std::io::Error) -> Check {
    Check::warn(check, format!("cannot look at {} ({e})", path.display()), "run it as root: sudo vistter-agent doctor")
}

/// Whether the configuration loaded.
pub fn config_valid(file: Option<&Path>, loaded: &Result<Config, ConfigError>) -> Check {
    let source = match file {
        Some(f) => f.display().to_string(),
        None => "no file (built-in defaults and VISTTER_* variables)".into(),
    };
    match loaded {
        Ok(_) => Check::ok("config", format!("{source}: valid")),
        Err(e) => {
            let unreadable = file
                .and_then(|f| std::fs::File::open(f).err())
                .filter(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
            let fix = match e {
                _ if unreadable.is_some() => "run it as root: sudo vistter-agent doctor",
                ConfigError::Missing(_) => "give the right --config (or VISTTER_CONFIG), or create the file",
                ConfigError::Invalid(_) => "correct the key it names (sudo vistter-agent check-config shows it)",
            };
            Check::fail(
                "config",
                format!(
                    "{source}: {}; the checks that need it (data dir, files, daemon, cameras, cloud) were skipped",
                    crate::logging::mask_url_passwords(&e.to_string())
                ),
                fix,
            )
        }
    }
}

/// The configuration file's owner and mode. It holds no secret by design; one that does (a
/// password in a URL) must not be readable by every user.
pub fn config_file(path: &Path, svc: &ServiceUser) -> Check {
    let secret = match std::fs::read_to_string(path) {
        Ok(text) => crate::logging::mask_url_passwords(&text) != text,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return cannot_look("config file", path, &e),
        Err(_) => false,
    };
    let what = if secret { Some("holds a password (in a URL)") } else { None };
    file_check("config file", path, what, true, None, svc)
}

/// What a file needs: readable by the service; never writable by every user; with a secret
/// (`secret` says which), readable by no one else. A file in the data dir (`data_dir`) belongs to
/// the service, and its fixes say so.
fn file_check(
    check: &str,
    path: &Path,
    secret: Option<&str>,
    must_exist: bool,
    data_dir: Option<&Path>,
    svc: &ServiceUser,
) -> Check {
    let shown = path.display();
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if must_exist {
                Check::fail(
                    check,
                    format!("{shown} does not exist"),
                    "put the file there, or correct its path in the configuration",
                )
            } else {
                Check::ok(check, format!("{shown}: not made yet (the agent makes it when it first needs it)"))
            };
        }
        Err(e) => return cannot_look(check, path, &e),
    };
    if !m.is_file() {
        return Check::fail(check, format!("{shown} is not a regular file"), "correct its path in the configuration");
    }
    let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
    let s = sudo(uid);
    let tight = |mode: &str| {
        if data_dir.is_some() && !svc.is_root() && uid != svc.who.uid {
            format!("{s}chown {}: {shown} && {s}chmod 0600 {shown}", svc.name)
        } else if svc.is_root() || uid == svc.who.uid {
            format!("{s}chmod 0600 {shown}")
        } else {
            format!("{s}chgrp {} {shown} && {s}chmod {mode} {shown}", svc.group)
        }
    };
    if mode & 0o002 != 0 {
        return Check::fail(
            check,
            format!("{shown} can be changed by every user ({})", owner_mode(&m)),
            format!("{s}chmod o-w {shown}"),
        );
    }
    if let Some(why) = secret {
        if mode & 0o004 != 0 {
            return Check::fail(
                check,
                format!("{shown} {why} and is readable by every user ({})", owner_mode(&m)),
                tight("0640"),
            );
        }
    }
    match blocked_at(path, &svc.who) {
        Ok(Some(dir)) => {
            let fix = match data_dir {
                Some(dd) if dir.starts_with(dd) => format!("{s}chown -R {}: {}", svc.name, dd.display()),
                _ => format!("{s}chgrp {} {} && {s}chmod g+x {}", svc.group, dir.display(), dir.display()),
            };
            return Check::fail(
                check,
                format!(
                    "the service's user {} cannot reach {shown}: the folder {} is closed to it",
                    svc.name,
                    dir.display()
                ),
                fix,
            );
        }
        Ok(None) => {}
        Err(e) => return cannot_look(check, path, &e),
    }
    if !may(mode, uid, gid, &svc.who, R) {
        let fix = match (data_dir, secret) {
            (Some(_), _) => format!("{s}chown {}: {shown} && {s}chmod u+r {shown}", svc.name),
            (None, Some(_)) => tight("0640"),
            (None, None) => format!("{s}chgrp {} {shown} && {s}chmod g+r {shown}", svc.group),
        };
        return Check::fail(
            check,
            format!("the service's user {} cannot read {shown} ({})", svc.name, owner_mode(&m)),
            fix,
        );
    }
    // Group-readable is how the service reads a secret it does not own (`root:vistter` 0640);
    // any other group is people who have no business with it.
    if let Some(why) = secret {
        if mode & 0o040 != 0 && !svc.who.gids.contains(&gid) {
            return Check::warn(
                check,
                format!(
                    "{shown} {why} and is readable by the group {}, which is not the service's ({})",
                    group_name(gid),
                    owner_mode(&m)
                ),
                tight("0640"),
            );
        }
    }
    Check::ok(check, format!("{shown} ({})", owner_mode(&m)))
}

/// The data dir: there, owned and writable by the service, closed to others; and everything in
/// it owned by the service (a command run as root before the service ever started makes files
/// the service then cannot open).
pub fn data_dir(dir: &Path, svc: &ServiceUser) -> Vec<Check> {
    let shown = dir.display();
    let m = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::warn(
                "data dir",
                format!("{shown} does not exist yet (the daemon makes it when it starts)"),
                "start the daemon: sudo systemctl enable --now vistter-agent",
            )]
        }
        Err(e) => return vec![cannot_look("data dir", dir, &e)],
    };
    let s = sudo(m.uid());
    let chown = format!("{s}chown -R {}: {shown}", svc.name);
    let line = if !m.is_dir() {
        Check::fail("data dir", format!("{shown} is not a folder"), "set data_dir to a folder")
    } else if !svc.is_root() && m.uid() != svc.who.uid {
        Check::fail(
            "data dir",
            format!("{shown} is owned by {}, the service runs as {}", user_name(m.uid()), svc.name),
            chown.clone(),
        )
    } else if !may(m.mode(), m.uid(), m.gid(), &svc.who, R | W | X) {
        Check::fail(
            "data dir",
            format!("the service's user {} cannot write {shown} ({})", svc.name, owner_mode(&m)),
            format!("{s}chmod 0700 {shown}"),
        )
    } else if let Ok(Some(up)) = blocked_at(dir, &svc.who) {
        Check::fail(
            "data dir",
            format!(
                "the service's user {} cannot reach {shown}: the folder {} is closed to it",
                svc.name,
                up.display()
            ),
            format!("{s}chmod o+x {}", up.display()),
        )
    } else if m.mode() & 0o077 != 0 {
        Check::warn(
            "data dir",
            format!("{shown} is open to other users ({}); it holds the device's keys and the database", owner_mode(&m)),
            format!("{s}chmod 0700 {shown}"),
        )
    } else {
        Check::ok("data dir", format!("{shown} ({})", owner_mode(&m)))
    };
    if !m.is_dir() {
        return vec![line];
    }
    vec![line, contents(dir, svc, &chown)]
}

/// Files in the data dir that the service does not own.
fn contents(dir: &Path, svc: &ServiceUser, chown: &str) -> Check {
    let mut todo = vec![dir.to_path_buf()];
    let (mut seen, mut foreign, mut unreadable) = (0usize, Vec::new(), None);
    'walk: while let Some(d) = todo.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                unreadable.get_or_insert((d.clone(), e));
                continue;
            }
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                break 'walk;
            }
            let Ok(m) = e.path().symlink_metadata() else { continue };
            if m.uid() != svc.who.uid {
                foreign.push((e.path(), m.uid()));
            }
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    if let Some((d, e)) = unreadable {
        return cannot_look("data dir contents", &d, &e);
    }
    if svc.is_root() || foreign.is_empty() {
        return Check::ok("data dir contents", format!("{} file(s), owned by {}", seen.min(MAX_WALK), svc.name));
    }
    foreign.sort();
    let (first, uid) = &foreign[0];
    Check::fail(
        "data dir contents",
        format!(
            "{} file(s) are not owned by the service's user {} (e.g. {}, owned by {}): it cannot change them",
            foreign.len(),
            svc.name,
            first.strip_prefix(dir).unwrap_or(first).display(),
            user_name(*uid)
        ),
        chown.to_string(),
    )
}

/// The device's private keys, the trust store, and the TLS files of the cloud links and of
/// downloads, each checked as [`file_check`] says.
pub fn key_files(cfg: &Config, svc: &ServiceUser) -> Vec<Check> {
    let key = Some("is a private key");
    let mut out = Vec::new();
    let dd = &cfg.data_dir;
    out.push(file_check("device key", &dd.join("device.key"), key, false, Some(dd), svc));
    out.push(file_check("signing key", &dd.join(crate::control::keys::SIGNING_FILE), key, false, Some(dd), svc));
    out.push(file_check("sealing key", &dd.join(crate::control::keys::SEALING_FILE), key, false, Some(dd), svc));
    let trust = cfg.trust_store_path();
    let home = trust.starts_with(dd).then_some(dd.as_path());
    let mut t = file_check("trust store", &trust, None, false, home, svc);
    if t.status == super::Status::Ok && trust.exists() {
        match crate::trust::TrustStore::load(&trust) {
            Ok(store) => t.detail.push_str(&format!("; {} trusted key(s)", store.keys.len())),
            Err(e) => {
                t = Check::fail(
                    "trust store",
                    e.to_string(),
                    "restore it, or remove it and add the keys again (trust add)",
                )
            }
        }
    }
    out.push(t);
    let mut tls = |link: &str, ca: &Path, cert: &Path, key_file: &Path| {
        out.push(file_check(&format!("{link} ca_file"), ca, None, true, None, svc));
        out.push(file_check(&format!("{link} cert_file"), cert, None, true, None, svc));
        out.push(file_check(&format!("{link} key_file"), key_file, key, true, None, svc));
    };
    if let Some(m) = &cfg.control.mqtt {
        if m.url.starts_with("mqtts://") {
            tls("control.mqtt", &m.ca_file, &m.cert_file, &m.key_file);
        }
    }
    if let Some(w) = &cfg.control.ws {
        tls("control.ws", &w.ca_file, &w.cert_file, &w.key_file);
    }
    if let Some(ca) = &cfg.segments.download_ca_file {
        out.push(file_check("segments.download_ca_file", ca, None, true, None, svc));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32, gids: &[u32]) -> Who {
        Who { uid, gids: gids.to_vec() }
    }

    #[test]
    fn permissions_are_decided_as_the_kernel_does() {
        let vistter = who(998, &[998, 44]);
        // 0640 root:vistter: the service reads through its group, others cannot.
        assert!(may(0o640, 0, 998, &vistter, R));
        assert!(!may(0o640, 0, 998, &vistter, W));
        assert!(!may(0o640, 0, 0, &who(1000, &[1000]), R));
        // A supplementary group counts; the owner class wins even when it grants less.
        assert!(may(0o060, 0, 44, &vistter, R | W));
        assert!(!may(0o077, 998, 998, &vistter, R), "owner bits apply to the owner, not the group's");
        // Root may do anything.
        assert!(may(0o000, 5, 5, &who(0, &[0]), R | W | X));
        assert!(may(0o701, 0, 0, &vistter, X) && !may(0o700, 0, 0, &vistter, X));
    }

    #[test]
    fn a_secret_readable_by_all_fails_with_the_chmod_that_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(&f, "key").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let me = ServiceUser::resolve(None).0;
        let me = ServiceUser { who: Who { uid: std::fs::metadata(&f).unwrap().uid(), ..me.who.clone() }, ..me };
        let c = file_check("k", &f, Some("is a private key"), true, None, &me);
        assert_eq!(c.status, super::super::Status::Fail, "{c:?}");
        assert!(c.fix.as_deref().unwrap().contains(&format!("chmod 0600 {}", f.display())), "{c:?}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(file_check("k", &f, Some("is a private key"), true, None, &me).status, super::super::Status::Ok);
        let c = file_check("k", &dir.path().join("nope"), None, true, None, &me);
        assert!(c.status == super::super::Status::Fail && c.detail.contains("does not exist"), "{c:?}");
    }
}
