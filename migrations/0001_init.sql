-- vistter-agent schema v1: cameras, destinations, relay streams (desired + reported state), events.
-- Secrets (camera passwords, stream keys) are stored encrypted with the device key (XChaCha20-Poly1305).

CREATE TABLE cameras (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,          -- rtsp:// URL without credentials
    username         TEXT,
    password_enc     BLOB,                   -- nonce || ciphertext
    backup_camera_id TEXT REFERENCES cameras(id) ON DELETE SET NULL,
    onvif_host       TEXT,
    onvif_port       INTEGER,
    created_at       TEXT NOT NULL
);

CREATE TABLE destinations (
    id             TEXT PRIMARY KEY,
    platform       TEXT NOT NULL CHECK (platform IN ('youtube', 'facebook', 'twitch', 'custom')),
    url            TEXT NOT NULL,            -- ingest URL without the key
    stream_key_enc BLOB NOT NULL,
    backup_ingest  INTEGER NOT NULL DEFAULT 0,
    ca_file        TEXT,
    tls_verify     INTEGER NOT NULL DEFAULT 1,
    enabled        INTEGER NOT NULL DEFAULT 1,
    last_used      TEXT,
    created_at     TEXT NOT NULL
);

CREATE TABLE relay_streams (
    id           TEXT PRIMARY KEY,
    camera_id    TEXT NOT NULL REFERENCES cameras(id),
    desired      TEXT NOT NULL CHECK (desired IN ('live', 'stopped')),
    state        TEXT NOT NULL DEFAULT 'stopped',   -- reported by the daemon
    status_json  TEXT,                              -- the daemon's last full status report
    updated_at   TEXT NOT NULL
);

CREATE TABLE relay_destinations (
    relay_id       TEXT NOT NULL REFERENCES relay_streams(id) ON DELETE CASCADE,
    destination_id TEXT NOT NULL REFERENCES destinations(id) ON DELETE CASCADE,
    PRIMARY KEY (relay_id, destination_id)
);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    severity   TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    event_type TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT
);
CREATE INDEX events_at ON events(at);
