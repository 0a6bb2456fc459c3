//! Segment packages (DESIGN §4) against the real CLI and the library's reader: hostile packages,
//! built by hand (tests/common/vseg.rs), are refused with their threat code and leave the library
//! exactly as it was; identical re-imports change nothing; the CLI packer's packages round-trip,
//! keep three versions and roll back; and mutated packages never panic the reader nor pass as
//! the original.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::vseg::{self, Body, Fixture, Package, NOTE, THREATS};
use common::{event_lines, TestAgent, AGENT_BIN};
use proptest::prelude::*;
use serde_json::Value;
use vistter_agent::control::trust::{Role, TrustEntry, TrustStore};
use vistter_agent::segments::package::{self, Checks};
use vistter_agent::segments::{Limits, Threat};

const DEVICE: &str = "vs-seg";
/// `max_uncompressed_bytes` on the hostile-package device.
const UNPACKED_LIMIT: u64 = 20 << 20;
/// `ulimit -f` for every import: 65536 blocks (512 or 1024 bytes, by shell: 32-64 MiB). A process
/// writing a file past it is killed (SIGXFSZ), so an import that exits on its own wrote none.
const FSIZE_BLOCKS: u64 = 65536;
/// No import may take longer.
const IMPORT_DEADLINE: Duration = Duration::from_secs(120);

/// The threat code and exit status each fixture must get.
fn expected(name: &str) -> (&'static str, i32) {
    let code = match name {
        "bad_signature" | "manifest_edited_after_signing" => "bad_signature",
        "unknown_key" => "unknown_key",
        "key_without_segment_role" => "key_not_for_segments",
        "flipped_payload_byte" => "checksum_mismatch",
        "missing_file" => "missing_file",
        "extra_file" => "extra_file",
        "duplicate_entry" | "manifest_again_as_payload" => "duplicate_entry",
        "dotdot_path" | "absolute_path" | "pax_path_escape" | "long_name_escape" | "ustar_prefix_escape" => {
            "unsafe_path"
        }
        "symlink" | "hardlink" | "char_device" | "block_device" | "fifo" | "directory_entry" => "not_a_regular_file",
        "manifest_not_first" | "empty_archive" => "manifest_not_first",
        "signature_not_second" | "unsigned" => "signature_not_second",
        "decompression_bomb" | "long_name_bomb" | "pax_header_bomb" => "too_large",
        "understated_size" => "size_mismatch",
        "too_many_entries" | "pax_header_chain" => "too_many_entries",
        "zstd_window_over_limit" => "window_too_large",
        "truncated_archive" => "truncated",
        "expired" => "expired",
        "another_device" => "not_for_this_device",
        "rollback" | "rollback_same_version" => "rollback",
        "non_utf8_name" => "non_utf8_name",
        "pax_size_override" | "not_zstd" => "corrupt",
        "unknown_manifest_field" => "bad_manifest",
        "invalid_timeline" => "timeline_invalid",
        other => panic!("no expected outcome for fixture {other}"),
    };
    (code, if code == "rollback" { 4 } else { 2 })
}

/// What a finished CLI run left.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?} (signal {:?}) after {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.signal,
            self.took,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// Everything an import may change: the files under `<data_dir>/segments` (path → kind and
/// content hash) and the rows of the library's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    tree: BTreeMap<String, String>,
    rows: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    /// What differs from `other`, line by line.
    fn diff(&self, other: &Snapshot) -> String {
        let mut out = Vec::new();
        for (k, v) in &self.tree {
            match other.tree.get(k) {
                None => out.push(format!("file gone: {k} ({v})")),
                Some(w) if w != v => out.push(format!("file changed: {k}: {v} -> {w}")),
                _ => {}
            }
        }
        for (k, w) in &other.tree {
            if !self.tree.contains_key(k) {
                out.push(format!("file new: {k} ({w})"));
            }
        }
        for (t, rows) in &self.rows {
            let now = other.rows.get(t).cloned().unwrap_or_default();
            if &now != rows {
                out.push(format!("table {t}: {rows:?} -> {now:?}"));
            }
        }
        out.join("\n")
    }
}

/// Path → "dir", "file <sha256>", "symlink -> target" or "other", for everything under `root`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.expect("read_dir entry");
            let path = e.path();
            let rel = path.strip_prefix(root).expect("under root").display().to_string();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let kind = if meta.is_dir() {
                walk(root, &path, out);
                "dir".to_string()
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).expect("read a file of the library");
                format!("file {}", sha256_hex(&bytes))
            } else if meta.file_type().is_symlink() {
                format!("symlink -> {}", std::fs::read_link(&path).expect("readlink").display())
            } else {
                "other".to_string()
            };
            out.insert(rel, kind);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Path → content of every regular file under `root`.
fn file_contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.expect("read_dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root").display().to_string();
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The first column of `sql`'s rows, as text, from the agent's database opened read-only.
fn sql_strings(db: &Path, sql: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db).read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts)
            .await
            .unwrap_or_else(|e| panic!("open {} read-only: {e}", db.display()));
        let rows: Vec<String> =
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.expect("close the database");
        rows
    })
}

/// Every row of `table`, every column quoted, sorted.
fn table_rows(db: &Path, table: &str) -> Vec<String> {
    let cols = sql_strings(db, &format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"));
    assert!(!cols.is_empty(), "table {table} has no columns (is the schema there?)");
    let expr = cols.iter().map(|c| format!("'{c}=' || quote(\"{c}\")")).collect::<Vec<_>>().join(" || ', ' || ");
    sql_strings(db, &format!("SELECT {expr} FROM {table} ORDER BY 1"))
}

/// A device (`vs-seg`, 20 MiB unpacked and 64 entries at most) trusting the fixture's segment key
/// (role segment) and command key (role command only), and a folder for packages.
struct Lab {
    agent: TestAgent,
    fx: Fixture,
    work: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let max_entries = 64;
        let agent = TestAgent::with_config(&format!(
            "[control]\ndevice_id = \"{DEVICE}\"\n\n[segments.limits]\nmax_uncompressed_bytes = {UNPACKED_LIMIT}\nmax_entries = {max_entries}\n"
        ));
        let fx = Fixture { max_entries, ..Fixture::new(DEVICE, &agent.data_dir().join("absolute-escape.txt")) };
        let seg = fx.segment_key.public_b64();
        agent.ok(&["trust", "add", &fx.segment_key.key_id, "--public-key", &seg, "--role", "segment"]);
        let cmd = fx.command_key.public_b64();
        agent.ok(&["trust", "add", &fx.command_key.key_id, "--public-key", &cmd, "--role", "command"]);
        Lab { agent, fx, work: tempfile::tempdir().expect("tempdir") }
    }

    fn write(&self, name: &str, pkg: &Package) -> PathBuf {
        pkg.write_to(&self.work.path().join(format!("{name}.vseg")))
    }

    fn db(&self) -> PathBuf {
        self.agent.data_dir().join("agent.db")
    }

    fn snapshot(&self) -> Snapshot {
        let rows = ["segments", "segment_versions", "timelines"]
            .iter()
            .map(|t| (t.to_string(), table_rows(&self.db(), t)))
            .collect();
        Snapshot { tree: tree(&self.agent.data_dir().join("segments")), rows }
    }

    fn staging(&self) -> Vec<String> {
        let dir = self.agent.data_dir().join("segments").join(".staging");
        std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default()
    }

    /// `segment import FILE ARGS` under `ulimit -f` (see [`FSIZE_BLOCKS`]), killed (and failed)
    /// past [`IMPORT_DEADLINE`].
    fn import(&self, file: &Path, args: &[&str]) -> Run {
        let config = self.agent.data_dir().parent().expect("the agent's dir").join("config.toml");
        let start = Instant::now();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -f {FSIZE_BLOCKS} && exec \"$0\" \"$@\""))
            .arg(AGENT_BIN)
            .arg("--config")
            .arg(&config)
            .args(["segment", "import"])
            .arg(file)
            .args(args)
            .env_remove("VISTTER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run sh");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for the import") {
                break s;
            }
            if start.elapsed() > IMPORT_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("importing {} took more than {IMPORT_DEADLINE:?}: killed", file.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = start.elapsed();
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut stdout);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        Run { code: status.code(), signal: status.signal(), stdout, stderr, took }
    }

    /// Imports a good package that must install.
    fn install(&self, version: u64) -> PathBuf {
        let file = self.write(&format!("good-v{version}"), &self.fx.good(version));
        let run = self.import(&file, &[]);
        assert_eq!(run.code, Some(0), "good version {version} must install: {}", run.describe());
        assert!(
            run.stdout.contains(&format!("segment seg version {version} installed")),
            "version {version}: {}",
            run.describe()
        );
        file
    }

    fn events(&self, ty: &str) -> Vec<Value> {
        self.agent.events().into_iter().filter(|e| e["event_type"] == ty).collect()
    }
}

/// Whether `ulimit -f` through `sh` does stop a large write here (so the imports' guard means
/// something).
fn assert_fsize_guard_works(dir: &Path) {
    let out = dir.join("fsize-probe");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {FSIZE_BLOCKS} && exec dd if=/dev/zero of=\"$0\" bs=1M count=100 status=none"))
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .expect("run sh");
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&out);
    assert!(!status.success() && len <= 64 << 20, "ulimit -f {FSIZE_BLOCKS} let dd write {len} bytes ({status})");
}

#[test]
fn every_hostile_package_is_refused_with_its_threat_code_and_leaves_the_library_exactly_as_it_was() {
    let lab = Lab::new();
    assert_fsize_guard_works(lab.work.path());
    lab.install(1);
    lab.install(lab.fx.installed);
    let before = lab.snapshot();
    assert_eq!(before.rows["segment_versions"].len(), 2, "v1 and v3 installed: {before:#?}");
    assert_eq!(before.rows["timelines"].len(), 1, "the active version's timeline: {before:#?}");
    assert!(lab.staging().is_empty(), "staging is empty after good imports: {:?}", lab.staging());
    let data = lab.agent.data_dir();
    let escapes = [data.join("escape.txt"), data.join("segments").join("escape.txt"), lab.fx.absolute_target.clone()];

    let mut failures = Vec::new();
    for name in THREATS {
        let (code, exit) = expected(name);
        let pkg = lab.fx.threat(name);
        let file = lab.write(name, &pkg);
        let size = std::fs::metadata(&file).expect("the fixture file").len();
        if *name == "zstd_window_over_limit" {
            let bytes = std::fs::read(&file).expect("read the fixture");
            let log = vseg::frame_window_log(&bytes);
            assert!(log.is_some_and(|l| l >= 28), "the fixture's zstd frame must declare a window over 2^27: {log:?}");
        }
        // `segment verify` refuses it the same way (versions and timelines are the library's
        // business).
        if code != "rollback" && code != "timeline_invalid" {
            let v = lab.agent.cli(&["segment", "verify", file.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&v.stderr);
            if v.status.code() != Some(exit) || !stderr.trim_end().ends_with(&format!("({code})")) {
                failures.push(format!("fixture {name}: `segment verify` must refuse it ({code}): {stderr}"));
            }
        }
        let rejected_before = lab.events("segment_rejected").len();
        let run = lab.import(&file, &[]);
        let mut problems = Vec::new();
        if run.code != Some(exit) {
            problems.push(format!("exit must be {exit}"));
        }
        // Bombs are stopped at their headers: quickly, and (the `ulimit -f` above) without a file
        // past 32 MiB ever written.
        let bomb = ["decompression_bomb", "understated_size", "long_name_bomb", "pax_header_bomb"].contains(name);
        if bomb && run.took > Duration::from_secs(10) {
            problems.push(format!("a bomb must be refused early, not after {:?}", run.took));
        }
        let line = run.stderr.lines().find(|l| l.contains("package refused: ")).unwrap_or("");
        if !line.trim_end().ends_with(&format!("({code})")) {
            problems.push(format!("stderr must say `package refused: … ({code})`"));
        }
        let after = lab.snapshot();
        if after != before {
            problems.push(format!("the library changed:\n{}", before.diff(&after)));
        }
        if !lab.staging().is_empty() {
            problems.push(format!("staging holds {:?}", lab.staging()));
        }
        for e in &escapes {
            if e.exists() {
                problems.push(format!("{} was written", e.display()));
                let _ = std::fs::remove_file(e);
            }
        }
        let rejected = lab.events("segment_rejected");
        let newest = rejected.iter().max_by_key(|e| e["id"].as_i64());
        let recorded = rejected.len() == rejected_before + 1
            && newest.is_some_and(|e| e["detail"].as_str().is_some_and(|d| d.ends_with(&format!("({code})"))));
        if !recorded {
            problems.push(format!("no segment_rejected event with ({code}); events:\n{}", event_lines(&rejected)));
        }
        eprintln!("{name}: {size} bytes, refused in {:?}: {}", run.took, line.trim());
        if !problems.is_empty() {
            failures.push(format!(
                "fixture {name} (must be {code}, exit {exit}): {}\n{}",
                problems.join("; "),
                run.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        THREATS.len(),
        failures.join("\n\n")
    );
}

#[test]
fn a_decompression_bomb_is_refused_from_its_declared_sizes_before_a_payload_byte_is_read() {
    let fx = Fixture::new(DEVICE, Path::new("/nonexistent/absolute-escape.txt"));
    let bomb = fx.threat("decompression_bomb").build();
    assert!(bomb.len() < 1 << 20, "a bomb is small: {} bytes", bomb.len());
    let trust = trust_of(&fx);
    let checks = Checks {
        trust: &trust,
        device_id: DEVICE,
        now: jiff::Timestamp::now(),
        limits: Limits { max_uncompressed_bytes: UNPACKED_LIMIT, ..Limits::default() },
    };
    let start = Instant::now();
    let mut payload_bytes = 0u64;
    let err = package::verify(&bomb[..], &checks, &mut |n| payload_bytes = n).expect_err("a bomb must be refused");
    assert_eq!(err.threat, Threat::TooLarge, "{err}");
    assert_eq!(payload_bytes, 0, "refused before any payload byte was read, not after {payload_bytes} bytes");
    assert!(start.elapsed() < Duration::from_secs(5), "refused early, not after {:?}", start.elapsed());
    // The same package with limits that let it through really does expand to 2 GiB: the refusal
    // above is the limit's doing.
    let roomy = Checks { limits: Limits::default(), ..checks };
    let mut seen = 0u64;
    let ok =
        package::verify(&bomb[..], &roomy, &mut |n| seen = n).expect("within the default limits, the bomb verifies");
    assert!(seen == ok.manifest.total_bytes() && seen > vseg::BOMB_BYTES, "it expands past 2 GiB: {seen} bytes read");
}

#[test]
fn re_importing_the_identical_package_is_a_no_op_that_says_it_is_installed_already() {
    let lab = Lab::new();
    let v1 = lab.install(1);
    let v3 = lab.install(3);
    let before = lab.snapshot();
    let installed_events = lab.events("segment_installed").len();

    let run = lab.import(&v3, &[]);
    assert_eq!(run.code, Some(0), "the identical package again: {}", run.describe());
    assert!(run.stdout.contains("segment seg version 3 is installed already"), "{}", run.describe());
    let run = lab.import(&v3, &["--json"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let out: Value = serde_json::from_str(&run.stdout).expect("import --json");
    assert_eq!((out["already_installed"].as_bool(), out["version"].as_u64()), (Some(true), Some(3)), "{out:#}");
    // An older version still kept, identical: the same no-op, not a rollback.
    let run = lab.import(&v1, &[]);
    assert_eq!(run.code, Some(0), "the identical v1 again: {}", run.describe());
    assert!(run.stdout.contains("segment seg version 1 is installed already"), "{}", run.describe());
    // Rebuilt from the same inputs, the package is the same bytes, and the same no-op.
    let rebuilt = lab.write("rebuilt-v3", &lab.fx.good(3));
    assert_eq!(std::fs::read(&rebuilt).unwrap(), std::fs::read(&v3).unwrap(), "the fixture builds reproducibly");
    let run = lab.import(&rebuilt, &[]);
    assert!(run.code == Some(0) && run.stdout.contains("installed already"), "{}", run.describe());

    let after = lab.snapshot();
    assert_eq!(after, before, "nothing changed:\n{}", before.diff(&after));
    assert!(lab.staging().is_empty(), "staging is empty: {:?}", lab.staging());
    assert_eq!(lab.events("segment_installed").len(), installed_events, "no new segment_installed event");
}

#[test]
fn a_package_made_by_the_cli_packer_verifies_installs_byte_identical_keeps_three_versions_and_rolls_back() {
    let agent = TestAgent::with_config(&format!("[control]\ndevice_id = \"{DEVICE}\"\n"));
    let work = tempfile::tempdir().expect("tempdir");
    let key = work.path().join("packer.key");
    agent.ok(&["segment", "keygen", "--key-id", "packer", "-o", key.to_str().unwrap()]);
    let key_file: Value = serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).expect("a JSON key file");
    let public = key_file["public_key"].as_str().expect("public_key").to_string();
    agent.ok(&["trust", "add", "packer", "--public-key", &public, "--role", "segment"]);

    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("assets/deep/er")).unwrap();
    std::fs::write(src.join("assets/logo.bin"), vseg::noise(300 * 1024, 11)).unwrap();
    std::fs::write(src.join("assets/deep/er/readme.txt"), "nested\n").unwrap();
    std::fs::write(src.join("assets/empty"), "").unwrap();
    let pack = |version: u64| -> PathBuf {
        std::fs::write(src.join("timeline.json"), vseg::timeline_json(&format!("demo v{version}"))).unwrap();
        let out = work.path().join(format!("demo-{version}.vseg"));
        let v = version.to_string();
        let args = ["segment", "pack", src.to_str().unwrap(), "--key", key.to_str().unwrap(), "--id", "demo"];
        let mut args = args.to_vec();
        args.extend(["--version", &v, "--device", DEVICE, "-o", out.to_str().unwrap()]);
        agent.ok(&args);
        out
    };
    let import = |file: &Path| agent.ok(&["segment", "import", file.to_str().unwrap()]);
    let versions = || -> Vec<(u64, bool)> {
        let rows: Value = serde_json::from_str(&agent.ok(&["segment", "list", "--json"])).expect("list --json");
        rows.as_array()
            .expect("a list")
            .iter()
            .map(|r| (r["version"].as_u64().expect("version"), r["active"].as_bool().expect("active")))
            .collect()
    };
    let db = agent.data_dir().join("agent.db");
    let active_timeline = || sql_strings(&db, "SELECT name || ' @ ' || asset_root FROM timelines WHERE id = 'seg-tl'");
    let seg_dir = agent.data_dir().join("segments").join("demo");

    let v1 = pack(1);
    let out = agent.ok(&["segment", "verify", v1.to_str().unwrap()]);
    assert!(out.contains("valid: segment demo version 1, 4 files"), "verify: {out}");
    let v: Value = serde_json::from_str(&agent.ok(&["segment", "verify", v1.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["files"].as_u64(), v["key_id"].as_str()),
        (Some(true), Some(4), Some("packer")),
        "{v:#}"
    );
    let out = import(&v1);
    assert!(out.contains("segment demo version 1 installed (4 files"), "import: {out}");
    assert_eq!(
        file_contents(&seg_dir.join("1")),
        file_contents(&src),
        "the installed files are the source folder's, byte for byte"
    );
    let installed =
        agent.events().into_iter().find(|e| e["event_type"] == "segment_installed" && e["subject"] == "segment:demo");
    let installed =
        installed.unwrap_or_else(|| panic!("a segment_installed event; events:\n{}", event_lines(&agent.events())));
    assert!(installed["detail"].as_str().is_some_and(|d| d.contains("version 1")), "{installed:#}");

    for version in 2..=4 {
        let out = import(&pack(version));
        assert!(out.contains(&format!("segment demo version {version} installed")), "import v{version}: {out}");
    }
    assert_eq!(versions(), [(4, true), (3, false), (2, false)], "three versions kept, the newest active");
    assert!(!seg_dir.join("1").exists(), "version 1's folder is gone");
    assert!(["2", "3", "4"].iter().all(|v| seg_dir.join(v).is_dir()), "versions 2-4 are on disk");
    assert_eq!(active_timeline(), [format!("demo v4 @ {}", seg_dir.join("4").display())], "v4's timeline is loaded");

    let out = agent.ok(&["segment", "rollback", "demo"]);
    assert!(out.contains("version 3 is active"), "rollback: {out}");
    assert_eq!(versions(), [(4, false), (3, true), (2, false)], "rolled back to 3");
    assert_eq!(active_timeline(), [format!("demo v3 @ {}", seg_dir.join("3").display())], "v3's timeline is loaded");
    let out = agent.ok(&["segment", "rollback", "demo", "--to", "2"]);
    assert!(out.contains("version 2 is active"), "rollback --to 2: {out}");
    assert_eq!(versions(), [(4, false), (3, false), (2, true)], "rolled back to 2");
    assert_eq!(active_timeline(), [format!("demo v2 @ {}", seg_dir.join("2").display())], "v2's timeline is loaded");
    let gone = agent.cli(&["segment", "rollback", "demo", "--to", "1"]);
    assert_eq!(gone.status.code(), Some(3), "version 1 is not kept: {}", String::from_utf8_lossy(&gone.stderr));
    assert_eq!(versions(), [(4, false), (3, false), (2, true)], "a refused rollback changes nothing");
}

#[test]
fn a_cli_packed_package_of_long_paths_imports_when_its_files_are_within_the_entry_limit() {
    // Paths over 100 bytes are packed with a GNU long-name entry each: those are not files, and a
    // package whose files are within `max_entries` (64 here) must not be refused for them.
    let lab = Lab::new();
    let key = lab.work.path().join("packer.key");
    lab.agent.ok(&["segment", "keygen", "--key-id", "packer", "-o", key.to_str().unwrap()]);
    let key_file: Value = serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).expect("a JSON key file");
    let public = key_file["public_key"].as_str().expect("public_key").to_string();
    lab.agent.ok(&["trust", "add", "packer", "--public-key", &public, "--role", "segment"]);
    let src = lab.work.path().join("src");
    let deep = src.join("assets").join("d".repeat(110));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(src.join("timeline.json"), vseg::timeline_json("long paths")).unwrap();
    let files = lab.fx.max_entries - 20;
    for i in 0..files {
        std::fs::write(deep.join(format!("file-{i}.txt")), format!("file {i}\n")).unwrap();
    }
    let out = lab.work.path().join("long.vseg");
    let args = ["segment", "pack", src.to_str().unwrap(), "--key", key.to_str().unwrap(), "--id", "long"];
    let mut args = args.to_vec();
    args.extend(["--version", "1", "-o", out.to_str().unwrap()]);
    lab.agent.ok(&args);
    let run = lab.import(&out, &[]);
    assert_eq!(run.code, Some(0), "{} files and the manifest are within 64 entries: {}", files + 1, run.describe());
    let installed = file_contents(&lab.agent.data_dir().join("segments/long/1"));
    assert_eq!(installed, file_contents(&src), "installed byte for byte");
}

fn trust_of(fx: &Fixture) -> TrustStore {
    let mut t = TrustStore::default();
    t.add(TrustEntry::new(&fx.segment_key.key_id, &fx.segment_key.public_b64(), &[Role::Segment]).unwrap()).unwrap();
    t
}

/// One random change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        1 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, ops: &[Mutation]) {
    for op in ops {
        if bytes.is_empty() {
            return;
        }
        match op {
            Mutation::Flip(i, m) => {
                let i = i.index(bytes.len());
                bytes[i] ^= m;
            }
            Mutation::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.insert(i, *b);
            }
            Mutation::Remove(i) => {
                let i = i.index(bytes.len());
                bytes.remove(i);
            }
            Mutation::Truncate(i) => {
                let i = i.index(bytes.len());
                bytes.truncate(i);
            }
        }
    }
}

/// A small valid package, its files, and what it is checked against.
struct Subject {
    pkg: Package,
    trust: TrustStore,
    files: BTreeMap<String, Vec<u8>>,
}

fn subject() -> &'static Subject {
    static S: std::sync::OnceLock<Subject> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let fx = Fixture::new(DEVICE, Path::new("/nonexistent/absolute-escape.txt"));
        let pkg = fx.good(7);
        let trust = trust_of(&fx);
        let files = fx
            .files(7)
            .into_iter()
            .map(|(p, b)| match b {
                Body::Bytes(b) => (p, b),
                Body::Zeros(_) => unreachable!("small files only"),
            })
            .collect();
        Subject { pkg, trust, files }
    })
}

/// Runs the reader over `bytes`: it must not panic, and if it accepts them, they must be the
/// original package (its manifest, and exactly its files when staged).
fn check_reader(s: &Subject, bytes: &[u8]) -> Result<(), TestCaseError> {
    let checks = Checks { trust: &s.trust, device_id: DEVICE, now: jiff::Timestamp::now(), limits: Limits::default() };
    let verified = package::verify(bytes, &checks, &mut |_| {});
    let Ok(checked) = verified else { return Ok(()) };
    let original = sha256_hex(&s.pkg.manifest_bytes());
    prop_assert_eq!(checked.manifest_sha256.as_str(), original.as_str(), "accepted with another manifest");
    let dir = tempfile::tempdir().expect("tempdir");
    let staging = dir.path().join("staging");
    let staged = package::stage(bytes, &checks, &staging, &mut |_, _| Ok(package::Next::Read), &mut |_| {});
    prop_assert!(matches!(staged, Ok(Ok(_))), "verify accepted it, stage must too: {:?}", staged.err());
    prop_assert_eq!(&file_contents(&staging), &s.files, "accepted with other files");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_compressed_packages_never_panic_the_reader_nor_pass_as_modified(ops in prop::collection::vec(mutation(), 1..4)) {
        let s = subject();
        let mut bytes = s.pkg.build();
        mutate(&mut bytes, &ops);
        check_reader(s, &bytes)?;
    }

    #[test]
    fn mutated_tar_streams_recompressed_never_panic_the_reader_nor_pass_as_modified(ops in prop::collection::vec(mutation(), 1..4)) {
        let s = subject();
        let mut tar = s.pkg.tar_bytes();
        mutate(&mut tar, &ops);
        check_reader(s, &vseg::compress(&tar))?;
    }
}

#[test]
fn the_unmutated_subject_of_the_property_tests_verifies() {
    // The properties above only mean something if the original is accepted.
    let s = subject();
    let checks = Checks { trust: &s.trust, device_id: DEVICE, now: jiff::Timestamp::now(), limits: Limits::default() };
    let ok = package::verify(&s.pkg.build()[..], &checks, &mut |_| {}).expect("the original package verifies");
    assert!(ok.complete && ok.manifest.files.len() == 2, "{ok:?}");
    let ok = package::verify(&vseg::compress(&s.pkg.tar_bytes())[..], &checks, &mut |_| {});
    assert!(ok.is_ok(), "recompressed, it verifies too: {ok:?}");
    assert!(s.files.contains_key(NOTE), "the subject carries the note");
}
