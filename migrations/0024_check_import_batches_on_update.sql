-- 0023 checks the batch of inserted records; an UPDATE that points a record at a batch
-- must be checked too, or the foreign key 0023 replaced promised more than the trigger.
-- Transition tables cannot be limited to a column, so the check runs for every UPDATE
-- statement: one anti-join of the updated rows against import_batches.
CREATE TRIGGER bookkeeping_records_batch_exists_on_update
    AFTER UPDATE ON bookkeeping_records
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION check_record_batches();
