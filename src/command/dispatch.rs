//! The dispatcher: one place where every command is handled, whoever sent it.
//!
//! Each command runs on a task of its own, so a slow one (a pre-flight probing a camera for 4 s, a
//! program whose FFmpeg processes take 7 s to stop) holds up nothing else: the subsystems it
//! talks to (the director, the operator programs, the program buses) only ever do quick work on
//! their own tasks, and `kill_all` and the emergency slate are answered at once whatever else is
//! in flight. A handler that panics is contained: the command gets `failed`, an error event is
//! written, and the show, the other programs and the daemon carry on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

pub use super::programs::{spawn_programs, ProgramEntry, ProgramsHandle};

mod onvif;
mod stored;
use super::values::*;
use super::*;
use crate::config::Config;
use crate::media::compositor::Prepared;
use crate::media::encoder::EncoderSettings;
use crate::media::ingest::ProgramFormat;
use crate::media::program::{BusError, OverlayOp, Program, ProgramCamera, ProgramCmd, ProgramHandle, ProgramSpec};
use crate::media::MediaEnv;
use crate::store::{Severity, Store, StoreError};
use crate::timeline::actor::Control;
use crate::timeline::director::{DesiredShow, DirectorError, DirectorHandle, ProgramRef, SHOW_PROGRAM};
use crate::timeline::preflight::{self, preflight};

/// The environment variable naming a command type whose handler panics (tests prove that a
/// panic is contained). Read once at start; unset in production. Not `VISTTER_*`: those are
/// configuration, and an unknown one is a configuration error.
pub const PANIC_HOOK_ENV: &str = "VSA_TEST_PANIC_ON";

/// How long a program bus may take to answer a command before it is reported as stuck.
const BUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The dispatcher's handle (cheap to clone).
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    store: Store,
    env: MediaEnv,
    director: DirectorHandle,
    programs: ProgramsHandle,
    /// `TIMELINE_LOAD`'s downloads and segment library.
    loader: super::timeline_load::Loader,
    panic_on: Option<String>,
    /// Commands answered since start, by (type, result): `/metrics`' `vistter_commands_total`.
    counts: std::sync::Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
    /// Per-camera ONVIF clients and the snapshot cache.
    onvif: onvif::CameraOnvif,
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        let code = match &e {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::Exists { .. } | StoreError::Conflict(_) | StoreError::OwnedBySegment { .. } => {
                ErrorCode::Conflict
            }
            StoreError::Invalid(_) => ErrorCode::SchemaViolation,
            _ => ErrorCode::Failed,
        };
        Refusal::new(code, e.to_string())
    }
}

impl From<DirectorError> for Refusal {
    fn from(e: DirectorError) -> Refusal {
        let code = match &e {
            DirectorError::Store(s) => {
                return Refusal { code: Refusal::from_store_ref(s), field: None, message: e.to_string() }
            }
            DirectorError::Invalid(_) => ErrorCode::SchemaViolation,
            DirectorError::Conflict(_) | DirectorError::Outranked { .. } => ErrorCode::Conflict,
            DirectorError::NoShow => ErrorCode::NotFound,
            DirectorError::Canceled => ErrorCode::Canceled,
            DirectorError::Blocked(_) | DirectorError::Failed(_) => ErrorCode::Failed,
        };
        Refusal::new(code, e.to_string())
    }
}

impl Refusal {
    fn from_store_ref(e: &StoreError) -> ErrorCode {
        match e {
            StoreError::NotFound { .. } => ErrorCode::NotFound,
            StoreError::Exists { .. } | StoreError::Conflict(_) | StoreError::OwnedBySegment { .. } => {
                ErrorCode::Conflict
            }
            StoreError::Invalid(_) => ErrorCode::SchemaViolation,
            _ => ErrorCode::Failed,
        }
    }
}

type Handled = Result<Output, Refusal>;

impl Dispatcher {
    pub fn new(cfg: Config, store: Store, env: MediaEnv, director: DirectorHandle, programs: ProgramsHandle) -> Self {
        let panic_on = std::env::var(PANIC_HOOK_ENV).ok().filter(|s| !s.is_empty());
        if let Some(t) = &panic_on {
            tracing::warn!("test hook: {t} commands will panic ({PANIC_HOOK_ENV})");
        }
        let counts = Default::default();
        let loader = super::timeline_load::Loader::new(&cfg, store.clone());
        let onvif = onvif::CameraOnvif::default();
        Dispatcher { inner: Arc::new(Inner { cfg, store, env, director, programs, loader, panic_on, counts, onvif }) }
    }

    pub fn director(&self) -> &DirectorHandle {
        &self.inner.director
    }

    /// Handles one command on a task of its own and answers. Never panics, never blocks the
    /// caller on another command.
    pub async fn dispatch(&self, origin: Origin, cmd: Command) -> Reply {
        let ty = cmd.type_name();
        let this = self.clone();
        // The handler's logs name the command, and, inside the cloud inbox's span, its message_id.
        let span = tracing::error_span!("command", command = ty, origin = origin.as_str());
        let task = tokio::spawn(tracing::Instrument::instrument(async move { this.handle(origin, cmd).await }, span));
        let reply = match task.await {
            Ok(r) => r.into(),
            Err(e) => {
                let what = if e.is_panic() { "panicked" } else { "was cancelled" };
                let detail = format!("the {ty} handler {what}; nothing else was affected");
                tracing::error!(origin = origin.as_str(), "{detail}");
                let _ = self
                    .inner
                    .store
                    .add_event(Severity::Error, "command_failed", &format!("command:{ty}"), &detail)
                    .await;
                Reply::Refused { refusal: Refusal::new(ErrorCode::Failed, detail) }
            }
        };
        let result = match &reply {
            Reply::Done { .. } => "ok",
            Reply::Refused { refusal } => {
                tracing::info!(command = ty, origin = origin.as_str(), "refused: {refusal}");
                refusal.code.as_str()
            }
        };
        *self.inner.counts.lock().unwrap_or_else(|e| e.into_inner()).entry((ty, result)).or_insert(0) += 1;
        reply
    }

    /// Commands answered since start: ((type, result), count), result `ok` or the refusal's code.
    pub fn command_counts(&self) -> Vec<((&'static str, &'static str), u64)> {
        self.inner.counts.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (*k, *v)).collect()
    }

    async fn handle(&self, origin: Origin, cmd: Command) -> Handled {
        if self.inner.panic_on.as_deref() == Some(cmd.type_name()) {
            panic!("test hook: {} handler panics", cmd.type_name());
        }
        if self.inner.cfg.control_plane_only && cmd.needs_media() {
            return Err(Refusal::new(
                ErrorCode::Failed,
                format!("{} needs media, and this agent runs control-plane-only (no FFmpeg)", cmd.type_name()),
            ));
        }
        match cmd {
            Command::Ping(Ping {}) => Ok(Output::Pong { agent_time: jiff::Timestamp::now().to_string() }),
            Command::StreamControl(s) => self.show_action(origin, s.check()?).await,
            Command::TimelineExecute(t) => self.show_action(origin, t.check()?).await,
            Command::OverlayUpdate(o) => self.overlay(origin, &o).await,
            Command::CameraAction(c) => self.camera(origin, c).await,
            Command::CameraDiscover(d) => super::discover::run(&self.inner.cfg, d).await,
            Command::DeviceConfig(c) if origin == Origin::Cloud && c.opened.is_some() => {
                let on_air = super::device_config::destinations_on_air(&self.on_air().await?);
                let apply = super::device_config::Apply { store: &self.inner.store, on_air };
                Box::pin(apply.run(c)).await
            }
            Command::TimelineLoad(t) if origin == Origin::Cloud && t.from_cloud.is_some() => {
                Box::pin(self.inner.loader.run(t)).await
            }
            Command::DeviceConfig(_) => Err(Refusal::new(
                ErrorCode::Failed,
                "DEVICE_CONFIG carries sealed secrets and signed trust changes: it is applied through the cloud link",
            )),
            Command::TimelineLoad(_) => Err(Refusal::new(
                ErrorCode::Failed,
                "TIMELINE_LOAD comes through the cloud link; on the device use `vistter-agent segment import`",
            )),
            Command::Program(p) => self.program(origin, p).await,
            Command::ShowQuery(q) => self.show_query(q).await,
            Command::Diagnostics(d) => self.diagnostics(origin, d).await,
            Command::Configure(c) => {
                if origin != Origin::Operator {
                    return Err(Refusal::new(
                        ErrorCode::Failed,
                        "CONFIGURE is for the local operator only (it carries secrets in the clear)",
                    ));
                }
                let updated = match &c {
                    super::configure::Configure::DestinationUpdate(u) => Some(u.destination_id.clone()),
                    _ => None,
                };
                let out = super::configure::apply(&self.inner.store, &self.inner.cfg, &self.on_air().await?, c).await?;
                if let Some(d) = updated {
                    self.refresh_destination(&d).await;
                }
                Ok(out)
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The show
    // -----------------------------------------------------------------------------------------

    async fn show_action(&self, origin: Origin, action: ShowAction) -> Handled {
        let d = &self.inner.director;
        let control =
            |c: Control| async move { d.control(origin, c).await.map(|_| Output::Done).map_err(Refusal::from) };
        match action {
            ShowAction::GoLive(g) => self.go_live(origin, g).await,
            ShowAction::Stop => {
                d.stop(origin).await?.finish().await;
                Ok(Output::Done)
            }
            ShowAction::KillAll => self.kill_all().await,
            ShowAction::EmergencySlate(on) => control(Control::EmergencySlate { on }).await,
            ShowAction::AddDestination(ref id) | ShowAction::RemoveDestination(ref id) => {
                let add = matches!(action, ShowAction::AddDestination(_));
                let Some(desired) = d.view().desired else { return Err(DirectorError::NoShow.into()) };
                let mut list = desired.destinations.clone();
                list.retain(|x| x != id);
                if add {
                    self.inner.store.destination(id).await?;
                    list.push(id.clone());
                }
                let outputs = self.inner.store.outputs_for(&list).await?;
                d.set_destinations(origin, list.clone(), outputs).await?;
                Ok(Output::Destinations { destinations: list })
            }
            ShowAction::SetEncoder(_) => Err(Refusal::new(
                ErrorCode::Conflict,
                "the encoder of a live show is not changed under it (the destinations would reconnect): \
                 stop the show and go live with the new encoder settings",
            )),
            ShowAction::Pause => control(Control::Pause).await,
            ShowAction::Resume => control(Control::Resume).await,
            ShowAction::Seek(SeekTo::Cue(c)) => control(Control::Seek { cue: Some(c), seconds: None }).await,
            ShowAction::Seek(SeekTo::Position(p)) => {
                control(Control::Seek { cue: None, seconds: Some(p.secs()) }).await
            }
            ShowAction::Skip => control(Control::Skip).await,
            ShowAction::Pin(c) => control(Control::Pin { camera: c }).await,
            ShowAction::Unpin => control(Control::Unpin).await,
        }
    }

    async fn go_live(&self, origin: Origin, g: GoLive) -> Handled {
        let d = &self.inner.director;
        // Taken before anything slow: a kill-all from here on withdraws this start.
        let epoch = d.epoch();
        self.not_outranked(origin)?;
        let destinations: Vec<String> = g.destinations.iter().map(ToString::to_string).collect();
        let report = preflight::checked(&self.ctx(), g.timeline.as_str(), &destinations)
            .await
            .map_err(|r| Refusal::from(DirectorError::Blocked(r)))?;
        let from_us = g.from.map_or(0, ProgramTime::us);
        let desired = DesiredShow {
            timeline_id: g.timeline.clone(),
            origin,
            schedule_id: None,
            destinations: g.destinations.clone(),
            anchor_unix_us: jiff::Timestamp::now().as_microsecond() - from_us,
            paused_pos_us: None,
            pinned: None,
            bitrate_kbps: g.bitrate.map(Kbps::get),
            emergency_slate: false,
        };
        // What it replaces stops on its own task: the new show is not held up by it.
        d.start(desired, Some(from_us), epoch).await?.finish_in_background();
        Ok(Output::Started { preflight: report })
    }

    /// Everything off the air now: the show, every program, every relay stream. Answered as soon
    /// as nothing is on air any more; the processes finish stopping on their own tasks.
    async fn kill_all(&self) -> Handled {
        let (show, programs) = tokio::join!(self.inner.director.kill_all(), self.inner.programs.drain());
        let show = show?;
        let had_show = !show.is_empty();
        show.finish_in_background();
        let n = programs.len();
        tokio::spawn(futures_util::future::join_all(programs.into_iter().map(Program::stop)));
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            let _ = store.stop_all_relays().await;
            let _ = store.remove_programs().await;
            let _ = store
                .add_event(Severity::Warning, "kill_all", "agent", &format!("show: {had_show}, programs: {n}"))
                .await;
        });
        Ok(Output::KilledAll { show: had_show, programs: n })
    }

    async fn show_query(&self, q: ShowQuery) -> Handled {
        match q.query {
            ShowQueryKind::Status => {
                let v = self.inner.director.view();
                let Some(desired) = v.desired.clone() else {
                    return Err(Refusal::new(ErrorCode::NotFound, "no show is running"));
                };
                Ok(Output::Show { show: Box::new(ShowInfo { desired, status: v.status() }) })
            }
            ShowQueryKind::Preflight => {
                let t = need(&q.timeline_id, "timeline_id", "preflight")?;
                let ds: Vec<String> = match &q.destination_ids {
                    Some(_) => destinations(&q.destination_ids, "preflight")?.iter().map(ToString::to_string).collect(),
                    None => Vec::new(),
                };
                let ctx = self.ctx();
                Ok(Output::Preflight { preflight: preflight(&ctx, t.as_str(), &ds).await })
            }
        }
    }

    /// Recent logs and FFmpeg output, redacted with every secret the store holds (they are
    /// masked where they are printed already; this is the second line).
    async fn diagnostics(&self, origin: Origin, d: Diagnostics) -> Handled {
        if origin != Origin::Operator {
            return Err(Refusal::new(ErrorCode::Failed, "DIAGNOSTICS is for the local operator only"));
        }
        let lines = d.check()?;
        let redactor = crate::secret::Redactor::new(self.inner.store.secrets().await?);
        let logs = crate::logging::recent().iter().map(|l| redactor.redact(l)).collect();
        let mut jobs = crate::ffmpeg::ring::tails(lines);
        for j in &mut jobs {
            j.lines = j.lines.iter().map(|l| redactor.redact(l)).collect();
        }
        let report = DiagnosticsReport { pid: std::process::id(), logs, jobs };
        Ok(Output::Diagnostics { report: Box::new(report) })
    }

    /// A command from `origin` may change the show only if the show's own origin is not higher.
    fn not_outranked(&self, origin: Origin) -> Result<(), Refusal> {
        self.inner.director.view().check_origin(origin).map_err(Refusal::from)
    }

    fn ctx(&self) -> crate::timeline::director::Ctx<'_> {
        crate::timeline::director::Ctx { cfg: &self.inner.cfg, store: &self.inner.store, env: &self.inner.env }
    }

    // -----------------------------------------------------------------------------------------
    // Programs
    // -----------------------------------------------------------------------------------------

    /// The latest thumbnail (JPEG) of a running program (`name` `program`) or of one of its
    /// cameras, for readers such as the status page. A camera that no program decodes shows the
    /// camera's own snapshot (ONVIF `GetSnapshotUri`), cached and refreshed in the background.
    pub fn thumbnail(&self, program: &str, name: &str) -> Option<Arc<Vec<u8>>> {
        let decoded =
            ProgramId::new(program).ok().and_then(|id| self.lookup(&id).ok()).and_then(|p| p.thumbs.get(name));
        if decoded.is_some() || name == "program" {
            return decoded;
        }
        match CameraId::new(name) {
            Ok(id) if !self.decoded(&id) => self.snapshot_thumbnail(name),
            _ => None,
        }
    }

    /// A running program by id: the operator's, or the show's ([`SHOW_PROGRAM`]).
    fn lookup(&self, id: &ProgramId) -> Result<ProgramRef, Refusal> {
        let found = if id.as_str() == SHOW_PROGRAM {
            self.inner.director.view().program
        } else {
            self.inner.programs.get(id.as_str()).map(|e| e.program)
        };
        found.ok_or_else(|| Refusal {
            code: ErrorCode::NotFound,
            field: Some("payload.program_id".into()),
            message: format!("no program {id} is running"),
        })
    }

    /// Sends a command to a program bus and waits (bounded) for its answer.
    async fn ask_bus<T>(
        &self,
        p: &ProgramHandle,
        make: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> ProgramCmd,
    ) -> Result<T, Refusal> {
        let (tx, rx) = oneshot::channel();
        let gone = || Refusal::new(ErrorCode::Failed, "the program has stopped");
        p.tx.send(make(tx)).await.map_err(|_| gone())?;
        match tokio::time::timeout(BUS_TIMEOUT, rx).await {
            Err(_) => Err(Refusal::new(ErrorCode::Busy, "the program did not answer within 5 s")),
            Ok(Err(_)) => Err(gone()),
            Ok(Ok(r)) => r.map_err(|e| Refusal::new(ErrorCode::Conflict, e.to_string())),
        }
    }

    /// The camera must be one the program decodes.
    fn has_camera(p: &ProgramRef, camera: &CameraId) -> Result<(), Refusal> {
        match p.status() {
            Some(st) if !st.cameras.iter().any(|c| c.camera == camera.as_str()) => Err(Refusal {
                code: ErrorCode::NotFound,
                field: Some("payload.camera_id".into()),
                message: format!("camera {camera} is not in program {} (preroll it first)", st.id),
            }),
            _ => Ok(()),
        }
    }

    async fn program(&self, origin: Origin, p: ProgramCommand) -> Handled {
        if p.action == ProgramVerb::Status {
            return Ok(Output::Programs { programs: self.program_list(p.program_id.as_ref())? });
        }
        let id = need(&p.program_id, "program_id", "this action")?;
        if p.action == ProgramVerb::Start {
            return self.program_start(id, &p).await;
        }
        let show = id.as_str() == SHOW_PROGRAM;
        if p.action == ProgramVerb::Stop && !show {
            return self.program_stop(&id).await;
        }
        let prog = self.lookup(&id)?;
        if show && !matches!(p.action, ProgramVerb::Thumbnail | ProgramVerb::Slate) {
            // The show's program plays its timeline: only the show's owner (or a higher origin) may
            // drive it by hand.
            self.not_outranked(origin)?;
        }
        match p.action {
            ProgramVerb::Start | ProgramVerb::Status => unreachable!("handled above"),
            ProgramVerb::Stop => {
                Err(Refusal::new(ErrorCode::Conflict, "the show's program stops with the show (timeline stop)"))
            }
            ProgramVerb::Cut => {
                let camera = need(&p.camera_id, "camera_id", "cut")?;
                Self::has_camera(&prog, &camera)?;
                let at = match (p.at_s, p.after_s) {
                    (Some(a), _) => Some(a.secs()),
                    (None, Some(d)) => prog.status().map(|st| st.program_time_s + d.secs()),
                    _ => None,
                };
                let fade = p.fade_s.map_or(Duration::ZERO, FadeTime::get);
                let at_s = self.ask_bus(&prog.handle, |reply| ProgramCmd::Cut { camera, at, fade, reply }).await?;
                Ok(Output::Cut { at_s })
            }
            ProgramVerb::Slate => {
                let on = need(&p.on, "on", "slate")?;
                self.ask_bus(&prog.handle, |reply| ProgramCmd::Slate { on, reply }).await?;
                Ok(Output::Done)
            }
            ProgramVerb::Pin => {
                let camera = need(&p.camera_id, "camera_id", "pin")?;
                Self::has_camera(&prog, &camera)?;
                let camera = Some(SourceId::from(camera));
                self.ask_bus(&prog.handle, |reply| ProgramCmd::Pin { camera, reply }).await?;
                Ok(Output::Done)
            }
            ProgramVerb::Unpin => {
                self.ask_bus(&prog.handle, |reply| ProgramCmd::Pin { camera: None, reply }).await?;
                Ok(Output::Done)
            }
            ProgramVerb::Preroll => {
                let camera = need(&p.camera_id, "camera_id", "preroll")?;
                for cam in self.cameras_with_backups(&[camera]).await? {
                    self.ask_bus(&prog.handle, |reply| ProgramCmd::Preroll { camera: cam, reply }).await?;
                }
                Ok(Output::Done)
            }
            ProgramVerb::Attach | ProgramVerb::Detach => {
                if show {
                    return Err(Refusal::new(
                        ErrorCode::Conflict,
                        "the show's destinations belong to the show (STREAM_CONTROL add_destination)",
                    ));
                }
                let dest = need(&p.destination_id, "destination_id", "attach/detach")?;
                let entry = self
                    .inner
                    .programs
                    .get(id.as_str())
                    .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no program {id} is running")))?;
                let mut list = entry.destinations.clone();
                list.retain(|d| d != dest.as_str());
                if p.action == ProgramVerb::Attach {
                    list.push(dest.clone());
                }
                let outputs = self.inner.store.outputs_for(&list).await?;
                self.ask_bus(&prog.handle, |reply| ProgramCmd::SetOutputs { outputs, reply }).await?;
                self.inner.programs.set_destinations(&id, list.clone()).await;
                self.remember_destinations(&id, &list).await;
                Ok(Output::Destinations { destinations: list })
            }
            ProgramVerb::Thumbnail => {
                let name = p.camera_id.as_ref().map_or("program", CameraId::as_str);
                let jpeg = prog
                    .thumbs
                    .get(name)
                    .ok_or_else(|| Refusal::new(ErrorCode::NotFound, format!("no thumbnail of {name} yet")))?;
                use base64::Engine;
                Ok(Output::Jpeg { jpeg_base64: base64::engine::general_purpose::STANDARD.encode(&*jpeg) })
            }
        }
    }

    /// Every running program (the show's included), read from the watch channels of the
    /// programs and the director: a typed view for readers (the status page, `/metrics`,
    /// telemetry), never a command.
    pub fn programs_view(&self) -> Vec<ProgramInfo> {
        self.program_list(None).unwrap_or_default()
    }

    /// The subsystems the dispatcher hands work to are alive: the director's loop (its watch
    /// still has a sender) and the operator programs' task.
    pub fn alive(&self) -> bool {
        self.inner.director.watch().has_changed().is_ok() && !self.inner.programs.is_closed()
    }

    fn program_list(&self, id: Option<&ProgramId>) -> Result<Vec<ProgramInfo>, Refusal> {
        let mut list: Vec<ProgramInfo> = self
            .inner
            .programs
            .all()
            .into_iter()
            .filter(|(k, _)| id.is_none_or(|i| i == k))
            .filter_map(|(_, e)| Some(ProgramInfo { status: e.program.status()?, destinations: e.destinations }))
            .collect();
        if id.is_none_or(|i| i.as_str() == SHOW_PROGRAM) {
            let v = self.inner.director.view();
            if let Some(st) = v.program.as_ref().and_then(ProgramRef::status) {
                list.push(ProgramInfo {
                    status: st,
                    destinations: v.desired.map(|d| d.destinations).unwrap_or_default(),
                });
            }
        }
        if let (Some(id), true) = (id, list.is_empty()) {
            return Err(Refusal::new(ErrorCode::NotFound, format!("no program {id} is running")));
        }
        Ok(list)
    }

    /// Cameras from the store, each followed by its backups (a backup's backup too).
    async fn cameras_with_backups(&self, ids: &[CameraId]) -> Result<Vec<ProgramCamera>, Refusal> {
        Ok(crate::timeline::sources::with_backups(&self.inner.store, ids).await?)
    }

    async fn program_start(&self, id: ProgramId, p: &ProgramCommand) -> Handled {
        if id.as_str() == SHOW_PROGRAM {
            return Err(Refusal::field("payload.program_id", "\"show\" is the show's program: use another id"));
        }
        if self.inner.programs.get(id.as_str()).is_some() {
            return Err(Refusal::new(ErrorCode::Conflict, format!("program {id} is already running")));
        }
        let cameras = need(&p.camera_ids, "camera_ids", "start")?;
        if cameras.is_empty() || cameras.len() > MAX_CAMERAS {
            return Err(Refusal::field(
                "payload.camera_ids",
                format!("{} cameras: use 1 to {MAX_CAMERAS}", cameras.len()),
            ));
        }
        let cameras = dedup(cameras);
        let destination_ids = dedup(p.destination_ids.clone().unwrap_or_default());
        if destination_ids.len() > MAX_DESTINATIONS {
            return Err(Refusal::field("payload.destination_ids", format!("use at most {MAX_DESTINATIONS}")));
        }
        let cams = self.cameras_with_backups(&cameras).await?;
        let outputs = self.inner.store.outputs_for(&destination_ids).await?;
        let (mut format, mut kbps) = p.profile.unwrap_or(crate::media::encoder::Profile::P720).settings();
        if let Some(s) = p.size {
            format = ProgramFormat { width: s.width, height: s.height, ..format };
        }
        if let Some(f) = p.fps {
            format.fps = f.get();
        }
        if let Some(b) = p.bitrate_kbps {
            kbps = b.get();
        }
        let kbps = self.inner.store.capped_bitrate(id.as_str(), &destination_ids, kbps).await;
        let cfg = &self.inner.cfg;
        let encoder = crate::media::hwaccel::cached(&cfg.ffmpeg.path, &cfg.data_dir.join("hwaccel.json"), false)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?
            .chosen;
        let spec = ProgramSpec {
            id: id.clone(),
            cameras: cams,
            first: Some(SourceId::from(&cameras[0])),
            outputs,
            encoder: EncoderSettings { format, bitrate_kbps: kbps, encoder },
            slate_png: p.slate_image.as_ref().map(|f| f.path().to_path_buf()),
            switcher: self.inner.env.switcher,
        };
        self.inner.programs.start(spec, destination_ids.clone()).await?;
        let ephemeral = p.ephemeral.unwrap_or(false);
        if !ephemeral {
            let start = ProgramCommand { destination_ids: Some(destination_ids.clone()), ..p.clone() };
            let json = serde_json::to_string(&start).expect("serializes");
            if let Err(e) = self.inner.store.put_program(id.as_str(), &json).await {
                // It plays; only a restart would lose it. Said, not refused.
                tracing::error!(program = %id, "the program is not stored and will not come back after a restart: {e}");
            }
        }
        for d in &destination_ids {
            let _ = self.inner.store.touch_destination(d).await;
        }
        let detail = if ephemeral { "ephemeral" } else { "" };
        let _ = self.inner.store.add_event(Severity::Info, "program_started", &format!("program:{id}"), detail).await;
        Ok(Output::ProgramStarted { id: id.clone(), ephemeral })
    }

    // -----------------------------------------------------------------------------------------
    // Overlays
    // -----------------------------------------------------------------------------------------

    async fn overlay(&self, origin: Origin, o: &OverlayUpdate) -> Handled {
        let change = o.check()?;
        let id = o.program_id.clone().unwrap_or_else(|| ProgramId::new(SHOW_PROGRAM).expect("valid id"));
        let prog = self.lookup(&id)?;
        if id.as_str() == SHOW_PROGRAM && change != OverlayChange::ClearAll {
            self.not_outranked(origin)?;
        }
        let ops: Vec<OverlayOp> = match change {
            OverlayChange::SetVars(vars) => {
                vars.into_iter().map(|(k, v)| OverlayOp::SetVar(k.into(), v.into())).collect()
            }
            OverlayChange::Hide(oid) => vec![OverlayOp::Hide(oid)],
            OverlayChange::ClearAll => vec![OverlayOp::Clear],
            OverlayChange::Show(oid, req) => {
                let spec = req.to_spec(&oid, None).map_err(|e| Refusal::field("payload.overlay", e.to_string()))?;
                let fmt = prog
                    .status()
                    .map(|s| s.format)
                    .ok_or_else(|| Refusal::new(ErrorCode::Busy, "the program is starting"))?;
                // Decoding a PNG or laying out text takes a while: never on the bus task.
                let prepared = tokio::task::spawn_blocking(move || Prepared::load(spec, fmt.width, fmt.height))
                    .await
                    .map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?
                    .map_err(|e| Refusal::field("payload.overlay", e.to_string()))?;
                vec![OverlayOp::Show(Box::new(prepared))]
            }
        };
        for op in ops {
            self.ask_bus(&prog.handle, |reply| ProgramCmd::Overlay { op, reply }).await?;
        }
        Ok(Output::Done)
    }

    // -----------------------------------------------------------------------------------------
    // Cameras
    // -----------------------------------------------------------------------------------------

    /// What is on air now: the show, the operator programs, the live relay streams.
    pub async fn on_air(&self) -> Result<super::on_air::OnAir, Refusal> {
        let view = self.inner.director.view();
        let decoded: Vec<CameraId> =
            view.program.as_ref().and_then(ProgramRef::status).map(|s| cameras_of(&s)).unwrap_or_default();
        let programs = self
            .inner
            .programs
            .all()
            .into_iter()
            .map(|(id, e)| super::on_air::ProgramUse {
                id,
                cameras: e.program.status().map(|s| cameras_of(&s)).unwrap_or_default(),
                destinations: e.destinations,
            })
            .collect();
        Ok(super::on_air::OnAir::build(&self.inner.store, view.desired.as_ref(), &decoded, programs).await?)
    }

    /// Programs (and the show) that decode a camera now.
    fn users_of(&self, camera: &CameraId) -> Vec<ProgramRef> {
        let mut out: Vec<ProgramRef> = self.inner.director.view().program.into_iter().collect();
        out.extend(self.inner.programs.all().into_values().map(|e| e.program));
        out.retain(|p| p.status().is_some_and(|s| s.cameras.iter().any(|c| c.camera == camera.as_str())));
        out
    }

    async fn camera(&self, origin: Origin, c: CameraAction) -> Handled {
        let store = &self.inner.store;
        match c.action {
            CameraVerb::Add | CameraVerb::Update => {
                let spec = need(&c.camera, "camera", "add/update")?;
                if spec.password.is_some() {
                    return Err(Refusal::field(
                        "payload.camera.password",
                        "sealed secrets are opened by the cloud link; on the appliance use `vistter-agent camera add`",
                    ));
                }
                if c.action == CameraVerb::Update {
                    super::configure::remove_camera(store, &self.on_air().await?, &c.camera_id).await?;
                }
                let _ = origin;
                store
                    .add_camera(crate::store::cameras::NewCamera {
                        id: c.camera_id.clone(),
                        url: spec.url,
                        username: spec.username,
                        password: spec.opened_password,
                        backup_camera_id: spec.backup_camera_id,
                        onvif_host: spec.onvif.as_ref().map(|o| o.host.clone()),
                        onvif_port: spec.onvif.map(|o| o.port),
                    })
                    .await?;
                Ok(Output::Done)
            }
            CameraVerb::Remove => {
                super::configure::remove_camera(store, &self.on_air().await?, &c.camera_id).await?;
                Ok(Output::Done)
            }
            CameraVerb::Probe => {
                let cam = store.camera(&c.camera_id).await?;
                let probe =
                    crate::media::probe::probe_camera(&self.inner.env.ffprobe, &cam.source(), Duration::from_secs(4))
                        .await
                        .map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?;
                Ok(Output::Probe { probe: serde_json::to_value(probe).unwrap_or_default() })
            }
            CameraVerb::GotoPreset => {
                let preset = need(&c.preset_id, "preset_id", "goto_preset")?;
                // The camera's own client (it has an ONVIF address, or this refuses): what it learned of the
                // camera's clock and authentication is kept for the next command.
                let client = self.onvif_client(&c.camera_id).await?;
                let token = store.presets().await?.get(&c.camera_id).and_then(|m| m.get(&preset).cloned()).ok_or_else(
                    || Refusal {
                        code: ErrorCode::NotFound,
                        field: Some("payload.preset_id".into()),
                        message: format!("camera {} has no preset {preset}", c.camera_id),
                    },
                )?;
                let mut client = client.lock().await;
                client.goto_preset(&token).await.map_err(|e| Refusal::new(ErrorCode::Failed, e.to_string()))?;
                Ok(Output::Done)
            }
            CameraVerb::Snapshot => {
                let decoded = self.users_of(&c.camera_id).iter().find_map(|p| p.thumbs.get(c.camera_id.as_str()));
                let jpeg = match decoded {
                    Some(j) => j,
                    // Not in a program: the camera's own snapshot, when it has ONVIF.
                    None => {
                        let cam = store.camera(&c.camera_id).await?;
                        if cam.onvif_host.is_none() {
                            return Err(Refusal::new(
                                ErrorCode::NotFound,
                                format!(
                                    "camera {} is not decoded by any program now and has no ONVIF address to ask \
                                     for a snapshot",
                                    c.camera_id
                                ),
                            ));
                        }
                        let jpeg = self.camera_snapshot(&c.camera_id).await?;
                        if jpeg.len() > onvif::MAX_RESULT_JPEG {
                            return Err(Refusal::new(
                                ErrorCode::Failed,
                                format!(
                                    "camera {}: its snapshot is {} KiB, more than the {} KiB a RESULT carries",
                                    c.camera_id,
                                    jpeg.len() / 1024,
                                    onvif::MAX_RESULT_JPEG / 1024
                                ),
                            ));
                        }
                        jpeg
                    }
                };
                use base64::Engine;
                Ok(Output::Jpeg { jpeg_base64: base64::engine::general_purpose::STANDARD.encode(&*jpeg) })
            }
        }
    }
}

/// The cameras a program decodes (its media sources are not cameras).
fn cameras_of(status: &crate::media::program::ProgramStatus) -> Vec<CameraId> {
    status.cameras.iter().filter_map(|c| CameraId::new(c.camera.as_str()).ok()).collect()
}
