//! `vistter-agent run`: the long-running daemon.
//!
//! It owns every media job. Desired state lives in the store (written by the CLI, and later by the
//! control plane); a reconcile loop brings the running relays to it every `reconcile_interval_ms`
//! and writes back what it observes. Because desired state is persisted, a relay that was live when
//! the agent died is live again after a restart. At start-up it first reaps FFmpeg processes left
//! over by an earlier instance (from the pid registry), so their RTMP sessions do not block ours.
//! Shutdown (SIGTERM/SIGINT) stops every job with the usual escalation, under a deadline.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{EXIT_CONFLICT, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE};
use crate::ffmpeg::registry::Registry;
use crate::local_api::{self, socket_path, Incoming, Request, Response};
use crate::media::destination::OutputTarget;
use crate::media::encoder::{EncoderSettings, Profile};
use crate::media::ingest::ProgramFormat;
use crate::media::program::{OverlayOp, Program, ProgramCamera, ProgramCmd, ProgramSpec};
use crate::media::relay::{Relay, RelaySpec, RelayStatus};
use crate::media::MediaEnv;
use crate::store::{Desired, RelayRow, Severity, Store, StoreError};
use crate::timeline::actor::Origin;
use crate::timeline::director::{Ctx, DesiredShow, Director, DirectorError, SHOW_PROGRAM};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pid registry {path}: {source}")]
    Registry { path: String, source: std::io::Error },
    #[error("control socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
}

/// Where the pid registry lives inside the data dir.
pub fn registry_dir(cfg: &Config) -> std::path::PathBuf {
    cfg.data_dir.join("run").join("ffmpeg")
}

struct Running {
    relay: Relay,
    /// The camera URL the relay was started with (credentials included; never printed).
    camera_key: String,
    last_report: Option<(String, Instant)>,
}

pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let store = Store::open(&cfg.data_dir).await?;
    let reg_dir = registry_dir(&cfg);
    let registry = Registry::open(&reg_dir)
        .map_err(|source| DaemonError::Registry { path: reg_dir.display().to_string(), source })?;
    let reaped = registry.reap_leftovers().await;
    if !reaped.is_empty() {
        let detail = format!("reaped {} FFmpeg process(es) left by an earlier agent: {reaped:?}", reaped.len());
        tracing::warn!("{detail}");
        let _ = store.add_event(Severity::Warning, "orphans_reaped", "agent", &detail).await;
    }
    check_ffmpeg(&cfg).await;
    // Reports written by an earlier instance describe processes that are gone.
    store.clear_relay_reports().await?;
    let interrupted = store.interrupt_stale_executions().await?;
    if interrupted > 0 {
        tracing::warn!("{interrupted} timeline execution(s) were interrupted by the last stop");
    }
    let _ = store.add_event(Severity::Info, "agent_started", "agent", env!("CARGO_PKG_VERSION")).await;

    let (ev_tx, ev_rx) = mpsc::channel(256);
    let sink = tokio::spawn(crate::events::sink(Store::open(&cfg.data_dir).await?, ev_rx));
    let env = MediaEnv::new(&cfg, registry, ev_tx);
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut programs: HashMap<String, ProgramEntry> = HashMap::new();
    let (api_tx, mut api_rx) = mpsc::channel::<Incoming>(16);
    let sock = socket_path(&cfg.data_dir);
    let api = local_api::serve(sock.clone(), api_tx)
        .await
        .map_err(|source| DaemonError::Socket { path: sock.display().to_string(), source })?;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.reconcile_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(data_dir = %cfg.data_dir.display(), "vistter-agent running");
    let mut director = Director::default();
    {
        let ctx = Ctx { cfg: &cfg, store: &store, env: &env };
        match director.resume_persisted(&ctx).await {
            Ok(Some(d)) => tracing::info!(timeline = %d.timeline_id, "resumed the show that was playing"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("cannot resume the recorded show: {e}");
                let _ = store.add_event(Severity::Error, "show_resume_failed", "agent", &e.to_string()).await;
            }
        }
    }
    let mut sched_at = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some((req, reply)) = api_rx.recv() => {
                let resp = handle_request(&cfg, &store, &env, &mut programs, &mut director, req).await;
                let _ = reply.send(resp);
            }
            _ = tokio::time::sleep_until(sched_at) => {
                let ctx = Ctx { cfg: &cfg, store: &store, env: &env };
                sched_at = Instant::now() + director.schedule_tick(&ctx, jiff::Timestamp::now()).await;
            }
            _ = tick.tick() => {
                if let Err(e) = reconcile(&store, &env, &mut running).await {
                    tracing::error!("reconcile: {e}");
                }
            }
        }
    }
    api.abort();
    let _ = std::fs::remove_file(&sock);
    tracing::info!("shutting down: stopping {} stream(s) and {} program(s)", running.len(), programs.len());
    director.shutdown().await;
    let progs = programs.into_values().map(|e| e.program.stop());
    if tokio::time::timeout(env.stop_grace + Duration::from_secs(5), join_all(progs)).await.is_err() {
        tracing::error!("programs did not stop in time; their processes are killed on exit");
    }
    let deadline = env.stop_grace + Duration::from_secs(5);
    let ids: Vec<String> = running.keys().cloned().collect();
    let stops = running.into_values().map(|r| r.relay.stop());
    if tokio::time::timeout(deadline, join_all(stops)).await.is_err() {
        tracing::error!("streams did not stop within {deadline:?}; their processes are killed on exit");
    }
    for id in ids {
        let _ = store.report_relay(&id, "stopped", "{}").await;
    }
    let _ = store.add_event(Severity::Info, "agent_stopped", "agent", "").await;
    drop(env);
    let _ = tokio::time::timeout(Duration::from_secs(2), sink).await;
    store.close().await;
    Ok(())
}

async fn check_ffmpeg(cfg: &Config) {
    let ok = tokio::process::Command::new(&cfg.ffmpeg.path)
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::error!(
            "{} cannot be run: streams will fail until FFmpeg is installed (scripts/setup.sh) or ffmpeg.path is set",
            cfg.ffmpeg.path.display()
        );
    }
}

async fn desired_spec(store: &Store, row: &RelayRow) -> Result<(RelaySpec, String), StoreError> {
    let camera = store.camera(&row.camera_id).await?;
    let source = camera.source();
    let mut outputs: Vec<OutputTarget> = Vec::new();
    for d in &row.destinations {
        let dest = store.destination(d).await?;
        if dest.enabled {
            outputs.extend(dest.settings.outputs(&dest.id));
        }
    }
    let key = source.input().expose().to_string();
    Ok((RelaySpec { id: row.id.clone(), camera: source, outputs }, key))
}

async fn reconcile(store: &Store, env: &MediaEnv, running: &mut HashMap<String, Running>) -> Result<(), StoreError> {
    let rows = store.relays().await?;
    for row in &rows {
        if row.desired != Desired::Live {
            continue;
        }
        let (spec, camera_key) = match desired_spec(store, row).await {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("cannot start: {e}");
                if row.state != "failed" {
                    tracing::error!(stream = %row.id, "{msg}");
                    let _ = store.add_event(Severity::Error, "stream_failed", &format!("relay:{}", row.id), &msg).await;
                }
                store.report_relay(&row.id, "failed", &serde_json::json!({ "error": msg }).to_string()).await?;
                continue;
            }
        };
        match running.get_mut(&row.id) {
            Some(r) if r.camera_key == camera_key => r.relay.set_outputs(spec.outputs).await,
            _ => {
                if let Some(old) = running.remove(&row.id) {
                    tracing::info!(stream = %row.id, "camera changed: restarting the relay");
                    old.relay.stop().await;
                }
                tracing::info!(stream = %row.id, camera = %spec.camera.shown, outputs = spec.outputs.len(), "starting relay");
                for d in &row.destinations {
                    let _ = store.touch_destination(d).await;
                }
                let _ = store.add_event(Severity::Info, "stream_started", &format!("relay:{}", row.id), "").await;
                running.insert(
                    row.id.clone(),
                    Running { relay: Relay::start(spec, env).await, camera_key, last_report: None },
                );
            }
        }
    }
    let wanted: Vec<&str> = rows.iter().filter(|r| r.desired == Desired::Live).map(|r| r.id.as_str()).collect();
    let gone: Vec<String> = running.keys().filter(|k| !wanted.contains(&k.as_str())).cloned().collect();
    for id in gone {
        if let Some(r) = running.remove(&id) {
            tracing::info!(stream = %id, "stopping relay");
            r.relay.stop().await;
            let _ = store.add_event(Severity::Info, "stream_stopped", &format!("relay:{id}"), "").await;
            if rows.iter().any(|row| row.id == id) {
                store.report_relay(&id, "stopped", "{}").await?;
            }
        }
    }
    for (id, r) in running.iter_mut() {
        report(store, id, r).await?;
    }
    Ok(())
}

/// Writes the status when its shape changes, and the progress figures at most every 2 s
/// (the box runs on flash: no write per tick; LESSONS 23).
async fn report(store: &Store, id: &str, r: &mut Running) -> Result<(), StoreError> {
    let st: RelayStatus = r.relay.status();
    let shape = shape_of(&st);
    let due = match &r.last_report {
        None => true,
        Some((s, at)) => *s != shape || at.elapsed() >= Duration::from_secs(2),
    };
    if due {
        let json = serde_json::to_string(&st).expect("status serializes");
        store.report_relay(id, st.state, &json).await?;
        r.last_report = Some((shape, Instant::now()));
    }
    Ok(())
}

fn shape_of(st: &RelayStatus) -> String {
    let mut s = format!("{}:{:?}:{}", st.state, st.ingest.phase, st.ingest.starts);
    for o in &st.outputs {
        s.push_str(&format!("|{}:{:?}:{}:{}", o.destination, o.job.phase, o.job.starts, o.job.degraded));
    }
    s
}

fn store_err(e: StoreError) -> Response {
    let code = match &e {
        StoreError::NotFound { .. } => EXIT_NOT_FOUND,
        StoreError::Exists { .. } | StoreError::Conflict(_) => EXIT_CONFLICT,
        StoreError::Invalid(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    };
    Response::err(code, e.to_string())
}

/// Sends a command to a program and waits for its answer.
async fn ask<T>(
    programs: &HashMap<String, ProgramEntry>,
    director: &Director,
    id: &str,
    make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, String>>) -> ProgramCmd,
) -> Result<T, Response> {
    ask_program(lookup(programs, director, id), id, make).await
}

async fn ask_program<T>(
    p: Option<&Program>,
    id: &str,
    make: impl FnOnce(tokio::sync::oneshot::Sender<Result<T, String>>) -> ProgramCmd,
) -> Result<T, Response> {
    let p = p.ok_or_else(|| Response::err(EXIT_NOT_FOUND, format!("no program {id:?} is running")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    p.sender().send(make(tx)).await.map_err(|_| Response::err(EXIT_FAILURE, "the program has stopped"))?;
    rx.await
        .map_err(|_| Response::err(EXIT_FAILURE, "the program has stopped"))?
        .map_err(|e| Response::err(EXIT_USAGE, e))
}

/// A program by id: the operator's, or the show's ([`SHOW_PROGRAM`]).
fn lookup<'a>(programs: &'a HashMap<String, ProgramEntry>, director: &'a Director, id: &str) -> Option<&'a Program> {
    if id == SHOW_PROGRAM {
        return director.program();
    }
    programs.get(id).map(|e| &e.program)
}

fn director_err(e: DirectorError) -> Response {
    let code = match &e {
        DirectorError::Store(s) => return store_err_ref(s, e.to_string()),
        DirectorError::Invalid(_) => EXIT_USAGE,
        DirectorError::Conflict(_) => EXIT_CONFLICT,
        DirectorError::NoShow => EXIT_NOT_FOUND,
        DirectorError::Blocked(_) | DirectorError::Failed(_) => EXIT_FAILURE,
    };
    Response::err(code, e.to_string())
}

fn store_err_ref(e: &StoreError, msg: String) -> Response {
    let code = match e {
        StoreError::NotFound { .. } => EXIT_NOT_FOUND,
        StoreError::Exists { .. } | StoreError::Conflict(_) => EXIT_CONFLICT,
        StoreError::Invalid(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    };
    Response::err(code, msg)
}

/// A running program and the destinations it was asked to push to (for attach/detach).
pub struct ProgramEntry {
    program: Program,
    destinations: Vec<String>,
}

async fn handle_request(
    cfg: &Config,
    store: &Store,
    env: &MediaEnv,
    programs: &mut HashMap<String, ProgramEntry>,
    director: &mut Director,
    req: Request,
) -> Response {
    let ctx = Ctx { cfg, store, env };
    match req {
        Request::TimelinePlay { timeline, destinations, from, bitrate_kbps } => {
            let from_us = (from.unwrap_or(0.0).max(0.0) * 1e6) as i64;
            let desired = DesiredShow {
                timeline_id: timeline,
                origin: Origin::Operator,
                schedule_id: None,
                destinations,
                anchor_unix_us: jiff::Timestamp::now().as_microsecond() - from_us,
                paused_pos_us: None,
                pinned: None,
                bitrate_kbps,
                emergency_slate: false,
            };
            match director.start(&ctx, desired, Some(from_us), true).await {
                Ok(report) => Response::ok(serde_json::json!({ "preflight": report })),
                Err(e) => director_err(e),
            }
        }
        Request::TimelineStop => match director.stop(&ctx, Some(Origin::Operator)).await {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => director_err(e),
        },
        Request::TimelineControl { control } => match director.control(&ctx, Origin::Operator, control).await {
            Ok(()) => Response::ok(serde_json::Value::Null),
            Err(e) => director_err(e),
        },
        Request::TimelineStatus => match director.status() {
            Some((desired, status)) => Response::ok(serde_json::json!({ "desired": desired, "status": status })),
            None => Response::err(EXIT_NOT_FOUND, "no show is running"),
        },
        Request::Preflight { timeline, destinations } => {
            let report = crate::timeline::preflight::preflight(&ctx, &timeline, &destinations).await;
            Response::ok(serde_json::to_value(report).expect("serializes"))
        }
        Request::KillAll => {
            let _ = director.stop(&ctx, None).await;
            let _ = store.set_desired_show(None).await;
            let progs: Vec<ProgramEntry> = programs.drain().map(|(_, v)| v).collect();
            join_all(progs.into_iter().map(|e| e.program.stop())).await;
            Response::ok(serde_json::Value::Null)
        }
        Request::ProgramStart { id, cameras, destinations, profile, size, fps, bitrate_kbps, first, slate } => {
            if let Err(e) = crate::store::validate_id("program", &id) {
                return store_err(e);
            }
            if programs.contains_key(&id) {
                return Response::err(EXIT_CONFLICT, format!("program {id:?} is already running"));
            }
            if cameras.is_empty() {
                return Response::err(EXIT_USAGE, "a program needs at least one camera");
            }
            let mut cams: Vec<ProgramCamera> = Vec::new();
            let mut wanted: Vec<String> = cameras.clone();
            let mut i = 0;
            while i < wanted.len() {
                let c = match store.camera(&wanted[i]).await {
                    Ok(c) => c,
                    Err(e) => return store_err(e),
                };
                if let Some(b) = &c.backup_camera_id {
                    if !wanted.contains(b) {
                        wanted.push(b.clone());
                    }
                }
                cams.push(ProgramCamera { source: c.source(), backup: c.backup_camera_id.clone() });
                i += 1;
            }
            let outputs = match store.outputs_for(&destinations).await {
                Ok(o) => o,
                Err(e) => return store_err(e),
            };
            let (mut format, mut kbps) = profile.unwrap_or(Profile::P720).settings();
            if let Some((w, h)) = size {
                if w == 0 || h == 0 || w % 2 == 1 || h % 2 == 1 || w > 3840 || h > 2160 {
                    return Response::err(EXIT_USAGE, "size must be even, non-zero and at most 3840x2160");
                }
                format = ProgramFormat { width: w, height: h, ..format };
            }
            if let Some(f) = fps {
                if !(1..=60).contains(&f) || 48_000 % f != 0 {
                    return Response::err(EXIT_USAGE, "fps must divide 48000 (e.g. 24, 25, 30, 50, 60)");
                }
                format.fps = f;
            }
            if let Some(b) = bitrate_kbps {
                kbps = b;
            }
            let kbps = store.capped_bitrate(&id, &destinations, kbps).await;
            let encoder = match crate::media::hwaccel::cached(
                &cfg.ffmpeg.path,
                &cfg.data_dir.join("hwaccel.json"),
                false,
            )
            .await
            {
                Ok(v) => v.chosen,
                Err(e) => return Response::err(EXIT_FAILURE, e.to_string()),
            };
            let first = first.or_else(|| cameras.first().cloned());
            let spec = ProgramSpec {
                id: id.clone(),
                cameras: cams,
                first,
                outputs,
                encoder: EncoderSettings { format, bitrate_kbps: kbps, encoder },
                slate_png: slate,
                switcher: env.switcher,
            };
            for d in &destinations {
                let _ = store.touch_destination(d).await;
            }
            let _ = store.add_event(Severity::Info, "program_started", &format!("program:{id}"), "").await;
            programs.insert(id.clone(), ProgramEntry { program: Program::start(spec, env).await, destinations });
            Response::ok(serde_json::json!({ "id": id }))
        }
        Request::ProgramStop { id } => match programs.remove(&id) {
            None => Response::err(EXIT_NOT_FOUND, format!("no program {id:?} is running")),
            Some(p) => {
                p.program.stop().await;
                let _ = store.add_event(Severity::Info, "program_stopped", &format!("program:{id}"), "").await;
                Response::ok(serde_json::Value::Null)
            }
        },
        Request::ProgramStatus { id } => {
            let mut list: Vec<serde_json::Value> = programs
                .iter()
                .filter(|(k, _)| id.as_ref().is_none_or(|i| i == *k))
                .map(|(_, p)| {
                    let mut v = serde_json::to_value(p.program.status()).expect("serializes");
                    v["destinations"] = serde_json::json!(p.destinations);
                    v
                })
                .collect();
            if id.as_ref().is_none_or(|i| i == SHOW_PROGRAM) {
                if let Some(st) = director.program().and_then(|p| p.status()) {
                    let mut v = serde_json::to_value(st).expect("serializes");
                    v["destinations"] = serde_json::json!(director.desired().map(|d| d.destinations.clone()));
                    list.push(v);
                }
            }
            if let (Some(id), true) = (&id, list.is_empty()) {
                return Response::err(EXIT_NOT_FOUND, format!("no program {id:?} is running"));
            }
            Response::ok(serde_json::Value::Array(list))
        }
        Request::Cut { id, camera, at, after, fade_ms } => {
            let fade = Duration::from_millis(fade_ms);
            let at = match (at, after, lookup(programs, director, &id).and_then(|p| p.status())) {
                (Some(a), _, _) => Some(a),
                (None, Some(d), Some(st)) => Some(st.program_time_s + d),
                _ => None,
            };
            match ask(programs, director, &id, |reply| ProgramCmd::Cut { camera, at, fade, reply }).await {
                Ok(t) => Response::ok(serde_json::json!({ "at": t })),
                Err(r) => r,
            }
        }
        Request::Slate { id, on } => {
            match ask(programs, director, &id, |reply| ProgramCmd::Slate { on, reply }).await {
                Ok(()) => Response::ok(serde_json::Value::Null),
                Err(r) => r,
            }
        }
        Request::Pin { id, camera } => {
            match ask(programs, director, &id, |reply| ProgramCmd::Pin { camera, reply }).await {
                Ok(()) => Response::ok(serde_json::Value::Null),
                Err(r) => r,
            }
        }
        Request::OverlayShow { id, overlay } => {
            let spec = match overlay.to_spec() {
                Ok(s) => s,
                Err(e) => return Response::err(EXIT_USAGE, e),
            };
            let Some(fmt) = lookup(programs, director, &id).and_then(|p| p.status()).map(|s| s.format) else {
                return Response::err(EXIT_NOT_FOUND, format!("no program {id:?} is running"));
            };
            // Decoding a PNG can take a while: never on the bus task.
            let prepared = tokio::task::spawn_blocking(move || {
                crate::media::compositor::Prepared::load(spec, fmt.width, fmt.height)
            })
            .await;
            let prepared = match prepared {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => return Response::err(EXIT_USAGE, e.to_string()),
                Err(e) => return Response::err(EXIT_FAILURE, e.to_string()),
            };
            overlay_op(programs, director, &id, OverlayOp::Show(Box::new(prepared))).await
        }
        Request::Preroll { id, camera } => {
            let mut wanted = vec![camera];
            let mut i = 0;
            while i < wanted.len() {
                let c = match store.camera(&wanted[i]).await {
                    Ok(c) => c,
                    Err(e) => return store_err(e),
                };
                if let Some(b) = c.backup_camera_id.clone().filter(|b| !wanted.contains(b)) {
                    wanted.push(b);
                }
                let cam = ProgramCamera { source: c.source(), backup: c.backup_camera_id.clone() };
                // Backups first would be nicer, but order does not matter: each starts on its own.
                if let Err(r) = ask(programs, director, &id, |reply| ProgramCmd::Preroll { camera: cam, reply }).await {
                    return r;
                }
                i += 1;
            }
            Response::ok(serde_json::Value::Null)
        }
        Request::Thumbnail { id, source } => {
            let Some(p) = lookup(programs, director, &id) else {
                return Response::err(EXIT_NOT_FOUND, format!("no program {id:?} is running"));
            };
            let name = source.unwrap_or_else(|| "program".into());
            match p.thumbnail(&name) {
                Some(j) => {
                    use base64::Engine;
                    Response::ok(
                        serde_json::json!({ "jpeg_base64": base64::engine::general_purpose::STANDARD.encode(&*j) }),
                    )
                }
                None => Response::err(EXIT_NOT_FOUND, format!("no thumbnail of {name:?} yet")),
            }
        }
        Request::OverlayHide { id, overlay } => overlay_op(programs, director, &id, OverlayOp::Hide(overlay)).await,
        Request::OverlaySetVar { id, name, value } => {
            overlay_op(programs, director, &id, OverlayOp::SetVar(name, value)).await
        }
        Request::OverlayClear { id } => overlay_op(programs, director, &id, OverlayOp::Clear).await,
        Request::Attach { id, destination } | Request::Detach { id, destination } if !programs.contains_key(&id) => {
            let _ = destination;
            Response::err(EXIT_NOT_FOUND, format!("no program {id:?} is running"))
        }
        Request::Attach { id, destination } => {
            let mut ds = programs[&id].destinations.clone();
            if !ds.contains(&destination) {
                ds.push(destination);
            }
            set_outputs(store, programs, &id, ds).await
        }
        Request::Detach { id, destination } => {
            let ds: Vec<String> = programs[&id].destinations.iter().filter(|d| **d != destination).cloned().collect();
            set_outputs(store, programs, &id, ds).await
        }
    }
}

async fn overlay_op(
    programs: &HashMap<String, ProgramEntry>,
    director: &Director,
    id: &str,
    op: OverlayOp,
) -> Response {
    match ask(programs, director, id, |reply| ProgramCmd::Overlay { op, reply }).await {
        Ok(()) => Response::ok(serde_json::Value::Null),
        Err(r) => r,
    }
}

async fn set_outputs(
    store: &Store,
    programs: &mut HashMap<String, ProgramEntry>,
    id: &str,
    ds: Vec<String>,
) -> Response {
    let outputs = match store.outputs_for(&ds).await {
        Ok(o) => o,
        Err(e) => return store_err(e),
    };
    // Operator programs only: a show's destinations belong to the show.
    let program = programs.get(id).map(|e| &e.program);
    match ask_program(program, id, |reply| ProgramCmd::SetOutputs { outputs, reply }).await {
        Ok(()) => {
            if let Some(e) = programs.get_mut(id) {
                e.destinations = ds.clone();
            }
            Response::ok(serde_json::json!({ "destinations": ds }))
        }
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::destination::{DestinationInput, Platform};
    use crate::secret::Secret;

    async fn add(store: &Store, id: &str, platform: Platform, enabled: bool) {
        let url = (platform == Platform::Custom).then(|| "rtmp://127.0.0.1:1935/live".to_string());
        let input = DestinationInput {
            platform,
            url,
            key: Secret::new("k"),
            backup_ingest: false,
            ca_file: None,
            tls_verify: true,
        };
        store.add_destination(id, &input.validate().unwrap(), enabled).await.unwrap();
    }

    #[tokio::test]
    async fn a_program_never_sends_more_than_its_strictest_platform_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        add(&store, "yt", Platform::Youtube, true).await;
        add(&store, "tw", Platform::Twitch, true).await;
        add(&store, "tw-off", Platform::Twitch, false).await;
        add(&store, "own", Platform::Custom, true).await;
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(store.capped_bitrate("p", &ids(&["yt", "tw"]), 12_000).await, 6_000);
        assert_eq!(store.capped_bitrate("p", &ids(&["yt", "own"]), 12_000).await, 9_000);
        assert_eq!(store.capped_bitrate("p", &ids(&["yt", "tw-off"]), 12_000).await, 9_000, "disabled: ignored");
        assert_eq!(store.capped_bitrate("p", &ids(&["own"]), 12_000).await, 12_000, "custom: no limit");
        assert_eq!(store.capped_bitrate("p", &ids(&["tw"]), 2_500).await, 2_500, "below the cap: unchanged");
        let ev = store.events(Some("program:p"), 10).await.unwrap();
        assert_eq!(ev.iter().filter(|e| e.event_type == "bitrate_capped").count(), 3);
        store.close().await;
    }
}
