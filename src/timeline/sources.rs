//! Which cameras a program needs: the ones asked for, each followed by its backups (a backup's
//! backup too), as the store has them. One walk for the show and for the operator's programs,
//! bounded so that a loop or a long chain of backups cannot make it run away.

use crate::media::program::ProgramCamera;
use crate::store::{Store, StoreError};
use crate::values::CameraId;

/// The most cameras one walk reads from the store.
pub const MAX_WALK: usize = 64;

/// The cameras `ids`, in order, each followed by its backups (a backup's backup too), each once,
/// at most [`MAX_WALK`] of them.
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
    let mut wanted: Vec<CameraId> = Vec::new();
    for id in ids {
        if !wanted.contains(id) {
            wanted.push(id.clone());
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < wanted.len() && i < MAX_WALK {
        let id = wanted[i].clone();
        i += 1;
        let c = store.camera(&id).await?;
        let backup = c.backup_camera_id.clone().or_else(|| fallback.cloned().filter(|b| *b != id));
        if let Some(b) = backup.clone().filter(|b| !wanted.contains(b)) {
            wanted.push(b);
        }
        out.push(ProgramCamera { source: c.source(), backup: backup.map(String::from) });
    }
    Ok(out)
}
