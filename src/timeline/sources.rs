//! Which cameras a program needs: the ones asked for, each followed by its backups (a backup's
//! backup too), as the store has them. One walk ([`walk`]) for the show, the operator's programs
//! and the on-air rule, bounded so that a loop or a long chain of backups cannot make it run away.

use std::collections::HashMap;

use crate::media::program::ProgramCamera;
use crate::store::{Camera, Store, StoreError};
use crate::values::{CameraId, SourceId};

/// The most cameras one walk yields.
pub const MAX_WALK: usize = 64;

/// The cameras `ids`, in order, each followed by its backup (`backup_of`, else `fallback` for
/// any camera but the fallback itself), each once, at most [`MAX_WALK`] of them.
pub fn walk(
    ids: &[CameraId],
    fallback: Option<&CameraId>,
    backup_of: impl Fn(&CameraId) -> Option<CameraId>,
) -> Vec<CameraId> {
    let mut wanted: Vec<CameraId> = Vec::new();
    for id in ids {
        if !wanted.contains(id) {
            wanted.push(id.clone());
        }
    }
    let mut i = 0;
    while i < wanted.len() && i < MAX_WALK {
        let id = wanted[i].clone();
        i += 1;
        let backup = backup_of(&id).or_else(|| fallback.cloned().filter(|b| *b != id));
        if let Some(b) = backup.filter(|b| !wanted.contains(b)) {
            wanted.push(b);
        }
    }
    wanted.truncate(MAX_WALK);
    wanted
}

/// The cameras `ids`, in order, each followed by its backups, with what the program needs of
/// each; a camera the store does not have is an error.
pub async fn with_backups(store: &Store, ids: &[CameraId]) -> Result<Vec<ProgramCamera>, StoreError> {
    with_backups_or(store, ids, None).await
}

/// [`with_backups`], where a camera without a backup of its own is backed by `fallback` (a
/// timeline's fallback camera), except the fallback itself.
pub async fn with_backups_or(
    store: &Store,
    ids: &[CameraId],
    fallback: Option<&CameraId>,
) -> Result<Vec<ProgramCamera>, StoreError> {
    let all: HashMap<CameraId, Camera> = store.cameras().await?.into_iter().map(|c| (c.id.clone(), c)).collect();
    let backup_of = |id: &CameraId| all.get(id).and_then(|c| c.backup_camera_id.clone());
    walk(ids, fallback, backup_of)
        .into_iter()
        .map(|id| {
            let c = all.get(&id).ok_or_else(|| StoreError::NotFound { kind: "camera", id: id.to_string() })?;
            let backup = c.backup_camera_id.clone().or_else(|| fallback.cloned().filter(|b| *b != id));
            Ok(ProgramCamera { source: c.source(), backup: backup.map(SourceId::from) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CameraId {
        CameraId::new(s).unwrap()
    }

    #[test]
    fn backups_follow_their_camera_once_and_a_loop_ends() {
        let backups = HashMap::from([(id("a"), id("b")), (id("b"), id("a")), (id("c"), id("d"))]);
        let got = walk(&[id("a"), id("c"), id("a")], None, |c| backups.get(c).cloned());
        assert_eq!(got, vec![id("a"), id("c"), id("b"), id("d")]);
        let got = walk(&[id("x"), id("f")], Some(&id("f")), |_| None);
        assert_eq!(got, vec![id("x"), id("f")], "the fallback backs the others, not itself");
        let chain = |c: &CameraId| Some(CameraId::new(format!("{c}x").chars().take(64).collect::<String>()).unwrap());
        assert_eq!(walk(&[id("a")], None, chain).len(), MAX_WALK);
    }
}
