//! The operator programs: a task owning them, a handle, their list on a watch channel. Starting
//! one hands a ready spec over (nothing slow to do on the task); stopping one hands the program
//! back to be stopped on the caller's task.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use super::{ErrorCode, Refusal};
use crate::media::program::{Program, ProgramSpec};
use crate::media::MediaEnv;
use crate::timeline::director::ProgramRef;
use crate::values::{DestinationId, ProgramId};

/// A running operator program as others see it.
#[derive(Clone)]
pub struct ProgramEntry {
    pub program: ProgramRef,
    /// The destinations it was asked to push to (for attach/detach and status).
    pub destinations: Vec<DestinationId>,
}

enum ProgramsMsg {
    Start { spec: ProgramSpec, destinations: Vec<DestinationId>, reply: oneshot::Sender<Result<(), Refusal>> },
    Remove { id: ProgramId, reply: oneshot::Sender<Option<Program>> },
    Drain { reply: oneshot::Sender<Vec<Program>> },
    SetDestinations { id: ProgramId, destinations: Vec<DestinationId> },
}

/// The operator programs' handle: their list is on a watch channel; starting one hands a ready
/// spec over (nothing slow to do), stopping one hands the program back to be stopped on the
/// caller's task.
#[derive(Clone)]
pub struct ProgramsHandle {
    tx: mpsc::Sender<ProgramsMsg>,
    list: watch::Receiver<BTreeMap<ProgramId, ProgramEntry>>,
}

impl ProgramsHandle {
    pub fn get(&self, id: &str) -> Option<ProgramEntry> {
        self.list.borrow().get(id).cloned()
    }

    /// The programs' task has ended (the agent is shutting down, or the task died).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn all(&self) -> BTreeMap<ProgramId, ProgramEntry> {
        self.list.borrow().clone()
    }

    pub(super) async fn start(&self, spec: ProgramSpec, destinations: Vec<DestinationId>) -> Result<(), Refusal> {
        let (reply, rx) = oneshot::channel();
        let down = || Refusal::new(ErrorCode::Failed, "the agent is shutting down");
        self.tx.send(ProgramsMsg::Start { spec, destinations, reply }).await.map_err(|_| down())?;
        rx.await.map_err(|_| down())?
    }

    pub(super) async fn remove(&self, id: &ProgramId) -> Option<Program> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(ProgramsMsg::Remove { id: id.clone(), reply }).await.ok()?;
        rx.await.ok()?
    }

    /// Every program, taken off the list (to be stopped by the caller).
    pub async fn drain(&self) -> Vec<Program> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(ProgramsMsg::Drain { reply }).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub(super) async fn set_destinations(&self, id: &ProgramId, destinations: Vec<DestinationId>) {
        let _ = self.tx.send(ProgramsMsg::SetDestinations { id: id.clone(), destinations }).await;
    }
}

/// Starts the programs' task. When `shutdown` fires it stops them all (under a deadline).
pub fn spawn_programs(
    env: MediaEnv,
    shutdown: tokio_util::sync::CancellationToken,
) -> (ProgramsHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<ProgramsMsg>(32);
    let (list_tx, list) = watch::channel(BTreeMap::new());
    let task = tokio::spawn(async move {
        let mut programs: BTreeMap<ProgramId, (Program, Vec<DestinationId>)> = BTreeMap::new();
        let publish = |p: &BTreeMap<ProgramId, (Program, Vec<DestinationId>)>| {
            let _ = list_tx.send(
                p.iter()
                    .map(|(k, (prog, d))| {
                        (k.clone(), ProgramEntry { program: ProgramRef::of(prog), destinations: d.clone() })
                    })
                    .collect(),
            );
        };
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            match msg {
                ProgramsMsg::Start { spec, destinations, reply } => {
                    if programs.contains_key(spec.id.as_str()) {
                        let _ = reply.send(Err(Refusal::new(
                            ErrorCode::Conflict,
                            format!("program {} is already running", spec.id),
                        )));
                        continue;
                    }
                    let id = spec.id.clone();
                    programs.insert(id, (Program::start(spec, &env).await, destinations));
                    let _ = reply.send(Ok(()));
                }
                ProgramsMsg::Remove { id, reply } => {
                    let _ = reply.send(programs.remove(&id).map(|(p, _)| p));
                }
                ProgramsMsg::Drain { reply } => {
                    let _ = reply.send(std::mem::take(&mut programs).into_values().map(|(p, _)| p).collect());
                }
                ProgramsMsg::SetDestinations { id, destinations } => {
                    if let Some(e) = programs.get_mut(&id) {
                        e.1 = destinations;
                    }
                }
            }
            publish(&programs);
        }
        let _ = list_tx.send(BTreeMap::new());
        let stops = programs.into_values().map(|(p, _)| p.stop());
        let deadline = env.stop_grace + Duration::from_secs(5);
        if tokio::time::timeout(deadline, futures_util::future::join_all(stops)).await.is_err() {
            tracing::error!("programs did not stop in time; their processes are killed on exit");
        }
    });
    (ProgramsHandle { tx, list }, task)
}
