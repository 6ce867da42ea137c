-- The api's /metrics counts the deliveries that failed for good lately (an alert on a
-- receiver that stopped answering); finished ones are otherwise only read per endpoint.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (finished_at)
    WHERE status = 'failed';
