-- The X-Request-ID of the request that created a job, so the worker's log lines for the
-- job name the request a person can quote.
ALTER TABLE jobs ADD COLUMN request_id text;
