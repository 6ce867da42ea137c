import re
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.core import jobs
from services.core.datasets import load_registry
from services.core.db.migrate import MIGRATIONS_DIR, migrate
from services.core.errors import SettingsError
from services.core.settings import Settings

SCHEMA = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public'
ORDER BY table_name, column_name
"""
INDEXES = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"


async def test_migrations_apply_to_an_empty_database_and_a_second_run_changes_nothing(
    empty_database_url: str,
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        applied = await migrate(conn)
        assert applied == sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.sql"))
        schema, indexes = await conn.fetch(SCHEMA), await conn.fetch(INDEXES)
        assert {r["table_name"] for r in schema} >= {
            "jobs",
            "import_batches",
            "bookkeeping_records",
        }

        assert await migrate(conn) == []
        assert await conn.fetch(SCHEMA) == schema
        assert await conn.fetch(INDEXES) == indexes
    finally:
        await conn.close()


async def test_an_edited_migration_is_refused(empty_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "0001_create_things.sql").write_text("CREATE TABLE things (id int);")
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await migrate(conn, tmp_path) == ["0001_create_things"]
        (tmp_path / "0001_create_things.sql").write_text("CREATE TABLE things (id bigint);")
        with pytest.raises(SettingsError, match=r"0001_create_things\.sql changed"):
            await migrate(conn, tmp_path)
    finally:
        await conn.close()


async def test_updated_at_follows_edits_but_not_no_op_updates(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO bookkeeping_records (org_id, account_id, ebay_order_id, sale_date, "
            "item_name, sale_price_cents) VALUES ('o', 'a', '1', '2026-01-01', 'x', 100)"
        )
        await conn.execute("UPDATE bookkeeping_records SET item_name = item_name")
        same = await conn.fetchval("SELECT updated_at = created_at FROM bookkeeping_records")
        assert same
        await conn.execute("UPDATE bookkeeping_records SET item_name = 'y'")
        moved = await conn.fetchval("SELECT updated_at > created_at FROM bookkeeping_records")
        assert moved
    finally:
        await conn.close()


async def test_registry_matches_the_migrated_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await load_registry(Settings().datasets_dir).check_schema(conn)
    finally:
        await conn.close()


async def test_job_statuses_match_the_jobs_table(database_url: str) -> None:
    """The enum, the table's CHECK and the reconciler's partial index name the same sets."""
    conn = await asyncpg.connect(database_url)
    try:
        check = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'jobs'::regclass AND pg_get_constraintdef(oid) LIKE '%status%'"
        )
        index = await conn.fetchval(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
            "WHERE indexrelid = 'jobs_active'::regclass"
        )
    finally:
        await conn.close()
    assert set(re.findall(r"'(\w+)'", check)) == set(jobs.JobStatus)
    assert set(re.findall(r"'(\w+)'", index)) == jobs.ACTIVE


async def test_a_dataset_naming_a_missing_column_fails_start_up_naming_it(
    database_url: str, tmp_path: Path
) -> None:
    text = (Path(Settings().datasets_dir) / "bookkeeping_records.toml").read_text()
    (tmp_path / "records.toml").write_text(text.replace('column = "fees_cents"', 'column = "fee"'))
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(SettingsError, match=r"column bookkeeping_records\.fee \(field fees\)"):
            await load_registry(tmp_path).check_schema(conn)
    finally:
        await conn.close()


async def test_a_dataset_with_a_wrong_type_fails_start_up_naming_it(
    database_url: str, tmp_path: Path
) -> None:
    text = (Path(Settings().datasets_dir) / "bookkeeping_records.toml").read_text()
    text = text.replace(
        'name = "qty"\nlabel = "Qty"\ntype = "int"', 'name = "qty"\nlabel = "Qty"\ntype = "date"'
    )
    (tmp_path / "records.toml").write_text(text)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(
            SettingsError, match=r"bookkeeping_records\.qty is integer, but field qty is date"
        ):
            await load_registry(tmp_path).check_schema(conn)
    finally:
        await conn.close()


async def test_a_record_can_only_point_at_an_existing_import_batch(database_url: str) -> None:
    """0023 traded the foreign key for statement-level checks; they must hold like one."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO jobs (id, kind, org_id, user_id, dataset, status) "
            "VALUES ('00000000-0000-0000-0000-000000000001', 'import', 'o', 'u', 'd', 'committed')"
        )
        await conn.execute(
            "INSERT INTO import_batches (id, job_id, org_id, account_id, user_id, dataset, "
            "rollback_until) VALUES ('00000000-0000-0000-0000-0000000000b1', "
            "'00000000-0000-0000-0000-000000000001', 'o', 'a', 'u', 'd', now())"
        )
        insert = (
            "INSERT INTO bookkeeping_records (org_id, account_id, ebay_order_id, sale_date, "
            "item_name, sale_price_cents, import_batch_id) "
            "VALUES ('o', 'a', $1, '2026-01-01', 'x', 100, $2)"
        )
        await conn.execute(insert, "1", uuid.UUID("00000000-0000-0000-0000-0000000000b1"))
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(insert, "2", uuid.uuid4())
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("UPDATE bookkeeping_records SET import_batch_id = $1", uuid.uuid4())
        # Deleting the batch releases its records, as ON DELETE SET NULL did.
        await conn.execute("DELETE FROM import_batches")
        assert await conn.fetchval("SELECT import_batch_id FROM bookkeeping_records") is None
    finally:
        await conn.close()
