//! What outlives a command: operator programs stored and restored at start, a destination's new
//! settings handed to the pushes that use it.

use super::*;

impl Dispatcher {
    /// A destination's settings changed: the programs and the show pushing to it get their
    /// outputs again, so that push (and only it) reconnects with the new settings. Relay streams
    /// follow from the store at their next reconcile.
    pub(super) async fn refresh_destination(&self, id: &DestinationId) {
        let store = &self.inner.store;
        for (pid, e) in self.inner.programs.all() {
            if !e.destinations.contains(id) {
                continue;
            }
            let r = match store.outputs_for(&e.destinations).await {
                Ok(outputs) => self.ask_bus(&e.program.handle, |reply| ProgramCmd::SetOutputs { outputs, reply }).await,
                Err(e) => Err(e.into()),
            };
            if let Err(e) = r {
                tracing::error!(program = %pid, destination = %id, "the new destination settings are not in use: {e}");
            }
        }
        let Some(desired) = self.inner.director.view().desired else { return };
        if desired.destinations.contains(id) {
            let list = desired.destinations.clone();
            let r = match store.outputs_for(&list).await {
                Ok(outputs) => {
                    self.inner.director.set_destinations(desired.origin, list, outputs).await.map_err(Refusal::from)
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = r {
                tracing::error!(destination = %id, "the show does not use the new destination settings: {e}");
            }
        }
    }

    /// `program stop`: the program is no longer wanted, so it is not started again after a
    /// restart either. Refused (and the program left playing) when the store cannot record that.
    /// A stored program that is not running (it could not be restored) is forgotten.
    pub(super) async fn program_stop(&self, id: &ProgramId) -> Handled {
        let stored = self.inner.store.remove_program(id.as_str()).await.map_err(|e| {
            Refusal::new(ErrorCode::Failed, format!("program {id} kept playing: its removal could not be stored: {e}"))
        })?;
        let Some(program) = self.inner.programs.remove(id).await else {
            if stored {
                return Ok(Output::Done);
            }
            return Err(Refusal::new(ErrorCode::NotFound, format!("no program {id} is running")));
        };
        // Its processes stop here, on this command's task.
        program.stop().await;
        let _ = self.inner.store.add_event(Severity::Info, "program_stopped", &format!("program:{id}"), "").await;
        Ok(Output::Done)
    }

    /// A stored program's destinations follow attach and detach.
    pub(super) async fn remember_destinations(&self, id: &ProgramId, list: &[DestinationId]) {
        let stored = self.inner.store.programs().await.unwrap_or_default();
        let Some((_, json)) = stored.iter().find(|(p, _)| p == id.as_str()) else { return };
        let Ok(mut start) = serde_json::from_str::<ProgramCommand>(json) else { return };
        start.destination_ids = Some(list.to_vec());
        let json = serde_json::to_string(&start).expect("serializes");
        if let Err(e) = self.inner.store.put_program(id.as_str(), &json).await {
            tracing::error!(program = %id, "its new destinations are not stored (a restart brings back the old ones): {e}");
        }
    }

    /// The stored operator programs, started again when the agent starts (through this
    /// dispatcher, with every check of a first start). One that cannot start (a camera or
    /// destination removed since) stays stored and is reported, so nothing is silently dropped.
    pub async fn restore_programs(&self) {
        let stored = match self.inner.store.programs().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("the stored programs could not be read: {e}");
                return;
            }
        };
        for (id, json) in stored {
            let start = match serde_json::from_str::<ProgramCommand>(&json) {
                Ok(p) if p.action == ProgramVerb::Start => p,
                r => {
                    tracing::error!(program = %id, "stored program unreadable, left as it is: {:?}", r.err());
                    continue;
                }
            };
            match self.dispatch(Origin::Operator, Command::Program(start)).await {
                Reply::Done { .. } => tracing::info!(program = %id, "program restored"),
                Reply::Refused { refusal } => {
                    let detail = format!("not restored: {refusal}");
                    tracing::warn!(program = %id, "{detail}");
                    let _ = self
                        .inner
                        .store
                        .add_event(Severity::Warning, "program_not_restored", &format!("program:{id}"), &detail)
                        .await;
                }
            }
        }
    }
}
