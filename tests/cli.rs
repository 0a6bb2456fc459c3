//! The command line: help everywhere, documented exit codes, bad input refused with a clear
//! message and nothing stored, secrets never printed and encrypted at rest, hwaccel probing.

mod common;

use common::*;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn every_command_has_help() {
    let agent = TestAgent::new();
    let cmds: &[&[&str]] = &[
        &[],
        &["run"],
        &["check-config"],
        &["camera"],
        &["camera", "add"],
        &["camera", "list"],
        &["camera", "probe"],
        &["camera", "remove"],
        &["destination"],
        &["destination", "add"],
        &["destination", "list"],
        &["destination", "remove"],
        &["stream"],
        &["stream", "start"],
        &["stream", "stop"],
        &["stream", "status"],
        &["stream", "list"],
        &["stream", "attach"],
        &["stream", "detach"],
        &["stream", "remove"],
        &["kill-all"],
        &["hwaccel"],
        &["demo"],
        &["events"],
        &["program"],
        &["overlay"],
        &["timeline"],
        &["schedule"],
        &["camera", "preset"],
        &["camera", "ptz"],
        &["device"],
        &["device", "show"],
        &["trust"],
        &["trust", "add"],
        &["trust", "list"],
        &["trust", "remove"],
        &["admin"],
        &["admin", "set-password"],
        &["admin", "clear-password"],
        &["diag"],
        &["doctor"],
    ];
    for c in cmds {
        let mut args = c.to_vec();
        args.push("--help");
        let out = agent.cli(&args);
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
    let top = agent.ok(&["--help"]);
    assert!(top.contains("78 configuration error"), "exit codes are documented in --help");
}

/// The subcommands listed under "Commands:" in a help text.
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Whether `flag` (`--id`) is in the help text as a whole option, not a prefix of a longer one.
fn has_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        !help[i + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            && !help[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// Each command group's help lists its real subcommands, and each command's help names its real
/// arguments and flags: removing or renaming one fails here, not in a user's script.
#[test]
fn help_names_every_subcommand_and_flag() {
    let agent = TestAgent::new();
    let groups: &[(&[&str], &[&str])] = &[
        (
            &["program"],
            &["start", "cut", "slate", "pin", "unpin", "preroll", "attach", "detach", "status", "stop", "thumbnail"],
        ),
        (&["overlay"], &["show", "hide", "set-var", "clear"]),
        (
            &["timeline"],
            &[
                "load",
                "validate",
                "list",
                "show",
                "remove",
                "preflight",
                "play",
                "pause",
                "resume",
                "stop",
                "seek",
                "skip",
                "pin",
                "unpin",
                "slate",
                "clear-overlays",
                "status",
                "history",
            ],
        ),
        (&["schedule"], &["add", "list", "remove", "enable", "disable"]),
        (&["camera"], &["add", "list", "probe", "remove", "preset", "ptz"]),
        (&["camera", "preset"], &["set", "remove", "list"]),
        (&["destination"], &["add", "list", "remove", "attach", "detach"]),
        (&["device"], &["show"]),
        (&["trust"], &["add", "list", "remove"]),
        (&["admin"], &["set-password", "clear-password"]),
        (
            &[],
            &[
                "run",
                "demo",
                "camera",
                "destination",
                "stream",
                "program",
                "overlay",
                "timeline",
                "schedule",
                "events",
                "device",
                "trust",
                "status",
                "diag",
                "doctor",
                "admin",
            ],
        ),
    ];
    for (cmd, subs) in groups {
        let help = agent.ok(&[*cmd, &["--help"][..]].concat());
        let listed = listed_commands(&help);
        for sub in *subs {
            assert!(listed.iter().any(|l| l == sub), "`{}` lists {sub}: {listed:?}\n{help}", cmd.join(" "));
        }
    }
    let leaves: &[(&[&str], &[&str])] = &[
        (
            &["program", "start"],
            &["--camera", "--destination", "--profile", "--size", "--fps", "--bitrate", "--slate", "--program"],
        ),
        (&["program", "cut"], &["<CAMERA>", "--at", "--in", "--fade", "--program"]),
        (&["program", "slate"], &["<STATE>", "--program"]),
        (&["program", "pin"], &["<CAMERA>", "--program"]),
        (&["program", "preroll"], &["<CAMERA>", "--program"]),
        (&["program", "attach"], &["<DESTINATION>", "--program"]),
        (&["program", "detach"], &["<DESTINATION>", "--program"]),
        (&["program", "status"], &["--json", "--program"]),
        (&["program", "stop"], &["--program"]),
        (&["program", "thumbnail"], &["--source", "--out", "--program"]),
        (
            &["overlay", "show"],
            &[
                "--type",
                "--text",
                "--image",
                "--position",
                "--offset-x",
                "--offset-y",
                "--scale",
                "--opacity",
                "--layer",
                "--font-size",
                "--color",
                "--background",
                "--fade-in",
                "--fade-out",
                "--program",
            ],
        ),
        (&["overlay", "hide"], &["<OVERLAY>", "--program"]),
        (&["overlay", "set-var"], &["<NAME>", "<VALUE>", "--program"]),
        (&["overlay", "clear"], &["--program"]),
        (&["timeline", "load"], &["<FILE>"]),
        (&["timeline", "preflight"], &["<ID>", "--destination"]),
        (&["timeline", "play"], &["<ID>", "--destination", "--from", "--bitrate"]),
        (&["timeline", "seek"], &["--cue", "--to"]),
        (&["timeline", "pin"], &["<CAMERA>"]),
        (&["timeline", "slate"], &["<STATE>"]),
        (&["timeline", "status"], &["--json"]),
        (&["timeline", "history"], &["--limit", "--json"]),
        (
            &["schedule", "add"],
            &[
                "<ID>",
                "--name",
                "--timezone",
                "--days",
                "--start",
                "--end",
                "--timeline",
                "--destination",
                "--disabled",
            ],
        ),
        (&["schedule", "enable"], &["<ID>"]),
        (&["schedule", "disable"], &["<ID>"]),
        (&["demo"], &["--out", "--rtmp", "--seconds", "--size", "--fps", "--bitrate", "--cut-every"]),
        (&["events"], &["--subject", "--limit", "--json"]),
        (&["doctor"], &["--json", "--strict", "--service-user"]),
        (&["camera", "preset", "set"], &["<CAMERA>", "<PRESET>", "--token"]),
        (&["camera", "preset", "remove"], &["<CAMERA>", "<PRESET>"]),
        (&["camera", "preset", "list"], &["--json"]),
        (&["camera", "ptz"], &["<ID>", "--profile", "--settle-ms"]),
        (&["destination", "attach"], &["<ID>", "--program"]),
        (&["destination", "detach"], &["<ID>", "--program"]),
    ];
    for (cmd, words) in leaves {
        let help = agent.ok(&[*cmd, &["--help"][..]].concat());
        for w in *words {
            let found = if w.starts_with("--") { has_flag(&help, w) } else { help.contains(w) };
            assert!(found, "`{} --help` names {w}:\n{help}", cmd.join(" "));
        }
    }
    // One name for the program everywhere (`--program`, as on `overlay`); `--id`, its older name
    // on `program …`, is still understood (no daemon here: the command gets past parsing only).
    for args in [&["program", "stop", "--id", "main"][..], &["program", "status", "--id", "main"]] {
        let out = agent.cli(args);
        assert_ne!(code(&out), 2, "`{}` parses: {}", args.join(" "), stderr(&out));
        assert!(stderr(&out).contains("is `vistter-agent run` running"), "{}", stderr(&out));
    }
}

#[test]
fn bad_input_is_refused_clearly_and_nothing_is_stored() {
    let agent = TestAgent::new();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["camera", "add", "c1", "--url", "not a url"], 2, "invalid camera URL"),
        (&["camera", "add", "c1", "--url", "http://10.0.0.1/stream"], 2, "rtsp://"),
        (&["camera", "add", "bad id!", "--url", "rtsp://10.0.0.1/s"], 2, "camera id: \"bad id!\" is not an id"),
        (&["destination", "add", "d1", "--platform", "myspace", "--key", "abcd1234"], 2, "unknown platform"),
        (&["destination", "add", "d1", "--platform", "youtube", "--key", ""], 2, "stream key is empty"),
        (&["destination", "add", "d1", "--platform", "youtube", "--key", "   "], 2, "stream key is empty"),
        (
            &["destination", "add", "d1", "--platform", "custom", "--url", "http://x/app", "--key", "abcd1234"],
            2,
            "only rtmp:// and rtmps://",
        ),
        (
            &["destination", "add", "d1", "--platform", "custom", "--url", "srt://x:9000", "--key", "abcd1234"],
            2,
            "only rtmp:// and rtmps://",
        ),
        (&["destination", "add", "d1", "--platform", "custom", "--key", "abcd1234"], 2, "needs --url"),
        (&["stream", "start", "s1", "--camera", "nope", "--destination", "nope"], 3, "camera \"nope\" not found"),
    ];
    for (args, want, msg) in cases {
        let out = agent.cli(args);
        assert_eq!(code(&out), *want, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(msg), "{args:?}: want {msg:?} in {:?}", stderr(&out));
    }
    assert_eq!(agent.ok(&["camera", "list", "--json"]).trim(), "[]");
    assert_eq!(agent.ok(&["destination", "list", "--json"]).trim(), "[]");
    assert_eq!(agent.ok(&["stream", "list", "--json"]).trim(), "[]");
}

#[test]
fn an_unreachable_camera_is_a_clear_error_and_is_not_added() {
    let agent = TestAgent::new();
    let port = free_port(); // nothing listens there
    let url = format!("rtsp://admin:hunter2x@127.0.0.1:{port}/cam");
    let out = agent.cli(&["camera", "probe", "--url", &url]);
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("unreachable") || stderr(&out).contains("did not answer"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("hunter2x"), "the password is not echoed: {}", stderr(&out));
    let out = agent.cli(&["camera", "add", "c1", "--url", &url, "--probe"]);
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was stored"));
    assert_eq!(agent.ok(&["camera", "list", "--json"]).trim(), "[]");
}

#[test]
fn a_reachable_camera_probes_with_its_codecs() {
    let cam = RtspCamera::start("smpte");
    let agent = TestAgent::new();
    agent.ok(&["camera", "add", "c1", "--url", &cam.url(), "--probe"]);
    let out = agent.ok(&["camera", "probe", "c1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["video_codec"], "h264");
    assert_eq!(v["audio_codec"], "aac");
}

#[test]
fn secrets_are_masked_in_output_and_encrypted_at_rest() {
    let agent = TestAgent::new();
    agent.ok(&["camera", "add", "c1", "--url", "rtsp://admin:Cam3raPass@10.0.0.9:554/s1"]);
    agent.ok(&["destination", "add", "yt", "--platform", "youtube", "--key", "abcd-efgh-ijkl-mnop", "--backup-ingest"]);
    let mut printed = agent.ok(&["camera", "list"]);
    printed += &agent.ok(&["camera", "list", "--json"]);
    printed += &agent.ok(&["destination", "list"]);
    printed += &agent.ok(&["destination", "list", "--json"]);
    assert!(printed.contains("rtsp://admin:***@10.0.0.9:554/s1"), "{printed}");
    assert!(printed.contains("rtmp://a.rtmp.youtube.com/live2/***"), "{printed}");
    for secret in ["Cam3raPass", "abcd-efgh-ijkl-mnop"] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
        for f in ["agent.db", "agent.db-wal"] {
            let bytes = std::fs::read(agent.data_dir().join(f)).unwrap_or_default();
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} in clear in {f}");
        }
    }
    let key = agent.data_dir().join("device.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_config_error_has_its_own_exit_code_and_names_the_key() {
    let agent = TestAgent::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[ffmpeg]\nstale_seconds = 3\n").unwrap();
    let out = std::process::Command::new(AGENT_BIN)
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    assert!(stderr(&out).contains("stale_seconds"), "{}", stderr(&out));
    let out = std::process::Command::new(AGENT_BIN).args(["--config", cfg.to_str().unwrap(), "run"]).output().unwrap();
    assert_eq!(code(&out), 78, "run refuses a bad config too");
    let out = std::process::Command::new(AGENT_BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "check-config"])
        .env("VISTTER_FFMPEG__STALE_S", "soon")
        .output()
        .unwrap();
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    // The good default config prints.
    assert!(agent.ok(&["check-config"]).contains("stale_s = 10"));
}

#[test]
fn hwaccel_probe_chooses_a_working_encoder() {
    let agent = TestAgent::new();
    let out = agent.ok(&["hwaccel", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let chosen = v["chosen"].as_str().unwrap();
    let cands = v["candidates"].as_array().unwrap();
    assert!(cands.iter().any(|c| c["encoder"] == chosen && c["works"] == true), "{v:#}");
    for hw in ["h264_v4l2m2m", "h264_videotoolbox", "h264_vaapi", "h264_qsv", "h264_nvenc"] {
        assert!(cands.iter().any(|c| c["encoder"] == hw), "{hw} considered");
    }
    // Cached: the second call answers from the cache file.
    assert!(agent.data_dir().join("hwaccel.json").exists());
    let again: serde_json::Value = serde_json::from_str(&agent.ok(&["hwaccel", "--json"])).unwrap();
    assert_eq!(again, v);
}

/// `device show` makes the keys once (0600) and prints the same public keys every time; `trust`
/// adds, lists and removes keys with the documented exit codes, and keeps the last admin key.
#[test]
fn device_keys_are_made_once_and_the_trust_store_is_managed() {
    use std::os::unix::fs::PermissionsExt;
    let agent = TestAgent::new();
    let show: serde_json::Value = serde_json::from_str(&agent.ok(&["device", "show", "--json"])).unwrap();
    let again: serde_json::Value = serde_json::from_str(&agent.ok(&["device", "show", "--json"])).unwrap();
    assert_eq!(show, again, "the same keys each time");
    for k in ["device_public_key", "device_sealing_key"] {
        let b = show[k].as_str().unwrap();
        assert_eq!(b.len(), 44, "{k} is base64 of 32 bytes: {b}");
    }
    assert!(!show["device_id"].as_str().unwrap().is_empty());
    for f in ["device_ed25519.key", "device_x25519.key"] {
        let mode = std::fs::metadata(agent.data_dir().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let pk = show["device_public_key"].as_str().unwrap();
    agent.ok(&["trust", "add", "studio-a", "--public-key", pk]);
    agent.ok(&["trust", "add", "admin-1", "--public-key", pk, "--role", "trust_admin", "--role", "command"]);
    let list: serde_json::Value = serde_json::from_str(&agent.ok(&["trust", "list", "--json"])).unwrap();
    assert_eq!(list["keys"][0]["roles"], serde_json::json!(["command"]), "{list}");
    assert_eq!(list["keys"][1]["roles"], serde_json::json!(["command", "trust_admin"]), "{list}");
    let out = agent.cli(&["trust", "remove", "admin-1"]);
    assert_eq!(code(&out), 4, "the last admin key stays: {}", stderr(&out));
    assert!(stderr(&out).contains("last trust_admin"), "{}", stderr(&out));
    let out = agent.cli(&["trust", "add", "bad", "--public-key", "AAAA"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = agent.cli(&["trust", "remove", "nobody"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    agent.ok(&["trust", "remove", "studio-a"]);
    let list: serde_json::Value = serde_json::from_str(&agent.ok(&["trust", "list", "--json"])).unwrap();
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(1), "{list}");
}

/// `sudo vistter-agent …` on an appliance whose data dir belongs to the service's user: what the
/// command makes there (the device keys on first use, the database, copied show files) is handed
/// to that user, or the service could no longer read it.
#[test]
fn a_root_command_leaves_the_data_dir_to_its_owner() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs the CLI as root, as `sudo` does on the appliance: run the suite as root (CI does)"
    );
    let agent = TestAgent::new();
    let data = agent.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    // `nobody` stands for the service's user.
    let (uid, gid) = (65534, 65534);
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    agent.ok(&["device", "show"]);
    agent.ok(&["camera", "add", "a", "--url", "rtsp://127.0.0.1:1/x"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("slate.png"), b"png").unwrap();
    let tl = serde_json::json!({"id": "t", "name": "t", "duration": 4, "fps": 25, "resolution": "320x180",
        "fallback": {"slate": "slate.png"},
        "tracks": {"video": {"cues": [{"id": "c", "start_time": 0, "duration": 4, "action": "show_camera",
                                        "params": {"camera_id": "a"}}]}, "overlays": []}});
    let file = src.path().join("t.json");
    std::fs::write(&file, tl.to_string()).unwrap();
    agent.ok(&["timeline", "load", file.to_str().unwrap()]);
    let mut seen = 0;
    for p in vistter_agent::ownership::walk(&data).unwrap() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{} belongs to the data dir's owner", p.display());
        seen += 1;
    }
    assert!(data.join("device_ed25519.key").exists() && data.join("agent.db").exists());
    assert!(data.join("assets").is_dir() && seen > 6, "keys, database and copied files were checked: {seen}");
}

/// The README's CLI table and the real CLI agree, both ways: every command a row names exists (its
/// group lists it) and every flag the row gives is in that command's `--help`; and every command
/// the CLI has is in the table.
#[test]
fn the_readme_cli_table_matches_the_cli() {
    let agent = TestAgent::new();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "## CLI")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `"))
        .collect();
    assert!(table.len() > 30, "the README's CLI table was found: {} rows", table.len());
    let top = listed_commands(&agent.ok(&["--help"]));
    let mut helps: std::collections::HashMap<Vec<String>, String> = Default::default();
    let mut help_of = |path: &[String]| -> String {
        helps
            .entry(path.to_vec())
            .or_insert_with(|| {
                let args: Vec<&str> = path.iter().map(String::as_str).chain(["--help"]).collect();
                agent.ok(&args)
            })
            .clone()
    };
    let mut checked = 0;
    let mut seen: std::collections::HashSet<Vec<String>> = Default::default();
    for row in table {
        let cell = row.trim_start_matches('|').split(" | ").next().unwrap_or_default();
        let mut group: Option<String> = None;
        for span in cell.split('`').skip(1).step_by(2) {
            let words: Vec<&str> = span.split_whitespace().collect();
            let Some(first) = words.first() else { continue };
            // `resume` after `timeline pause` means `timeline resume`.
            let mut path: Vec<String> = if top.iter().any(|t| t == first) {
                group = Some(first.to_string());
                vec![first.to_string()]
            } else {
                let g = group.clone().unwrap_or_else(|| panic!("{span:?}: no command group in {row}"));
                vec![g]
            };
            let rest = if top.iter().any(|t| t == first) { &words[1..] } else { &words[..] };
            // Subcommands: as long as the group's help lists the next word (`enable\|disable`: each).
            let mut leaves: Vec<Vec<String>> = vec![path.clone()];
            for w in rest {
                let names: Vec<&str> = w.split("\\|").collect();
                let listed = listed_commands(&help_of(&path));
                if !names.iter().all(|n| listed.iter().any(|l| l == n)) {
                    break;
                }
                leaves = names.iter().map(|n| path.iter().cloned().chain([n.to_string()]).collect()).collect();
                path = leaves[0].clone();
            }
            assert!(
                listed_commands(&help_of(&path)).is_empty(),
                "README row {row:?}: {span:?} names no subcommand of `{}`",
                path.join(" ")
            );
            let flags: Vec<&str> = words
                .iter()
                .flat_map(|w| w.split(|c: char| "[]()|\\…".contains(c)))
                .filter(|w| w.starts_with("--"))
                .map(|w| w.split('=').next().unwrap_or(w))
                .collect();
            for leaf in &leaves {
                seen.insert(leaf.clone());
                let help = help_of(leaf);
                for f in &flags {
                    assert!(has_flag(&help, f), "README row {row:?}: `{}` has no {f}:\n{help}", leaf.join(" "));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 60, "commands checked: {checked}");
    // And the other way: every command the CLI has is in the table.
    let mut missing = Vec::new();
    let mut todo: Vec<Vec<String>> = top.iter().filter(|t| *t != "help").map(|t| vec![t.clone()]).collect();
    while let Some(path) = todo.pop() {
        let subs = listed_commands(&help_of(&path));
        if subs.is_empty() {
            if !seen.contains(&path) {
                missing.push(path.join(" "));
            }
        } else {
            todo.extend(subs.into_iter().filter(|s| s != "help").map(|s| path.iter().cloned().chain([s]).collect()));
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "commands missing from the README's CLI table: {missing:?}");
}

/// `vistter-agent hwaccel | head -1` and the like: a reader that goes away before the output ends
/// ends the command quietly (exit 0), never with a panic (it was "failed printing to stdout").
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let agent = TestAgent::new();
    // hwaccel test-encodes before it prints, so the pipe is closed by the time it writes.
    let out = agent.cli_closed_stdout(&["hwaccel"]);
    let err = stderr(&out);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_eq!(code(&out), 0, "{err}");
}
