//! `timeline`, `schedule` and `camera preset|ptz`: shows and when they play.
//!
//! Loading, listing and scheduling write the store directly (the daemon picks schedules up
//! within a second); playback controls go to the running daemon over the local socket, where
//! the director applies them at the next frame.

use std::path::PathBuf;

use clap::Subcommand;

use super::{ask_daemon, configure_change, CliError};
use crate::command::configure::Configure;
use crate::command::values::{CameraId, CueId, DestinationId, Kbps, ProgramTime, TimelineId};
use crate::command::{
    self as cmd, Command, Output, ShowQuery, ShowQueryKind, StreamCommand, StreamControl, TimelineAction,
    TimelineExecute,
};
use crate::config::Config;
use crate::store::Store;
use crate::timeline::model::{self, Inventory};
use crate::timeline::schedule::{self, LocalTime, Schedule, Weekday};
use crate::values::{PresetId, ScheduleId};

#[derive(Subcommand, Debug)]
pub enum TimelineCmd {
    /// Check a timeline file (schema and semantics) and store it; assets are relative to the file.
    Load {
        file: PathBuf,
    },
    /// Check a timeline file without storing it.
    Validate {
        file: PathBuf,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a stored timeline's JSON.
    Show {
        id: String,
    },
    Remove {
        id: String,
    },
    /// Check a show before going live: blockers and warnings.
    Preflight {
        id: TimelineId,
        #[arg(long = "destination", required = true)]
        destinations: Vec<DestinationId>,
    },
    /// Pack a stored timeline and the assets it uses into a signed segment package.
    #[command(disable_version_flag = true)]
    Export {
        id: TimelineId,
        #[arg(short = 'o', long)]
        out: PathBuf,
        /// The signing key (from `segment keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The package version (default: now, in Unix seconds).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Play a timeline as the show, to one or more destinations.
    Play {
        id: TimelineId,
        #[arg(long = "destination", required = true)]
        destinations: Vec<DestinationId>,
        /// Start this many seconds in.
        #[arg(long)]
        from: Option<ProgramTime>,
        /// Video bitrate, kbit/s (default by resolution; 100 to 50000). Starts at the top.
        #[arg(long, conflicts_with = "from")]
        bitrate: Option<Kbps>,
    },
    /// Hold the current shot and stop the timeline's clock.
    Pause,
    Resume,
    /// Stop the show (its destinations disconnect).
    Stop,
    /// Jump to a cue or to seconds into the current loop.
    Seek {
        #[arg(long, conflicts_with = "to", required_unless_present = "to")]
        cue: Option<CueId>,
        /// Seconds into the current loop.
        #[arg(long)]
        to: Option<ProgramTime>,
    },
    /// Jump to the next video cue.
    Skip,
    /// Keep a camera on air whatever the video cues say (overlays continue).
    Pin {
        camera: CameraId,
    },
    Unpin,
    /// Emergency slate on or off.
    Slate {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Hide every overlay now (later overlay cues still show).
    ClearOverlays,
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Recent executions with their outcome and cue lateness.
    History {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Add or replace a schedule: a daily window on some days, in a time zone, playing timelines
    /// in turn to destinations. A window ending at or before its start ends the next day.
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// IANA time zone, e.g. Europe/London.
        #[arg(long)]
        timezone: String,
        /// Days the window starts on: mon,tue,... or "daily".
        #[arg(long, default_value = "daily")]
        days: String,
        /// Window start, HH:MM[:SS] local time.
        #[arg(long)]
        start: String,
        /// Window end, HH:MM[:SS] local time.
        #[arg(long)]
        end: String,
        /// Timelines, played in turn (repeat the flag).
        #[arg(long = "timeline", required = true)]
        timelines: Vec<String>,
        #[arg(long = "destination", required = true)]
        destinations: Vec<String>,
        /// Store it disabled.
        #[arg(long)]
        disabled: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Remove {
        id: String,
    },
    Enable {
        id: String,
    },
    Disable {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PresetCmd {
    /// Map a preset id (used by timelines) to the camera's ONVIF preset token.
    Set {
        camera: String,
        preset: String,
        #[arg(long)]
        token: String,
    },
    Remove {
        camera: String,
        preset: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

fn invalid(e: impl std::fmt::Display) -> CliError {
    CliError::Invalid(e.to_string())
}

async fn read_checked(store: &Store, file: &PathBuf) -> Result<(model::Timeline, String, PathBuf), CliError> {
    let json = std::fs::read_to_string(file).map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let root = std::path::absolute(file)
        .map_err(|e| CliError::Invalid(e.to_string()))?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let inv = Inventory { cameras: store.camera_inventory().await?, asset_root: Some(root.clone()) };
    let tl = model::parse(&json, &inv).map_err(invalid)?;
    Ok((tl, json, root))
}

pub async fn timeline(cmd: TimelineCmd, cfg: &Config) -> Result<(), CliError> {
    let exec = |a: TimelineAction| Command::TimelineExecute(TimelineExecute::new(a));
    let req = match cmd {
        TimelineCmd::Load { file } => {
            let store = Store::open(&cfg.data_dir).await?;
            // Checked here first, so a mistake is reported with the file's name before anything is sent.
            let (tl, json, root) = read_checked(&store, &file).await?;
            store.close().await;
            // The files it uses are copied where the service can always read them.
            let asset_root = crate::assets::import_tree(&cfg.data_dir, &root, &tl.assets()).map_err(invalid)?;
            return configure_change(cfg, Configure::TimelineLoad { json, asset_root }).await;
        }
        TimelineCmd::Export { id, out, key, version } => {
            return super::segment::export(cfg, &id, &out, &key, version).await;
        }
        TimelineCmd::Validate { file } => {
            let store = Store::open(&cfg.data_dir).await?;
            let (tl, ..) = read_checked(&store, &file).await?;
            outln!("timeline {} is valid", tl.id);
            return Ok(());
        }
        TimelineCmd::List { json } => {
            let store = Store::open(&cfg.data_dir).await?;
            let rows = store.timelines().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows).expect("serializes"));
            } else {
                for r in rows {
                    outln!("{:<24} {:>9.1} s  {}", r.id, r.duration_s, r.name);
                }
            }
            return Ok(());
        }
        TimelineCmd::Show { id } => {
            let store = Store::open(&cfg.data_dir).await?;
            outln!("{}", store.timeline(&super::parse_id("timeline id", &id)?).await?.json);
            return Ok(());
        }
        TimelineCmd::Remove { id } => {
            let timeline_id = super::parse_id("timeline id", &id)?;
            return configure_change(cfg, Configure::TimelineRemove { timeline_id }).await;
        }
        TimelineCmd::History { limit, json } => {
            let store = Store::open(&cfg.data_dir).await?;
            let rows = store.executions(limit).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows).expect("serializes"));
            } else {
                for r in rows {
                    outln!(
                        "{:>5} {:<20} {:<9} {:<11} {} → {}{}",
                        r.id,
                        r.timeline_id,
                        r.origin,
                        r.status,
                        r.started_at,
                        r.ended_at.unwrap_or_else(|| "…".into()),
                        r.error.map(|e| format!("  ({e})")).unwrap_or_default()
                    );
                }
            }
            return Ok(());
        }
        TimelineCmd::Preflight { id, destinations } => {
            let q = ShowQuery {
                query: ShowQueryKind::Preflight,
                timeline_id: Some(id),
                destination_ids: Some(destinations),
            };
            let Output::Preflight { preflight } = ask_daemon(cfg, &Command::ShowQuery(q)).await? else {
                return Err(CliError::Failed("the agent sent no pre-flight".into()));
            };
            for b in &preflight.blockers {
                outln!("BLOCKER  {b}");
            }
            for w in &preflight.warnings {
                outln!("warning  {w}");
            }
            if !preflight.blockers.is_empty() {
                return Err(CliError::Failed("pre-flight failed".into()));
            }
            outln!("ready to go live");
            return Ok(());
        }
        TimelineCmd::Status { json } => {
            let q = ShowQuery { query: ShowQueryKind::Status, timeline_id: None, destination_ids: None };
            let Output::Show { show } = ask_daemon(cfg, &Command::ShowQuery(q)).await? else {
                return Err(CliError::Failed("the agent sent no show status".into()));
            };
            if json {
                outln!("{}", serde_json::to_string_pretty(&show).expect("serializes"));
            } else {
                let d = &show.desired;
                match &show.status {
                    None => outln!("{} (starting, by the {})", d.timeline_id, d.origin.as_str()),
                    Some(s) => outln!(
                        "{} ({:?} by the {}): {} at {:.1} s, loop {}, on {}",
                        d.timeline_id,
                        s.engine.state,
                        d.origin.as_str(),
                        s.engine.video_cue.as_ref().map_or("-", |c| c.as_str()),
                        s.engine.position_s,
                        s.engine.loop_index,
                        s.engine.pinned.as_ref().map(|p| format!("pinned {p}")).unwrap_or_else(|| "cue".into()),
                    ),
                }
            }
            return Ok(());
        }
        TimelineCmd::Play { id, destinations, from, bitrate: None } => Command::TimelineExecute(TimelineExecute {
            timeline_id: Some(id),
            destination_ids: Some(destinations),
            position_s: from,
            ..TimelineExecute::new(TimelineAction::Play)
        }),
        TimelineCmd::Play { id, destinations, from: _, bitrate: Some(b) } => Command::StreamControl(StreamControl {
            timeline_id: Some(id),
            destination_ids: Some(destinations),
            encoder: Some(cmd::EncoderChange { bitrate_kbps: Some(b), profile: None }),
            ..StreamControl::new(StreamCommand::GoLive)
        }),
        TimelineCmd::Pause => exec(TimelineAction::Pause),
        TimelineCmd::Resume => exec(TimelineAction::Resume),
        TimelineCmd::Stop => exec(TimelineAction::Stop),
        TimelineCmd::Seek { cue, to } => Command::TimelineExecute(TimelineExecute {
            cue_id: cue,
            position_s: to,
            ..TimelineExecute::new(TimelineAction::Seek)
        }),
        TimelineCmd::Skip => exec(TimelineAction::Skip),
        TimelineCmd::Pin { camera } => Command::TimelineExecute(TimelineExecute {
            camera_id: Some(camera),
            ..TimelineExecute::new(TimelineAction::PinCamera)
        }),
        TimelineCmd::Unpin => exec(TimelineAction::Unpin),
        TimelineCmd::Slate { state } => Command::StreamControl(StreamControl {
            on: Some(state == "on"),
            ..StreamControl::new(StreamCommand::EmergencySlate)
        }),
        TimelineCmd::ClearOverlays => Command::OverlayUpdate(cmd::OverlayUpdate {
            action: cmd::OverlayAction::ClearAll,
            vars: None,
            overlay_id: None,
            overlay: None,
            program_id: None,
        }),
    };
    match ask_daemon(cfg, &req).await? {
        Output::Started { preflight } => {
            for w in preflight.warnings {
                outln!("warning  {w}");
            }
        }
        Output::Done | Output::Destinations { .. } => {}
        other => return Err(super::unexpected(&other)),
    }
    outln!("ok");
    Ok(())
}

fn parse_days(s: &str) -> Result<Vec<Weekday>, CliError> {
    if s == "daily" {
        return Ok(vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]);
    }
    s.split(',')
        .map(|d| serde_json::from_value::<Weekday>(serde_json::Value::String(d.trim().to_lowercase())).map_err(invalid))
        .collect()
}

pub async fn schedule(cmd: ScheduleCmd, cfg: &Config) -> Result<(), CliError> {
    let schedule_id = |id: &str| super::parse_id::<ScheduleId>("schedule id", id);
    match cmd {
        ScheduleCmd::Add { id, name, timezone, days, start, end, timelines, destinations, disabled } => {
            fn ids<T: std::str::FromStr>(field: &str, v: Vec<String>) -> Result<Vec<T>, CliError>
            where
                T::Err: std::fmt::Display,
            {
                v.iter().map(|x| x.parse().map_err(|e| invalid(format!("{field}: {e}")))).collect()
            }
            let s = Schedule {
                name: name.unwrap_or_else(|| id.clone()),
                id: id.parse().map_err(|e| invalid(format!("id: {e}")))?,
                enabled: !disabled,
                timezone,
                days_of_week: parse_days(&days)?,
                window_start: start.parse::<LocalTime>().map_err(invalid)?,
                window_end: end.parse::<LocalTime>().map_err(invalid)?,
                timelines: ids("timelines", timelines)?,
                destinations: ids("destinations", destinations)?,
            };
            schedule::validate(&s).map_err(invalid)?;
            configure_change(cfg, Configure::SchedulePut { schedule: s }).await?;
        }
        ScheduleCmd::List { json } => {
            let rows = Store::open(&cfg.data_dir).await?.schedules().await?;
            let list: Vec<serde_json::Value> = rows.iter().filter_map(|(_, j)| serde_json::from_str(j).ok()).collect();
            if json {
                outln!("{}", serde_json::to_string_pretty(&list).expect("serializes"));
            } else {
                for s in list {
                    outln!(
                        "{:<16} {:<8} {} {}–{} {:?} → {:?}{}",
                        s["id"].as_str().unwrap_or_default(),
                        s["timezone"].as_str().unwrap_or_default(),
                        s["days_of_week"],
                        s["window_start"].as_str().unwrap_or_default(),
                        s["window_end"].as_str().unwrap_or_default(),
                        s["timelines"],
                        s["destinations"],
                        if s["enabled"].as_bool() == Some(false) { " (disabled)" } else { "" },
                    );
                }
            }
        }
        ScheduleCmd::Remove { id } => {
            configure_change(cfg, Configure::ScheduleRemove { schedule_id: schedule_id(&id)? }).await?
        }
        ScheduleCmd::Enable { id } => {
            configure_change(cfg, Configure::ScheduleEnable { schedule_id: schedule_id(&id)?, enabled: true }).await?
        }
        ScheduleCmd::Disable { id } => {
            configure_change(cfg, Configure::ScheduleEnable { schedule_id: schedule_id(&id)?, enabled: false }).await?
        }
    }
    Ok(())
}

pub async fn preset(cmd: PresetCmd, cfg: &Config) -> Result<(), CliError> {
    let ids = |c: &str, p: &str| -> Result<(CameraId, PresetId), CliError> {
        Ok((super::parse_id("camera id", c)?, super::parse_id("preset id", p)?))
    };
    match cmd {
        PresetCmd::Set { camera, preset, token } => {
            let (camera_id, preset_id) = ids(&camera, &preset)?;
            configure_change(cfg, Configure::PresetSet { camera_id, preset_id, token }).await?;
        }
        PresetCmd::Remove { camera, preset } => {
            let (camera_id, preset_id) = ids(&camera, &preset)?;
            configure_change(cfg, Configure::PresetRemove { camera_id, preset_id }).await?;
        }
        PresetCmd::List { json } => {
            let p = Store::open(&cfg.data_dir).await?.presets().await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&p).expect("serializes"));
            } else {
                let mut rows: Vec<_> = p.iter().flat_map(|(c, m)| m.iter().map(move |(k, t)| (c, k, t))).collect();
                rows.sort();
                for (c, k, t) in rows {
                    outln!("{c:<16} {k:<16} token {t}");
                }
            }
        }
    }
    Ok(())
}
