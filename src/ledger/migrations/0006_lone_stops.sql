-- Crash accounting: stops from outside (no crash witnessed: SIGKILL, an OOM kill, power
-- loss) that found the item alone in flight. Every third one is charged an attempt, so an
-- item whose lone retries are stopped from outside again and again still ends, while a few
-- outside kills never use up a good item's attempts (see `Ledger::recover_running`).
ALTER TABLE items ADD COLUMN lone_stops INTEGER NOT NULL DEFAULT 0;
