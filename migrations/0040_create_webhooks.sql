-- Webhooks (services/core/webhooks): endpoints an org registered, the events its jobs
-- caused, one delivery per event and endpoint, and every attempt at a delivery.
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY,
    org_id          text NOT NULL,
    url             text NOT NULL,
    events          text[] NOT NULL,
    description     text,
    enabled         boolean NOT NULL DEFAULT true,
    -- Signing secrets: the current one, and the one it replaced while its grace lasts.
    secret          text NOT NULL,
    previous_secret text,
    previous_secret_until timestamptz,
    -- Idempotency-Key of the request that created the endpoint, and of the one that set
    -- the current secret: a retried request gets the same answer instead of another secret.
    idempotency_key text,
    request_hash    text,
    secret_key      text,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_idempotency_key UNIQUE (org_id, idempotency_key)
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id, created_at, id);

-- Which change of a job is which event. services/core/webhooks/endpoints.py EVENTS
-- says the same (a test holds them equal).
CREATE TABLE webhook_event_types (
    kind   text NOT NULL,
    status text NOT NULL,
    type   text NOT NULL,
    PRIMARY KEY (kind, status)
);
INSERT INTO webhook_event_types (kind, status, type) VALUES
    ('export', 'succeeded', 'job.succeeded'),
    ('export', 'failed', 'job.failed'),
    ('import', 'failed', 'job.failed'),
    ('export', 'cancelled', 'job.cancelled'),
    ('import', 'cancelled', 'job.cancelled'),
    ('import', 'validated', 'import.validated'),
    ('import', 'committed', 'import.committed'),
    ('import', 'rolled_back', 'import.rolled_back');

-- The outbox: an event and its deliveries are written by the transaction that changed the
-- job, so a crash between the change and the delivery loses nothing.
CREATE TABLE webhook_events (
    id          uuid PRIMARY KEY,
    org_id      text NOT NULL,
    type        text NOT NULL,
    job_id      uuid,
    job         jsonb,          -- the job row as the change left it
    body        bytea,          -- the JSON sent; rendered once, so every retry sends the same
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,   -- Ferry-Delivery: the same for every retry
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,     -- also the fencing token of a claim
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE finished_at IS NULL;
-- Deliveries in flight (a claim counts them per endpoint against the limit).
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id)
    WHERE finished_at IS NULL AND lease_until IS NOT NULL;
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number          integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    duration_ms     integer,
    outcome         text,       -- NULL while in flight
    response_status integer,
    response_excerpt text,
    error           text,
    next_attempt_at timestamptz,
    PRIMARY KEY (delivery_id, number)
);

-- A job's status change that is an event becomes an event row and a delivery for each
-- enabled endpoint of its org that subscribed to it, in the same transaction.
CREATE FUNCTION record_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    event_type text;
    event_id   uuid;
BEGIN
    SELECT t.type INTO event_type FROM webhook_event_types t
    WHERE t.kind = NEW.kind AND t.status = NEW.status;
    IF event_type IS NULL OR NOT EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.org_id = NEW.org_id AND e.enabled AND event_type = ANY (e.events)
    ) THEN
        RETURN NULL;
    END IF;
    event_id := gen_random_uuid();
    INSERT INTO webhook_events (id, org_id, type, job_id, job)
    VALUES (event_id, NEW.org_id, event_type, NEW.id, to_jsonb(NEW));
    INSERT INTO webhook_deliveries (id, endpoint_id, event_id)
    SELECT gen_random_uuid(), e.id, event_id FROM webhook_endpoints e
    WHERE e.org_id = NEW.org_id AND e.enabled AND event_type = ANY (e.events);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_webhook_events
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION record_webhook_event();
