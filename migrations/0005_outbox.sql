-- vistter-agent schema v5: the telemetry outbox (DESIGN §3 "Transports"). Every message the device
-- sends is written here, signed and numbered, before any transport sees it; a row leaves only when
-- every transport it is for has had it acknowledged (MQTT: its PUBACK), or when the outbox is over
-- its bounds (oldest first; the count is kept in device_counters 'outbox_dropped').
-- route: the transport a reply goes back on ('mqtt', 'ws'); NULL: every transport (telemetry).
-- outbox_cursors: per transport, the highest id it has delivered with nothing missing below it.

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('replies', 'events', 'metrics')),
    route TEXT,
    body TEXT NOT NULL,
    bytes INTEGER NOT NULL
);

CREATE TABLE outbox_cursors (
    transport TEXT PRIMARY KEY,
    acked_id INTEGER NOT NULL
);
