-- vistter-agent schema v4: the control plane's persistent state.
-- command_replies: the reply sent to each cloud command, so a repeated message_id is answered with
-- it again instead of being executed twice (kept at least 24 h, across restarts).
-- device_counters: the envelope `seq` (monotonic across restarts) and the time floor (the newest
-- time this device has trusted, Unix milliseconds, so a clock that jumps back cannot reopen old
-- commands).

CREATE TABLE command_replies (
    message_id TEXT PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    reply TEXT NOT NULL
);
CREATE INDEX command_replies_received ON command_replies(received_ms);

CREATE TABLE device_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
