-- vistter-agent schema v9: the operator programs the appliance should be running. A program
-- started without `ephemeral` is stored here (its start command, with its current destinations)
-- and started again when the agent starts; `program stop` and kill-all remove it.
CREATE TABLE programs (
    id TEXT PRIMARY KEY,
    start TEXT NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
