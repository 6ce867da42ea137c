"""Health, datasets, job history, OpenAPI and problem responses, through HTTP."""

import uuid
from typing import Any

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.app import create_app
from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import JobFactory

PROBLEM = "application/problem+json"


async def test_healthz_needs_no_token(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_each_dependency(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "postgres": True,
        "redis": True,
        "storage": True,
    }


async def test_readyz_is_503_naming_the_failing_dependency(
    settings: Settings, deps: Deps, moto_endpoint: str
) -> None:
    broken = msgspec.structs.replace(
        settings,
        s3_bucket="no-such-bucket",
        s3_endpoint_url=moto_endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
    )
    async with AsyncTestClient(app=create_app(broken)) as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["postgres"]["ok"]
    assert checks["redis"]["ok"]
    assert not checks["storage"]["ok"]
    assert "404" in checks["storage"]["error"] or "Not Found" in checks["storage"]["error"]


async def test_metrics_show_requests_and_jobs(
    client: AsyncTestClient[Litestar], auth: dict[str, str], make_job: JobFactory
) -> None:
    await make_job()
    await client.get("/v1/datasets", headers=auth)
    text = (await client.get("/metrics")).text
    assert 'ferry_jobs{kind="export",status="queued"} 1.0' in text
    assert "ferry_queue_depth" in text
    assert 'ferry_requests_total{app_name="ferry",method="GET",path="/v1/datasets"' in text


async def test_datasets_list_fields_presets_and_the_callers_permissions(
    client: AsyncTestClient[Litestar], make_token: Any
) -> None:
    token = make_token(perms=["bookkeeping_records.read"])
    response = await client.get("/v1/datasets", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    [ds] = response.json()["items"]
    assert ds["name"] == "bookkeeping_records"
    assert ds["permissions"] == {"read": True, "write": False}
    assert set(ds["presets"]) == {"essential", "financial", "all"}
    fields = {f["name"]: f for f in ds["fields"]}
    assert fields["sale_price"]["type"] == "money"
    assert fields["profit"]["computed"] is True
    assert fields["status"]["values"] == ["paid", "shipped", "delivered", "cancelled", "refunded"]

    one = await client.get(
        "/v1/datasets/bookkeeping_records", headers={"Authorization": f"Bearer {token}"}
    )
    assert one.json() == ds


async def test_an_unknown_dataset_is_a_problem_404(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    response = await client.get("/v1/datasets/invoices", headers=auth)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == "urn:ferry:problem:not-found"
    assert body["detail"] == "no dataset named 'invoices'"
    assert body["instance"] == "/v1/datasets/invoices"


async def test_a_malformed_query_parameter_is_a_problem_naming_it(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    response = await client.get("/v1/jobs?limit=lots", headers=auth)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert [e["field"] for e in response.json()["errors"]] == ["limit"]

    response = await client.get("/v1/jobs?status=running,flying", headers=auth)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "status", "message": "unknown status 'flying'"}]

    response = await client.get("/v1/jobs?cursor=%%%", headers=auth)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


async def test_a_malformed_body_is_a_problem_naming_the_body_or_its_member(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    json_auth = {**auth, "Content-Type": "application/json"}
    for url in ("/v1/exports", f"/v1/imports/{uuid.uuid4()}/commit"):
        truncated = await client.post(url, headers=json_auth, content=b'{"dataset": "bo')
        assert truncated.status_code == 400
        assert truncated.headers["content-type"].startswith(PROBLEM)
        assert truncated.json()["errors"] == [{"field": "body", "message": "not JSON"}]
        assert truncated.json()["detail"] == "the body is not JSON: Input data was truncated"

    empty = await client.post("/v1/exports", headers=json_auth, content=b"")
    assert [(e["field"], e["message"]) for e in empty.json()["errors"]] == [
        ("body", "a JSON body is required")
    ]
    # An error at the top of the object names the member, not Litestar's "data".
    missing = await client.post("/v1/uploads", headers=auth, json={})
    assert [e["field"] for e in missing.json()["errors"]] == ["filename"]
    unknown = await client.post("/v1/uploads", headers=auth, json={"filename": "a.csv", "x": 1})
    assert unknown.status_code == 400
    assert [e["field"] for e in unknown.json()["errors"]] == ["x"]


async def test_an_unknown_route_is_a_problem_too(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_job_history_pages_newest_first(
    client: AsyncTestClient[Litestar], auth: dict[str, str], make_job: JobFactory
) -> None:
    made = []
    for n in range(5):
        job = await make_job(params={"n": n})
        made.append(str(job.id))
    seen: list[str] = []
    url = "/v1/jobs?limit=2&kind=export"
    while True:
        page = (await client.get(url, headers=auth)).json()
        seen += [item["id"] for item in page["items"]]
        if not page["next_cursor"]:
            break
        url = f"/v1/jobs?limit=2&kind=export&cursor={page['next_cursor']}"
    assert seen == list(reversed(made))
    first = (await client.get("/v1/jobs?limit=1", headers=auth)).json()["items"][0]
    assert first["queue_position"] == 5  # four older jobs of alice wait before it
    assert first["links"]["self"] == f"/v1/jobs/{made[-1]}"
    assert first["links"]["events"].startswith(f"/v1/jobs/{made[-1]}/events?token=")
    assert first["links"]["download"] is None


async def test_openapi_documents_every_route_with_bearer_auth(
    client: AsyncTestClient[Litestar],
) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/v1/datasets", "/v1/datasets/{name}", "/v1/jobs", "/v1/jobs/{job_id}", "/readyz"):
        assert path in spec["paths"], path
    ui = await client.get("/schema")
    assert ui.status_code == 200
    assert "text/html" in ui.headers["content-type"]
