-- `ledger retry` records a `retried` history entry (the item's attempt count starts over).
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the new one.
CREATE TABLE history_new (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    element       TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('done', 'failed', 'skipped', 'gave_up', 'retried')),
    error_kind    TEXT,
    error_message TEXT,
    input_hash    TEXT,
    config_hash   TEXT NOT NULL,
    stage_ms      TEXT,
    at            TEXT NOT NULL
);
INSERT INTO history_new SELECT * FROM history;
DROP TABLE history;
ALTER TABLE history_new RENAME TO history;
CREATE INDEX history_element ON history (element);
