"""A client that walks away in the middle of a direct download costs nothing lasting."""

from __future__ import annotations

import csv
import io

import httpx
import msgspec
import pytest

from services.core.deps import Deps
from services.core.settings import Settings
from tests.e2e.export_files import seed_records

URL = "/v1/datasets/bookkeeping_records/export.csv?account_id=big"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, direct_export_max_rows=100_000, db_pool_max=3)


async def test_abandoned_downloads_give_their_connections_back(
    live_server: str, deps: Deps, auth: dict[str, str]
) -> None:
    await seed_records(deps, "acme", "big", 60_000)  # about 5 MB: more than one block
    async with httpx.AsyncClient(base_url=live_server, timeout=20) as http:
        for _ in range(6):  # twice the api's pool: a leaked connection would block the rest
            async with http.stream("GET", URL, headers=auth) as response:
                assert response.status_code == 200
                async for _chunk in response.aiter_raw():
                    break  # the user closed the tab
        whole = await http.get(URL, headers=auth)
    assert whole.status_code == 200
    rows = list(csv.reader(io.StringIO(whole.text)))
    assert len(rows) == 60_001
