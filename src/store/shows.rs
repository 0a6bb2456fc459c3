//! Timelines, PTZ presets, schedules, the desired show and the execution history.
//!
//! The desired show is one row, rewritten whenever an operator, a schedule or the cloud changes
//! what plays; the daemon reads it at start-up, so a show survives a crash or a reboot without
//! the cloud. Executions record each run of a timeline with its outcome and cue-lateness metrics;
//! a row still `running` when the agent starts belonged to a process that died: `interrupted`.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::{id_at, now, opt_id_at, Store, StoreError};
use crate::values::{CameraId, PresetId, ScheduleId, TimelineId};

/// A camera's PTZ presets: the preset id timelines use → the camera's ONVIF token.
pub type PresetTokens = HashMap<PresetId, String>;

#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub id: TimelineId,
    pub name: String,
    #[serde(skip)]
    pub json: String,
    pub asset_root: Option<String>,
    pub duration_s: f64,
    pub loaded_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRow {
    pub id: i64,
    pub timeline_id: TimelineId,
    pub origin: String,
    pub schedule_id: Option<ScheduleId>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub metrics: Option<serde_json::Value>,
}

impl Store {
    /// Stores (or replaces) a timeline loaded by an operator or an inline `TIMELINE_LOAD`. A
    /// timeline that a segment package installed is refused ([`StoreError::OwnedBySegment`]): the
    /// check and the write are one statement, so a package installed meanwhile cannot be
    /// overwritten between them.
    pub async fn put_timeline(
        &self,
        id: &TimelineId,
        name: &str,
        json: &str,
        asset_root: Option<&str>,
        duration_s: f64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO timelines (id, name, json, asset_root, duration_s, loaded_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE NOT EXISTS (SELECT 1 FROM segment_versions WHERE timeline_id = ?1)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, json = excluded.json,
             asset_root = excluded.asset_root, duration_s = excluded.duration_s, loaded_at = excluded.loaded_at",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(json)
        .bind(asset_root)
        .bind(duration_s)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let segment: Option<String> =
                sqlx::query_scalar("SELECT segment_id FROM segment_versions WHERE timeline_id = ? LIMIT 1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
            return Err(StoreError::OwnedBySegment { timeline: id.to_string(), segment: segment.unwrap_or_default() });
        }
        Ok(())
    }

    fn timeline_row(r: &sqlx::sqlite::SqliteRow) -> Result<TimelineRow, StoreError> {
        Ok(TimelineRow {
            id: id_at(r, "timelines", "id")?,
            name: r.get("name"),
            json: r.get("json"),
            asset_root: r.get("asset_root"),
            duration_s: r.get("duration_s"),
            loaded_at: r.get("loaded_at"),
        })
    }

    pub async fn timeline(&self, id: &TimelineId) -> Result<TimelineRow, StoreError> {
        let r = sqlx::query("SELECT * FROM timelines WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "timeline", id: id.to_string() })?;
        Self::timeline_row(&r)
    }

    /// When the timeline `id` was last stored (None: it is not): cheap enough to poll, so that a
    /// show notices a new version stored by any process.
    pub async fn timeline_loaded_at(&self, id: &TimelineId) -> Result<Option<String>, StoreError> {
        let r = sqlx::query("SELECT loaded_at FROM timelines WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.map(|r| r.get("loaded_at")))
    }

    pub async fn timelines(&self) -> Result<Vec<TimelineRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM timelines ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(Self::timeline_row).collect()
    }

    /// (id, name) of every stored timeline, by id (without loading documents).
    pub async fn timeline_names(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM timelines ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| (r.get("id"), r.get("name"))).collect())
    }

    /// id → duration in seconds, for the scheduler's rotation (without loading documents).
    pub async fn timeline_durations(&self) -> Result<HashMap<TimelineId, f64>, StoreError> {
        let rows = sqlx::query("SELECT id, duration_s FROM timelines").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((id_at(r, "timelines", "id")?, r.try_get("duration_s")?))).collect()
    }

    /// The segment whose package installed the timeline `id`, if one did.
    pub async fn timeline_segment(&self, id: &TimelineId) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT segment_id FROM segment_versions WHERE timeline_id = ? LIMIT 1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn remove_timeline(&self, id: &TimelineId) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM timelines WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound { kind: "timeline", id: id.to_string() });
        }
        Ok(())
    }

    /// Maps a timeline preset id to the camera's ONVIF token.
    pub async fn put_preset(&self, camera_id: &CameraId, preset_id: &PresetId, token: &str) -> Result<(), StoreError> {
        self.camera(camera_id).await?;
        if token.is_empty() || token.len() > 64 {
            return Err(StoreError::Invalid("a preset token is 1-64 characters".into()));
        }
        sqlx::query(
            "INSERT INTO camera_presets (camera_id, preset_id, token) VALUES (?, ?, ?)
             ON CONFLICT(camera_id, preset_id) DO UPDATE SET token = excluded.token",
        )
        .bind(camera_id.as_str())
        .bind(preset_id.as_str())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_preset(&self, camera_id: &CameraId, preset_id: &PresetId) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM camera_presets WHERE camera_id = ? AND preset_id = ?")
            .bind(camera_id.as_str())
            .bind(preset_id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound { kind: "preset", id: format!("{camera_id}/{preset_id}") });
        }
        Ok(())
    }

    /// camera id → preset id → ONVIF token.
    pub async fn presets(&self) -> Result<HashMap<CameraId, PresetTokens>, StoreError> {
        let rows = sqlx::query("SELECT camera_id, preset_id, token FROM camera_presets").fetch_all(&self.pool).await?;
        let mut out: HashMap<CameraId, PresetTokens> = HashMap::new();
        for r in rows {
            let camera = id_at(&r, "camera_presets", "camera_id")?;
            let preset = id_at(&r, "camera_presets", "preset_id")?;
            out.entry(camera).or_default().insert(preset, r.get("token"));
        }
        Ok(out)
    }

    /// What a timeline may refer to: every camera and its preset ids.
    pub async fn camera_inventory(&self) -> Result<HashMap<CameraId, HashSet<PresetId>>, StoreError> {
        let presets = self.presets().await?;
        Ok(self
            .cameras()
            .await?
            .into_iter()
            .map(|c| {
                let p = presets.get(&c.id).map(|m| m.keys().cloned().collect()).unwrap_or_default();
                (c.id, p)
            })
            .collect())
    }

    pub async fn set_camera_ptz(
        &self,
        id: &CameraId,
        profile: Option<&str>,
        settle_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.camera(id).await?;
        sqlx::query("UPDATE cameras SET onvif_profile = COALESCE(?, onvif_profile), ptz_settle_ms = COALESCE(?, ptz_settle_ms) WHERE id = ?")
            .bind(profile)
            .bind(settle_ms.map(|m| m as i64))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// (ONVIF profile token, settle time in ms) of a camera.
    pub async fn camera_ptz(&self, id: &CameraId) -> Result<(Option<String>, Option<u64>), StoreError> {
        let r = sqlx::query("SELECT onvif_profile, ptz_settle_ms FROM cameras WHERE id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound { kind: "camera", id: id.to_string() })?;
        Ok((r.get("onvif_profile"), r.get::<Option<i64>, _>("ptz_settle_ms").map(|m| m as u64)))
    }

    /// Adds or replaces a schedule (a new one goes last: lowest priority).
    pub async fn put_schedule(&self, id: &ScheduleId, json: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO schedules (id, json, position, updated_at)
             VALUES (?, ?, (SELECT COALESCE(MAX(position), 0) + 1 FROM schedules), ?)
             ON CONFLICT(id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
        )
        .bind(id.as_str())
        .bind(json)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// (id, json) in priority order.
    pub async fn schedules(&self) -> Result<Vec<(ScheduleId, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, json FROM schedules ORDER BY position").fetch_all(&self.pool).await?;
        rows.into_iter().map(|r| Ok((id_at(&r, "schedules", "id")?, r.get("json")))).collect()
    }

    pub async fn remove_schedule(&self, id: &ScheduleId) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM schedules WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound { kind: "schedule", id: id.to_string() });
        }
        Ok(())
    }

    /// Records (Some) or clears (None) the desired show.
    pub async fn set_desired_show(&self, json: Option<&str>) -> Result<(), StoreError> {
        match json {
            Some(j) => {
                sqlx::query(
                    "INSERT INTO desired_show (id, json, updated_at) VALUES (1, ?, ?)
                     ON CONFLICT(id) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
                )
                .bind(j)
                .bind(now())
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM desired_show").execute(&self.pool).await?;
            }
        }
        Ok(())
    }

    pub async fn desired_show(&self) -> Result<Option<String>, StoreError> {
        let r = sqlx::query("SELECT json FROM desired_show WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(r.map(|r| r.get("json")))
    }

    pub async fn start_execution(
        &self,
        timeline_id: &TimelineId,
        origin: &str,
        schedule_id: Option<&ScheduleId>,
    ) -> Result<i64, StoreError> {
        let r = sqlx::query(
            "INSERT INTO timeline_executions (timeline_id, origin, schedule_id, started_at, status)
             VALUES (?, ?, ?, ?, 'running') RETURNING id",
        )
        .bind(timeline_id.as_str())
        .bind(origin)
        .bind(schedule_id.map(ScheduleId::as_str))
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(r.get("id"))
    }

    pub async fn finish_execution(
        &self,
        id: i64,
        status: &str,
        error: Option<&str>,
        metrics: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE timeline_executions SET ended_at = ?, status = ?, error = ?, metrics_json = ? WHERE id = ?",
        )
        .bind(now())
        .bind(status)
        .bind(error)
        .bind(metrics.to_string())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Running metrics, written now and then so a crash leaves figures behind.
    pub async fn update_execution_metrics(&self, id: i64, metrics: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query("UPDATE timeline_executions SET metrics_json = ? WHERE id = ?")
            .bind(metrics.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Executions left `running` by a process that is gone.
    pub async fn interrupt_stale_executions(&self) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE timeline_executions SET status = 'interrupted', ended_at = ?,
             error = 'the agent stopped without ending it (crash or power loss)' WHERE status = 'running'",
        )
        .bind(now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    pub async fn executions(&self, limit: i64) -> Result<Vec<ExecutionRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM timeline_executions ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ExecutionRow {
                    id: r.get("id"),
                    timeline_id: id_at(r, "timeline_executions", "timeline_id")?,
                    origin: r.get("origin"),
                    schedule_id: opt_id_at(r, "timeline_executions", "schedule_id")?,
                    started_at: r.get("started_at"),
                    ended_at: r.get("ended_at"),
                    status: r.get("status"),
                    error: r.get("error"),
                    metrics: r.get::<Option<String>, _>("metrics_json").and_then(|m| serde_json::from_str(&m).ok()),
                })
            })
            .collect()
    }
}
