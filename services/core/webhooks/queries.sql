-- Static SQL of webhooks (services/core/webhooks). Migration 0040 holds the trigger that
-- writes events and deliveries when a job changes status. Delivery statuses and attempt
-- outcomes arrive as parameters; a delivery is pending while finished_at IS NULL.

-- --- endpoints -------------------------------------------------------------------------

-- name: insert_endpoint
-- Refuses past $11 endpoints of one org, and a repeated Idempotency-Key (nothing returned).
INSERT INTO webhook_endpoints (id, org_id, url, events, description, enabled, secret,
                               idempotency_key, request_hash, secret_key, created_by)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $10
WHERE (SELECT count(*) FROM webhook_endpoints WHERE org_id = $2) < $11
ON CONFLICT (org_id, idempotency_key) DO NOTHING
RETURNING *;

-- name: get_endpoint_by_key
SELECT * FROM webhook_endpoints WHERE org_id = $1 AND idempotency_key = $2;

-- name: get_endpoint
SELECT * FROM webhook_endpoints WHERE id = $1 AND org_id = $2;

-- name: list_endpoints
SELECT * FROM webhook_endpoints WHERE org_id = $1 ORDER BY created_at, id;

-- name: update_endpoint
UPDATE webhook_endpoints
SET url = $3, events = $4, description = $5, enabled = $6, updated_at = now()
WHERE id = $1 AND org_id = $2
RETURNING *;

-- name: delete_endpoint
DELETE FROM webhook_endpoints WHERE id = $1 AND org_id = $2 RETURNING id;

-- name: rotate_secret
-- $3 becomes the secret; the current one keeps signing for $4 seconds. A request whose
-- Idempotency-Key $5 set the current secret already changes nothing.
UPDATE webhook_endpoints
SET previous_secret = secret, previous_secret_until = now() + make_interval(secs => $4),
    secret = $3, secret_key = $5, updated_at = now()
WHERE id = $1 AND org_id = $2 AND ($5::text IS NULL OR secret_key IS DISTINCT FROM $5)
RETURNING *;

-- name: stale_secrets
-- Endpoints with a secret not sealed by the current key, whose sealed values start $1.
SELECT id, secret, previous_secret FROM webhook_endpoints
WHERE NOT starts_with(secret, $1) OR NOT starts_with(coalesce(previous_secret, $1), $1)
ORDER BY id;

-- name: reseal_secrets
-- The secrets $4, $5 (sealed again) replace $2, $3 unless a rotation changed them meanwhile.
UPDATE webhook_endpoints SET secret = $4, previous_secret = $5
WHERE id = $1 AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $3;

-- --- deliveries ------------------------------------------------------------------------

-- name: lock_claims
-- One claimer at a time over all workers, so the per-endpoint limit holds.
SELECT pg_advisory_xact_lock(hashtext('ferry:webhook-claims'));

-- name: claim_deliveries
-- Up to $1 due deliveries, keeping at most $2 in flight per endpoint. Each gets a lease of
-- $3 s, its attempt count (the fencing token) bumped and a row for the new attempt; an
-- earlier attempt left without an outcome (its worker died) gets outcome $4, error $5.
WITH busy AS (
    SELECT endpoint_id, count(*) AS n FROM webhook_deliveries
    WHERE finished_at IS NULL AND lease_until IS NOT NULL AND lease_until > now()
    GROUP BY endpoint_id
), due AS (
    SELECT d.id, d.endpoint_id,
           row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS k
    FROM (SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
          WHERE finished_at IS NULL AND next_attempt_at <= now()
            AND (lease_until IS NULL OR lease_until <= now())
          ORDER BY next_attempt_at
          LIMIT 1000) d
), picked AS (
    SELECT due.id FROM due LEFT JOIN busy USING (endpoint_id)
    WHERE due.k + coalesce(busy.n, 0) <= $2
    ORDER BY due.k, due.id
    LIMIT $1
), claimed AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $3)
    FROM picked WHERE d.id = picked.id
    RETURNING d.*
), abandoned AS (
    UPDATE webhook_attempts a SET outcome = $4, error = $5
    FROM claimed c WHERE a.delivery_id = c.id AND a.outcome IS NULL
), started AS (
    INSERT INTO webhook_attempts (delivery_id, number) SELECT id, attempts FROM claimed
)
SELECT c.id, c.attempts, c.created_at, c.event_id, c.endpoint_id,
       e.url, e.enabled, e.secret,
       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret,
       v.type, v.job, v.body, v.created_at AS event_created_at
FROM claimed c
JOIN webhook_endpoints e ON e.id = c.endpoint_id
JOIN webhook_events v ON v.id = c.event_id;

-- name: save_event_body
-- The first rendering wins, so every delivery and retry of an event sends the same bytes.
UPDATE webhook_events SET body = $2 WHERE id = $1 AND body IS NULL RETURNING body;

-- name: get_event_body
SELECT body FROM webhook_events WHERE id = $1;

-- name: record_attempt
UPDATE webhook_attempts
SET outcome = $3, response_status = $4, response_excerpt = $5, error = $6,
    duration_ms = $7, next_attempt_at = $8
WHERE delivery_id = $1 AND number = $2;

-- name: settle_delivery
-- After attempt $2 the delivery is $3; a pending one waits until $4, the others are
-- finished. Fenced by the attempt: a worker whose lease lapsed changes nothing.
UPDATE webhook_deliveries
SET status = $3, next_attempt_at = coalesce($4, next_attempt_at), lease_until = NULL,
    finished_at = CASE WHEN $4::timestamptz IS NULL THEN now() END
WHERE id = $1 AND attempts = $2 AND finished_at IS NULL
RETURNING id;

-- name: insert_ping
-- An event of its own (body ready) and its one delivery, to endpoint $6.
WITH event AS (
    INSERT INTO webhook_events (id, org_id, type, body, created_at)
    VALUES ($1, $2, $3, $4, $7)
    RETURNING id
)
INSERT INTO webhook_deliveries (id, endpoint_id, event_id)
SELECT $5, $6, id FROM event
RETURNING *;

-- name: list_deliveries
-- One endpoint's deliveries, newest first, after the keyset cursor ($3, $4); $2 filters
-- by status.
SELECT d.*, v.type, v.job_id FROM webhook_deliveries d
JOIN webhook_events v ON v.id = d.event_id
WHERE d.endpoint_id = $1
  AND ($2::text IS NULL OR d.status = $2)
  AND ($3::timestamptz IS NULL OR (d.created_at, d.id) < ($3, $4::uuid))
ORDER BY d.created_at DESC, d.id DESC
LIMIT $5;

-- name: list_attempts
SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[]) ORDER BY delivery_id, number;

-- name: purge_deliveries
-- The log keeps finished deliveries $1 days; then their events go when nothing points at them.
DELETE FROM webhook_deliveries WHERE finished_at < now() - make_interval(days => $1);

-- name: purge_events
DELETE FROM webhook_events v
WHERE created_at < now() - make_interval(days => $1)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = v.id);

-- name: delivery_backlog
-- For /metrics: deliveries not finished (waiting, retrying or in flight), the age in
-- seconds of the oldest of them, and deliveries that failed for good in the last $1 s.
SELECT
    (SELECT count(*) FROM webhook_deliveries WHERE finished_at IS NULL) AS unfinished,
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
     FROM webhook_deliveries WHERE finished_at IS NULL) AS oldest_seconds,
    (SELECT count(*) FROM webhook_deliveries
     WHERE status = 'failed' AND finished_at > now() - make_interval(secs => $1)) AS failed;
