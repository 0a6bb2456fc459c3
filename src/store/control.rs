//! The control plane's persistent state as others read it: the reply to every cloud command
//! (dedupe), the time floor and the outbox depth. The outbox writer (`control::outbox`) is the
//! only one that writes them, with `seq`.

use sqlx::Row;

use super::{Store, StoreError};

/// Replies are kept this long: a repeated `message_id` within it gets its original reply.
pub const DEDUPE_KEEP_MS: i64 = 25 * 3600 * 1000;

// A pruned command must be one that can never pass the time check again (see `PRUNE_REPLIES`).
const _: () = assert!(DEDUPE_KEEP_MS > crate::config::MAX_SKEW_S as i64 * 1000);

/// Forgets the replies stamped more than `?1` ms before the time floor. The age is measured
/// against the floor, never the system clock: the floor only rises, to the time of commands a
/// trusted key signed, so a clock that jumps a day ahead (and back) does not age anything. A row
/// is stamped no earlier than its command's time, and the floor never falls, so a command whose
/// row is gone is more than `?1` ms behind every `now` the time check will use from then on:
/// with `?1` over the largest `max_skew_s`, it is `expired` for good and cannot run twice.
/// Without a floor (no command accepted yet) nothing is forgotten.
pub const PRUNE_REPLIES: &str = "DELETE FROM command_replies WHERE received_ms < \
     (SELECT value FROM device_counters WHERE name = 'time_floor_ms') - ?1";

impl Store {
    /// The reply already sent for `message_id`, if any.
    pub async fn command_reply(&self, message_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT reply FROM command_replies WHERE message_id = ?")
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("reply")))
    }

    /// Forgets replies stamped [`DEDUPE_KEEP_MS`] before the time floor ([`PRUNE_REPLIES`], as
    /// the outbox writer runs it every minute).
    pub async fn prune_command_replies(&self) -> Result<u64, StoreError> {
        let r = sqlx::query(PRUNE_REPLIES).bind(DEDUPE_KEEP_MS).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    /// Messages waiting in the outbox, and their bytes.
    pub async fn outbox_depth(&self) -> Result<(i64, i64), StoreError> {
        let r =
            sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM outbox").fetch_one(&self.pool).await?;
        Ok((r.get("n"), r.get("b")))
    }

    /// The time floor, Unix milliseconds (0 when none was recorded).
    pub async fn time_floor_ms(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT value FROM device_counters WHERE name = 'time_floor_ms'")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("value")).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn remember(s: &Store, id: &str, reply: &str, at_ms: i64) {
        sqlx::query("INSERT INTO command_replies (message_id, received_ms, reply) VALUES (?, ?, ?)")
            .bind(id)
            .bind(at_ms)
            .bind(reply)
            .execute(&s.pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn replies_and_the_time_floor_survive_a_reopen_and_replies_are_kept_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).await.unwrap();
        let t0 = 1_764_000_000_000;
        assert_eq!(s.command_reply("m1").await.unwrap(), None);
        assert_eq!(s.time_floor_ms().await.unwrap(), 0, "no floor yet");
        remember(&s, "m1", "ack-1", t0).await;
        sqlx::query("INSERT INTO device_counters (name, value) VALUES ('time_floor_ms', ?)")
            .bind(t0)
            .execute(&s.pool)
            .await
            .unwrap();
        drop(s);
        let s = Store::open(dir.path()).await.unwrap();
        assert_eq!(s.command_reply("m1").await.unwrap().as_deref(), Some("ack-1"), "across a restart");
        assert_eq!(s.time_floor_ms().await.unwrap(), t0);
        // Kept at least 24 h of the floor's time, then forgotten.
        let floor = |ms: i64| {
            sqlx::query("UPDATE device_counters SET value = ? WHERE name = 'time_floor_ms'").bind(ms).execute(&s.pool)
        };
        floor(t0 + 24 * 3600 * 1000).await.unwrap();
        assert_eq!(s.prune_command_replies().await.unwrap(), 0);
        assert!(s.command_reply("m1").await.unwrap().is_some(), "24 h later it is still answered");
        floor(t0 + DEDUPE_KEEP_MS + 1).await.unwrap();
        assert_eq!(s.prune_command_replies().await.unwrap(), 1);
        assert!(s.command_reply("m1").await.unwrap().is_none(), "gone after {DEDUPE_KEEP_MS} ms");
        assert_eq!(s.outbox_depth().await.unwrap(), (0, 0));
    }
}
