//! Loading a stored timeline: the row from the store, checked again against what the appliance
//! has now (cameras, presets and assets may have changed since it was stored).

use std::path::PathBuf;
use std::sync::Arc;

use super::model::{self, Inventory, Timeline, TimelineErrors};
use crate::store::{Store, StoreError};

/// Why a stored timeline cannot be played.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored timeline no longer checks out against this appliance.
    #[error(transparent)]
    Invalid(#[from] TimelineErrors),
}

/// Loads a stored timeline and checks it against what the appliance has now.
pub async fn load_timeline(store: &Store, id: &str) -> Result<(Arc<Timeline>, PathBuf), LoadError> {
    load_timeline_row(store, id).await.map(|(tl, root, _)| (tl, root))
}

/// [`load_timeline`], with the row's `loaded_at` (which changes when a new version is stored).
pub async fn load_timeline_row(store: &Store, id: &str) -> Result<(Arc<Timeline>, PathBuf, String), LoadError> {
    // An id that breaks the id rule names no stored timeline.
    let id = crate::values::TimelineId::new(id)
        .map_err(|_| StoreError::NotFound { kind: "timeline", id: crate::values::shorten(id) })?;
    let row = store.timeline(&id).await?;
    let root = PathBuf::from(row.asset_root.clone().unwrap_or_else(|| ".".into()));
    let inv = Inventory { cameras: store.camera_inventory().await?, asset_root: Some(root.clone()) };
    // Stored rows passed the full check (schema included) when they were loaded; what may have
    // changed since (cameras, presets, assets) is checked again.
    let tl = model::parse_stored(&row.json, &inv)?;
    Ok((Arc::new(tl), root, row.loaded_at))
}
