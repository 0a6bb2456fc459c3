-- vistter-agent schema v7: the status page's local admin password (argon2id, PHC string). No row:
-- no password was set, and the page's controls are off. One row at most.

CREATE TABLE admin_password (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    phc    TEXT NOT NULL,
    set_at TEXT NOT NULL
);
