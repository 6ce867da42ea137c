-- Direct uploads: a client asks for an upload URL (POST /v1/uploads), PUTs the file
-- straight to storage (S3, or the api for the local folder), then starts an import from
-- it. The row says whose it is, what was promised (size, type) and until when; used_by
-- is the import it became (an upload is used once).
CREATE TABLE uploads (
    id            uuid PRIMARY KEY,
    org_id        text NOT NULL,
    user_id       text NOT NULL,
    filename      text NOT NULL,
    content_type  text NOT NULL,
    bytes         bigint NOT NULL CHECK (bytes > 0),
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    used_by       uuid,
    used_at       timestamptz
);

-- The cron's scan for uploads never used: their files are deleted after expiry.
CREATE INDEX uploads_unused ON uploads (expires_at) WHERE used_at IS NULL;
