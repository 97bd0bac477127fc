-- The report reads the history run by run (stage totals, completions): an index on run_id
-- keeps each run's rows from costing a scan of the whole history.
CREATE INDEX IF NOT EXISTS history_run ON history (run_id);
