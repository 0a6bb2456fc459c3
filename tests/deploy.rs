//! Deployment: the sd_notify protocol and its watchdog (against a fake service manager socket),
//! the systemd unit (`systemd-analyze verify`), and `deploy/install.sh` (idempotent, into a
//! scratch root). The .deb package is tested in `tests/deb.rs`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{alive, tail, TestAgent, AGENT_BIN};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A fake service manager: the datagram socket `NOTIFY_SOCKET` names.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager { sock, path, _dir: dir }
    }

    /// The next notification within `timeout`, with when it arrived.
    fn recv(&self, timeout: Duration) -> Option<(String, Instant)> {
        self.sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some((String::from_utf8_lossy(&buf[..n]).into_owned(), Instant::now()))
    }

    /// Waits up to `timeout` for a notification containing the line `line`.
    fn wait_for(&self, line: &str, timeout: Duration, agent: &TestAgent) -> Instant {
        let end = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some((msg, at)) = self.recv(end.saturating_duration_since(Instant::now())) {
            if msg.lines().any(|l| l == line) {
                return at;
            }
            seen.push(msg);
        }
        panic!("no {line} within {timeout:?} (got {seen:?}); agent log:\n{}", tail(&agent.log(), 40));
    }

    fn spawn_agent(&self, extra: &[(&str, &str)]) -> TestAgent {
        let mut agent = TestAgent::new();
        let path = self.path.to_str().unwrap();
        let mut vars = vec![("NOTIFY_SOCKET", path), ("WATCHDOG_USEC", "2000000")];
        vars.extend_from_slice(extra);
        agent.spawn_with_env(&vars);
        agent
    }
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let mgr = Manager::new();
    let mut agent = mgr.spawn_agent(&[]);
    mgr.wait_for("READY=1", Duration::from_secs(30), &agent);
    // WATCHDOG_USEC=2 s: a ping every second.
    let mut pings = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while pings.len() < 4 && Instant::now() < end {
        if let Some((msg, at)) = mgr.recv(end.saturating_duration_since(Instant::now())) {
            assert_eq!(msg, "WATCHDOG=1\n", "only watchdog pings are expected while running");
            pings.push(at);
        }
    }
    assert!(
        pings.len() >= 4,
        "expected >= 4 WATCHDOG=1 in 10 s, got {}; log:\n{}",
        pings.len(),
        tail(&agent.log(), 40)
    );
    for w in pings.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(500) && gap <= Duration::from_millis(1900),
            "pings should come about 1 s apart (half of WATCHDOG_USEC), got {gap:?}"
        );
    }
    agent.stop();
    mgr.wait_for("STOPPING=1", Duration::from_secs(5), &agent);
}

#[test]
fn a_wedged_director_stops_the_pings() {
    let mgr = Manager::new();
    let mut agent = mgr.spawn_agent(&[("VSA_TEST_WEDGE_AFTER_S", "4")]);
    let ready = mgr.wait_for("READY=1", Duration::from_secs(30), &agent);
    let pid = agent.pid().expect("daemon pid");
    // Pings until the wedge (4 s) plus the staleness limit (5 s); then silence.
    let end = ready + Duration::from_secs(25);
    let mut pings = Vec::new();
    let mut silence = None;
    while Instant::now() < end {
        let since = pings.last().copied().unwrap_or(ready);
        match mgr.recv(Duration::from_millis(3500)) {
            Some((msg, at)) => {
                assert_eq!(msg, "WATCHDOG=1\n", "only watchdog pings are expected while running");
                pings.push(at);
            }
            None => {
                silence = Some(since);
                break;
            }
        }
    }
    let log = agent.log();
    let Some(last) = silence else {
        panic!("the pings never stopped after the director wedged ({} pings); log:\n{}", pings.len(), tail(&log, 40));
    };
    assert!(pings.len() >= 2, "expected pings before the wedge, got {}; log:\n{}", pings.len(), tail(&log, 40));
    assert!(
        last - ready >= Duration::from_secs(3),
        "the pings stopped {:?} after READY, before the wedge (4 s); log:\n{}",
        last - ready,
        tail(&log, 40)
    );
    assert!(alive(pid), "the agent must still be running (only its director is wedged)");
    assert!(log.contains("director wedges now"), "the wedge hook did not fire; log:\n{}", tail(&log, 40));
    assert!(log.contains("pings withheld"), "the withheld pings were not logged; log:\n{}", tail(&log, 40));
    // The wedged director would hold a clean stop for its full deadline.
    agent.kill9();
}

fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn systemd_unit_verifies() {
    let unit_path = Path::new(REPO).join("deploy/systemd/vistter-agent.service");
    let unit = std::fs::read_to_string(&unit_path).expect("read the unit");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "StateDirectory=vistter-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ProtectProc=invisible",
        "SupplementaryGroups=video render",
        "Environment=MALLOC_ARENA_MAX=2",
    ] {
        assert!(unit.lines().any(|l| l.trim() == line), "the unit lacks `{line}`");
    }
    assert_eq!(vistter_agent::error::EXIT_CONFIG, 78, "RestartPreventExitStatus must name the config-error exit code");
    let analyze = common::find_bin("systemd-analyze")
        .expect("systemd-analyze not found: install the `systemd` package (scripts/setup.sh does)");
    // Verify a copy whose ExecStart names a binary that exists here (it checks that it does).
    let dir = tempfile::tempdir().unwrap();
    let exec = "ExecStart=/usr/bin/vistter-agent ";
    assert!(unit.contains(exec), "the unit's ExecStart should be /usr/bin/vistter-agent (where the .deb puts it)");
    let copy = dir.path().join("vistter-agent.service");
    std::fs::write(&copy, unit.replace(exec, &format!("ExecStart={AGENT_BIN} "))).unwrap();
    let out = run_ok(Command::new(analyze).args(["verify", "--man=no"]).arg(&copy), "systemd-analyze verify");
    // Unknown or misspelt keys are only warnings: there must be none.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warned:\n{stderr}");
}

/// Every file and directory under `root`: mode and (for files) contents.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if md.is_dir() {
                out.insert(rel, (md.permissions().mode(), Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (md.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn install_script_is_idempotent_into_a_scratch_root() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let bin = scratch.path().join("fake-agent");
    std::fs::write(&bin, "#!/bin/sh\necho fake\n").unwrap();
    // Tools that must not run with DESTDIR: each leaves a mark if called.
    let fakes = scratch.path().join("bin");
    std::fs::create_dir(&fakes).unwrap();
    let marks = scratch.path().join("called");
    for tool in ["systemctl", "useradd", "usermod", "groupadd"] {
        let f = fakes.join(tool);
        std::fs::write(&f, format!("#!/bin/sh\necho {tool} >> '{}'\n", marks.display())).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", fakes.display(), std::env::var("PATH").unwrap_or_default());
    let install = || {
        run_ok(
            Command::new("bash")
                .arg(Path::new(REPO).join("deploy/install.sh"))
                .arg(&bin)
                .env("DESTDIR", &root)
                .env("PATH", &path),
            "deploy/install.sh",
        )
    };

    install();
    let first = snapshot(&root);
    let expect = |rel: &str| {
        first.get(Path::new(rel)).unwrap_or_else(|| panic!("install.sh did not create {rel}; tree: {:?}", first.keys()))
    };
    let (mode, contents) = expect("usr/bin/vistter-agent");
    assert_eq!((mode & 0o777, contents.as_slice()), (0o755, std::fs::read(&bin).unwrap().as_slice()), "binary");
    let (_, unit) = expect("etc/systemd/system/vistter-agent.service");
    assert_eq!(unit, &std::fs::read(Path::new(REPO).join("deploy/systemd/vistter-agent.service")).unwrap(), "unit");
    let (_, conf) = expect("etc/vistter-agent/config.toml");
    assert!(String::from_utf8_lossy(conf).contains("data_dir"), "the default config should set data_dir");
    assert_eq!(
        conf,
        &std::fs::read(Path::new(REPO).join("deploy/debian/config.toml")).unwrap(),
        "install.sh writes the same default config as the .deb installs"
    );

    install();
    assert_eq!(snapshot(&root), first, "a second run changed the installed tree");

    // An operator's config survives a re-install.
    let conf_path = root.join("etc/vistter-agent/config.toml");
    std::fs::write(&conf_path, "data_dir = \"/srv/vistter\"\n").unwrap();
    install();
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), "data_dir = \"/srv/vistter\"\n", "config overwritten");
    assert!(!marks.exists(), "with DESTDIR, install.sh called {}", std::fs::read_to_string(&marks).unwrap_or_default());
}
