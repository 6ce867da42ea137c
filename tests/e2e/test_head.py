"""HEAD wherever GET returns a file: the same status and headers, no body, and a
direct export's HEAD counts its rows without exporting them."""

from __future__ import annotations

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import WorkerRun
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import DATA, imported

URL = "/v1/datasets/bookkeeping_records/export"
SAME = ("content-type", "x-ferry-rows", "cache-control")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, direct_export_max_rows=50)


def disposition_name(headers: object) -> str:
    value = str(headers["content-disposition"])  # type: ignore[index]
    return value.rsplit("''", 1)[-1].rsplit("-", 2)[0]  # the name without its timestamp


@pytest.mark.parametrize("file", ["export.csv", "export.xlsx", "export.csv?gzip=true"])
async def test_head_of_a_direct_export_answers_like_get_without_a_body(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, file: str
) -> None:
    await seed_records(deps, "acme", "main", 30)
    url = f"/v1/datasets/bookkeeping_records/{file}{'&' if '?' in file else '?'}account_id=main"
    head = await client.head(url, headers=auth)
    got = await client.get(url, headers=auth)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert got.content
    for name in SAME:
        assert head.headers[name] == got.headers[name], name
    # GET streams the file, its length unknown until written: HEAD must not claim one.
    assert "content-length" not in got.headers
    assert "content-length" not in head.headers
    assert head.headers["x-ferry-rows"] == "30"
    assert disposition_name(head.headers) == disposition_name(got.headers)


async def test_head_of_a_too_large_direct_export_is_its_413(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps
) -> None:
    await seed_records(deps, "acme", "main", 60)
    head = await client.head(f"{URL}.csv?account_id=main", headers=auth)
    assert head.status_code == 413
    assert head.content == b""
    assert head.headers["content-type"].startswith("application/problem+json")


async def queued_export(client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps) -> str:
    """A background CSV export of 10 seeded records, queued; its download URL."""
    await seed_records(deps, "acme", "main", 10)
    body = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "main"}
    job = (await client.post("/v1/exports", headers=auth, json=body)).json()
    return f"/v1/exports/{job['id']}/download"


async def test_head_of_a_download_and_an_error_report(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, run_worker: WorkerRun
) -> None:
    url = await queued_export(client, auth, deps)
    early = await client.head(url, headers=auth)
    assert early.status_code == 409  # not succeeded yet, as GET says
    await run_worker()
    head = await client.head(url, headers=auth)
    got = await client.get(url, headers=auth)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(got.content) > 0
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-disposition"] == got.headers["content-disposition"]

    doc = await imported(client, auth, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    report = doc["links"]["error_report"]
    head = await client.head(report, headers=auth)
    got = await client.get(report, headers=auth)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(got.content)
    assert head.headers["content-disposition"] == got.headers["content-disposition"]


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
async def test_head_of_a_download_on_s3_is_the_redirect_get_answers(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Deps, run_worker: WorkerRun
) -> None:
    url = await queued_export(client, auth, deps)
    await run_worker()
    head = await client.head(url, headers=auth, follow_redirects=False)
    got = await client.get(url, headers=auth, follow_redirects=False)
    assert head.status_code == got.status_code == 307
    assert head.content == b""
    assert head.headers["location"].split("?")[0] == got.headers["location"].split("?")[0]
    assert head.headers["cache-control"] == got.headers["cache-control"] == "no-store"
    assert head.headers["content-length"] == got.headers["content-length"] == "0"
