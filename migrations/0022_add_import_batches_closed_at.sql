-- When the rollback window of a batch was closed by the cron (its upload deleted then).
ALTER TABLE import_batches ADD COLUMN closed_at timestamptz;

CREATE INDEX import_batches_unclosed ON import_batches (rollback_until)
    WHERE closed_at IS NULL AND rolled_back_at IS NULL;
