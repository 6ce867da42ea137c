"""Every POST that takes an Idempotency-Key checks it the same way, before any work."""

from __future__ import annotations

import pytest

from services.core.deps import Deps
from tests.conftest import WorkerRun
from tests.e2e.imports_helpers import Client, imported, orders_csv


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_a_key_outside_1_to_200_characters_is_refused_everywhere(
    client: Client, auth: dict[str, str], run_worker: WorkerRun, deps: Deps, key: str
) -> None:
    doc = await imported(client, auth, run_worker, orders_csv(2))
    bad = {**auth, "Idempotency-Key": key}
    answers = [
        await client.post(
            "/v1/exports", headers=bad, json={"dataset": "bookkeeping_records", "format": "csv"}
        ),
        await client.post(
            "/v1/imports?dataset=bookkeeping_records&account_id=main",
            headers={**bad, "Content-Type": "text/csv"},
            content=orders_csv(2),
        ),
        await client.post(f"/v1/imports/{doc['id']}/commit", headers=bad),
    ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["errors"] == [
            {"field": "Idempotency-Key", "message": "1 to 200 characters"}
        ]
    assert await deps.db.fetchval("SELECT count(*) FROM jobs") == 1  # the import alone
    assert (await client.get(f"/v1/imports/{doc['id']}", headers=auth)).json()["status"] == (
        "validated"
    )


async def test_the_longest_key_is_accepted(client: Client, auth: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "k" * 200}
    body = {"dataset": "bookkeeping_records", "format": "csv"}
    first = await client.post("/v1/exports", headers=headers, json=body)
    again = await client.post("/v1/exports", headers=headers, json=body)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
