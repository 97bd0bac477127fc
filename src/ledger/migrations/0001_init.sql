-- Items: the latest state of every element ever seen.
CREATE TABLE items (
    element        TEXT PRIMARY KEY,
    source         TEXT NOT NULL,
    input_size     INTEGER,
    input_mtime_ns INTEGER,
    input_hash     TEXT,
    config_hash    TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    error_kind     TEXT,
    error_message  TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    duration_s     REAL,
    stage_ms       TEXT,
    outputs        TEXT,
    version        TEXT NOT NULL,
    run_id         INTEGER,
    updated_at     TEXT NOT NULL
);
CREATE INDEX items_state ON items (state);

-- Runs: one row per `klio-edge process` invocation.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    command     TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    version     TEXT NOT NULL,
    done        INTEGER,
    skipped     INTEGER,
    failed      INTEGER
);

-- History: one row per item per run, whatever happened to it.
CREATE TABLE history (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    element       TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('done', 'failed', 'skipped', 'gave_up')),
    error_kind    TEXT,
    error_message TEXT,
    input_hash    TEXT,
    config_hash   TEXT NOT NULL,
    stage_ms      TEXT,
    at            TEXT NOT NULL
);
CREATE INDEX history_element ON history (element);
