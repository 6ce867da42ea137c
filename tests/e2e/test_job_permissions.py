"""One rule for every job action, on every job route.

Anyone who may read or write a job's dataset sees the job (its document, events,
file, error report); only the user who started it changes it (cancel, mapping,
commit, rollback), or an admin (``ferry.admin`` or ``<dataset>.admin``); another
org never learns the job exists (404).
"""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.core.auth import Principal, authorize
from services.core.errors import Forbidden
from services.core.jobs import Job
from tests.conftest import JobFactory, TokenFactory, WorkerRun
from tests.e2e.imports_helpers import DATA, imported

DS = "bookkeeping_records"
CALLERS: dict[str, dict[str, Any]] = {
    "owner": {"sub": "alice", "org": "acme", "perms": [f"{DS}.read", f"{DS}.write"]},
    "writer": {"sub": "bob", "org": "acme", "perms": [f"{DS}.read", f"{DS}.write"]},
    "reader": {"sub": "carol", "org": "acme", "perms": [f"{DS}.read"]},
    "admin": {"sub": "dave", "org": "acme", "perms": ["ferry.admin"]},
    "dataset admin": {"sub": "erin", "org": "acme", "perms": [f"{DS}.admin"]},
    "other org": {"sub": "alice", "org": "globex", "perms": [f"{DS}.read", f"{DS}.write"]},
}
SEES = {"owner", "writer", "reader", "admin", "dataset admin"}
CHANGES = {"owner", "admin", "dataset admin"}


@pytest.fixture
async def world(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    run_worker: WorkerRun,
) -> dict[str, Any]:
    """Alice's succeeded export and her validated import with an error report."""
    owner = {"Authorization": f"Bearer {make_token(**CALLERS['owner'])}"}
    export = await client.post("/v1/exports", json={"dataset": DS, "format": "csv"}, headers=owner)
    assert export.status_code == 202
    doc = await imported(client, owner, run_worker, (DATA / "orders_with_errors.csv").read_bytes())
    assert doc["status"] == "validated"
    assert doc["links"]["error_report"] is not None
    return {"export": export.json()["id"], "import": doc["id"]}


def allowed(status: int, caller: str, who: set[str]) -> None:
    if caller == "other org":
        assert status == 404
    elif caller in who:
        assert status not in (401, 403, 404)
    else:
        assert status == 403


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_seeing_a_job_needs_the_dataset_not_the_ownership(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    world: dict[str, Any],
    caller: str,
) -> None:
    headers = {"Authorization": f"Bearer {make_token(**CALLERS[caller])}"}
    export, upload = world["export"], world["import"]
    for path in (
        f"/v1/jobs/{export}",
        f"/v1/jobs/{export}/events",  # a succeeded job's stream: its end, then it closes
        f"/v1/exports/{export}/download",
        f"/v1/jobs/{upload}",
        f"/v1/imports/{upload}",
        f"/v1/imports/{upload}/errors.csv",
    ):
        response = await client.get(path, headers=headers, follow_redirects=False)
        allowed(response.status_code, caller, SEES)
        if response.status_code < 300:
            assert response.status_code == 200, path


@pytest.mark.parametrize("caller", list(CALLERS))
async def test_changing_a_job_is_for_its_owner_and_admins(
    client: AsyncTestClient[Litestar],
    make_token: TokenFactory,
    world: dict[str, Any],
    caller: str,
) -> None:
    headers = {"Authorization": f"Bearer {make_token(**CALLERS[caller])}"}
    export, upload = world["export"], world["import"]
    # Each allowed request is refused by the job's state (409) or accepted; never 403.
    cancel = await client.post(f"/v1/jobs/{export}/cancel", headers=headers)
    allowed(cancel.status_code, caller, CHANGES)
    commit = await client.post(f"/v1/imports/{upload}/commit", headers=headers)
    allowed(commit.status_code, caller, CHANGES)
    rollback = await client.post(f"/v1/imports/{upload}/rollback", headers=headers)
    allowed(rollback.status_code, caller, CHANGES)
    mapping = await client.put(f"/v1/imports/{upload}/mapping", json={}, headers=headers)
    allowed(mapping.status_code, caller, CHANGES)
    sheet = await client.put(f"/v1/imports/{upload}/sheet", json={"sheet": "x"}, headers=headers)
    allowed(sheet.status_code, caller, CHANGES)
    cancel = await client.post(f"/v1/jobs/{upload}/cancel", headers=headers)
    allowed(cancel.status_code, caller, CHANGES)
    if caller in CHANGES:
        assert cancel.json()["status"] == "cancelled"
    elif caller != "other org":
        assert "only the user who started this import" in cancel.json()["detail"]


async def test_an_owner_who_lost_the_permission_can_no_longer_change_the_job(
    make_job: JobFactory,
) -> None:
    job: Job = await make_job(kind="import", status="validated")
    alice = Principal(sub="alice", org="acme", perms=frozenset({f"{DS}.read"}))
    authorize(alice, job, "view")
    with pytest.raises(Forbidden, match="write"):
        authorize(alice, job, "commit")
