//! The control plane's persistent state: the reply to every cloud command (dedupe), the envelope
//! sequence number and the time floor.

use sqlx::Row;

use super::{Store, StoreError};

/// Replies are kept this long: a repeated `message_id` within it gets its original reply.
pub const DEDUPE_KEEP_MS: i64 = 25 * 3600 * 1000;

impl Store {
    /// The reply already sent for `message_id`, if any.
    pub async fn command_reply(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT reply FROM command_replies WHERE message_id = ?")
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("reply")))
    }

    /// Records the reply to `message_id`; the first one recorded stays. Returns the reply that is
    /// stored (the earlier one if there was one). Replies older than [`DEDUPE_KEEP_MS`] go.
    pub async fn remember_reply(&self, message_id: &str, reply: &str, now_ms: i64) -> Result<String, StoreError> {
        sqlx::query("INSERT OR IGNORE INTO command_replies (message_id, received_ms, reply) VALUES (?, ?, ?)")
            .bind(message_id)
            .bind(now_ms)
            .bind(reply)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM command_replies WHERE received_ms < ?")
            .bind(now_ms - DEDUPE_KEEP_MS)
            .execute(&self.pool)
            .await?;
        Ok(self.command_reply(message_id).await?.unwrap_or_else(|| reply.to_string()))
    }

    /// Replaces the replies stored for `message_id` (the ACK, then the ACK and its RESULT).
    pub async fn set_reply(&self, message_id: &str, reply: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE command_replies SET reply = ? WHERE message_id = ?")
            .bind(reply)
            .bind(message_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reserves `n` sequence numbers and returns the first: they are never handed out again,
    /// across restarts (a crash may skip some, never repeat them).
    pub async fn reserve_seq(&self, n: u64) -> Result<u64, StoreError> {
        let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        let row = sqlx::query(
            "INSERT INTO device_counters (name, value) VALUES ('seq', ?1) \
             ON CONFLICT(name) DO UPDATE SET value = value + ?1 RETURNING value",
        )
        .bind(n)
        .fetch_one(&self.pool)
        .await?;
        let last: i64 = row.get("value");
        Ok((last - n + 1) as u64)
    }

    /// The time floor, Unix milliseconds (0 when none was recorded).
    pub async fn time_floor_ms(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM device_counters WHERE name = 'time_floor_ms'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("value")).unwrap_or(0))
    }

    /// Raises the time floor to `ms` (never lowers it); returns the floor.
    pub async fn raise_time_floor(&self, ms: i64) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO device_counters (name, value) VALUES ('time_floor_ms', ?1) \
             ON CONFLICT(name) DO UPDATE SET value = max(value, ?1) RETURNING value",
        )
        .bind(ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get("value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_seq_and_the_time_floor_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let t0 = 1_764_000_000_000;
        assert_eq!(s.command_reply("m1").await.unwrap(), None);
        assert_eq!(s.remember_reply("m1", "ack-1", t0).await.unwrap(), "ack-1");
        assert_eq!(s.remember_reply("m1", "ack-2", t0 + 1).await.unwrap(), "ack-1", "the first reply stays");
        assert_eq!(s.reserve_seq(1).await.unwrap(), 1);
        assert_eq!(s.reserve_seq(10).await.unwrap(), 2, "2..=11 reserved");
        assert_eq!(s.raise_time_floor(t0).await.unwrap(), t0);
        assert_eq!(s.raise_time_floor(0).await.unwrap(), t0, "never lowered");
        drop(s);
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(s.command_reply("m1").await.unwrap().as_deref(), Some("ack-1"), "across a restart");
        assert_eq!(s.reserve_seq(1).await.unwrap(), 12, "seq continues after a restart");
        assert_eq!(s.time_floor_ms().await.unwrap(), t0);
        // Kept at least 24 h, then forgotten.
        s.remember_reply("m2", "x", t0 + 24 * 3600 * 1000).await.unwrap();
        assert!(s.command_reply("m1").await.unwrap().is_some(), "24 h later it is still answered");
        s.remember_reply("m3", "x", t0 + DEDUPE_KEEP_MS + 1).await.unwrap();
        assert!(s.command_reply("m1").await.unwrap().is_none(), "gone after {DEDUPE_KEEP_MS} ms");
    }
}
