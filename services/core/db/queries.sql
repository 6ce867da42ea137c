-- Static SQL of Ferry. Dataset SQL (exports, imports) is built in services/core/datasets/sql.py.
-- Job statuses arrive as parameters from services/core/jobs.py, never as literals here.

-- name: insert_job
-- Idempotent create: a repeated (org, user, key) returns nothing and the caller reads the row.
INSERT INTO jobs (id, kind, org_id, user_id, dataset, status, params, idempotency_key,
                  request_hash, request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (org_id, user_id, idempotency_key) DO NOTHING
RETURNING *;

-- name: lock_caller
-- Serialises the job creations of one caller, so the cap on waiting jobs holds.
SELECT pg_advisory_xact_lock(hashtext($1 || chr(31) || $2));

-- name: count_waiting
-- The caller's jobs no worker has started yet ($3: the waiting statuses).
SELECT count(*) FROM jobs
WHERE org_id = $1 AND user_id = $2 AND status = ANY($3::text[]) AND cancel_requested_at IS NULL;

-- name: get_job_by_key
SELECT * FROM jobs WHERE org_id = $1 AND user_id = $2 AND idempotency_key = $3;

-- name: get_job
SELECT * FROM jobs WHERE id = $1 AND org_id = $2;

-- name: get_job_unscoped
SELECT * FROM jobs WHERE id = $1;

-- name: list_jobs
-- Keyset page of one caller's history, newest first; $5/$6 is the last row seen.
SELECT * FROM jobs
WHERE org_id = $1 AND user_id = $2
  AND ($3::text IS NULL OR kind = $3)
  AND ($4::text[] IS NULL OR status = ANY($4))
  AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $7;

-- name: claim_job
-- Take a job for this run: bump the attempt (the fencing token) and set a lease.
-- A job in one of $3 is taken when nobody holds it (no lease). A lapsed lease is the
-- reconciler's to clear, so every crash is counted; a stale arq delivery (older run) or a
-- cancelled job is left alone.
UPDATE jobs
SET status = $4, attempt = attempt + 1,
    lease_until = now() + make_interval(secs => $5),
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = $1 AND run = $2 AND cancel_requested_at IS NULL
  AND status = ANY($3) AND lease_until IS NULL
RETURNING *;

-- name: renew_lease
-- Heartbeat of a running job; no row back means a newer attempt owns the job.
UPDATE jobs
SET lease_until = now() + make_interval(secs => $3),
    progress = coalesce($4, progress), updated_at = now()
WHERE id = $1 AND attempt = $2
RETURNING status, cancel_requested_at;

-- name: finish_attempt
-- Last write of an attempt, fenced by the attempt number; from one of $8 to $3, which
-- sets finished_at when it is one of the terminal statuses $7.
UPDATE jobs
SET status = $3, result = coalesce($4, result), error = $5, progress = coalesce($6, progress),
    lease_until = NULL, updated_at = now(),
    finished_at = CASE WHEN $3 = ANY($7::text[]) THEN now() ELSE finished_at END
WHERE id = $1 AND attempt = $2 AND status = ANY($8::text[])
RETURNING *;

-- name: expired_leases
-- Jobs whose worker stopped renewing its lease (it died, or stalled): each counts a crash.
-- Below $2 crashes a new run gets the job going again (no lease: waiting for that run); the
-- $2-th ends it where its stage fails ($3, by working status) with the error of $4 — unless
-- it was a commit ($5) whose batch is in (it landed before the worker died), which the next
-- run only has to record. $1: the working statuses.
WITH lapsed AS (
    SELECT id, crashes + 1 >= $2
               AND NOT (status = $5 AND EXISTS (SELECT 1 FROM import_batches b
                                                WHERE b.job_id = jobs.id)) AS spent
    FROM jobs
    WHERE status = ANY($1::text[]) AND lease_until < now()
    FOR UPDATE
)
UPDATE jobs j
SET crashes = j.crashes + 1, lease_until = NULL, updated_at = now(),
    run = j.run + CASE WHEN l.spent THEN 0 ELSE 1 END,
    status = CASE WHEN l.spent THEN $3::jsonb ->> j.status ELSE j.status END,
    error = CASE WHEN l.spent THEN $4::jsonb -> j.status ELSE j.error END,
    finished_at = CASE WHEN l.spent THEN now() ELSE j.finished_at END
FROM lapsed l
WHERE j.id = l.id
RETURNING j.*;

-- name: hand_back
-- A stopping worker gives a running job back: no lease and a new run, so the next worker
-- starts it at once. Not a crash. Fenced by the attempt.
UPDATE jobs SET lease_until = NULL, run = run + 1, updated_at = now()
WHERE id = $1 AND attempt = $2 AND lease_until IS NOT NULL
RETURNING *;

-- name: renew_run
-- A waiting job whose arq delivery died with the worker that took it: a new run, so it
-- can be enqueued afresh. Not a crash (it never started). Fenced by the run.
UPDATE jobs SET run = run + 1, updated_at = now()
WHERE id = $1 AND run = $2 AND lease_until IS NULL
RETURNING *;

-- name: waiting_jobs
-- Jobs waiting for a worker for a while; the reconciler makes sure arq knows them.
-- $2: the statuses a worker moves on.
SELECT * FROM jobs
WHERE lease_until IS NULL AND updated_at < now() - make_interval(secs => $1)
  AND cancel_requested_at IS NULL
  AND status = ANY($2::text[])
ORDER BY created_at
LIMIT 500;

-- name: count_jobs
SELECT kind, status, count(*) AS n FROM jobs WHERE status = ANY($1::text[])
GROUP BY kind, status;

-- name: queue_position
SELECT count(*) + 1 FROM jobs
WHERE org_id = $1 AND user_id = $2 AND kind = $3 AND status = $4 AND lease_until IS NULL
  AND cancel_requested_at IS NULL AND (created_at, id) < ($5, $6::uuid);

-- name: lock_owner
-- Serialises claims of one caller's jobs, so a per-user limit holds under concurrent workers.
SELECT pg_advisory_xact_lock(hashtext(org_id || chr(31) || user_id)) FROM jobs WHERE id = $1;

-- name: claim_job_limited
-- claim_job, admitting the job only while fewer than $6 of its owner's jobs of this kind
-- run (hold a live lease) or wait ahead of it: at most $6 run at once, first come first.
UPDATE jobs j
SET status = $4, attempt = attempt + 1,
    lease_until = now() + make_interval(secs => $5),
    started_at = coalesce(started_at, now()), updated_at = now()
WHERE id = $1 AND run = $2 AND cancel_requested_at IS NULL
  AND status = ANY($3) AND lease_until IS NULL
  AND (SELECT count(*) FROM jobs o
       WHERE o.org_id = j.org_id AND o.user_id = j.user_id AND o.kind = j.kind
         AND o.id <> j.id AND o.status = ANY($3) AND o.cancel_requested_at IS NULL
         AND (o.lease_until > now() OR (o.created_at, o.id) < (j.created_at, j.id))) < $6
RETURNING *;

-- name: admissible_jobs
-- The waiting jobs of one caller that may start now under a limit of $5 running at once.
SELECT * FROM jobs
WHERE org_id = $1 AND user_id = $2 AND kind = $3 AND status = ANY($4)
  AND cancel_requested_at IS NULL AND lease_until IS NULL
ORDER BY created_at, id
LIMIT greatest($5 - (
    SELECT count(*) FROM jobs
    WHERE org_id = $1 AND user_id = $2 AND kind = $3 AND status = ANY($4)
      AND cancel_requested_at IS NULL AND lease_until > now()), 0);

-- name: cancel_waiting_job
-- A job no worker holds is cancelled at once (from one of $4 to $5); the claim skips it.
UPDATE jobs
SET status = $5, cancel_requested_at = coalesce(cancel_requested_at, now()),
    error = $3, lease_until = NULL, finished_at = now(), updated_at = now()
WHERE id = $1 AND org_id = $2 AND status = ANY($4)
  AND (lease_until IS NULL OR lease_until < now())
RETURNING *;

-- name: request_cancel
-- A running job is asked to stop; its worker notices at the next heartbeat.
UPDATE jobs
SET cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
WHERE id = $1 AND org_id = $2 AND status = ANY($3) AND lease_until >= now()
RETURNING *;

-- name: expirable_exports
SELECT * FROM jobs
WHERE kind = 'export' AND status = ANY($1::text[])
  AND (result ->> 'expires_at')::timestamptz <= now()
ORDER BY finished_at
LIMIT 500;

-- name: expire_export
UPDATE jobs SET status = $3, updated_at = now()
WHERE id = $1 AND status = ANY($2::text[])
RETURNING *;

-- --- imports ---------------------------------------------------------------------------

-- name: find_batch
SELECT * FROM import_batches WHERE job_id = $1;

-- name: insert_batch
-- job_id is UNIQUE: a second commit of the same import stops here.
INSERT INTO import_batches (id, job_id, org_id, account_id, user_id, dataset,
                            filename, skipped_count, rollback_until, mode)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::interval, $10)
RETURNING *;

-- name: count_batch_rows
-- row_count: records inserted or updated; $3 of them updated, $4 left alone (existing).
UPDATE import_batches SET row_count = $2, updated_count = $3, skipped_existing_count = $4
WHERE id = $1 RETURNING *;

-- name: lock_batch
-- Rollback takes the batch row first, so two rollbacks of one import queue up.
SELECT *, now() > rollback_until AS closed FROM import_batches WHERE job_id = $1 FOR UPDATE;

-- name: batch_state
SELECT *, now() > rollback_until AS closed FROM import_batches WHERE job_id = $1;

-- name: count_images
SELECT count(*) FROM import_batch_images WHERE batch_id = $1;

-- name: table_columns
SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = $1
ORDER BY ordinal_position;

-- name: mark_batch_rolled_back
UPDATE import_batches SET rolled_back_at = now() WHERE id = $1 RETURNING *;

-- name: remembered_mapping
SELECT mapping FROM import_mappings WHERE org_id = $1 AND header_key = $2;

-- name: remember_mapping
INSERT INTO import_mappings (org_id, header_key, dataset, headers, mapping)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (org_id, header_key) DO UPDATE SET mapping = excluded.mapping, updated_at = now();

-- name: revalidate_import
-- A new mapping: from one of $4 back to $5 under a new run (arq refuses an id it still holds).
UPDATE jobs
SET status = $5, run = run + 1,
    params = params || jsonb_build_object('mapping', $3::jsonb),
    result = jsonb_build_object('source', result -> 'source'),
    progress = NULL, error = NULL, updated_at = now()
WHERE id = $1 AND org_id = $2 AND status = ANY($4::text[])
RETURNING *;

-- name: choose_sheet
-- Another sheet of the workbook: from one of $4 back to $5 under a new run. The mapping
-- chosen for the other sheet's headers is dropped; the sheets stay listed meanwhile.
UPDATE jobs
SET status = $5, run = run + 1,
    params = (params - 'mapping') || jsonb_build_object('sheet', $3::text),
    result = jsonb_build_object('source', jsonb_strip_nulls(jsonb_build_object(
        'filename', result -> 'source' -> 'filename',
        'bytes', result -> 'source' -> 'bytes',
        'kind', result -> 'source' -> 'kind',
        'sheet', $3::text,
        'sheets', result -> 'source' -> 'sheets'))),
    progress = NULL, error = NULL, updated_at = now()
WHERE id = $1 AND org_id = $2 AND status = ANY($4::text[])
RETURNING *;

-- name: request_commit
UPDATE jobs
SET status = $7,
    params = params || jsonb_build_object('on_error', $3::text, 'commit_key', $4::text,
                                          'accepted_mapping', $5::jsonb, 'mode', $8::text),
    updated_at = now()
WHERE id = $1 AND org_id = $2 AND status = ANY($6::text[]) AND cancel_requested_at IS NULL
RETURNING *;

-- name: request_rollback
-- From one of $4 to $5 under a new run (arq refuses an id it still holds); a rollback
-- asked again after one that could not be done starts afresh.
UPDATE jobs
SET status = $5, run = run + 1, error = NULL, progress = NULL, updated_at = now(),
    params = params || jsonb_build_object('rollback_confirm', $3::boolean)
WHERE id = $1 AND org_id = $2 AND status = ANY($4::text[])
RETURNING *;

-- name: close_rollback_windows
UPDATE import_batches SET closed_at = now()
WHERE rollback_until < now() AND closed_at IS NULL AND rolled_back_at IS NULL
RETURNING job_id, org_id;

-- name: mark_import_files_deleted
UPDATE jobs SET result = jsonb_set(coalesce(result, '{}'), '{files_deleted_at}', to_jsonb(now()))
WHERE id = ANY($1::uuid[]);

-- name: purge_import_batches
DELETE FROM import_batches WHERE created_at < now() - make_interval(days => $1);

-- name: expire_validated_imports
-- Validated imports (status one of $2) nobody committed within $1 days become $3.
UPDATE jobs
SET status = $3, finished_at = now(), updated_at = now(),
    error = jsonb_build_object('type', 'expired', 'message',
                               'not committed within ' || $1 || ' days; upload the file again')
WHERE kind = 'import' AND status = ANY($2::text[])
  AND updated_at < now() - make_interval(days => $1)
RETURNING id;

-- name: delete_stale_import_files
-- Ended imports (status one of $3) whose upload and report are kept no longer (older than
-- $1 days, or in $2).
UPDATE jobs SET result = jsonb_set(coalesce(result, '{}'), '{files_deleted_at}', to_jsonb(now()))
WHERE kind = 'import' AND status = ANY($3::text[])
  AND (updated_at < now() - make_interval(days => $1) OR id = ANY($2::uuid[]))
  AND (result IS NULL OR NOT result ? 'files_deleted_at')
RETURNING id, org_id;

-- name: leftover_staging_tables
-- Staging tables of imports that ended (status one of $2) or are gone.
SELECT c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN jobs j ON j.id::text = c.relname
WHERE n.nspname = $1 AND c.relkind = 'r'
  AND (j.id IS NULL OR j.status = ANY($2::text[]));

-- name: list_presets
-- One person's export presets, by dataset and name; $3 NULL lists every dataset.
SELECT * FROM export_presets
WHERE org_id = $1 AND user_id = $2 AND ($3::text IS NULL OR dataset = $3)
ORDER BY dataset, name;

-- name: insert_preset
-- Refuses past $7 presets of one person and dataset (nothing returned, no error).
INSERT INTO export_presets (id, org_id, user_id, dataset, name, columns)
SELECT $1, $2, $3, $4, $5, $6
WHERE (SELECT count(*) FROM export_presets
       WHERE org_id = $2 AND user_id = $3 AND dataset = $4) < $7
RETURNING *;

-- name: get_preset_by_name
SELECT * FROM export_presets WHERE org_id = $1 AND user_id = $2 AND dataset = $3 AND name = $4;

-- name: delete_preset
DELETE FROM export_presets WHERE id = $1 AND org_id = $2 AND user_id = $3 RETURNING id;
-- --- direct uploads ------------------------------------------------------------------

-- name: insert_upload
INSERT INTO uploads (id, org_id, user_id, filename, content_type, bytes, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
RETURNING *, now() > expires_at AS expired;

-- name: get_upload
SELECT *, now() > expires_at AS expired FROM uploads WHERE id = $1 AND org_id = $2;

-- name: claim_upload
-- An upload becomes one import, once, before it expires.
UPDATE uploads SET used_by = $2, used_at = now()
WHERE id = $1 AND used_at IS NULL AND expires_at > now()
RETURNING *;

-- name: release_upload
UPDATE uploads SET used_by = NULL, used_at = NULL WHERE id = $1 AND used_by = $2;

-- name: expired_uploads
-- Uploads never used, expired more than $1 seconds ago: their files go, then the rows.
DELETE FROM uploads WHERE used_at IS NULL AND expires_at < now() - make_interval(secs => $1)
RETURNING id, org_id;
