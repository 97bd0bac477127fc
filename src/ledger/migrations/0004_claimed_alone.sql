-- Crash accounting: a claim made while no other item of the process was in flight
-- (`claimed_alone = 1`) is the only one charged an attempt when a crash leaves it `running`;
-- every other interrupted claim is refunded (see `Ledger::recover_running`).
ALTER TABLE items ADD COLUMN claimed_alone INTEGER NOT NULL DEFAULT 0;
