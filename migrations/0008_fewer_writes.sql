-- vistter-agent schema v8: fewer pages written per event and per command (the data disk is often
-- an SD card).
-- command_replies: a WITHOUT ROWID table keyed by message_id (one b-tree fewer per command).
-- events: no AUTOINCREMENT (no sqlite_sequence write per event). Ids stay increasing: only the
-- oldest events are ever deleted, so the newest id is always there for the next to follow. And no
-- index on `at` or `scope`: no query used them (events are read by id, and filtered with a LIKE,
-- which scans), yet every event wrote a page of each.
-- The outbox keeps AUTOINCREMENT: it empties whenever the cloud has everything, and its ids must
-- never be handed out again (the transports' cursors are ids).

CREATE TABLE command_replies_v8 (
    message_id TEXT PRIMARY KEY,
    received_ms INTEGER NOT NULL,
    reply TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO command_replies_v8 (message_id, received_ms, reply)
    SELECT message_id, received_ms, reply FROM command_replies;
DROP TABLE command_replies;
ALTER TABLE command_replies_v8 RENAME TO command_replies;
CREATE INDEX command_replies_received ON command_replies(received_ms);

CREATE TABLE events_v8 (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    severity   TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    event_type TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT,
    scope      TEXT
);
INSERT INTO events_v8 (id, at, severity, event_type, subject, detail, scope)
    SELECT id, at, severity, event_type, subject, detail, scope FROM events;
DROP TABLE events;
ALTER TABLE events_v8 RENAME TO events;
