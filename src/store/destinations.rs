//! Destinations: platform, ingest URL, sealed stream key, TLS options, enabled, last used.

use serde::Serialize;
use sqlx::Row;

use super::Severity;
use super::{id_at, now, Store, StoreError};
use crate::media::destination::{DestinationSettings, OutputTarget, Platform};
use crate::values::DestinationId;

#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub id: DestinationId,
    #[serde(skip)]
    pub settings: DestinationSettings,
    pub platform: Platform,
    /// The ingest URL with the key masked.
    pub url: String,
    pub enabled: bool,
    pub last_used: Option<String>,
    /// What sends it: the native RTMP(S) publisher or FFmpeg.
    pub publisher: crate::media::destination::Publisher,
}

impl Store {
    pub async fn add_destination(
        &self,
        id: &DestinationId,
        s: &DestinationSettings,
        enabled: bool,
    ) -> Result<Destination, StoreError> {
        if self.destination(id).await.is_ok() {
            return Err(StoreError::Exists { kind: "destination", id: id.to_string() });
        }
        let sealed = self.key.seal(&s.key, &format!("destination:{id}:key"));
        sqlx::query(
            "INSERT INTO destinations (id, platform, url, stream_key_enc, backup_ingest, ca_file, tls_verify, enabled, created_at, publisher)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(s.platform.as_str())
        .bind(&s.url)
        .bind(sealed)
        .bind(s.backup_ingest)
        .bind(s.ca_file.as_ref().map(|p| p.to_string_lossy().to_string()))
        .bind(s.tls_verify)
        .bind(enabled)
        .bind(now())
        .bind(s.publisher.as_str())
        .execute(&self.pool)
        .await?;
        self.destination(id).await
    }

    /// Replaces a destination's settings (a new stream key, ingest URL or CA file); its id,
    /// enabled state and last use stay.
    pub async fn update_destination(
        &self,
        id: &DestinationId,
        s: &DestinationSettings,
    ) -> Result<Destination, StoreError> {
        self.destination(id).await?;
        let sealed = self.key.seal(&s.key, &format!("destination:{id}:key"));
        sqlx::query(
            "UPDATE destinations SET platform = ?, url = ?, stream_key_enc = ?, backup_ingest = ?, ca_file = ?, tls_verify = ?,
             publisher = ? WHERE id = ?",
        )
        .bind(s.platform.as_str())
        .bind(&s.url)
        .bind(sealed)
        .bind(s.backup_ingest)
        .bind(s.ca_file.as_ref().map(|p| p.to_string_lossy().to_string()))
        .bind(s.tls_verify)
        .bind(s.publisher.as_str())
        .bind(id.as_str())
        .execute(&self.pool)
        .await?;
        self.destination(id).await
    }

    pub async fn destination(&self, id: &DestinationId) -> Result<Destination, StoreError> {
        let row =
            sqlx::query("SELECT * FROM destinations WHERE id = ?").bind(id.as_str()).fetch_optional(&self.pool).await?;
        let row = row.ok_or_else(|| StoreError::NotFound { kind: "destination", id: id.to_string() })?;
        self.destination_from_row(&row)
    }

    fn destination_from_row(&self, row: &sqlx::sqlite::SqliteRow) -> Result<Destination, StoreError> {
        let id: DestinationId = id_at(row, "destinations", "id")?;
        let platform: Platform = row
            .get::<String, _>("platform")
            .parse()
            .map_err(|e: crate::media::destination::DestinationError| StoreError::Invalid(e.to_string()))?;
        let key = self.key.open(&row.get::<Vec<u8>, _>("stream_key_enc"), &format!("destination:{id}:key"))?;
        let settings = DestinationSettings {
            platform,
            url: row.get("url"),
            key,
            backup_ingest: row.get("backup_ingest"),
            ca_file: row.get::<Option<String>, _>("ca_file").map(Into::into),
            tls_verify: row.get("tls_verify"),
            publisher: row
                .get::<String, _>("publisher")
                .parse()
                .map_err(|e: crate::media::destination::DestinationError| StoreError::Invalid(e.to_string()))?,
        };
        Ok(Destination {
            url: settings.shown_url(),
            publisher: settings.publisher,
            platform,
            settings,
            enabled: row.get("enabled"),
            last_used: row.get("last_used"),
            id,
        })
    }

    pub async fn destinations(&self) -> Result<Vec<Destination>, StoreError> {
        let rows = sqlx::query("SELECT * FROM destinations ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.destination_from_row(r)).collect()
    }

    /// Turns a destination on or off; a disabled one is left out of every program's outputs.
    pub async fn set_destination_enabled(&self, id: &DestinationId, enabled: bool) -> Result<(), StoreError> {
        self.destination(id).await?;
        sqlx::query("UPDATE destinations SET enabled = ? WHERE id = ?")
            .bind(enabled)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a destination; streams using it drop it (live pushers are stopped by the daemon).
    pub async fn remove_destination(&self, id: &DestinationId) -> Result<(), StoreError> {
        self.destination(id).await?;
        sqlx::query("DELETE FROM destinations WHERE id = ?").bind(id.as_str()).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn touch_destination(&self, id: &DestinationId) -> Result<(), StoreError> {
        sqlx::query("UPDATE destinations SET last_used = ? WHERE id = ?")
            .bind(now())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The lowest of the destinations' platform bitrate limits (YouTube 9000k, Facebook 8000k,
    /// Twitch 6000k), so a program never sends more than any of its platforms accepts.
    pub async fn bitrate_cap(&self, ids: &[DestinationId]) -> Option<u32> {
        let mut cap: Option<u32> = None;
        for d in ids {
            if let Ok(dest) = self.destination(d).await {
                if let Some(m) = dest.platform.max_bitrate_kbps().filter(|_| dest.enabled) {
                    cap = Some(cap.map_or(m, |c| c.min(m)));
                }
            }
        }
        cap
    }

    /// Clamps a program's video bitrate to its platforms' limits, saying so when it does.
    pub async fn capped_bitrate(&self, program: &str, ids: &[DestinationId], kbps: u32) -> u32 {
        match self.bitrate_cap(ids).await {
            Some(cap) if kbps > cap => {
                let detail =
                    format!("video bitrate {kbps} kbit/s lowered to {cap} kbit/s, the destinations' platform limit");
                tracing::warn!(program, "{detail}");
                let _ =
                    self.add_event(Severity::Warning, "bitrate_capped", &format!("program:{program}"), &detail).await;
                cap
            }
            _ => kbps,
        }
    }

    /// The outputs of destinations by id (disabled ones left out).
    pub async fn outputs_for(&self, ids: &[DestinationId]) -> Result<Vec<OutputTarget>, StoreError> {
        let mut outputs = Vec::new();
        for d in ids {
            let dest = self.destination(d).await?;
            if dest.enabled {
                outputs.extend(dest.settings.outputs(&dest.id));
            }
        }
        Ok(outputs)
    }
}
