//! The .deb package (`cargo deb`, metadata in Cargo.toml's `[package.metadata.deb]`, maintainer
//! scripts in `deploy/debian/`): what it holds, and a real install, upgrade, removal and purge.
//!
//! The package is made from the test build's binary (`cargo deb --no-build`, with a target dir
//! whose `release/vistter-agent` is that binary), so no release build is needed. The install runs
//! real dpkg and the real maintainer scripts in a chroot onto an overlay of this machine's root,
//! in a private mount namespace: every write lands in a tmpfs that vanishes with the namespace,
//! `/run` is empty there so nothing reaches this machine's systemd, and no network is used. A
//! clean Debian root (debootstrap) gets the same install from `scripts/fresh-check`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const AGENT_BIN: &str = env!("CARGO_BIN_EXE_vistter-agent");

fn run(cmd: &mut Command, what: &str, install: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run ({e}): install {install}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds the package for this machine's architecture into `dir` from the test build's binary.
fn build_deb(dir: &Path) -> PathBuf {
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::os::unix::fs::symlink(AGENT_BIN, target.join("release/vistter-agent")).unwrap();
    let out_dir = dir.join("debian");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(
        Command::new(cargo)
            .args(["deb", "--no-build", "--locked", "--fast", "--output"])
            .arg(&out_dir)
            .current_dir(REPO)
            .env("CARGO_TARGET_DIR", &target),
        "cargo deb",
        "cargo-deb: cargo install cargo-deb --locked (scripts/setup.sh does)",
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "cargo deb should make one package, made {debs:?}");
    debs.into_iter().next().unwrap()
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = run(Command::new("dpkg-deb").args(args).arg(deb), "dpkg-deb", "dpkg");
    String::from_utf8(out.stdout).expect("dpkg-deb prints text")
}

#[test]
fn the_package_holds_the_binary_the_unit_the_config_and_maintainer_scripts() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let fields = dpkg_deb(&["--field"], &deb);
    let field = |f: &str| fields.lines().find_map(|l| l.strip_prefix(&format!("{f}: ")).map(str::to_string));
    let arch = run(Command::new("dpkg").arg("--print-architecture"), "dpkg", "dpkg").stdout;
    assert_eq!(field("Package").as_deref(), Some("vistter-agent"));
    assert_eq!(field("Architecture").as_deref(), Some(String::from_utf8_lossy(&arch).trim()));
    let depends = field("Depends").unwrap_or_default();
    for d in ["ffmpeg", "passwd", "libc6"] {
        assert!(depends.split(", ").any(|x| x.starts_with(d)), "Depends lacks {d}: {depends}");
    }
    assert_eq!(field("Recommends").as_deref(), Some("fonts-dejavu-core"));

    // Every file with its mode and owner.
    let contents = dpkg_deb(&["--contents"], &deb);
    let files: BTreeMap<&str, (&str, &str)> = contents
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((w.get(5)?.trim_start_matches('.'), (w[0], w[1])))
        })
        .collect();
    for (path, mode) in [
        ("/usr/bin/vistter-agent", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/vistter-agent.service", "-rw-r--r--"),
        ("/etc/vistter-agent/config.toml", "-rw-r-----"),
        ("/usr/share/doc/vistter-agent/copyright", "-rw-r--r--"),
    ] {
        assert_eq!(files.get(path), Some(&(mode, "0/0")), "{path} in the package; contents:\n{contents}");
    }
    assert!(!files.keys().any(|p| p.starts_with("/usr/local")), "a package never installs into /usr/local");

    // The files themselves: the repository's unit and default configuration.
    let root = dir.path().join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), "dpkg-deb -x", "dpkg");
    let read = |p: &str| std::fs::read(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("usr/lib/systemd/system/vistter-agent.service"), read_repo("deploy/systemd/vistter-agent.service"));
    assert_eq!(read("etc/vistter-agent/config.toml"), read_repo("deploy/debian/config.toml"));
    let version = run(Command::new(root.join("usr/bin/vistter-agent")).arg("--version"), "the packaged binary", "");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("vistter-agent "), "the packaged binary runs");

    // The configuration is a conffile (an upgrade keeps an edited one); the maintainer scripts are
    // shell that parses, with cargo-deb's systemd parts in place of the debhelper token.
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control), "dpkg-deb -e", "dpkg");
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap().trim(), "/etc/vistter-agent/config.toml");
    for (script, must) in [
        (
            "postinst",
            ["useradd --system", "dpkg-statoverride --update --add root vistter 0640", "deb-systemd-helper enable"],
        ),
        ("prerm", ["deb-systemd-invoke stop vistter-agent.service", "set -e", "exit 0"]),
        (
            "postrm",
            ["deb-systemd-helper purge vistter-agent.service", "deb-systemd-helper mask", "dpkg-statoverride --remove"],
        ),
    ] {
        let path = control.join(script);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755, "{script} mode");
        assert!(!text.contains("#DEBHELPER#"), "{script} still has the debhelper token");
        for m in must {
            assert!(text.contains(m), "{script} lacks `{m}`:\n{text}");
        }
        run(Command::new("sh").arg("-n").arg(&path), &format!("sh -n {script}"), "");
    }
}

fn read_repo(p: &str) -> Vec<u8> {
    std::fs::read(Path::new(REPO).join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Runs inside the chroot: install, look, upgrade (the same package again), remove, purge. Each
/// fact is one `key: value` line.
const IN_ROOT: &str = r#"
fact() { printf '%s: %s\n' "$1" "$(printf '%s' "$2" | tr '\n' ' ')"; }
step() { name=$1; shift; "$@" >/tmp/step.log 2>&1; rc=$?; fact "$name" "exit $rc $(cat /tmp/step.log)"; }
mode() { stat -c '%U:%G %a' "$1" 2>/dev/null || echo absent; }
mkdir -p /var/lib/vistter-agent && echo '{}' >/var/lib/vistter-agent/hwaccel.json
step install dpkg -i /tmp/vistter-agent.deb
fact user "$(getent passwd vistter | cut -d: -f1,6,7)"
fact uid "$(id -u vistter)"
fact groups "$(id -nG vistter)"
fact binary "$(mode /usr/bin/vistter-agent)"
fact unit "$(mode /usr/lib/systemd/system/vistter-agent.service)"
fact config "$(mode /etc/vistter-agent/config.toml)"
fact data "$(mode /var/lib/vistter-agent)"
fact data-file "$(mode /var/lib/vistter-agent/hwaccel.json)"
fact enabled "$(readlink /etc/systemd/system/multi-user.target.wants/vistter-agent.service)"
step verify systemd-analyze verify --man=no /usr/lib/systemd/system/vistter-agent.service
fact runs "$(vistter-agent --version 2>&1)"
step upgrade dpkg -i /tmp/vistter-agent.deb
fact config-after-upgrade "$(mode /etc/vistter-agent/config.toml)"
step remove dpkg -r vistter-agent
fact binary-after-remove "$(mode /usr/bin/vistter-agent)"
fact config-after-remove "$(mode /etc/vistter-agent/config.toml)"
fact masked-after-remove "$(readlink /etc/systemd/system/vistter-agent.service)"
step purge dpkg -P vistter-agent
fact config-after-purge "$(mode /etc/vistter-agent/config.toml)"
fact mask-after-purge "$(readlink /etc/systemd/system/vistter-agent.service || echo none)"
fact enabled-after-purge "$(readlink /etc/systemd/system/multi-user.target.wants/vistter-agent.service || echo none)"
fact override-after-purge "$(dpkg-statoverride --list /etc/vistter-agent/config.toml || echo none)"
fact data-after-purge "$(mode /var/lib/vistter-agent)"
fact user-after-purge "$(getent passwd vistter | cut -d: -f1)"
"#;

/// Sets up the overlay root in the (private) mount namespace it runs in, then runs `IN_ROOT`.
const SETUP: &str = r#"
set -eu
m="$1"
mount -t tmpfs tmpfs "$m"
mkdir "$m/upper" "$m/work" "$m/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$m/upper,workdir=$m/work" "$m/root"
mount -t proc proc "$m/root/proc"
mount --rbind /dev "$m/root/dev"
mount -t tmpfs tmpfs "$m/root/tmp"
mount -t tmpfs tmpfs "$m/root/run"
cp "$2" "$m/root/tmp/vistter-agent.deb"
chroot "$m/root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 /bin/sh -c "$3"
"#;

#[test]
fn the_package_installs_upgrades_removes_and_purges_in_a_chroot() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test installs the package in a chroot on an overlay mount: run the tests as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", SETUP, "setup"])
            .arg(&mnt)
            .arg(&deb)
            .arg(IN_ROOT),
        "the install in a chroot",
        "util-linux (unshare)",
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let facts: BTreeMap<&str, &str> = report.lines().filter_map(|l| l.split_once(": ")).collect();
    let fact = |k: &str| *facts.get(k).unwrap_or_else(|| panic!("no `{k}` in the report:\n{report}"));
    let ok = |k: &str| assert!(fact(k).starts_with("exit 0"), "{k} failed: {}", fact(k));

    ok("install");
    assert_eq!(fact("user"), "vistter:/var/lib/vistter-agent:/usr/sbin/nologin");
    let uid: u32 = fact("uid").parse().unwrap_or_else(|_| panic!("uid: {}", fact("uid")));
    assert!(uid < 1000, "vistter should be a system user, got uid {uid}");
    assert!(fact("groups").split(' ').any(|g| g == "vistter"), "groups: {}", fact("groups"));
    assert_eq!(fact("binary"), "root:root 755");
    assert_eq!(fact("unit"), "root:root 644");
    assert_eq!(fact("config"), "root:vistter 640", "the configuration is for root and the service only");
    assert_eq!(fact("data"), "vistter:vistter 700");
    // The chroot had a data folder left by `sudo vistter-agent hwaccel` before the package: now the service's.
    assert_eq!(fact("data-file"), "vistter:vistter 644", "a root-owned leftover is handed to the service");
    assert!(fact("enabled").ends_with("/systemd/system/vistter-agent.service"), "not enabled: {}", fact("enabled"));
    assert_eq!(
        fact("verify").trim_end(),
        "exit 0",
        "systemd-analyze verify on the installed unit: no error, no warning"
    );
    assert!(fact("runs").starts_with("vistter-agent "), "the installed binary: {}", fact("runs"));

    ok("upgrade");
    assert_eq!(fact("config-after-upgrade"), "root:vistter 640", "an upgrade keeps the configuration's owner");

    ok("remove");
    assert_eq!(fact("binary-after-remove"), "absent");
    assert_eq!(fact("config-after-remove"), "root:vistter 640", "remove keeps the configuration");
    assert_eq!(fact("masked-after-remove"), "/dev/null", "a removed package's unit is masked");

    ok("purge");
    assert_eq!(fact("config-after-purge"), "absent");
    assert_eq!(fact("mask-after-purge"), "none");
    assert_eq!(fact("enabled-after-purge"), "none", "purge disables the unit");
    assert_eq!(fact("override-after-purge"), "none");
    assert_eq!(fact("data-after-purge"), "vistter:vistter 700", "purge keeps the device's data");
    assert_eq!(fact("user-after-purge"), "vistter");
}
