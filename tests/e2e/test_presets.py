"""Export presets of one's own through HTTP: saved per org, user and dataset."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.core.presets import MAX_PER_DATASET
from tests.conftest import TokenFactory

DATASET = "bookkeeping_records"
PROBLEM = "application/problem+json"
MARGINS = ["ebay_order_id", "sale_price", "profit"]


async def save(client: AsyncTestClient[Litestar], auth: dict[str, str], **body: Any) -> Any:
    return await client.post("/v1/presets", headers=auth, json={"dataset": DATASET, **body})


async def test_a_saved_preset_is_listed_and_exports_its_columns(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    response = await save(client, auth, name="  Margins ", columns=[*MARGINS, "profit"])
    assert response.status_code == 201, response.text
    preset = response.json()
    assert preset["name"] == "Margins"  # trimmed
    assert preset["columns"] == MARGINS  # repeats dropped, order kept
    listed = (await client.get(f"/v1/presets?dataset={DATASET}", headers=auth)).json()
    assert listed["items"] == [preset]
    # An export with its columns has exactly them, labelled.
    url = f"/v1/datasets/{DATASET}/export.csv?columns={','.join(preset['columns'])}"
    exported = await client.get(url, headers=auth)
    assert exported.text.splitlines()[0] == "eBay Order ID,Sale Price,Profit"


async def test_presets_are_the_callers_own(
    client: AsyncTestClient[Litestar], auth: dict[str, str], make_token: TokenFactory
) -> None:
    mine = (await save(client, auth, name="Margins", columns=MARGINS)).json()
    bob = {"Authorization": f"Bearer {make_token(sub='bob')}"}
    other_org = {"Authorization": f"Bearer {make_token(org='globex')}"}
    for headers in (bob, other_org):
        assert (await client.get("/v1/presets", headers=headers)).json() == {"items": []}
        gone = await client.delete(f"/v1/presets/{mine['id']}", headers=headers)
        assert gone.status_code == 404
        assert gone.headers["content-type"] == PROBLEM
    # Bob may use the same name for his own.
    assert (await save(client, bob, name="Margins", columns=["status"])).status_code == 201
    assert [p["id"] for p in (await client.get("/v1/presets", headers=auth)).json()["items"]] == [
        mine["id"]
    ]


async def test_saving_again_is_harmless_and_a_taken_name_is_a_conflict(
    client: AsyncTestClient[Litestar], auth: dict[str, str]
) -> None:
    first = (await save(client, auth, name="Margins", columns=MARGINS)).json()
    again = await save(client, auth, name="Margins", columns=MARGINS)
    assert again.status_code == 200
    assert again.json() == first
    clash = await save(client, auth, name="Margins", columns=["status"])
    assert clash.status_code == 409
    assert clash.headers["content-type"] == PROBLEM
    assert clash.json()["errors"] == [{"field": "name", "message": "already taken"}]


async def test_deleting_a_preset(client: AsyncTestClient[Litestar], auth: dict[str, str]) -> None:
    preset = (await save(client, auth, name="Margins", columns=MARGINS)).json()
    assert (await client.delete(f"/v1/presets/{preset['id']}", headers=auth)).status_code == 204
    assert (await client.get("/v1/presets", headers=auth)).json() == {"items": []}
    again = await client.delete(f"/v1/presets/{preset['id']}", headers=auth)
    assert again.status_code == 404
    malformed = await client.delete("/v1/presets/not-a-uuid", headers=auth)
    assert malformed.status_code == 404
    assert malformed.headers["content-type"] == PROBLEM


async def test_bad_presets_are_refused_naming_the_field(
    client: AsyncTestClient[Litestar], auth: dict[str, str], make_token: TokenFactory
) -> None:
    cases = [
        ({"name": "", "columns": MARGINS}, "name"),
        ({"name": "x" * 61, "columns": MARGINS}, "name"),
        ({"name": "financial", "columns": MARGINS}, "name"),  # a dataset preset's name
        ({"name": "Mine", "columns": []}, "columns"),
        ({"name": "Mine", "columns": ["ebay_order_id", "colour"]}, "columns"),
    ]
    for body, field in cases:
        response = await save(client, auth, **body)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM
        assert field in {e["field"] for e in response.json()["errors"]}, response.json()
    unknown = await client.post(
        "/v1/presets", headers=auth, json={"dataset": "nope", "name": "x", "columns": ["a"]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [{"field": "dataset", "message": "unknown dataset"}]
    listing = await client.get("/v1/presets?dataset=nope", headers=auth)
    assert listing.status_code == 422
    extra = await save(client, auth, name="x", columns=MARGINS, colour="red")
    assert extra.status_code == 400
    assert extra.headers["content-type"] == PROBLEM
    writer = {"Authorization": f"Bearer {make_token(perms=[f'{DATASET}.write'])}"}
    assert (await save(client, writer, name="x", columns=MARGINS)).status_code == 403
    assert (await client.get("/v1/presets")).status_code == 401


async def test_one_person_keeps_a_bounded_number_of_presets(
    client: AsyncTestClient[Litestar], auth: dict[str, str], deps: Any
) -> None:
    await deps.db.execute(
        "INSERT INTO export_presets (id, org_id, user_id, dataset, name, columns) "
        "SELECT gen_random_uuid(), 'acme', 'alice', $1, 'p' || n, ARRAY['status'] "
        "FROM generate_series(1, $2) n",
        DATASET,
        MAX_PER_DATASET,
    )
    response = await save(client, auth, name="one more", columns=MARGINS)
    assert response.status_code == 409
    assert "delete one first" in response.json()["detail"]


async def test_openapi_documents_the_preset_routes(client: AsyncTestClient[Litestar]) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    assert {"get", "post"} <= set(spec["paths"]["/v1/presets"])
    assert "delete" in spec["paths"]["/v1/presets/{preset_id}"]
    body = spec["paths"]["/v1/presets"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/PresetRequest"}
    assert set(spec["components"]["schemas"]["Preset"]["properties"]) == {
        "id", "dataset", "name", "columns", "created_at",
    }  # fmt: skip
