//! `vistter-agent diag -o FILE`: a diagnostics bundle (a zstd-compressed tar) for support.
//!
//! It holds the effective configuration, versions, the hardware encoder probe, a summary of the
//! database, the newest events, and, asked of the running daemon over the local socket, its recent
//! log lines and each FFmpeg job's last stderr lines. When the daemon is not running the rest is
//! written anyway (with the tail of `[log] file` instead of the daemon's log ring, if there is one)
//! and README.txt says so.
//!
//! No secret may leave in it. Each part is built from types that mask them already (`Secret`
//! prints `***`, the store's rows skip keys and passwords, the daemon redacts what it sends); then
//! every file goes through one last pass that replaces every secret the device holds — camera
//! passwords (also URL-encoded), stream keys, and the device's private keys as raw bytes, base64
//! and hex — before it is added. The bundle is written to a temporary file (mode 0600) and renamed
//! into place, so a reader never sees half of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::CliError;
use crate::command::{Command, Diagnostics, DiagnosticsReport, Output, MAX_DIAG_STDERR_LINES};
use crate::config::Config;
use crate::secret::{Redactor, Secret};
use crate::store::Store;

/// FFmpeg stderr lines per job in the bundle.
const STDERR_LINES: u32 = 50;
/// Log lines taken from `[log] file` when the daemon is not running.
const FILE_LOG_LINES: usize = crate::logging::RING_LINES;
/// Files in the data dir that hold private keys (never read into the bundle; searched for in it).
const KEY_FILES: [&str; 3] = ["device.key", crate::control::keys::SIGNING_FILE, crate::control::keys::SEALING_FILE];

pub async fn diag(cfg: &Config, out: &Path, events: i64) -> Result<(), CliError> {
    if !(1..=10_000).contains(&events) {
        return Err(CliError::Invalid(format!("--events {events}: use 1 to 10000")));
    }
    const _: () = assert!(STDERR_LINES <= MAX_DIAG_STDERR_LINES);
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    // Before the slow parts: a bundle that cannot be written is said at once.
    match out.parent() {
        Some(dir) if !dir.is_dir() => {
            return Err(CliError::Failed(format!("{}: {} is not a directory", out.display(), dir.display())))
        }
        _ => {}
    }
    let mut notes: Vec<String> = Vec::new();
    let store = match Store::open(&cfg.data_dir).await {
        Ok(s) => Some(s),
        Err(e) => {
            notes.push(format!("the database could not be opened: {e}"));
            None
        }
    };
    let mut secrets: Vec<Secret> = Vec::new();
    if let Some(store) = &store {
        match store.secrets().await {
            Ok(s) => secrets = s,
            // Without the secrets the last pass cannot be sure: refuse rather than risk it.
            Err(e) => return Err(CliError::Failed(format!("cannot read the stored secrets to mask them: {e}"))),
        }
    }
    let mut bundle = Bundle::new(secrets, &key_material(&cfg.data_dir));

    let config = toml::to_string_pretty(cfg).map_err(|e| CliError::Failed(e.to_string()))?;
    bundle.add("config.toml", &crate::logging::mask_url_passwords(&config));
    bundle.add("versions.txt", &versions(cfg).await);
    bundle.add("hardware.json", &pretty(&hardware(cfg).await));
    if let Some(store) = &store {
        bundle.add("db-summary.json", &pretty(&db_summary(store, cfg).await));
        match store.events(None, events).await {
            Ok(ev) => {
                bundle.add("events.jsonl", &jsonl(ev.iter().map(|e| serde_json::to_string(e).expect("serializes"))))
            }
            Err(e) => notes.push(format!("events could not be read: {e}")),
        }
    }

    let query = Command::Diagnostics(Diagnostics { stderr_lines: Some(STDERR_LINES) });
    let daemon = match crate::local_api::call(&cfg.data_dir, &query).await {
        Ok(reply) => match reply.into_result() {
            Ok(Output::Diagnostics { report }) => Ok(*report),
            Ok(other) => Err(format!("the daemon gave an unexpected answer: {other:?}")),
            Err(refusal) => Err(format!("the daemon refused the request: {refusal}")),
        },
        Err(e) => Err(format!("the daemon is not running ({e})")),
    };
    let daemon_line = match daemon {
        Ok(DiagnosticsReport { pid, logs, jobs }) => {
            bundle.add("logs.jsonl", &jsonl(logs.into_iter()));
            let mut used = std::collections::BTreeSet::new();
            for j in &jobs {
                let mut name = file_name(&j.job);
                while !used.insert(name.clone()) {
                    name.push('_');
                }
                let state = if j.running { "running" } else { "ended" };
                let mut text = format!("# job {} ({state}), last {} stderr lines\n", j.job, j.lines.len());
                text.push_str(&jsonl_plain(&j.lines));
                bundle.add(&format!("ffmpeg/{name}.log"), &text);
            }
            format!("The daemon was running (pid {pid}): logs.jsonl is its recent log, ffmpeg/ each job's last stderr lines ({} jobs).", jobs.len())
        }
        Err(why) => {
            let from_file = cfg.log.file.as_deref().and_then(|f| file_tail(f, FILE_LOG_LINES));
            let logs = match from_file {
                Some(lines) => {
                    bundle.add("logs.jsonl", &jsonl_plain(&lines));
                    "logs.jsonl is the tail of the configured log file"
                }
                None => "there are no logs (no [log] file is configured)",
            };
            format!("No logs or FFmpeg output from the daemon: {why}. {logs}.")
        }
    };
    let mut readme = format!(
        "vistter-agent diagnostics bundle\nwritten {} by vistter-agent {}\n\n{daemon_line}\n\n\
         Files: config.toml (effective configuration), versions.txt, hardware.json (encoder probe),\n\
         db-summary.json (tables, cameras, destinations, streams, segments), events.jsonl (newest {events} events),\n\
         logs.jsonl, ffmpeg/<job>.log. Stream keys, camera passwords and device keys are masked (***).\n",
        jiff::Timestamp::now(),
        env!("CARGO_PKG_VERSION"),
    );
    for n in &notes {
        readme.push_str(&format!("\nNote: {n}"));
    }
    readme.push('\n');
    bundle.add("README.txt", &readme);

    let files = bundle.files.len();
    let written = out.clone();
    tokio::task::spawn_blocking(move || write_atomically(&written, &bundle.files))
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    if daemon_line.starts_with("No logs") {
        eprintln!("vistter-agent: {daemon_line}");
    }
    outln!("{} ({files} files)", out.display());
    Ok(())
}

/// The files of the bundle, each masked as it is added.
struct Bundle {
    files: Vec<(String, Vec<u8>)>,
    redactor: Redactor,
    /// Raw key bytes: no text file should hold them, but the pass is on bytes to be sure.
    raw: Vec<Vec<u8>>,
}

impl Bundle {
    fn new(secrets: Vec<Secret>, keys: &[[u8; 32]]) -> Bundle {
        use base64::Engine;
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let mut all = secrets;
        for k in keys {
            for e in &engines {
                let b = e.encode(k);
                // The first 40 characters (30 bytes) are the same wherever the key starts a longer
                // encoding (an ed25519 keypair is the secret key followed by the public one).
                all.push(Secret::new(&b[..40]));
                all.push(Secret::new(b));
            }
            all.push(Secret::new(hex::encode(k)));
            all.push(Secret::new(hex::encode_upper(k)));
        }
        Bundle { files: Vec::new(), redactor: Redactor::new(all), raw: keys.iter().map(|k| k.to_vec()).collect() }
    }

    fn add(&mut self, name: &str, text: &str) {
        let mut bytes = self.redactor.redact(text).into_bytes();
        for k in &self.raw {
            bytes = replace_bytes(&bytes, k, b"***");
        }
        self.files.push((name.to_string(), bytes));
    }
}

/// The device's private keys, as their files hold them (32 bytes each); missing files are skipped.
fn key_material(data_dir: &Path) -> Vec<[u8; 32]> {
    KEY_FILES
        .iter()
        .filter_map(|f| std::fs::read(data_dir.join(f)).ok())
        .filter_map(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .collect()
}

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || hay.len() < needle.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("serializes") + "\n"
}

fn jsonl(lines: impl Iterator<Item = String>) -> String {
    lines.map(|l| l + "\n").collect()
}

fn jsonl_plain(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A job name as a file name: `relay:r1/push:d1` → `relay_r1_push_d1`.
fn file_name(job: &str) -> String {
    let s: String = job.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if s.is_empty() {
        "job".into()
    } else {
        s
    }
}

/// The last `n` lines of the log file (with its rotated predecessor ahead of it).
fn file_tail(file: &Path, n: usize) -> Option<Vec<String>> {
    let read = |p: &Path| std::fs::read(p).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
    let current = read(file)?;
    let older = read(&crate::logging::RotatingFile::rotated_path(file)).unwrap_or_default();
    let lines: Vec<String> = older.lines().chain(current.lines()).map(str::to_string).collect();
    Some(lines[lines.len().saturating_sub(n)..].to_vec())
}

async fn versions(cfg: &Config) -> String {
    let mut v = format!(
        "vistter-agent {} (git {})\ntarget {}-{}\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("VISTTER_GIT_REV").unwrap_or("unknown"),
        std::env::consts::ARCH,
        std::env::consts::OS,
    );
    let ffmpeg = first_line(&cfg.ffmpeg.path, "-version").await;
    let ffprobe = first_line(&cfg.ffmpeg.ffprobe, "-version").await;
    v.push_str(&format!("ffmpeg: {ffmpeg}\nffprobe: {ffprobe}\n"));
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|s| s.trim_matches('"').to_string()))
        .unwrap_or_else(|| "unknown".into());
    v.push_str(&format!("os: {os}\nkernel: {}\n", read("/proc/version").trim()));
    if let Ok(id) = cfg.device_id() {
        v.push_str(&format!("device_id: {id}\n"));
    }
    v
}

/// The first line `program arg` prints, or why there is none.
async fn first_line(program: &Path, arg: &str) -> String {
    let child = tokio::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), child).await {
        Ok(Ok(o)) => String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("(no output)").to_string(),
        Ok(Err(e)) => format!("cannot run {}: {e}", program.display()),
        Err(_) => format!("{} {arg} did not answer within 10 s", program.display()),
    }
}

/// The hardware encoder probe (the cached verdict, probing if there is none).
async fn hardware(cfg: &Config) -> Value {
    let cache = cfg.data_dir.join("hwaccel.json");
    let probe = crate::media::hwaccel::cached(&cfg.ffmpeg.path, &cache, false);
    match tokio::time::timeout(Duration::from_secs(90), probe).await {
        Ok(Ok(v)) => serde_json::to_value(v).expect("serializes"),
        Ok(Err(e)) => json!({ "error": e.to_string() }),
        Err(_) => json!({ "error": "the probe did not finish within 90 s" }),
    }
}

/// Row counts, the schema version, and the configured things (secrets are not in their rows).
async fn db_summary(store: &Store, cfg: &Config) -> Value {
    use sqlx::Row;
    let pool = store.pool();
    let err = |e: &dyn std::fmt::Display| json!({ "error": e.to_string() });
    let schema = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(pool)
        .await
        .map(|r| json!(r.get::<Option<i64>, _>("v")))
        .unwrap_or_else(|e| err(&e));
    let mut tables = serde_json::Map::new();
    let names =
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetch_all(pool)
            .await
            .map(|rows| rows.iter().map(|r| r.get::<String, _>("name")).collect::<Vec<_>>())
            .unwrap_or_default();
    for name in names {
        // The name comes from sqlite_master, quoted as an identifier.
        let q = format!("SELECT COUNT(*) AS n FROM \"{}\"", name.replace('"', "\"\""));
        let n = sqlx::query(&q).fetch_one(pool).await.map(|r| json!(r.get::<i64, _>("n"))).unwrap_or_else(|e| err(&e));
        tables.insert(name, n);
    }
    let ser = |r: Result<Value, String>| r.unwrap_or_else(|e| json!({ "error": e }));
    let cameras = ser(store.cameras().await.map(|v| json!(v)).map_err(|e| e.to_string()));
    let destinations = ser(store.destinations().await.map(|v| json!(v)).map_err(|e| e.to_string()));
    let streams = ser(store.relays().await.map(|v| json!(v)).map_err(|e| e.to_string()));
    let library = crate::segments::library::Library::new(store.clone(), &cfg.data_dir);
    let segments = ser(library.list().await.map(|v| json!(v)).map_err(|e| e.to_string()));
    let db_bytes = std::fs::metadata(cfg.data_dir.join("agent.db")).map(|m| m.len()).ok();
    json!({
        "schema_version": schema,
        "database_bytes": db_bytes,
        "rows": tables,
        "cameras": cameras,
        "destinations": destinations,
        "streams": streams,
        "segments": segments,
    })
}

/// Writes the tar.zst next to `out` (mode 0600), flushes it, and renames it into place.
fn write_atomically(out: &Path, files: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    // `out` is the operator's own choice of name. The temporary name beside it is created new
    // (O_EXCL: never opened through a link someone left there, e.g. in /tmp), and only a file
    // created here is removed on failure; the rename replaces a link at `out` itself, never the
    // file it points to.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)?;
    let result = (|| {
        let mut tar = tar::Builder::new(zstd::Encoder::new(f, 3)?);
        let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for (path, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(mtime);
            tar.append_data(&mut h, format!("vistter-diag/{path}"), bytes.as_slice())?;
        }
        let mut f = tar.into_inner()?.finish()?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)?;
        // The rename is durable once the directory is.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_every_secret_is_masked() {
        let key = [7u8; 32];
        let mut b = Bundle::new(vec![Secret::new("live_key-123"), Secret::new("p@ss word")], &[key]);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let mut pair = key.to_vec();
        pair.extend([9u8; 32]);
        let pair64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&pair);
        let text = format!(
            "rtmp://h/app/live_key-123 rtsp://u:p%40ss+word@h {b64} {} {pair64} raw:{}",
            hex::encode(key),
            String::from_utf8_lossy(&key)
        );
        b.add("f.txt", &text);
        let out = String::from_utf8(b.files[0].1.clone()).unwrap();
        for needle in ["live_key-123", "p%40ss", &b64[..40], &hex::encode(key), &pair64[..40], "\u{7}\u{7}\u{7}\u{7}"] {
            assert!(!out.contains(needle), "{needle:?} in {out}");
        }
        assert_eq!(file_name("relay:r1/push:d1"), "relay_r1_push_d1");
    }
}
