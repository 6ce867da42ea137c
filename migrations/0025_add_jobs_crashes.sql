-- How many times a job's worker died under it (its lease lapsed). The reconciler counts
-- them and, at FERRY_JOB_MAX_CRASHES, fails the job instead of reviving it again.
ALTER TABLE jobs ADD COLUMN crashes integer NOT NULL DEFAULT 0;
