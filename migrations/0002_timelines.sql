-- vistter-agent schema v2: timelines, PTZ presets, schedules, the desired show, execution history.

ALTER TABLE cameras ADD COLUMN onvif_profile TEXT;       -- ONVIF media profile token (discovered if NULL)
ALTER TABLE cameras ADD COLUMN ptz_settle_ms INTEGER;    -- how long a preset move may take (default in config)

CREATE TABLE camera_presets (
    camera_id  TEXT NOT NULL REFERENCES cameras(id) ON DELETE CASCADE,
    preset_id  TEXT NOT NULL,                 -- the id timelines use
    token      TEXT NOT NULL,                 -- the camera's ONVIF PresetToken
    PRIMARY KEY (camera_id, preset_id)
);

CREATE TABLE timelines (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    json        TEXT NOT NULL,                -- the checked document, as loaded
    asset_root  TEXT,                         -- where its package-relative assets live
    duration_s  REAL NOT NULL,
    loaded_at   TEXT NOT NULL
);

CREATE TABLE schedules (
    id          TEXT PRIMARY KEY,
    json        TEXT NOT NULL,
    position    INTEGER NOT NULL,             -- list order = priority
    updated_at  TEXT NOT NULL
);

-- The show the agent must be running (one row at most); it survives restarts and reboots.
CREATE TABLE desired_show (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    json        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE timeline_executions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    timeline_id  TEXT NOT NULL,
    origin       TEXT NOT NULL,               -- operator | schedule | cloud
    schedule_id  TEXT,
    started_at   TEXT NOT NULL,
    ended_at     TEXT,
    status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'stopped', 'failed', 'interrupted')),
    error        TEXT,
    metrics_json TEXT
);
CREATE INDEX timeline_executions_started ON timeline_executions(started_at);
