-- Column mappings users accepted, per org and set of headers; suggested first next time.
CREATE TABLE import_mappings (
    org_id      text NOT NULL,
    header_key  text NOT NULL,          -- sha256 of the dataset and the sorted header names
    dataset     text NOT NULL,
    headers     text[] NOT NULL,
    mapping     jsonb NOT NULL,         -- {source column: field or null}
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, header_key)
);
