//! `camera`, `destination` and `stream`: the configuration commands. Every change goes through
//! [`configure_change`](super::configure_change): the running daemon's dispatcher, or the same
//! checked function on the store when no daemon runs. Listing and probing read the store.

use super::*;
use crate::media::destination::Publisher;

pub(super) async fn camera(cmd: CameraCmd, cfg: &Config) -> Result<(), CliError> {
    let timeout = Duration::from_secs(cfg.ffmpeg.rtsp_timeout_s);
    match cmd {
        CameraCmd::Add(a) => {
            let password = match (a.password, a.password_stdin) {
                (Some(p), _) => Some(Secret::new(p)),
                (None, true) => Some(read_stdin_secret("password")?),
                (None, false) => None,
            };
            // Validate before opening anything, so bad input changes nothing.
            crate::store::cameras::split_camera_url(&a.url).map_err(|e| CliError::Invalid(e.to_string()))?;
            let add = configure::CameraAdd {
                camera_id: parse_id("camera id", &a.id)?,
                url: a.url,
                username: a.username,
                password: password.map(configure::OperatorSecret),
                backup_camera_id: a.backup.as_deref().map(|b| parse_id("--backup", b)).transpose()?,
                onvif_host: a.onvif_host,
                onvif_port: a.onvif_port,
            };
            if a.probe {
                let (url, user, pass) =
                    crate::store::cameras::split_camera_url(&add.url).map_err(|e| CliError::Invalid(e.to_string()))?;
                let cam = crate::store::Camera {
                    id: add.camera_id.clone(),
                    url,
                    username: add.username.clone().or(user),
                    password: add.password.clone().map(|p| p.0).or(pass),
                    backup_camera_id: None,
                    onvif_host: None,
                    onvif_port: None,
                };
                let p = probe_camera(&cfg.ffmpeg.ffprobe, &cam.source(), timeout)
                    .await
                    .map_err(|e| CliError::Unavailable(format!("camera {}: {e}; nothing was stored", cam.id)))?;
                outln!("probe: video {:?}, audio {:?}", p.video_codec, p.audio_codec);
            }
            configure_change(cfg, Configure::CameraAdd(add)).await
        }
        CameraCmd::List { json } => {
            let store = Store::open(&cfg.data_dir).await?;
            let cams = store.cameras().await?;
            if json {
                print_json(&cams);
            } else {
                for c in cams {
                    let backup = c.backup_camera_id.as_ref().map(|b| format!(" (backup: {b})")).unwrap_or_default();
                    outln!("{:<16} {}{backup}", c.id, c.source().shown);
                }
            }
            Ok(())
        }
        CameraCmd::Probe { id, url, json } => {
            let source: CameraSource = match (id, url) {
                (Some(id), _) => Store::open(&cfg.data_dir).await?.camera(&parse_id("camera id", &id)?).await?.source(),
                (None, Some(url)) => {
                    let (u, user, pass) =
                        crate::store::cameras::split_camera_url(&url).map_err(|e| CliError::Invalid(e.to_string()))?;
                    crate::store::Camera {
                        id: parse_id("camera id", "probe")?,
                        url: u,
                        username: user,
                        password: pass,
                        backup_camera_id: None,
                        onvif_host: None,
                        onvif_port: None,
                    }
                    .source()
                }
                (None, None) => return Err(CliError::Invalid("give a camera id or --url".into())),
            };
            let p = probe_camera(&cfg.ffmpeg.ffprobe, &source, timeout)
                .await
                .map_err(|e| CliError::Unavailable(format!("{}: {e}", source.shown)))?;
            if json {
                print_json(&p);
            } else {
                outln!(
                    "{}: video {} {}x{}, audio {}",
                    source.shown,
                    p.video_codec.as_deref().unwrap_or("?"),
                    p.width.unwrap_or(0),
                    p.height.unwrap_or(0),
                    p.audio_codec.as_deref().unwrap_or("none")
                );
            }
            Ok(())
        }
        CameraCmd::Discover(d) => super::discover::discover(d, cfg).await,
        CameraCmd::Remove { id } => {
            configure_change(cfg, Configure::CameraRemove { camera_id: parse_id("camera id", &id)? }).await
        }
        CameraCmd::Preset(p) => timeline::preset(p, cfg).await,
        CameraCmd::Ptz { id, profile, settle_ms } => {
            configure_change(cfg, Configure::CameraPtz { camera_id: parse_id("camera id", &id)?, profile, settle_ms })
                .await
        }
    }
}

pub(super) async fn destination(cmd: DestinationCmd, cfg: &Config) -> Result<(), CliError> {
    match cmd {
        DestinationCmd::Add(a) => {
            let platform: Platform = a
                .platform
                .parse()
                .map_err(|e: crate::media::destination::DestinationError| CliError::Invalid(e.to_string()))?;
            let key = match (a.key, a.key_stdin) {
                (Some(k), _) => Secret::new(k),
                (None, true) => read_stdin_secret("stream key")?,
                (None, false) => return Err(CliError::Invalid("give the stream key with --key or --key-stdin".into())),
            };
            let add = configure::DestinationAdd {
                destination_id: parse_id("destination id", &a.id)?,
                platform: platform.to_string(),
                url: a.url,
                key: configure::OperatorSecret(key),
                backup_ingest: a.backup_ingest,
                ca_file: a.ca_file,
                tls_verify: !a.insecure_skip_verify,
                enabled: !a.disabled,
                publisher: a.publisher,
            };
            // Checked here too, so a mistake is reported before anything is sent.
            DestinationInput {
                platform,
                url: add.url.clone(),
                key: add.key.0.clone(),
                backup_ingest: add.backup_ingest,
                ca_file: add.ca_file.clone(),
                tls_verify: add.tls_verify,
                publisher: add.publisher,
            }
            .validate()
            .map_err(|e| CliError::Invalid(e.to_string()))?;
            configure_change(cfg, Configure::DestinationAdd(add)).await
        }
        DestinationCmd::List { json } => {
            let ds = Store::open(&cfg.data_dir).await?.destinations().await?;
            if json {
                print_json(&ds);
            } else {
                for d in ds {
                    let state = if d.enabled { "" } else { " (disabled)" };
                    let publisher = if d.publisher == Publisher::Native { "" } else { " (ffmpeg publisher)" };
                    outln!("{:<16} {:<9} {}{publisher}{state}", d.id, d.platform, d.url);
                }
            }
            Ok(())
        }
        DestinationCmd::Update { id, url, key, key_stdin, ca_file, publisher } => {
            let key = match (key, key_stdin) {
                (Some(k), _) => Some(configure::OperatorSecret(Secret::new(k))),
                (None, true) => Some(configure::OperatorSecret(read_stdin_secret("stream key")?)),
                (None, false) => None,
            };
            if key.is_none() && url.is_none() && ca_file.is_none() && publisher.is_none() {
                return Err(CliError::Invalid(
                    "nothing to change: give --key, --key-stdin, --url, --ca-file or --publisher".into(),
                ));
            }
            let update = configure::DestinationUpdate {
                destination_id: parse_id("destination id", &id)?,
                url,
                key,
                ca_file,
                publisher,
            };
            configure_change(cfg, Configure::DestinationUpdate(update)).await
        }
        DestinationCmd::Remove { id } => {
            configure_change(cfg, Configure::DestinationRemove { destination_id: parse_id("destination id", &id)? })
                .await
        }
        DestinationCmd::Attach { id, program: p } => {
            super::program::program(
                ProgramCmdArgs::Attach { destination: parse_id("destination", &id)?, id: parse_id("--program", &p)? },
                cfg,
            )
            .await
        }
        DestinationCmd::Detach { id, program: p } => {
            super::program::program(
                ProgramCmdArgs::Detach { destination: parse_id("destination", &id)?, id: parse_id("--program", &p)? },
                cfg,
            )
            .await
        }
    }
}

pub(super) async fn stream(cmd: StreamCmd, cfg: &Config) -> Result<(), CliError> {
    let stream_id = |id: &str| parse_id::<StreamId>("stream id", id);
    let change = match cmd {
        StreamCmd::Start { ref id, ref camera, ref destinations } => Some(Configure::StreamStart {
            stream_id: stream_id(id)?,
            camera_id: camera.as_deref().map(|c| parse_id("--camera", c)).transpose()?,
            destination_ids: destinations.iter().map(|d| parse_id("--destination", d)).collect::<Result<_, _>>()?,
        }),
        StreamCmd::Stop { ref id } => Some(Configure::StreamStop { stream_id: stream_id(id)? }),
        StreamCmd::Remove { ref id } => Some(Configure::StreamRemove { stream_id: stream_id(id)? }),
        StreamCmd::Attach { ref id, ref destination } => Some(Configure::StreamAttach {
            stream_id: stream_id(id)?,
            destination_id: parse_id("destination id", destination)?,
        }),
        StreamCmd::Detach { ref id, ref destination } => Some(Configure::StreamDetach {
            stream_id: stream_id(id)?,
            destination_id: parse_id("destination id", destination)?,
        }),
        _ => None,
    };
    if let Some(change) = change {
        return configure_change(cfg, change).await;
    }
    let store = Store::open(&cfg.data_dir).await?;
    match cmd {
        StreamCmd::Start { .. }
        | StreamCmd::Stop { .. }
        | StreamCmd::Remove { .. }
        | StreamCmd::Attach { .. }
        | StreamCmd::Detach { .. } => unreachable!("changes are made above"),
        StreamCmd::Status { id, json } => {
            let rows = match id {
                Some(id) => vec![store.relay(&parse_id("stream id", &id)?).await?],
                None => store.relays().await?,
            };
            let mut out = Vec::new();
            for r in rows {
                let status: serde_json::Value =
                    r.status_json.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
                let events = store.events(Some(&format!("relay:{}", r.id)), 10).await?;
                out.push(serde_json::json!({ "stream": r, "status": status, "events": events }));
            }
            if json {
                print_json(&out);
            } else {
                for s in &out {
                    print_status(s);
                }
            }
            Ok(())
        }
        StreamCmd::List { json } => {
            let rows = store.relays().await?;
            if json {
                print_json(&rows);
            } else {
                for r in rows {
                    outln!(
                        "{:<16} {:<8} {:<13} camera {:<12} → {}",
                        r.id,
                        format!("{:?}", r.desired).to_lowercase(),
                        r.state,
                        r.camera_id,
                        r.destinations.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
                    );
                }
            }
            Ok(())
        }
    }
}

pub(super) fn print_status(s: &serde_json::Value) {
    let st = &s["status"];
    let r = &s["stream"];
    outln!(
        "stream {}: {} (desired {})  camera {} {}",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["desired"].as_str().unwrap_or("?"),
        r["camera_id"].as_str().unwrap_or("?"),
        st["camera_url"].as_str().unwrap_or("")
    );
    let line = |label: String, j: &serde_json::Value| {
        let mut l = format!("  {label:<28} {}", j["phase"].as_str().unwrap_or("-"));
        if let Some(pid) = j["pid"].as_u64() {
            l.push_str(&format!(" pid {pid}"));
        }
        if let Some(t) = j["progress"]["out_time_us"].as_i64() {
            l.push_str(&format!(" t={:.1}s", t as f64 / 1e6));
        }
        if let Some(sp) = j["progress"]["speed"].as_f64() {
            l.push_str(&format!(" speed={sp}x"));
        }
        if j["degraded"].as_bool() == Some(true) {
            l.push_str(" DEGRADED");
        }
        if let Some(e) = j["last_error"].as_str() {
            l.push_str(&format!(" last error: {e}"));
        }
        if let Some(ms) = j["retry_in_ms"].as_u64() {
            l.push_str(&format!(" (retry in {:.1} s)", ms as f64 / 1000.0));
        }
        outln!("{l}");
    };
    if st.get("ingest").is_some() {
        line("ingest".into(), &st["ingest"]);
    }
    for o in st["outputs"].as_array().into_iter().flatten() {
        line(format!("→ {} ({})", o["destination"].as_str().unwrap_or("?"), o["ingest"].as_str().unwrap_or("")), o);
    }
    let (zone, now) = (crate::events::sentence::box_zone(), jiff::Timestamp::now());
    for e in s["events"].as_array().into_iter().flatten() {
        let e = control::event_of(e);
        outln!("  {}", crate::events::sentence::line(&e, &zone, now));
    }
}

#[derive(Subcommand, Debug)]
pub enum DestinationCmd {
    /// Add a destination. The stream key is stored encrypted and never printed.
    Add(DestinationAdd),
    /// List destinations (keys masked).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a destination's stream key or ingest URL (key rotation). A push that uses it
    /// reconnects once with the new settings; the other destinations are not disturbed.
    Update {
        id: String,
        /// New ingest URL (custom only).
        #[arg(long)]
        url: Option<String>,
        /// New stream key (prefer --key-stdin: command lines are visible to other users).
        #[arg(long, conflicts_with = "key_stdin")]
        key: Option<String>,
        /// Read the new stream key from standard input.
        #[arg(long)]
        key_stdin: bool,
        /// RTMPS: new CA certificate file for a private ingest.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// What sends the stream: native (the agent's RTMP client) or ffmpeg.
        #[arg(long, value_parser = parse_publisher)]
        publisher: Option<Publisher>,
    },
    /// Remove a destination; live streams stop pushing to it.
    Remove { id: String },
    /// Add a destination to a live program (same as `program attach`).
    Attach {
        id: String,
        #[arg(long, default_value = "main")]
        program: String,
    },
    /// Remove a destination from a live program (same as `program detach`).
    Detach {
        id: String,
        #[arg(long, default_value = "main")]
        program: String,
    },
}

#[derive(Args, Debug)]
pub struct DestinationAdd {
    /// Destination id (letters, digits, '-', '_').
    pub id: String,
    /// youtube · facebook · twitch · custom
    #[arg(long)]
    pub platform: String,
    /// Ingest URL (custom only): rtmp://host/app or rtmps://host:443/app
    #[arg(long)]
    pub url: Option<String>,
    /// Stream key (prefer --key-stdin: command lines are visible to other users).
    #[arg(long, conflicts_with = "key_stdin")]
    pub key: Option<String>,
    /// Read the stream key from standard input.
    #[arg(long)]
    pub key_stdin: bool,
    /// YouTube only: also push to the backup ingest.
    #[arg(long)]
    pub backup_ingest: bool,
    /// RTMPS: CA certificate file for a private ingest.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// RTMPS: do not verify the ingest's certificate (not recommended).
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Add it disabled.
    #[arg(long)]
    pub disabled: bool,
    /// What sends the stream: native (the agent's own RTMP client, the default) or ffmpeg (an
    /// FFmpeg process, for an ingest the native client cannot serve).
    #[arg(long, value_parser = parse_publisher, default_value = "native")]
    pub publisher: Publisher,
}

fn parse_publisher(s: &str) -> Result<Publisher, String> {
    s.parse().map_err(|e: crate::media::destination::DestinationError| e.to_string())
}
