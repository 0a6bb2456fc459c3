//! `device` and `trust`: this device's identity and the keys it trusts (DESIGN §3
//! "Configuration"). Both work without the daemon; the daemon re-reads the trust store when it
//! changes.

use clap::Subcommand;

use super::CliError;
use crate::config::Config;
use crate::control::keys::DeviceKeys;
use crate::control::trust::{Role, TrustEntry, TrustError, TrustStore};

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
        println!("{}", serde_json::to_string_pretty(&v).expect("serialises"));
    } else {
        println!("device_id           {id}");
        println!("device_public_key   {}  (ed25519: verifies what this device sends)", p.device_public_key);
        println!("device_sealing_key  {}  (X25519: seal secrets to this device)", p.device_sealing_key);
    }
    Ok(())
}

pub fn trust(cmd: TrustCmd, cfg: &Config) -> Result<(), CliError> {
    let path = cfg.trust_store_path();
    let mut store = TrustStore::load(&path).map_err(trust_error)?;
    match cmd {
        TrustCmd::Add { key_id, public_key, roles } => {
            let entry = TrustEntry::new(&key_id, &public_key, &roles).map_err(trust_error)?;
            store.add(entry).map_err(trust_error)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
            }
            store.save(&path).map_err(trust_error)?;
            println!("trusted {key_id}");
        }
        TrustCmd::List { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&store).expect("serialises"));
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
                    println!("{:<24} {}  {}", e.key_id, e.public_key, roles.join(","));
                }
            }
        }
        TrustCmd::Remove { key_id } => {
            store.remove(&key_id).map_err(trust_error)?;
            store.save(&path).map_err(trust_error)?;
            println!("removed {key_id}");
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
    let doc = serde_json::json!({
        "device_id": cfg.device_id()?,
        "cloud_configured": configured,
        "daemon_running": running,
        "links": if running { links.as_ref().map(|l| l["links"].clone()) } else { None },
        "links_since": if running { links.as_ref().map(|l| l["at"].clone()) } else { None },
        "outbox": {"messages": row.0, "bytes": row.1},
        "segments": segments,
    });
    if json {
        println!("{doc}");
        return Ok(());
    }
    println!("device    {}", doc["device_id"].as_str().unwrap_or_default());
    match (configured, running, doc["links"].as_object()) {
        (false, _, _) => println!("cloud     not configured ([control.mqtt] / [control.ws])"),
        (true, false, _) => println!("cloud     the daemon is not running"),
        (true, true, Some(l)) => {
            for (k, v) in l {
                println!("{k:<9} {}", v.as_str().unwrap_or_default());
            }
        }
        (true, true, None) => println!("cloud     starting"),
    }
    println!("outbox    {} message(s), {} bytes waiting", row.0, row.1);
    if segments.is_empty() {
        println!("segments  none installed");
    }
    for s in segments.iter().filter(|s| s.active) {
        let kept: Vec<String> = segments
            .iter()
            .filter(|o| o.segment_id == s.segment_id && !o.active)
            .map(|o| o.version.to_string())
            .collect();
        println!(
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
