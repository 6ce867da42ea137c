-- Column sets a person saved for their exports, beside the dataset's own presets.
CREATE TABLE export_presets (
    id          uuid PRIMARY KEY,
    org_id      text NOT NULL,
    user_id     text NOT NULL,
    dataset     text NOT NULL,
    name        text NOT NULL,
    columns     text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, user_id, dataset, name)
);
