//! What is on air: the one answer every "may this be removed?" rule asks.
//!
//! Three things can hold a camera or a destination: the show (its timeline's cameras with their
//! backups, and its destinations), the operator's programs, and the relay streams that are set
//! live. [`OnAir`] lists them. It is built from the running subsystems while the daemon runs
//! ([`OnAir::build`] with the live views), or from what the store says will resume at the next
//! start when no daemon runs ([`OnAir::stored`]): the persisted show and the live relay streams
//! (operator programs do not survive a restart). The rules ([`OnAir::camera_free`],
//! [`OnAir::destination_free`], [`OnAir::stream_free`]) are written once and used by the local
//! operator's configuration commands, the cloud's `CAMERA_ACTION` and `DEVICE_CONFIG`.

use std::collections::BTreeSet;

use super::{ErrorCode, Refusal};
use crate::store::{Desired, Store, StoreError};
use crate::timeline::director::DesiredShow;
use crate::values::{CameraId, DestinationId, ProgramId, StreamId, TimelineId};

/// Something that is on air and what it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// How an operator names it: `the show (timeline marina)`, `program p1`, `stream s1`.
    pub name: String,
    pub cameras: BTreeSet<CameraId>,
    pub destinations: BTreeSet<DestinationId>,
    /// The relay stream's id, for a stream.
    pub stream: Option<StreamId>,
    /// The timeline it plays, for the show.
    pub timeline: Option<TimelineId>,
}

/// Everything on air now (or at the next start, when no daemon runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnAir {
    pub users: Vec<User>,
}

/// A running operator program as the rule sees it.
pub struct ProgramUse {
    pub id: ProgramId,
    pub cameras: Vec<CameraId>,
    pub destinations: Vec<DestinationId>,
}

impl OnAir {
    /// From the live views: the show the director plays (with the cameras its program decodes
    /// now), the operator programs, and the stored relay streams set live.
    pub async fn build(
        store: &Store,
        show: Option<&DesiredShow>,
        decoded_by_show: &[CameraId],
        programs: Vec<ProgramUse>,
    ) -> Result<OnAir, StoreError> {
        let mut users = Vec::new();
        if let Some(d) = show {
            let mut u = show_user(store, d).await?;
            u.cameras.extend(decoded_by_show.iter().cloned());
            with_backups(store, &mut u.cameras).await?;
            users.push(u);
        }
        for p in programs {
            users.push(User {
                name: format!("program {}", p.id),
                cameras: p.cameras.into_iter().collect(),
                destinations: p.destinations.into_iter().collect(),
                stream: None,
                timeline: None,
            });
        }
        users.extend(live_streams(store).await?);
        Ok(OnAir { users })
    }

    /// What will be on air when the daemon next starts: the stored show and the live relay streams.
    pub async fn stored(store: &Store) -> Result<OnAir, StoreError> {
        let show = match store.desired_show().await? {
            Some(json) => serde_json::from_str::<DesiredShow>(&json).ok(),
            None => None,
        };
        let mut users = Vec::new();
        if let Some(d) = &show {
            users.push(show_user(store, d).await?);
        }
        users.extend(live_streams(store).await?);
        Ok(OnAir { users })
    }

    /// Who uses a camera now.
    pub fn users_of_camera(&self, camera: &str) -> Vec<&str> {
        self.users.iter().filter(|u| u.cameras.contains(camera)).map(|u| u.name.as_str()).collect()
    }

    /// Who pushes to a destination now.
    pub fn users_of_destination(&self, destination: &str) -> Vec<&str> {
        self.users.iter().filter(|u| u.destinations.contains(destination)).map(|u| u.name.as_str()).collect()
    }

    /// A camera may be removed or replaced only when nothing on air uses it.
    pub fn camera_free(&self, camera: &str) -> Result<(), Refusal> {
        refuse_if_used("camera", camera, self.users_of_camera(camera))
    }

    /// A destination may be removed or replaced only when nothing on air pushes to it.
    pub fn destination_free(&self, destination: &str) -> Result<(), Refusal> {
        refuse_if_used("destination", destination, self.users_of_destination(destination))
    }

    /// A timeline may be removed only when the show does not play it.
    pub fn timeline_free(&self, timeline: &str) -> Result<(), Refusal> {
        if self.users.iter().any(|u| u.timeline.as_ref().is_some_and(|t| t == timeline)) {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("timeline {timeline} is on air: stop the show first (`vistter-agent timeline stop`)"),
            ));
        }
        Ok(())
    }

    /// A relay stream may be removed only when it is not set live.
    pub fn stream_free(&self, stream: &str) -> Result<(), Refusal> {
        if self.users.iter().any(|u| u.stream.as_ref().is_some_and(|s| s == stream)) {
            return Err(Refusal::new(
                ErrorCode::Conflict,
                format!("stream {stream} is live: stop it first (`vistter-agent stream stop {stream}`)"),
            ));
        }
        Ok(())
    }
}

fn refuse_if_used(what: &str, id: &str, users: Vec<&str>) -> Result<(), Refusal> {
    if users.is_empty() {
        return Ok(());
    }
    Err(Refusal::new(
        ErrorCode::Conflict,
        format!(
            "{what} {id} is on air, used by {}: stop {} first",
            users.join(", "),
            if users.len() == 1 { "it" } else { "them" }
        ),
    ))
}

/// The show: its timeline's cameras with their backups, and its destinations. A timeline that
/// no longer loads still holds its destinations (and whatever cameras can be read).
async fn show_user(store: &Store, d: &DesiredShow) -> Result<User, StoreError> {
    let mut cameras: BTreeSet<CameraId> =
        match crate::timeline::director::load_timeline(store, d.timeline_id.as_str()).await {
            Ok((t, _)) => t.cameras().into_iter().collect(),
            Err(_) => BTreeSet::new(),
        };
    cameras.extend(d.pinned.iter().cloned());
    with_backups(store, &mut cameras).await?;
    Ok(User {
        name: format!("the show (timeline {})", d.timeline_id),
        cameras,
        destinations: d.destinations.iter().cloned().collect(),
        stream: None,
        timeline: Some(d.timeline_id.clone()),
    })
}

/// Adds each camera's backup (and the backup's backup), as far as the store knows them.
async fn with_backups(store: &Store, cameras: &mut BTreeSet<CameraId>) -> Result<(), StoreError> {
    let all = store.cameras().await?;
    let ids: Vec<CameraId> = cameras.iter().cloned().collect();
    let backup_of = |id: &CameraId| all.iter().find(|c| c.id == *id).and_then(|c| c.backup_camera_id.clone());
    cameras.extend(crate::timeline::sources::walk(&ids, None, backup_of));
    Ok(())
}

async fn live_streams(store: &Store) -> Result<Vec<User>, StoreError> {
    let mut out = Vec::new();
    for r in store.relays().await? {
        if r.desired != Desired::Live {
            continue;
        }
        let mut cameras = BTreeSet::from([r.camera_id.clone()]);
        with_backups(store, &mut cameras).await?;
        out.push(User {
            name: format!("stream {}", r.id),
            cameras,
            destinations: r.destinations.iter().cloned().collect(),
            stream: Some(r.id.clone()),
            timeline: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, cams: &[&str], dests: &[&str], stream: Option<&str>) -> User {
        User {
            name: name.into(),
            cameras: cams.iter().map(|s| CameraId::new(*s).unwrap()).collect(),
            destinations: dests.iter().map(|s| DestinationId::new(*s).unwrap()).collect(),
            stream: stream.map(|s| StreamId::new(s).unwrap()),
            timeline: None,
        }
    }

    #[test]
    fn a_refusal_names_everything_that_uses_the_thing() {
        let on = OnAir {
            users: vec![
                user("the show (timeline t)", &["r", "b"], &["d1"], None),
                user("stream s", &["r"], &["d2"], Some("s")),
            ],
        };
        let e = on.camera_free("r").unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict);
        assert!(e.message.contains("the show (timeline t), stream s"), "{e}");
        assert!(on.camera_free("x").is_ok());
        assert!(on.destination_free("d1").unwrap_err().message.contains("the show"));
        assert!(on.destination_free("d3").is_ok());
        assert!(on.stream_free("s").unwrap_err().message.contains("stream stop s"));
        assert!(on.stream_free("other").is_ok());
    }
}
