-- vistter-agent schema v6: the segment library (DESIGN §4). Each installed version lives in
-- <data_dir>/segments/<segment_id>/<version>/; a version's row is written in the same transaction
-- as its activation (the timelines row pointing at its folder) and its event.
-- segments.highest_version: rollback protection (a version not above it is refused unless forced).
-- segment_drops: packages seen in USB drop folders, by the SHA-256 of the file: each imported once.

CREATE TABLE segments (
    segment_id      TEXT PRIMARY KEY,
    active_version  INTEGER NOT NULL,
    highest_version INTEGER NOT NULL
);

CREATE TABLE segment_versions (
    segment_id      TEXT NOT NULL,
    version         INTEGER NOT NULL,
    timeline_id     TEXT NOT NULL,
    entrypoint      TEXT NOT NULL,
    dir             TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    bytes           INTEGER NOT NULL,
    files           INTEGER NOT NULL,
    key_id          TEXT NOT NULL,
    source          TEXT NOT NULL,
    installed_at    TEXT NOT NULL,
    PRIMARY KEY (segment_id, version)
);

CREATE TABLE segment_drops (
    sha256  TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at      TEXT NOT NULL
);
