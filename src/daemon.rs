//! `vistter-agent run`: the long-running daemon.
//!
//! It starts one task per subsystem, each the only owner of its state: the director (the show),
//! the operator programs, the relay streams, the scheduler, the cloud link, the status server, the
//! USB drop-folder watcher, and the local socket that feeds the command dispatcher. No task serves
//! a request that waits on anything slow. Relay streams follow desired state in the store (written
//! by the CLI): a reconcile loop brings the running relays to it every `reconcile_interval_ms` and
//! writes back what it observes. Because desired state is persisted, a relay that was live when the
//! agent died is live again after a restart. At start-up it first reaps FFmpeg processes left over
//! by an earlier instance (from the pid registry), so their RTMP sessions do not block ours.
//! Shutdown (SIGTERM/SIGINT) goes in layers, each under a deadline: first what takes requests in
//! (the local socket, the cloud link, the status server, the drop folders), then the show, then the
//! programs and relay streams (every job stopped with the usual SIGINT → SIGTERM → SIGKILL
//! escalation), and the store last.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::command::dispatch::{spawn_programs, Dispatcher};
use crate::command::{Command, Ping, Reply};
use crate::config::Config;
use crate::ffmpeg::registry::Registry;
use crate::local_api::{self, socket_path};
use crate::media::destination::OutputTarget;
use crate::media::relay::{Relay, RelaySpec, RelayStatus};
use crate::media::MediaEnv;
use crate::notify::NotAlive;
use crate::store::{Desired, RelayRow, Severity, Store, StoreError};
use crate::timeline::{director, scheduler};
use crate::values::StreamId;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pid registry {path}: {source}")]
    Registry { path: String, source: std::io::Error },
    #[error("control socket {path}: {source}")]
    Socket { path: String, source: std::io::Error },
    #[error("control plane: {0}")]
    Control(String),
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
    let store = Store::open_for_daemon(&cfg.data_dir).await?;
    let reg_dir = registry_dir(&cfg);
    let registry = Registry::open(&reg_dir)
        .map_err(|source| DaemonError::Registry { path: reg_dir.display().to_string(), source })?;
    let reaped = registry.reap_leftovers().await;
    if !reaped.is_empty() {
        let detail = format!("reaped {} FFmpeg process(es) left by an earlier agent: {reaped:?}", reaped.len());
        tracing::warn!("{detail}");
        let _ = store.add_event(Severity::Warning, "orphans_reaped", "agent", &detail).await;
    }
    if cfg.control_plane_only {
        tracing::warn!("control-plane-only: no media (no FFmpeg, no show, no schedules); media commands are refused");
    } else {
        // Only a log line if it fails: not worth delaying the show for.
        tokio::spawn(check_ffmpeg(cfg.ffmpeg.path.clone()));
    }
    // Reports written by an earlier instance describe processes that are gone.
    store.clear_relay_reports().await?;
    let interrupted = store.interrupt_stale_executions().await?;
    if interrupted > 0 {
        tracing::warn!("{interrupted} timeline execution(s) were interrupted by the last stop");
    }
    let _ = store.add_event(Severity::Info, "agent_started", "agent", env!("CARGO_PKG_VERSION")).await;
    // What an interrupted package import left behind (staging, a folder without its row) goes.
    let library = crate::segments::library::Library::new(store.clone(), &cfg.data_dir);
    match library.clean().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!("segment library: {n} leftover(s) of interrupted imports removed"),
        Err(e) => tracing::error!("segment library: cleaning up: {e}"),
    }

    sweep_assets(&store, &cfg.data_dir).await;

    let (ev_tx, ev_rx) = mpsc::channel(256);
    let sink = tokio::spawn(crate::events::sink(Store::open(&cfg.data_dir).await?, ev_rx));
    let env = MediaEnv::new(&cfg, registry, ev_tx);
    // One token per layer, cancelled in order: intake → timeline → media.
    let timeline_stop = CancellationToken::new();
    let media_stop = CancellationToken::new();
    let (director, director_task) = director::spawn(cfg.clone(), store.clone(), env.clone(), timeline_stop.clone());
    let (programs, programs_task) = spawn_programs(env.clone(), media_stop.clone());
    let relays_task = tokio::spawn(relay_manager(
        store.clone(),
        env.clone(),
        cfg.reconcile_interval_ms,
        !cfg.control_plane_only,
        media_stop.clone(),
    ));
    let dispatcher = Dispatcher::new(cfg.clone(), store.clone(), env.clone(), director.clone(), programs);
    if !cfg.control_plane_only {
        scheduler::spawn(cfg.clone(), store.clone(), env.clone(), director, timeline_stop.clone());
        // The operator programs that were running come back, through the same door as a start.
        let d = dispatcher.clone();
        tokio::spawn(async move { d.restore_programs().await });
    }
    let link_stop = CancellationToken::new();
    let control = crate::control::start(&cfg, &store, std::sync::Arc::new(dispatcher.clone()), link_stop.clone())
        .await
        .map_err(|e| DaemonError::Control(e.to_string()))?;
    // The read-only HTTP status server: it stops with the links, before the show.
    let links = control.as_ref().map(|c| c.links.clone());
    crate::status::spawn(&cfg, store.clone(), dispatcher.clone(), links, link_stop.clone());
    let drops = (!cfg.segments.drop_folders.is_empty()).then(|| {
        let dc = crate::segments::drop::DropConfig {
            globs: cfg.segments.drop_folders.clone(),
            rescan: Duration::from_secs(cfg.segments.rescan_s.max(1)),
            trust_path: cfg.trust_store_path(),
            device_id: cfg.device_id().map(String::from).unwrap_or_default(),
            limits: cfg.segments.limits,
        };
        tokio::spawn(crate::segments::drop::watch(dc, store.clone(), library, link_stop.clone()))
    });
    // Abandoned package downloads go after a day, or sooner when the disk runs low.
    tokio::spawn(crate::segments::download::housekeeping(
        crate::command::timeline_load::downloads_dir(&cfg.data_dir),
        link_stop.clone(),
    ));
    let sock = socket_path(&cfg.data_dir);
    let api = local_api::serve(sock.clone(), dispatcher)
        .await
        .map_err(|source| DaemonError::Socket { path: sock.display().to_string(), source })?;
    tracing::info!(data_dir = %cfg.data_dir.display(), "vistter-agent running");
    // sd_notify: READY=1 now, WATCHDOG=1 while the loops are alive, STOPPING=1 at shutdown.
    let _watchdog = crate::notify::spawn(&cfg, shutdown.clone(), local_api_probe(cfg.data_dir.clone()));
    shutdown.cancelled().await;
    crate::notify::stopping();

    api.abort();
    let _ = std::fs::remove_file(&sock);
    link_stop.cancel();
    if let Some(c) = control {
        let _ = tokio::time::timeout(Duration::from_secs(3), futures_util::future::join_all(c.tasks)).await;
    }
    if let Some(d) = drops {
        let _ = tokio::time::timeout(Duration::from_secs(3), d).await;
    }
    tracing::info!("shutting down: the show, then programs and streams");
    timeline_stop.cancel();
    let deadline = env.stop_grace + Duration::from_secs(5);
    if tokio::time::timeout(deadline + Duration::from_secs(5), director_task).await.is_err() {
        tracing::error!("the show did not stop in time; its processes are killed on exit");
    }
    media_stop.cancel();
    let _ = tokio::time::timeout(deadline + Duration::from_secs(5), programs_task).await;
    let _ = tokio::time::timeout(deadline + Duration::from_secs(5), relays_task).await;
    // A store that cannot be written (a full disk, a lock held by a wedged connection) must not
    // keep the agent from stopping: each last step has a deadline.
    let _ = tokio::time::timeout(Duration::from_secs(2), store.add_event(Severity::Info, "agent_stopped", "agent", ""))
        .await;
    drop(env);
    let _ = tokio::time::timeout(Duration::from_secs(2), sink).await;
    if tokio::time::timeout(Duration::from_secs(3), store.close()).await.is_err() {
        tracing::error!("the store did not close in time; SQLite recovers its WAL at the next start");
    }
    Ok(())
}

/// Removes the copied show files (timeline assets, overlay images, slates) that no stored
/// timeline or program refers to any more. Nothing is removed when the store cannot be read.
async fn sweep_assets(store: &Store, data_dir: &std::path::Path) {
    let (Ok(timelines), Ok(programs)) = (store.timelines().await, store.programs().await) else { return };
    let mut keep: Vec<std::path::PathBuf> =
        timelines.into_iter().filter_map(|t| t.asset_root.map(Into::into)).collect();
    keep.extend(
        programs
            .iter()
            .filter_map(|(_, json)| serde_json::from_str::<crate::command::ProgramCommand>(json).ok())
            .filter_map(|p| p.slate_image.map(|f| f.path().to_path_buf())),
    );
    let n = crate::assets::sweep(data_dir, &keep);
    if n > 0 {
        tracing::info!("{n} copied show file folder(s) no longer used were removed");
    }
}

/// The relay streams' task: brings the running relays to the desired state in the store every
/// `interval_ms` and writes back what it observes. Its stops wait here, on its own task. Without
/// `media` (control-plane-only) it only turns, for the watchdog.
async fn relay_manager(store: Store, env: MediaEnv, interval_ms: u64, media: bool, shutdown: CancellationToken) {
    let mut running: HashMap<StreamId, Running> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        crate::notify::beat(crate::notify::Loop::Relays);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if !media {
                    continue;
                }
                if let Err(e) = reconcile(&store, &env, &mut running).await {
                    tracing::error!("reconcile: {e}");
                }
            }
        }
    }
    let deadline = env.stop_grace + Duration::from_secs(5);
    let ids: Vec<StreamId> = running.keys().cloned().collect();
    let stops = running.into_values().map(|r| r.relay.stop());
    if tokio::time::timeout(deadline, join_all(stops)).await.is_err() {
        tracing::error!("streams did not stop within {deadline:?}; their processes are killed on exit");
    }
    for id in ids {
        let _ = store.report_relay(&id, "stopped", "{}").await;
    }
}

/// The watchdog's probe of the local API: a `PING` through the socket, as any client sends it, so
/// the accept loop and the dispatcher are both exercised.
fn local_api_probe(
    data_dir: std::path::PathBuf,
) -> impl FnMut() -> futures_util::future::BoxFuture<'static, Result<(), NotAlive>> + Send + 'static {
    move || {
        let data_dir = data_dir.clone();
        Box::pin(async move {
            match local_api::call(&data_dir, &Command::Ping(Ping {})).await {
                Ok(Reply::Done { .. }) => Ok(()),
                Ok(r) => Err(NotAlive(format!("PING answered {r:?}"))),
                Err(e) => Err(NotAlive(e.to_string())),
            }
        })
    }
}

async fn check_ffmpeg(path: std::path::PathBuf) {
    let ok = tokio::process::Command::new(&path)
        .arg("-version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !ok {
        tracing::error!(
            "{} cannot be run: streams will fail until FFmpeg is installed (scripts/setup.sh) or ffmpeg.path is set",
            path.display()
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

async fn reconcile(store: &Store, env: &MediaEnv, running: &mut HashMap<StreamId, Running>) -> Result<(), StoreError> {
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
    let gone: Vec<StreamId> = running.keys().filter(|k| !wanted.contains(&k.as_str())).cloned().collect();
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
/// (the box runs on flash: no database write per tick).
async fn report(store: &Store, id: &StreamId, r: &mut Running) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::destination::{DestinationInput, Platform};
    use crate::secret::Secret;
    use crate::values::DestinationId;

    async fn add(store: &Store, id: &str, platform: Platform, enabled: bool) {
        let url = (platform == Platform::Custom).then(|| "rtmp://127.0.0.1:1935/live".to_string());
        let input = DestinationInput {
            platform,
            url,
            key: Secret::new("k"),
            backup_ingest: false,
            ca_file: None,
            tls_verify: true,
            publisher: Default::default(),
        };
        store.add_destination(&DestinationId::new(id).unwrap(), &input.validate().unwrap(), enabled).await.unwrap();
    }

    #[tokio::test]
    async fn a_program_never_sends_more_than_its_strictest_platform_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        add(&store, "yt", Platform::Youtube, true).await;
        add(&store, "tw", Platform::Twitch, true).await;
        add(&store, "tw-off", Platform::Twitch, false).await;
        add(&store, "own", Platform::Custom, true).await;
        let ids = |v: &[&str]| v.iter().map(|s| DestinationId::new(*s).unwrap()).collect::<Vec<_>>();
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
