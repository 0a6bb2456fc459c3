//! `schemas/asyncapi.yaml`, the AsyncAPI 3.0 description of the control plane (DESIGN §3), against
//! the files it points to: it parses, every `$ref` resolves offline (an internal `#/…` pointer, or a
//! path relative to the referring file that stays under schemas/, with its `#/json/pointer` fragment;
//! followed into the files it names), every message type has its message, every channel its
//! address and operations, and every golden message names a message of the document and validates
//! against that message's payload schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

const BASE: &str = "https://vistter.example/schemas/";
const SCHEMA_FORMAT: &str = "application/schema+json;version=draft-2020-12";
/// Cloud → device.
const COMMANDS: [&str; 7] =
    ["PING", "STREAM_CONTROL", "TIMELINE_EXECUTE", "OVERLAY_UPDATE", "CAMERA_ACTION", "DEVICE_CONFIG", "TIMELINE_LOAD"];
/// Device → cloud, on `…/replies`.
const REPLIES: [&str; 4] = ["ACK", "NACK", "PROGRESS", "RESULT"];
/// Device → cloud, each on its own topic.
const TELEMETRY: [&str; 3] = ["EVENT", "METRICS", "STATE"];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn all_types() -> Vec<&'static str> {
    COMMANDS.iter().chain(&REPLIES).chain(&TELEMETRY).copied().collect()
}

/// A `.json` file as JSON, a `.yaml` or `.yml` file as YAML; anything else is refused.
fn parse_file(path: &Path) -> Result<Value, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !["json", "yaml", "yml"].contains(&ext) {
        return Err(format!("{} is neither .json nor .yaml", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if ext == "json" {
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
    } else {
        serde_norway::from_str(&text).map_err(|e| format!("{} is not YAML: {e}", path.display()))
    }
}

fn asyncapi() -> Value {
    parse_file(&schemas_dir().join("asyncapi.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn get<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or_else(|| panic!("asyncapi.yaml has no {pointer}"))
}

/// The `$ref` strings directly under a list or map of `{$ref}` objects.
fn refs_in(v: &Value) -> BTreeSet<String> {
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(m) => m.values().collect(),
        _ => vec![],
    };
    items.iter().filter_map(|i| i["$ref"].as_str().map(String::from)).collect()
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Decodes the `%XX` escapes a URI fragment may hold.
fn percent_decode(s: &str) -> Result<String, String> {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("a bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape that is not UTF-8".to_string())
}

/// What a walk over a document and the files it refers to found.
struct RefReport {
    /// One line per broken `$ref`: where it is, the ref itself, and why.
    errors: Vec<String>,
    /// Every file the walk read, relative to the root (the starting document included).
    files: BTreeSet<String>,
    /// How many `$ref`s it checked.
    refs: usize,
}

/// Checks every `$ref` in `doc` (which lives at `doc_path`, under `root`) and, transitively, in the
/// files it refers to. Each ref is resolved against the file it appears in: `#/…` is a JSON pointer
/// into that file; anything else must be a relative path (no scheme, not absolute) that stays under
/// `root`, names a file that parses as JSON (or YAML), and whose `#/…` fragment, if any, resolves.
/// The schemas have no nested `$id`, so a file's own pointers are read from its top.
fn check_refs(root: &Path, doc_path: &Path, doc: Value) -> RefReport {
    let mut files: BTreeMap<PathBuf, Value> = BTreeMap::from([(doc_path.to_path_buf(), doc)]);
    let mut walked = BTreeSet::new();
    let mut queue = vec![doc_path.to_path_buf()];
    let (mut errors, mut refs) = (Vec::new(), 0);
    while let Some(file) = queue.pop() {
        if !walked.insert(file.clone()) {
            continue;
        }
        let mut found = Vec::new();
        collect_refs(&files[&file], String::new(), &mut found);
        let name = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        for (at, r) in found {
            refs += 1;
            let Some(r) = r else {
                errors.push(format!("{name}#{at}: $ref is not a string"));
                continue;
            };
            if let Err(why) = resolve(root, &file, &r, &mut files, &mut queue) {
                errors.push(format!("{name}#{at}: $ref {r:?}: {why}"));
            }
        }
    }
    let files = walked.iter().map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string()).collect();
    RefReport { errors, files, refs }
}

/// Every `$ref` member under `v`: (the JSON pointer of the member, its value if it is a string).
fn collect_refs(v: &Value, at: String, out: &mut Vec<(String, Option<String>)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let here = format!("{at}/{}", escape(k));
                if k == "$ref" {
                    out.push((here, child.as_str().map(String::from)));
                } else {
                    collect_refs(child, here, out);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn resolve(
    root: &Path,
    file: &Path,
    r: &str,
    files: &mut BTreeMap<PathBuf, Value>,
    queue: &mut Vec<PathBuf>,
) -> Result<(), String> {
    let (path, fragment) = match r.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (r, None),
    };
    let target = if path.is_empty() {
        file.to_path_buf()
    } else {
        let scheme = path.split('/').next().is_some_and(|first| first.contains(':'));
        if scheme || path.starts_with('/') || path.contains(['?', '\\']) {
            return Err("neither an internal #/… pointer nor a relative file path".into());
        }
        let mut target = file.parent().unwrap_or(root).to_path_buf();
        for c in Path::new(&percent_decode(path)?).components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if target.starts_with(root) && target != root => {
                    target.pop();
                }
                Component::Normal(part) => target.push(part),
                _ => return Err("leaves schemas/".into()),
            }
        }
        if !target.starts_with(root) {
            return Err("leaves schemas/".into());
        }
        if !files.contains_key(&target) {
            if !target.is_file() {
                return Err(format!("no such file {}", target.strip_prefix(root).unwrap_or(&target).display()));
            }
            files.insert(target.clone(), parse_file(&target)?);
        }
        queue.push(target.clone());
        target
    };
    match fragment {
        None | Some("") => Ok(()),
        Some(f) if !f.starts_with('/') => Err(format!("the fragment #{f} is not a JSON pointer")),
        Some(f) => match files[&target].pointer(&percent_decode(f)?) {
            Some(_) => Ok(()),
            None => Err(format!("#{f} does not resolve in {}", target.strip_prefix(root).unwrap_or(&target).display())),
        },
    }
}

#[test]
fn the_document_is_asyncapi_3_with_both_servers() {
    let doc = asyncapi();
    let version = get(&doc, "/asyncapi").as_str().expect("asyncapi is a string");
    assert!(version.starts_with("3."), "asyncapi: {version}");
    assert_eq!(get(&doc, "/info/version"), "1.0.0");
    let description = get(&doc, "/info/description").as_str().unwrap();
    assert!(description.contains("control/envelope.v1.json"), "info.description points to the envelope schema");

    assert_eq!(get(&doc, "/servers/mqtt/protocol"), "mqtts");
    assert_eq!(get(&doc, "/servers/mqtt/host"), "broker.example:8883");
    assert_eq!(get(&doc, "/servers/ws/protocol"), "wss");
    assert_eq!(get(&doc, "/servers/ws/host"), "studio.example");
    assert_eq!(get(&doc, "/servers/ws/pathname"), "/v1/devices/{device_id}/channel");
    assert!(doc.pointer("/servers/ws/variables/device_id").is_some(), "the ws pathname's {{device_id}} is declared");
    for server in ["mqtt", "ws"] {
        let security = refs_in(get(&doc, &format!("/servers/{server}/security")));
        assert!(!security.is_empty(), "server {server} names its security scheme");
        for s in security {
            let scheme = get(&doc, s.strip_prefix('#').expect("an internal ref"));
            assert_eq!(scheme["type"], "X509", "server {server}: {s} is mutual TLS");
        }
    }
    let will = get(&doc, "/servers/mqtt/bindings/mqtt/lastWill");
    assert_eq!(will["topic"], "vistter/v1/devices/{device_id}/state", "the Last Will goes to the state topic");
    assert_eq!((&will["qos"], &will["retain"]), (&json!(1), &json!(true)));
}

#[test]
fn every_ref_resolves() {
    let root = schemas_dir();
    let report = check_refs(&root, &root.join("asyncapi.yaml"), asyncapi());
    assert!(report.errors.is_empty(), "broken $refs in schemas/asyncapi.yaml:\n{}", report.errors.join("\n"));
    // The walk really went through the document and the files it names.
    assert!(report.refs > 100, "only {} $refs checked", report.refs);
    let mut want: BTreeSet<String> =
        ["asyncapi.yaml", "control/envelope.v1.json", "timeline.v1.json"].map(String::from).into();
    for ty in all_types() {
        want.insert(format!("control/{}.v1.json", ty.to_lowercase()));
        want.insert(format!("examples/{}.json", ty.to_lowercase()));
    }
    let missed: Vec<&String> = want.difference(&report.files).collect();
    assert!(missed.is_empty(), "the walk never read {missed:?}");
}

/// The walker itself: broken refs of every kind are reported, each by name, and good ones are not.
#[test]
fn the_ref_walker_reports_broken_refs() {
    let root = schemas_dir();
    let doc: Value = serde_norway::from_str(
        r##"
asyncapi: 3.0.0
components:
  messages:
    GOOD:
      payload:
        allOf:
          - $ref: './control/envelope.v1.json'
          - $ref: './control/envelope.v1.json#/$defs/id'
          - $ref: 'control/../control/ping.v1.json#/%24defs/sealed'
          - $ref: '#/components/messages/GOOD'
          - $ref: '#'
    BAD:
      payload:
        allOf:
          - $ref: '#/components/messages/NOPE'
          - $ref: './control/nope.v1.json'
          - $ref: './control/envelope.v1.json#/$defs/nope'
          - $ref: './control/envelope.v1.json#defs'
          - $ref: 'https://vistter.example/schemas/control/ping.v1.json'
          - $ref: '../Cargo.toml'
          - $ref: '/etc/hostname'
          - $ref: './README.md'
          - $ref: 42
"##,
    )
    .unwrap();
    let report = check_refs(&root, &root.join("in-memory.yaml"), doc);
    let broken = [
        "#/components/messages/NOPE",
        "./control/nope.v1.json",
        "./control/envelope.v1.json#/$defs/nope",
        "./control/envelope.v1.json#defs",
        "https://vistter.example/schemas/control/ping.v1.json",
        "../Cargo.toml",
        "/etc/hostname",
        "./README.md",
    ];
    for r in broken {
        let named = format!("$ref {r:?}:");
        assert!(report.errors.iter().any(|e| e.contains(&named)), "{r} is not reported: {:#?}", report.errors);
    }
    assert!(report.errors.iter().any(|e| e.contains("/BAD/payload/allOf/8/$ref: $ref is not a string")));
    assert_eq!(report.errors.len(), broken.len() + 1, "only the broken refs are reported: {:#?}", report.errors);
    assert!(report.errors.iter().all(|e| e.starts_with("in-memory.yaml#/components/messages/BAD/")));

    // A broken ref inside a file the document refers to is reported too, under that file's name.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("control")).unwrap();
    std::fs::write(dir.path().join("control/a.json"), r##"{"$defs": {"x": {"$ref": "#/$defs/missing"}}}"##).unwrap();
    let doc = json!({"payload": {"$ref": "./control/a.json#/$defs/x"}});
    let report = check_refs(dir.path(), &dir.path().join("doc.yaml"), doc);
    assert_eq!(
        report.errors,
        ["control/a.json#/$defs/x/$ref: $ref \"#/$defs/missing\": #/$defs/missing does not resolve in control/a.json"]
    );
}

#[test]
fn every_message_type_has_its_message() {
    let doc = asyncapi();
    let messages = get(&doc, "/components/messages").as_object().unwrap();
    let have: BTreeSet<&str> = messages.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = all_types().into_iter().collect();
    assert_eq!(have, want, "one component message per type");
    // The envelope schema's list of types is the same list.
    let envelope = parse_file(&schemas_dir().join("control/envelope.v1.json")).unwrap();
    let listed: BTreeSet<&str> =
        envelope["properties"]["type"]["enum"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(listed, want, "control/envelope.v1.json lists the same types");

    for ty in all_types() {
        let m = &messages[ty];
        assert_eq!(m["name"], ty, "{ty}: name");
        assert_eq!(m["contentType"], "application/json", "{ty}: contentType");
        assert_eq!(m["payload"]["schemaFormat"], SCHEMA_FORMAT, "{ty}: payload.schemaFormat");
        let schema = m["payload"]["schema"].to_string();
        for file in ["./control/envelope.v1.json".to_string(), format!("./control/{}.v1.json", ty.to_lowercase())] {
            assert!(schema.contains(&format!("{file:?}")), "{ty}: the payload schema refers to {file}");
        }
        assert!(schema.contains(&format!(r#"{{"const":"{ty}"}}"#)), "{ty}: the payload schema fixes `type`");
        let examples = refs_in(&Value::Array(
            m["examples"]
                .as_array()
                .unwrap_or_else(|| panic!("{ty}: examples"))
                .iter()
                .map(|e| e["payload"].clone())
                .collect(),
        ));
        let golden = format!("./examples/{}.json", ty.to_lowercase());
        assert!(examples.contains(&golden), "{ty}: an example refers to {golden}: {examples:?}");
    }
}

#[test]
fn every_channel_has_its_address_and_operations() {
    let doc = asyncapi();
    let device = |t: &str| format!("vistter/v1/devices/{{device_id}}/{t}");
    let ws: Vec<&str> = all_types();
    // (address, server, message types, the device's actions on it)
    let want: Vec<(String, &str, Vec<&str>, Vec<&str>)> = vec![
        (device("commands"), "mqtt", COMMANDS.to_vec(), vec!["receive"]),
        (device("replies"), "mqtt", REPLIES.to_vec(), vec!["send"]),
        (device("events"), "mqtt", vec!["EVENT"], vec!["send"]),
        (device("metrics"), "mqtt", vec!["METRICS"], vec!["send"]),
        (device("state"), "mqtt", vec!["STATE"], vec!["send"]),
        ("/v1/devices/{device_id}/channel".to_string(), "ws", ws, vec!["receive", "send"]),
    ];
    let channels = get(&doc, "/channels").as_object().unwrap();
    let operations = get(&doc, "/operations").as_object().unwrap();
    assert_eq!(channels.len(), want.len(), "channels: {:?}", channels.keys().collect::<Vec<_>>());
    for (address, server, types, actions) in want {
        let (key, ch) = channels
            .iter()
            .find(|(_, c)| c["address"] == address.as_str())
            .unwrap_or_else(|| panic!("no channel has the address {address}"));
        let messages = refs_in(&ch["messages"]);
        let expected: BTreeSet<String> = types.iter().map(|t| format!("#/components/messages/{t}")).collect();
        assert_eq!(messages, expected, "channel {key} ({address}): messages");
        assert_eq!(refs_in(&ch["servers"]), BTreeSet::from([format!("#/servers/{server}")]), "channel {key}: servers");
        assert!(ch["parameters"]["device_id"].is_object(), "channel {key}: the device_id parameter");

        let ours = format!("#/channels/{key}");
        let ops: Vec<(&String, &Value)> =
            operations.iter().filter(|(_, o)| o["channel"]["$ref"] == ours.as_str()).collect();
        let have: BTreeSet<&str> = ops.iter().map(|(_, o)| o["action"].as_str().unwrap()).collect();
        assert_eq!(have, actions.into_iter().collect::<BTreeSet<&str>>(), "channel {key}: the device's operations");
        for (name, op) in ops {
            let refs = refs_in(&op["messages"]);
            assert!(!refs.is_empty(), "operation {name}: messages");
            for r in refs {
                assert!(
                    r.starts_with(&format!("{ours}/messages/")),
                    "operation {name}: {r} is not a message of {ours}"
                );
            }
            if server == "mqtt" {
                let mqtt = &op["bindings"]["mqtt"];
                assert_eq!(mqtt["qos"], 1, "operation {name}: MQTT QoS 1");
                let retain = key == "state";
                assert_eq!(mqtt["retain"].as_bool().unwrap_or(false), retain, "operation {name}: retain");
            }
        }
    }
}

#[test]
fn every_golden_message_names_a_message_of_the_document() {
    let doc = asyncapi();
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(schemas_dir().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_string();
        if !file.ends_with(".json") || file == "test-keys.json" {
            continue;
        }
        let golden = parse_file(&path).unwrap();
        let ty = golden["type"].as_str().unwrap_or_else(|| panic!("examples/{file} has no type"));
        let message = doc
            .pointer(&format!("/components/messages/{}", escape(ty)))
            .unwrap_or_else(|| panic!("examples/{file} is a {ty}: asyncapi.yaml has no such message"));
        let examples = refs_in(&Value::Array(
            message["examples"].as_array().into_iter().flatten().map(|e| e["payload"].clone()).collect(),
        ));
        assert!(
            examples.contains(&format!("./examples/{file}")),
            "the {ty} message's examples refer to examples/{file}"
        );
        seen.insert(ty.to_string());
    }
    assert_eq!(seen.len(), all_types().len(), "golden messages: {seen:?}");
}

/// Resolves `https://vistter.example/schemas/…` to the repository's files: no network.
struct Files;

impl jsonschema::Retrieve for Files {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let rel = uri.as_str().strip_prefix(BASE).ok_or_else(|| format!("not one of ours: {uri}"))?;
        Ok(parse_file(&schemas_dir().join(rel))?)
    }
}

/// Each message's payload schema (envelope + the payload schema of its type) takes the golden
/// message of its type and refuses those of every other type.
#[test]
fn golden_messages_validate_against_their_messages_payload() {
    let doc = asyncapi();
    let golden: Vec<(&str, Value)> = all_types()
        .into_iter()
        .map(|ty| (ty, parse_file(&schemas_dir().join(format!("examples/{}.json", ty.to_lowercase()))).unwrap()))
        .collect();
    for ty in all_types() {
        let mut schema = get(&doc, &format!("/components/messages/{ty}/payload/schema")).clone();
        // Relative refs resolve against the document's own place, schemas/asyncapi.yaml.
        schema.as_object_mut().unwrap().insert("$id".into(), format!("{BASE}asyncapi.yaml").into());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_retriever(Files)
            .build(&schema)
            .unwrap_or_else(|e| panic!("the {ty} payload schema compiles: {e}"));
        for (other, message) in &golden {
            let errors: Vec<String> =
                validator.iter_errors(message).map(|e| format!("{}: {e}", e.instance_path())).collect();
            if *other == ty {
                assert!(errors.is_empty(), "the {ty} message refuses its golden example: {errors:?}");
            } else {
                assert!(!errors.is_empty(), "the {ty} message takes the golden {other}");
            }
        }
    }
}
