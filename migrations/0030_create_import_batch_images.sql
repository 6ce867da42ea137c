-- Commit modes: 'insert' adds the file's records; 'upsert' also updates the live records
-- of the account that have the same natural key; 'skip_existing' leaves those alone.
-- An upsert keeps each record it updates as it was before (its image, a jsonb row), so a
-- rollback can put it back exactly, every column.
ALTER TABLE import_batches
    ADD COLUMN mode text NOT NULL DEFAULT 'insert'
        CHECK (mode IN ('insert', 'upsert', 'skip_existing')),
    ADD COLUMN updated_count integer NOT NULL DEFAULT 0,
    ADD COLUMN skipped_existing_count integer NOT NULL DEFAULT 0;

CREATE TABLE import_batch_images (
    batch_id    uuid NOT NULL REFERENCES import_batches (id) ON DELETE CASCADE,
    record_key  text NOT NULL,      -- the record's primary key, as text (any dataset)
    image       jsonb NOT NULL,     -- to_jsonb(record) before the import updated it
    PRIMARY KEY (batch_id, record_key)
);
