"""Imports through HTTP and a real worker, with the sample files of real sellers."""

from __future__ import annotations

import csv
import io
import json

import pytest

from services.core.deps import Deps
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import (
    DATA,
    Client,
    download,
    event_types,
    imported,
    records,
)

pytestmark = pytest.mark.parametrize("storage_backend", ["local", "s3"], indirect=True)


async def test_errors_are_reported_with_the_lines_a_person_sees(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    expected = json.loads((DATA / "orders_with_errors.expected.json").read_text())
    doc = await imported(client, auth, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    assert doc["status"] == "validated", doc
    assert doc["totals"] == {"rows": 60, "valid": 53, "invalid": 7, "skipped_lines": 0}
    got: dict[str, list[str]] = {}
    for error in doc["errors"]:
        got.setdefault(str(error["line"]), []).append(f"{error['field']}: {error['message']}")
    assert got == expected["invalid_lines"]
    # The preview shows the rows as mapped, the bad value as it was typed.
    by_line = {row["line"]: row for row in doc["preview"]}
    assert by_line[11]["errors"] == {"qty": "not a whole number"}
    assert by_line[11]["values"]["qty"] == "two"
    assert by_line[2]["values"]["sale_price"] == "157.94"
    formula = by_line[expected["literal_formula_line"]]
    assert formula["errors"] == {}
    assert formula["values"]["item_name"] == '=HYPERLINK("http://evil.example","click")'

    text = (await download(client, auth, doc["links"]["error_report"])).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["_row"] for r in rows] == ["6", "11", "16", "21", "26", "31", "36"]
    assert rows[1]["qty"] == "two"
    assert rows[1]["_errors"] == "qty: not a whole number"
    assert rows[4]["_errors"] == "ebay_order_id: duplicate of line 25"
    assert list(rows[0])[:6] == [
        "ebay_order_id",
        "sale_date",
        "item_name",
        "qty",
        "sale_price",
        "status",
    ]
    assert "validated" in await event_types(deps, doc["id"])
    assert await records(deps) == []
