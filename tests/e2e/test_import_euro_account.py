"""A seller who keeps books in euros, in Berlin: the dataset file says so, imports follow."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import msgspec
import pytest

from services.core.deps import Deps
from services.core.settings import PACKAGE_DIR, Settings
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import Client, imported


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """bookkeeping_records as a deployment in the euro zone declares it."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    toml = (PACKAGE_DIR / "datasets" / "bookkeeping_records.toml").read_text()
    toml = toml.replace('currency = "USD"', 'currency = "EUR"')
    toml = toml.replace('time_zone = "UTC"', 'time_zone = "Europe/Berlin"')
    (folder / "bookkeeping_records.toml").write_text(toml)
    return msgspec.structs.replace(settings, datasets_dir=str(folder))


@pytest.mark.parametrize(
    ("price", "fees", "cents", "fee_cents"),
    [
        ("1.234,56 €", "3,99 €", 123456, 399),
        ("€ 1.234,56", "€ 3,99", 123456, 399),
        ("EUR 1.234,56", "0,50 EUR", 123456, 50),
        ("1 234,56 €", "-3,99 €", 123456, -399),
        ("(1.234,56 €)", "3,99-", -123456, -399),
    ],
)
async def test_euro_amounts_with_decimal_commas(
    client: Client,
    auth: dict[str, str],
    run_worker: WorkerRun,
    deps: Deps,
    price: str,
    fees: str,
    cents: int,
    fee_cents: int,
) -> None:
    content = (
        "Bestellnummer;Datum;Artikel;Preis;Gebühren\n"
        f"1-1;01.03.2026;Lampe;{price};{fees}\n"
        f"1-2;02.03.2026;Tisch;{price};{fees}\n"
    ).encode()
    doc = await imported(client, auth, run_worker, content)
    assert doc["account"]["currency"] == "EUR"
    mapping = {"Bestellnummer": "ebay_order_id", "Datum": "sale_date", "Artikel": "item_name"}
    mapping |= {"Preis": "sale_price", "Gebühren": "fees"}
    answer = await client.put(f"/v1/imports/{doc['id']}/mapping", headers=auth, json=mapping)
    assert answer.status_code == 202
    await run_worker()
    doc = (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()
    assert doc["totals"] == {"rows": 2, "valid": 2, "invalid": 0, "skipped_lines": 0}, doc["errors"]
    assert doc["formats"]["sale_price"] == {"decimal_mark": "comma"}
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    await run_worker()
    row = await deps.db.fetchrow(
        "SELECT sum(sale_price_cents) AS p, sum(fees_cents) AS f FROM bookkeeping_records"
    )
    assert row is not None
    assert (row["p"], row["f"]) == (2 * cents, 2 * fee_cents)


async def test_dollars_and_francs_are_refused_in_a_euro_account(
    client: Client, auth: dict[str, str], run_worker: WorkerRun
) -> None:
    content = (
        b"Order ID;Date;Title;Price\n"
        b"1-1;2026-03-01;Lamp;12.00 \xe2\x82\xac\n"
        b"1-2;2026-03-01;Desk;CHF 12.00\n"
        b"1-3;2026-03-01;Chair;$12.00\n"
    )
    doc = await imported(client, auth, run_worker, content)
    assert [(e["line"], e["message"]) for e in doc["errors"]] == [
        (3, "in CHF (CHF), but this account's currency is EUR"),
        (4, "in dollars ($), but this account's currency is EUR"),
    ]


async def test_timestamps_count_on_their_day_in_berlin(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps
) -> None:
    content = (
        b"order_id,createdAt,title,price\n"
        b"1-1,2026-02-28T23:30:00Z,Lamp,1.00\n"  # 00:30 on 1 March in Berlin
        b"1-2,2026-03-01T22:59:00Z,Desk,1.00\n"  # 23:59 on 1 March in Berlin
        b"1-3,2026-06-30T22:30:00Z,Chair,1.00\n"  # summer time: 00:30 on 1 July
    )
    doc = await imported(client, auth, run_worker, content)
    assert doc["formats"]["sale_date"]["time_zone"] == "Europe/Berlin"
    assert doc["account"] == {"id": "main", "currency": "EUR", "time_zone": "Europe/Berlin"}
    await client.post(f"/v1/imports/{doc['id']}/commit", headers=auth)
    await run_worker()
    days = await deps.db.fetch("SELECT sale_date FROM bookkeeping_records ORDER BY ebay_order_id")
    assert [r["sale_date"] for r in days] == [date(2026, 3, 1), date(2026, 3, 1), date(2026, 7, 1)]
