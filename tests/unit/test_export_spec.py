"""Export requests are checked and normalised once; file names are safe."""

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.core.datasets import load_registry
from services.core.errors import InvalidInput
from services.core.exports.spec import ExportSpec, build_spec
from services.core.settings import Settings
from services.core.storage import content_disposition
from services.worker.jobs.maintenance import remove_stale_files

DS = load_registry(Settings().datasets_dir).get("bookkeeping_records")


def test_the_same_request_always_gives_the_same_params() -> None:
    one = build_spec(
        DS,
        format="csv",
        preset="financial",
        filters={"status": "shipped,PAID,shipped", "profit_min": "10", "account_id": "main"},
    )
    two = build_spec(
        DS,
        format="csv",
        preset="financial",
        filters={"account_id": "main", "profit_min": 10.0, "status": ["paid", "shipped"]},
    )
    assert one == two
    assert one.filters == {
        "account_id": "main",
        "profit_min": "10.00",
        "status": ["paid", "shipped"],
    }
    assert ExportSpec.from_params(DS.name, one.to_params()) == one


def test_every_bad_filter_is_named_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        build_spec(
            DS,
            format="json",
            filters={"sale_date_to": "tomorrow", "qty_min": "two", "colour": "red"},
        )
    assert [e["field"] for e in caught.value.errors or []] == ["colour", "qty_min", "sale_date_to"]


def test_file_names_are_safe_and_keep_their_unicode_for_filename_star() -> None:
    spec = build_spec(
        DS, format="csv", filters={"account_id": "Café/../../etc"}, compression="gzip"
    )
    name = spec.filename(at=datetime(2026, 1, 26, 10, 15, tzinfo=UTC))
    assert name == "bookkeeping_records-Café_.._.._etc-20260126-101500.csv.gz"
    assert "/" not in name
    header = content_disposition(name)
    assert header.startswith('attachment; filename="bookkeeping_records-Caf_')
    assert "filename*=UTF-8''bookkeeping_records-Caf%C3%A9_" in header


def test_stale_half_written_xlsx_files_are_removed(tmp_path: Path) -> None:
    old, new, other = (tmp_path / n for n in ("ferry-export-a.xlsx", "ferry-export-b.xlsx", "x"))
    for path in (old, new, other):
        path.write_bytes(b"PK")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    os.utime(other, (day_ago, day_ago))
    assert remove_stale_files(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ferry-export-b.xlsx", "x"]
