-- A rollback runs as a job: a committed import is 'rolling_back' while a worker undoes
-- its batch (then 'rolled_back', or 'committed' again with the reason it could not).
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN (
    'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired',
    'uploaded', 'validating', 'validated', 'committing', 'committed',
    'rolling_back', 'rolled_back'));

-- The reconciler's scan: jobs that should be moving.
DROP INDEX jobs_active;
CREATE INDEX jobs_active ON jobs (status, lease_until)
    WHERE status IN ('queued', 'running', 'uploaded', 'validating', 'committing', 'rolling_back');
