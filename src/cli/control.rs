//! `device` and `trust`: this device's identity and the keys it trusts. Both work without the
//! daemon; the daemon re-reads the trust store when it
//! changes.

use clap::Subcommand;

use super::CliError;
use crate::command::configure::Configure;
use crate::config::Config;
use crate::control::keys::DeviceKeys;
use crate::events::sentence;
use crate::trust::{Role, TrustEntry, TrustError, TrustStore};

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// The device id and both public keys (ed25519 signing, X25519 sealing), made on first use.
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// Trusts a key (ed25519 public key, base64 of 32 bytes) for one or more roles.
    Add {
        key_id: String,
        #[arg(long, value_name = "B64")]
        public_key: String,
        /// command (send commands), segment (sign packages), trust_admin (change this list).
        #[arg(long = "role", value_enum, default_values_t = [Role::Command])]
        roles: Vec<Role>,
    },
    /// The trusted keys and their roles.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stops trusting a key (the last trust_admin key cannot be removed).
    Remove { key_id: String },
}

fn trust_error(e: TrustError) -> CliError {
    match e {
        TrustError::NotFound(_) => CliError::Coded(crate::error::EXIT_NOT_FOUND, e.to_string()),
        TrustError::Conflict(_) | TrustError::LastAdmin(_) => {
            CliError::Coded(crate::error::EXIT_CONFLICT, e.to_string())
        }
        TrustError::File { .. } => CliError::Failed(e.to_string()),
        _ => CliError::Invalid(e.to_string()),
    }
}

pub fn device(cmd: DeviceCmd, cfg: &Config) -> Result<(), CliError> {
    let DeviceCmd::Show { json } = cmd;
    let id = cfg.device_id()?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| CliError::Failed(format!("{}: {e}", cfg.data_dir.display())))?;
    let keys = DeviceKeys::load_or_create(&cfg.data_dir).map_err(|e| CliError::Failed(e.to_string()))?;
    let p = keys.public();
    if json {
        let v = serde_json::json!({
            "device_id": id,
            "device_public_key": p.device_public_key,
            "device_sealing_key": p.device_sealing_key,
        });
        outln!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        outln!("device_id           {id}");
        outln!("device_public_key   {}  (ed25519: verifies what this device sends)", p.device_public_key);
        outln!("device_sealing_key  {}  (X25519: seal secrets to this device)", p.device_sealing_key);
    }
    Ok(())
}

pub async fn trust(cmd: TrustCmd, cfg: &Config) -> Result<(), CliError> {
    let path = cfg.trust_store_path();
    match cmd {
        TrustCmd::Add { key_id, public_key, roles } => {
            // Checked here too, so a mistake is reported before anything is sent.
            TrustEntry::new(&key_id, &public_key, &roles).map_err(trust_error)?;
            let key_id = crate::values::KeyId::new(key_id).map_err(|e| CliError::Invalid(format!("key id: {e}")))?;
            super::configure_change(cfg, Configure::TrustAdd { key_id, public_key, roles }).await?;
        }
        TrustCmd::List { json } => {
            let store = TrustStore::load(&path).map_err(trust_error)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&store).expect("serialises"));
            } else {
                for e in &store.keys {
                    let roles: Vec<&str> = e
                        .roles
                        .iter()
                        .map(|r| match r {
                            Role::Command => "command",
                            Role::Segment => "segment",
                            Role::TrustAdmin => "trust_admin",
                        })
                        .collect();
                    outln!("{:<24} {}  {}", e.key_id, e.public_key, roles.join(","));
                }
            }
        }
        TrustCmd::Remove { key_id } => {
            let key_id = crate::values::KeyId::new(key_id).map_err(|e| CliError::Invalid(format!("key id: {e}")))?;
            super::configure_change(cfg, Configure::TrustRemove { key_id }).await?
        }
    }
    Ok(())
}

/// `status`: the cloud links from the daemon's state file (stale if that daemon is gone), and the
/// outbox from the store.
pub async fn status(cfg: &Config, json: bool) -> Result<(), CliError> {
    let file = crate::control::links_file(&cfg.data_dir);
    let links: Option<serde_json::Value> =
        std::fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str(&t).ok());
    let running = links
        .as_ref()
        .and_then(|l| l["pid"].as_u64())
        .is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok());
    let store = crate::store::Store::open(&cfg.data_dir).await?;
    let row = store.outbox_depth().await?;
    let configured = cfg.control.mqtt.is_some() || cfg.control.ws.is_some();
    let segments = crate::segments::library::Library::new(store.clone(), &cfg.data_dir)
        .list()
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let live = live_status(cfg).await;
    let running = running || live.is_some();
    let doc = serde_json::json!({
        "device_id": cfg.device_id()?,
        "cloud_configured": configured,
        "daemon_running": running,
        "live": live,
        "links": if running { links.as_ref().map(|l| l["links"].clone()) } else { None },
        "links_since": if running { links.as_ref().map(|l| l["at"].clone()) } else { None },
        "outbox": {"messages": row.0, "bytes": row.1},
        "segments": segments,
    });
    if json {
        outln!("{doc}");
        return Ok(());
    }
    outln!("device    {}", doc["device_id"].as_str().unwrap_or_default());
    match &live {
        Some(l) => print_live(l),
        None if running => outln!("daemon    running; its status server ([status]) did not answer"),
        None => outln!("daemon    not running"),
    }
    match (configured, running, doc["links"].as_object()) {
        (false, _, _) => outln!("cloud     not configured ([control.mqtt] / [control.ws])"),
        (true, false, _) => outln!("cloud     the daemon is not running"),
        (true, true, Some(l)) => {
            for (k, v) in l {
                outln!("{k:<9} {}", v.as_str().unwrap_or_default());
            }
        }
        (true, true, None) => outln!("cloud     starting"),
    }
    outln!("outbox    {} message(s), {} bytes waiting", row.0, row.1);
    if segments.is_empty() {
        outln!("segments  none installed");
    }
    for s in segments.iter().filter(|s| s.active) {
        let kept: Vec<String> = segments
            .iter()
            .filter(|o| o.segment_id == s.segment_id && !o.active)
            .map(|o| o.version.to_string())
            .collect();
        outln!(
            "segment   {} v{} active (timeline {}, {} bytes){}",
            s.segment_id,
            s.version,
            s.timeline_id,
            s.bytes,
            if kept.is_empty() { String::new() } else { format!("; kept: v{}", kept.join(", v")) }
        );
    }
    Ok(())
}

/// The running daemon's picture from its status server (`[status]`, the status page's JSON), or
/// `None` when it is off or does not answer within 3 s.
pub(super) async fn live_status(cfg: &Config) -> Option<serde_json::Value> {
    if !cfg.status.enabled {
        return None;
    }
    let mut addr: std::net::SocketAddr = cfg.status.listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build().ok()?;
    let r = client.get(format!("http://{addr}/api/v1/status")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    serde_json::from_slice(&r.bytes().await.ok()?).ok()
}

pub(super) fn secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        s if s >= 3600 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// What the status page shows, as terminal lines.
fn print_live(l: &serde_json::Value) {
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or("–").to_string();
    outln!("agent     {} up {}", str_of(&l["agent_version"]), secs(l["uptime_s"].as_f64().unwrap_or(0.0)));
    let show = &l["show"];
    if show.is_object() {
        let name = show["timeline_name"].as_str().unwrap_or_else(|| show["timeline_id"].as_str().unwrap_or("?"));
        let pos = show["position_s"].as_f64().unwrap_or(0.0);
        let of = show["duration_s"].as_f64().map_or(String::new(), |d| format!(" of {}", secs(d)));
        outln!(
            "show      {name} ({}) {} at {}{of}, loop {}",
            str_of(&show["timeline_id"]),
            str_of(&show["state"]),
            secs(pos),
            show["loop_index"].as_u64().unwrap_or(0) + 1
        );
        let next = show["next_cue"].as_array().map_or("–".to_string(), |n| {
            format!("{} at {}", n[0].as_str().unwrap_or("?"), secs(n[1].as_f64().unwrap_or(0.0)))
        });
        outln!(
            "cue       {} → next {next}; late {} of {}",
            str_of(&show["current_cue"]),
            show["late_cues"],
            show["cues"]
        );
        if show["emergency_slate"] == true {
            outln!("slate     EMERGENCY SLATE IS UP");
        }
    } else {
        outln!("show      none playing");
    }
    for (t, secs_ago) in l["cloud_last_contact_s"].as_object().into_iter().flatten() {
        outln!("contact   {t} heard from {} ago", secs(secs_ago.as_f64().unwrap_or(0.0)));
    }
    for c in l["cameras"].as_array().into_iter().flatten() {
        outln!(
            "camera    {:<12} {:<9}{} frame age {} · {} fps{}",
            str_of(&c["id"]),
            str_of(&c["health"]),
            if c["on_air"] == true { " ON AIR" } else { "" },
            c["frame_age_ms"].as_f64().map_or("–".into(), |ms| format!("{:.1} s", ms / 1000.0)),
            c["fps"].as_f64().map_or("–".into(), |f| format!("{f:.1}")),
            c["error"].as_str().map_or(String::new(), |e| format!(" ({e})")),
        );
    }
    for d in l["destinations"].as_array().into_iter().flatten() {
        outln!(
            "push      {:<12} {:<9} {} · restarts {} (program {})",
            str_of(&d["id"]),
            str_of(&d["state"]),
            d["bitrate_kbps"].as_f64().map_or("–".into(), |b| format!("{b:.0} kbit/s")),
            d["starts"].as_u64().unwrap_or(1).saturating_sub(1),
            str_of(&d["program_id"]),
        );
    }
    for s in l["schedules"].as_array().into_iter().flatten() {
        outln!(
            "schedule  {:<12} {}{} {}–{} {}",
            str_of(&s["id"]),
            s["days_of_week"]
                .as_array()
                .map_or(String::new(), |d| { d.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ") }),
            if s["enabled"] == false { " (disabled)" } else { "" },
            str_of(&s["window_start"]),
            str_of(&s["window_end"]),
            str_of(&s["timezone"]),
        );
    }
    let sys = &l["system"];
    outln!(
        "system    cpu {} · memory {} MB available · agent {} MB · {} · disk {} GB free",
        sys["cpu_percent"].as_f64().map_or("–".into(), |c| format!("{c:.0}%")),
        sys["memory"]["available_kb"].as_f64().map_or("–".into(), |k| format!("{:.0}", k / 1000.0)),
        sys["memory"]["agent_rss_kb"].as_f64().map_or("–".into(), |k| format!("{:.1}", k / 1000.0)),
        sys["temperature"]["celsius"].as_f64().map_or("temperature –".into(), |c| format!("{c:.1} °C")),
        sys["disk"]["free_bytes"].as_f64().map_or("–".into(), |b| format!("{:.1}", b / 1e9)),
    );
    let (zone, now) = (sentence::box_zone(), jiff::Timestamp::now());
    for e in l["recent_events"].as_array().into_iter().flatten().take(5) {
        outln!("event     {}", sentence::line(&event_of(e), &zone, now));
    }
}

/// An event of the store as a JSON reply carries it (the status server's, `stream status`'s).
pub(super) fn event_of(v: &serde_json::Value) -> crate::store::events::Event {
    let text = |k: &str| v[k].as_str().map(str::to_string);
    crate::store::events::Event {
        id: v["id"].as_i64().unwrap_or(0),
        at: text("at").unwrap_or_default(),
        severity: text("severity").unwrap_or_default(),
        event_type: text("event_type").unwrap_or_default(),
        subject: text("subject"),
        scope: text("scope"),
        detail: text("detail"),
    }
}
