//! The balena deployment (`deploy/balena/`, `docker-compose.yml`, `.dockerignore`) against the
//! repository, without building an image:
//! - every file the Dockerfile copies exists in the build context (the repository root) and is not
//!   excluded by `.dockerignore`, and the runtime stage copies the binary the build stage makes;
//! - the build stage's `cargo build` line is exactly the one README.md gives in its
//!   `<!-- balena-build -->` block (and the balena README repeats it);
//! - `docker-compose.yml` parses, uses only what balena supports, builds this Dockerfile, mounts the
//!   volume at the data dir and checks `/healthz` on the status server's default address;
//! - every `VISTTER_*` variable the balena README lists is a configuration key (loaded by the real
//!   config loader with its example value, which lands on that key; a misspelt name is refused), its
//!   default is the image's, and every key of the configuration is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::{json, Value};
use vistter_agent::config::{Config, Overrides, Sources};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const DOCKERFILE: &str = "deploy/balena/Dockerfile";
const BALENA_README: &str = "deploy/balena/README.md";
/// The line that precedes the fenced build command in README.md and in the balena README.
const BUILD_MARKER: &str = "<!-- balena-build -->";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// One instruction: continuation lines joined with a space, comment lines dropped (as Docker does).
#[derive(Debug)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(b) => (b.trim(), true),
            None => (trimmed, false),
        };
        let (line, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if !acc.is_empty() && !body.is_empty() {
            acc.push(' ');
        }
        acc.push_str(body);
        if continues {
            pending = Some((line, acc));
            continue;
        }
        let (keyword, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instruction { line, keyword: keyword.to_uppercase(), args: args.trim().to_string() });
    }
    assert!(pending.is_none(), "the Dockerfile ends inside a continued line");
    out
}

/// A build stage: its `FROM` line's name (`AS name`), working directory and instructions.
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    workdir: String,
    body: Vec<Instruction>,
}

fn stages(text: &str) -> Vec<Stage> {
    let mut out: Vec<Stage> = Vec::new();
    for ins in instructions(text) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins.args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                [_] => None,
                _ => panic!("line {}: unexpected FROM {:?}", ins.line, ins.args),
            };
            out.push(Stage { image: words[0].to_string(), name, workdir: "/".into(), body: Vec::new() });
            continue;
        }
        let stage = out.last_mut().unwrap_or_else(|| panic!("line {}: {} before FROM", ins.line, ins.keyword));
        if ins.keyword == "WORKDIR" {
            stage.workdir = if ins.args.starts_with('/') {
                ins.args.clone()
            } else {
                format!("{}/{}", stage.workdir.trim_end_matches('/'), ins.args)
            };
        }
        stage.body.push(ins);
    }
    out
}

/// The words of a JSON-array (exec form) or whitespace-separated (shell form) argument list.
fn words(args: &str) -> Vec<String> {
    if args.starts_with('[') {
        serde_json::from_str(args).unwrap_or_else(|e| panic!("not a JSON array: {args}: {e}"))
    } else {
        args.split_whitespace().map(str::to_string).collect()
    }
}

/// `COPY`/`ADD`: its `--flag=value` options, its sources and its destination.
fn copy_parts(args: &str) -> (BTreeMap<String, String>, Vec<String>, String) {
    let mut flags = BTreeMap::new();
    let mut rest = args.trim();
    while let Some(after) = rest.strip_prefix("--") {
        let (flag, tail) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
        flags.insert(k.to_string(), v.to_string());
        rest = tail.trim_start();
    }
    let mut w = words(rest);
    let dest = w.pop().expect("COPY has a destination");
    assert!(!w.is_empty(), "COPY {args} has no source");
    (flags, w, dest)
}

/// A stage's `ENV` pairs (`KEY=VALUE …`, or the legacy `KEY VALUE`).
fn env_pairs(stage: &Stage) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ins in stage.body.iter().filter(|i| i.keyword == "ENV") {
        if !ins.args.contains('=') {
            let (k, v) = ins.args.split_once(char::is_whitespace).expect("ENV KEY VALUE");
            out.push((k.to_string(), v.trim().to_string()));
            continue;
        }
        for word in ins.args.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or_else(|| panic!("line {}: ENV word {word:?}", ins.line));
            out.push((k.to_string(), v.trim_matches('"').to_string()));
        }
    }
    out
}

fn dockerfile() -> Vec<Stage> {
    let s = stages(&read(DOCKERFILE));
    assert!(s.len() >= 2, "a multi-stage build: {s:?}");
    s
}

/// The stage that runs `cargo build`, and that RUN's command line.
fn cargo_build(stages: &[Stage]) -> (usize, String) {
    let runs: Vec<(usize, &Instruction)> = stages
        .iter()
        .enumerate()
        .flat_map(|(n, s)| s.body.iter().map(move |i| (n, i)))
        .filter(|(_, i)| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    assert_eq!(runs.len(), 1, "exactly one RUN builds the agent: {runs:?}");
    let (n, ins) = runs[0];
    let line = if ins.args.starts_with('[') { words(&ins.args).join(" ") } else { ins.args.clone() };
    (n, line)
}

fn runtime(stages: &[Stage]) -> &Stage {
    stages.last().expect("a final stage")
}

/// The binary's name, from Cargo.toml.
fn bin_name() -> String {
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml parses");
    let bins = manifest.get("bin").and_then(|b| b.as_array()).expect("Cargo.toml has [[bin]]");
    assert_eq!(bins.len(), 1, "one binary");
    bins[0]["name"].as_str().expect("[[bin]] name").to_string()
}

// ---------------------------------------------------------------------------------------------
// .dockerignore, with Docker's rules: patterns are relative to the context root (a leading `/` is
// dropped), `*` and `?` stay within one path component, `**` spans any number of them, a pattern
// also excludes everything under a directory it matches, `!` re-includes, and the last matching
// pattern decides.

struct DockerIgnore {
    rules: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn load() -> DockerIgnore {
        let text = read(".dockerignore");
        let mut rules = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            assert!(
                !pat.contains(['[', '\\']),
                ".dockerignore: character classes and escapes are not supported here: {pat}"
            );
            let parts: Vec<String> = pat
                .trim_start_matches('/')
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            assert!(!parts.is_empty(), ".dockerignore: empty pattern {line:?}");
            rules.push((include, parts));
        }
        DockerIgnore { rules }
    }

    /// Whether `rel` (a path relative to the context root, `/`-separated) is left out of the context.
    fn excludes(&self, rel: &str) -> bool {
        let comps: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (include, pat) in &self.rules {
            let pat: Vec<&str> = pat.iter().map(String::as_str).collect();
            if (1..=comps.len()).any(|n| glob(&pat, &comps[..n])) {
                excluded = !include;
            }
        }
        excluded
    }
}

fn glob(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| glob(rest, &path[i..])),
        Some((p, rest)) => !path.is_empty() && component(p.as_bytes(), path[0].as_bytes()) && glob(rest, &path[1..]),
    }
}

fn component(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => component(&p[1..], s) || (!s.is_empty() && component(p, &s[1..])),
        (Some(b'?'), Some(_)) => component(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => component(&p[1..], &s[1..]),
        _ => false,
    }
}

#[test]
fn the_dockerignore_matcher_follows_docker() {
    let d = DockerIgnore {
        rules: vec![
            (false, vec!["**".into(), "target".into()]),
            (false, vec!["*.flv".into()]),
            (false, vec!["tests".into()]),
            (true, vec!["tests".into(), "keep".into()]),
        ],
    };
    assert!(d.excludes("target/release/x") && d.excludes("fuzz/target/a"), "** spans directories");
    assert!(d.excludes("demo.flv") && !d.excludes("tests2/demo.flv"), "* stays at the root");
    assert!(d.excludes("tests/a.rs") && !d.excludes("tests/keep/a.rs"), "! re-includes");
    assert!(!d.excludes("src/main.rs") && !d.excludes("targets"));
}

/// Every file under `dir` (relative to the repository), recursively.
fn files_under(rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::from(rel)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(Path::new(REPO).join(&d)).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let e = e.unwrap();
            let rel = d.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                todo.push(rel);
            } else {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_copies_only_what_exists_and_is_sent() {
    let stages = dockerfile();
    let ignore = DockerIgnore::load();
    let mut copied = 0;
    let mut installed_binary = None;
    for (n, stage) in stages.iter().enumerate() {
        for ins in stage.body.iter().filter(|i| i.keyword == "COPY" || i.keyword == "ADD") {
            let (flags, sources, dest) = copy_parts(&ins.args);
            if let Some(from) = flags.get("from") {
                // From an earlier stage: the binary that stage's `cargo build` makes.
                let (built_in, cmd) = cargo_build(&stages);
                let src = stages.iter().position(|s| s.name.as_deref() == Some(from.as_str()));
                assert_eq!(src, Some(built_in), "line {}: COPY --from={from} is not the build stage", ins.line);
                assert!(built_in < n, "line {}: --from a later stage", ins.line);
                assert!(!cmd.contains("--target"), "the binary is expected under target/release: {cmd}");
                let want = format!("{}/target/release/{}", stages[built_in].workdir.trim_end_matches('/'), bin_name());
                assert_eq!(sources, vec![want], "line {}: the build stage's binary", ins.line);
                installed_binary = Some(dest);
                continue;
            }
            for src in &sources {
                assert!(
                    !src.contains(['*', '?', '[']) && !src.contains("://") && !src.starts_with('/'),
                    "line {}: {src}: a plain path in the context is expected",
                    ins.line
                );
                let rel = src.trim_start_matches("./").trim_end_matches('/');
                assert!(!rel.split('/').any(|c| c == ".."), "line {}: {src} leaves the context", ins.line);
                let path = Path::new(REPO).join(rel);
                assert!(path.exists(), "line {}: {src} does not exist in the repository", ins.line);
                assert!(!ignore.excludes(rel), "line {}: .dockerignore excludes {src}", ins.line);
                if path.is_dir() {
                    let files = files_under(rel);
                    assert!(!files.is_empty(), "line {}: {src} is empty", ins.line);
                    for f in files {
                        assert!(
                            !ignore.excludes(&f),
                            "line {}: .dockerignore excludes {f} (copied with {src})",
                            ins.line
                        );
                    }
                }
                copied += 1;
            }
        }
    }
    assert!(copied >= 3, "the sources are copied into the build stage");
    // Build output and tooling stay out of the context (target/ alone is many gigabytes).
    for heavy in ["target/release/vistter-agent", "fuzz/target/x", ".git/HEAD", ".venv/bin/python"] {
        assert!(ignore.excludes(heavy), ".dockerignore does not exclude {heavy}");
    }
    // What the crate reads while compiling: without these the build fails in the image only.
    let stage_sources: BTreeSet<String> = stages[cargo_build(&stages).0]
        .body
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.starts_with("--from"))
        .flat_map(|i| copy_parts(&i.args).1)
        .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "migrations", "schemas", "benches"] {
        assert!(stage_sources.contains(needed), "the build stage copies {needed}: {stage_sources:?}");
    }
    // The runtime stage has what the agent runs and what the healthcheck uses.
    let rt = runtime(&stages);
    assert!(rt.image.starts_with("debian:") && rt.image.contains("slim"), "a Debian slim runtime: {}", rt.image);
    let installs: String = rt
        .body
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("apt-get install"))
        .map(|i| i.args.as_str())
        .collect();
    for pkg in ["ffmpeg", "fonts-dejavu-core", "ca-certificates", "curl", "tini"] {
        assert!(installs.split_whitespace().any(|w| w == pkg), "the runtime installs {pkg}");
    }
    let font = vistter_agent::media::compositor::DEFAULT_FONT;
    assert!(font.starts_with("/usr/share/fonts/truetype/dejavu/"), "{font} comes with fonts-dejavu-core");
    let user = rt.body.iter().rfind(|i| i.keyword == "USER").expect("a USER");
    assert!(!["root", "0", "0:0"].contains(&user.args.as_str()), "not root: {}", user.args);
    let entry = rt.body.iter().rfind(|i| i.keyword == "ENTRYPOINT").expect("an ENTRYPOINT");
    let cmd = rt.body.iter().rfind(|i| i.keyword == "CMD").expect("a CMD");
    assert!(entry.args.starts_with('[') && cmd.args.starts_with('['), "exec form, so signals reach the agent");
    let argv: Vec<String> = words(&entry.args).into_iter().chain(words(&cmd.args)).collect();
    let binary = installed_binary.expect("the runtime stage copies the binary from the build stage");
    assert!(argv.ends_with(&[binary, "run".to_string()]), "the copied binary runs the daemon: {argv:?}");
}

/// The single command line in the fenced block that follows [`BUILD_MARKER`].
fn marked_build_command(rel: &str) -> String {
    let text = read(rel);
    let mut lines = text.lines().skip_while(|l| l.trim() != BUILD_MARKER);
    assert!(lines.next().is_some(), "{rel} has no `{BUILD_MARKER}` line");
    let fence = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(fence.trim_start().starts_with("```"), "{rel}: a fenced block follows `{BUILD_MARKER}`, not {fence:?}");
    let body: Vec<&str> =
        lines.take_while(|l| !l.trim_start().starts_with("```")).filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(body.len(), 1, "{rel}: the block after `{BUILD_MARKER}` holds one command line: {body:?}");
    body[0].trim().to_string()
}

#[test]
fn the_build_stage_runs_the_command_line_of_the_readme() {
    let (_, cmd) = cargo_build(&dockerfile());
    assert_eq!(cmd, marked_build_command("README.md"), "{DOCKERFILE} and README.md build differently");
}

#[test]
fn the_balena_readme_gives_the_same_build_command_line() {
    let (_, cmd) = cargo_build(&dockerfile());
    assert_eq!(cmd, marked_build_command(BALENA_README));
    assert!(cmd.starts_with("cargo build") && cmd.contains("--release") && cmd.contains("--locked"), "{cmd}");
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// Services fields balena's supervisor does not support (its docker-compose.yml reference).
const UNSUPPORTED: [&str; 19] = [
    "blkio_config",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpus",
    "env_file",
    "expose",
    "external_links",
    "isolation",
    "links",
    "logging",
    "mem_swappiness",
    "memswap_limit",
    "runtime",
    "scale",
    "stdin_open",
    "tty",
    "volume_driver",
    "volumes_from",
];
/// The labels balena's supervisor acts on; `gpu` is undocumented but implemented.
const BALENA_LABELS: [&str; 13] = [
    "io.balena.features.balena-socket",
    "io.balena.features.dbus",
    "io.balena.features.sysfs",
    "io.balena.features.procfs",
    "io.balena.features.kernel-modules",
    "io.balena.features.firmware",
    "io.balena.features.journal-logs",
    "io.balena.features.extra-firmware",
    "io.balena.features.supervisor-api",
    "io.balena.features.balena-api",
    "io.balena.features.gpu",
    "io.balena.update.strategy",
    "io.balena.update.handover-timeout",
];

fn compose() -> (String, Value) {
    let text = read("docker-compose.yml");
    let doc: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
    (text, doc)
}

/// The service built from the balena Dockerfile.
fn agent_service(doc: &Value) -> (&String, &serde_json::Map<String, Value>) {
    let services = doc["services"].as_object().expect("services");
    let built: Vec<_> = services
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"].as_str() == Some(DOCKERFILE))
        .map(|(n, s)| (n, s.as_object().expect("a service is a map")))
        .collect();
    assert_eq!(built.len(), 1, "one service builds {DOCKERFILE}");
    built[0]
}

/// The status server's default port, from the configuration's own default.
fn status_port() -> u16 {
    Config::default().status.listen.parse::<std::net::SocketAddr>().expect("default status.listen").port()
}

#[test]
fn the_compose_file_builds_the_dockerfile_with_the_volume_and_healthcheck() {
    let (text, doc) = compose();
    assert!(!text.contains("${"), "balena does not substitute variables in docker-compose.yml");
    assert!(doc["version"].as_str().is_some_and(|v| v.starts_with("2.")), "balena reads the 2.x format");
    let (name, svc) = agent_service(&doc);
    let build = &svc["build"];
    assert_eq!(build["context"], json!("."), "the build context is the repository root");
    let file = Path::new(REPO).join(build["dockerfile"].as_str().unwrap());
    assert!(file.is_file(), "{} exists", file.display());
    assert_eq!(svc.get("restart"), Some(&json!("always")));
    for field in UNSUPPORTED {
        assert!(!svc.contains_key(field), "{name}: balena does not support `{field}`");
    }
    assert_ne!(svc.get("privileged"), Some(&json!(true)), "not privileged");
    assert!(svc.get("ports").is_none(), "the unauthenticated status server is not published by default");
    for (label, value) in svc.get("labels").and_then(Value::as_object).into_iter().flatten() {
        if label.starts_with("io.balena.") {
            assert!(BALENA_LABELS.contains(&label.as_str()), "unknown balena label {label}");
        }
        if label == "io.balena.update.strategy" {
            assert_ne!(value, &json!("hand-over"), "two agents must never share the data volume");
        }
    }

    // The named volume at the data directory the image sets.
    let stages = dockerfile();
    let env: BTreeMap<String, String> = env_pairs(runtime(&stages)).into_iter().collect();
    let data_dir = env.get("VISTTER_DATA_DIR").expect("the image sets VISTTER_DATA_DIR");
    let mounts: Vec<&str> =
        svc["volumes"].as_array().expect("volumes").iter().map(|v| v.as_str().expect("short syntax")).collect();
    let mut at_data = None;
    for m in &mounts {
        let (vol, target) = m.split_once(':').unwrap_or_else(|| panic!("{m}: NAME:/path"));
        assert!(!vol.starts_with(['/', '.', '~']), "{m}: balena allows named volumes only");
        if target.split(':').next() == Some(data_dir.as_str()) {
            at_data = Some(vol);
        }
    }
    let vol = at_data.unwrap_or_else(|| panic!("no volume is mounted at {data_dir}: {mounts:?}"));
    assert!(doc["volumes"].get(vol).is_some(), "the top-level volumes declare {vol}");
    let declared = runtime(&stages).body.iter().filter(|i| i.keyword == "VOLUME").flat_map(|i| words(&i.args));
    assert!(declared.into_iter().any(|v| v == *data_dir), "the Dockerfile declares VOLUME {data_dir}");

    // /healthz on the status server's default address, inside the container, with a tool the image has.
    let url = format!("http://127.0.0.1:{}/healthz", status_port());
    let test: Vec<String> = svc["healthcheck"]["test"]
        .as_array()
        .expect("healthcheck.test is a list")
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(test.first().map(String::as_str), Some("CMD"), "{test:?}");
    assert_eq!(test.get(1).map(String::as_str), Some("curl"), "{test:?}");
    assert!(test.iter().any(|w| w == "--fail" || w.starts_with("-f")), "an HTTP error fails the check: {test:?}");
    assert!(test.contains(&url), "the compose healthcheck GETs {url}: {test:?}");
    let hc = runtime(&stages).body.iter().find(|i| i.keyword == "HEALTHCHECK").expect("a HEALTHCHECK");
    let hc_cmd = hc.args.split_once("CMD").expect("HEALTHCHECK … CMD").1.trim();
    assert_eq!(words(hc_cmd), test[1..].to_vec(), "the Dockerfile and the compose file check the same way");
}

// ---------------------------------------------------------------------------------------------
// VISTTER_* variables

/// A row of the balena README's variable table.
#[derive(Debug)]
struct Row {
    name: String,
    default: String,
    example: String,
}

/// The cells of a Markdown table row (`\|` is a `|` inside a cell).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => out.last_mut().unwrap().push(chars.next().unwrap()),
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_string()).collect()
}

/// A cell that is one code span: its text.
fn literal(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`').filter(|s| !s.contains('`'))
}

fn documented() -> Vec<Row> {
    let text = read(BALENA_README);
    let header = text
        .lines()
        .position(|l| cells(l) == ["variable", "default", "example", "meaning"])
        .expect("the balena README has the variable table");
    let rows: Vec<Row> = text
        .lines()
        .skip(header + 2)
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            let c = cells(l);
            assert_eq!(c.len(), 4, "four cells: {l}");
            let name = literal(&c[0]).unwrap_or_else(|| panic!("the name is a code span: {l}")).to_string();
            let example =
                literal(&c[2]).unwrap_or_else(|| panic!("{name}: the example is a code span: {l}")).to_string();
            Row { name, default: c[1].clone(), example }
        })
        .collect();
    let mut seen = BTreeSet::new();
    for r in &rows {
        assert!(r.name.starts_with("VISTTER_"), "{}", r.name);
        assert!(seen.insert(r.name.clone()), "{} is listed twice", r.name);
    }
    rows
}

/// The variable that names the configuration file; not a key.
const CONFIG_FILE_VAR: &str = "VISTTER_CONFIG";

fn var_for(path: &str) -> String {
    format!("VISTTER_{}", path.replace('.', "__").to_uppercase())
}

/// Loads with these variables only, and an empty configuration file (so that no file on the
/// machine running the test is read).
fn load(env: &[(String, String)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.toml");
    std::fs::write(&file, "").unwrap();
    Config::load_from(Sources { file: Some(&file), env: env.to_vec(), overrides: Overrides::default() })
        .map_err(|e| e.to_string())
}

/// Every key of a configuration as `a.b.c` → its value (lists are values, not sections).
fn leaves(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(v, &p, out);
            }
        }
        v => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// Every key of `cfg`, including those of the optional sections it leaves out when unset (the two
/// cloud links and the log file), with their defaults.
fn all_keys(cfg: &Config) -> BTreeMap<String, Value> {
    let mut v = serde_json::to_value(cfg).expect("the configuration serializes");
    for (section, key, empty) in
        [("control", "mqtt", json!({})), ("control", "ws", json!({})), ("log", "file", json!(""))]
    {
        let s = v[section].as_object_mut().unwrap_or_else(|| panic!("[{section}] exists"));
        s.entry(key).or_insert(empty);
    }
    let filled: Config = serde_json::from_value(v).expect("the optional sections have defaults");
    let mut out = BTreeMap::new();
    leaves(&serde_json::to_value(&filled).unwrap(), "", &mut out);
    out
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The `VISTTER_*` variables the image itself sets.
fn image_env() -> Vec<(String, String)> {
    env_pairs(runtime(&dockerfile())).into_iter().filter(|(k, _)| k.starts_with("VISTTER_")).collect()
}

#[test]
fn every_documented_variable_is_a_configuration_key() {
    let rows = documented();
    let image = load(&image_env()).unwrap_or_else(|e| panic!("the image's own variables load: {e}"));
    let keys = all_keys(&image);

    let mut env = Vec::new();
    for r in rows.iter().filter(|r| r.name != CONFIG_FILE_VAR) {
        let path = r.name["VISTTER_".len()..].to_lowercase().replace("__", ".");
        let default = keys.get(&path).unwrap_or_else(|| panic!("{} is not a configuration key ({path})", r.name));
        if let Some(d) = literal(&r.default) {
            assert_eq!(d, shown(default), "{}: the documented default is not the image's", r.name);
        }
        env.push((r.name.clone(), r.example.clone()));
    }
    // All the examples together make a valid configuration, and each lands on its own key.
    let cfg = load(&env).unwrap_or_else(|e| panic!("the documented examples do not load: {e}"));
    let got = all_keys(&cfg);
    for (name, example) in &env {
        let path = name["VISTTER_".len()..].to_lowercase().replace("__", ".");
        assert_eq!(shown(&got[&path]), *example, "{name}={example} did not set {path}");
    }
    // The loader refuses a name that is not a key, so the loads above prove the names.
    for (name, example) in &env {
        let typo = format!("{name}X");
        let err = load(&[(typo.clone(), example.clone())]).expect_err(&typo);
        let key = typo["VISTTER_".len()..].to_lowercase();
        let last = key.rsplit("__").next().unwrap();
        assert!(err.contains(last), "{typo}: the error names the key: {err}");
    }

    // Every key is documented.
    let listed: BTreeSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let missing: Vec<String> = keys.keys().map(|k| var_for(k)).filter(|v| !listed.contains(v.as_str())).collect();
    assert!(missing.is_empty(), "{BALENA_README} does not list {missing:?}");

    // VISTTER_CONFIG names the file, through the command line's --config.
    assert!(listed.contains(CONFIG_FILE_VAR), "{CONFIG_FILE_VAR} is listed");
    let cli = vistter_agent::cli::Cli::command();
    let arg = cli.get_arguments().find(|a| a.get_id() == "config").expect("--config");
    assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(CONFIG_FILE_VAR));
}

#[test]
fn the_image_and_compose_variables_are_configuration_keys() {
    let env = image_env();
    assert!(env.iter().any(|(k, v)| k == "VISTTER_DATA_DIR" && v == "/data"), "{env:?}");
    assert_eq!(load(&env).unwrap().data_dir, PathBuf::from("/data"));
    let (_, doc) = compose();
    let (_, svc) = agent_service(&doc);
    let mut compose_env: Vec<(String, String)> = match svc.get("environment") {
        None => vec![],
        Some(Value::Object(m)) => m.iter().map(|(k, v)| (k.clone(), shown(v))).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                let (k, v) = s.as_str().unwrap().split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect(),
        Some(other) => panic!("environment: {other}"),
    };
    compose_env.retain(|(k, _)| k.starts_with("VISTTER_"));
    let all: Vec<_> = env.into_iter().chain(compose_env).collect();
    load(&all).unwrap_or_else(|e| panic!("the image's and the compose file's variables: {e}"));
}

/// The README's configuration table and the configuration agree, both ways: every key a row
/// names is a real key (`a.b`/`c` names the sibling `a.c`), and every key is in the table.
#[test]
fn the_readme_configuration_table_names_every_key_and_only_keys() {
    let keys = all_keys(&load(&[]).expect("the defaults load"));
    let text = read("README.md");
    let mut named: BTreeSet<String> = BTreeSet::new();
    for line in
        text.lines().skip_while(|l| l.trim() != "## Configuration").skip(1).take_while(|l| !l.starts_with("## "))
    {
        let Some(first) = line.strip_prefix("| `").and_then(|l| l.split(" | ").next()) else { continue };
        let mut parent = String::new();
        for (i, part) in first.split('/').enumerate() {
            let name = part.trim().trim_matches('`').trim();
            let full = if i == 0 || name.contains('.') { name.to_string() } else { format!("{parent}{name}") };
            parent = full.rsplit_once('.').map(|(p, _)| format!("{p}.")).unwrap_or_default();
            named.insert(full);
        }
    }
    assert!(named.len() > 40, "the README's configuration table was found: {named:?}");
    let unknown: Vec<&String> = named.iter().filter(|k| !keys.contains_key(k.as_str())).collect();
    assert!(unknown.is_empty(), "README.md names keys that do not exist: {unknown:?}");
    let missing: Vec<&String> = keys.keys().filter(|k| !named.contains(k.as_str())).collect();
    assert!(missing.is_empty(), "README.md's configuration table lacks {missing:?}");
}
