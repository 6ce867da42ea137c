-- One row per committed import; records point at it for rollback.
CREATE TABLE import_batches (
    id              uuid PRIMARY KEY,
    job_id          uuid NOT NULL UNIQUE REFERENCES jobs (id) ON DELETE CASCADE,
    org_id          text NOT NULL,
    account_id      text NOT NULL,
    user_id         text NOT NULL,
    dataset         text NOT NULL,
    filename        text NOT NULL DEFAULT '',
    row_count       integer NOT NULL DEFAULT 0,
    skipped_count   integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rollback_until  timestamptz NOT NULL,
    rolled_back_at  timestamptz
);

CREATE INDEX import_batches_org ON import_batches (org_id, created_at DESC);
CREATE INDEX import_batches_open ON import_batches (rollback_until)
    WHERE rolled_back_at IS NULL;
