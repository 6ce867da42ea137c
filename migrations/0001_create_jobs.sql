-- One table for export and import jobs. The row is the truth; arq only carries it.
CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('export', 'import')),
    org_id          text NOT NULL,
    user_id         text NOT NULL,
    dataset         text NOT NULL,
    status          text NOT NULL CHECK (status IN (
                        'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired',
                        'uploaded', 'validating', 'validated', 'committing', 'committed',
                        'rolled_back')),
    params          jsonb NOT NULL DEFAULT '{}',
    progress        jsonb,
    result          jsonb,
    error           jsonb,
    idempotency_key text,
    request_hash    text,
    -- Crash recovery: a claim bumps `attempt` (the fencing token) and sets a lease;
    -- `run` versions the arq job id so a job can be enqueued again on purpose.
    attempt         integer NOT NULL DEFAULT 0,
    run             integer NOT NULL DEFAULT 0,
    lease_until     timestamptz,
    cancel_requested_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CONSTRAINT jobs_idempotency_key UNIQUE (org_id, user_id, idempotency_key)
);

-- History of one caller, newest first (keyset on created_at, id).
CREATE INDEX jobs_history ON jobs (org_id, user_id, created_at DESC, id DESC);
-- The reconciler's scan: jobs that should be moving.
CREATE INDEX jobs_active ON jobs (status, lease_until)
    WHERE status IN ('queued', 'running', 'uploaded', 'validating', 'committing');
