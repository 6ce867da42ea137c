"""ferry_client's wire types and calls against the server's own ``/schema/openapi.json``.

Every route the client calls must be there with the parameters and headers it sends,
and every request body it sends must fit the server's schema. Where the server names
the schema of an answer (an object with properties), each field the client reads must
be one the server declares, and each field the client cannot do without must be
required there: the more schemas the server names, the more this test checks.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from ferry_client import models
from ferry_client._base import FORMATS

from tests.e2e.imports_helpers import Client

# (method, path) → what the client sends: query parameters and headers.
CALLS: dict[tuple[str, str], set[str]] = {
    ("get", "/v1/datasets"): set(),
    ("get", "/v1/datasets/{}"): set(),
    ("get", "/v1/datasets/{}/{}"): {"account_id", "columns", "preset", "gzip"},
    ("post", "/v1/exports"): {"Idempotency-Key"},
    ("get", "/v1/exports/{}/download"): set(),
    ("post", "/v1/imports"): {"Idempotency-Key", "dataset", "account_id", "filename", "sheet"},
    ("get", "/v1/imports/{}"): set(),
    ("put", "/v1/imports/{}/mapping"): set(),
    ("put", "/v1/imports/{}/sheet"): set(),
    ("post", "/v1/uploads"): set(),
    ("get", "/v1/imports/{}/errors.csv"): set(),
    ("post", "/v1/imports/{}/commit"): {"Idempotency-Key"},
    ("post", "/v1/imports/{}/rollback"): set(),
    ("get", "/v1/jobs"): {"kind", "status", "limit", "cursor"},
    ("get", "/v1/jobs/{}"): set(),
    ("post", "/v1/jobs/{}/cancel"): set(),
    ("get", "/v1/jobs/{}/events"): {"Last-Event-ID"},
}
# (method, path) → the Struct the client decodes its answer into.
ANSWERS: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("get", "/v1/datasets/{}"): models.Dataset,
    ("post", "/v1/exports"): models.Job,
    ("post", "/v1/imports"): models.Import,
    ("get", "/v1/imports/{}"): models.Import,
    ("put", "/v1/imports/{}/mapping"): models.Import,
    ("put", "/v1/imports/{}/sheet"): models.Import,
    ("post", "/v1/uploads"): models.UploadTicket,
    ("post", "/v1/imports/{}/commit"): models.Import,
    ("post", "/v1/imports/{}/rollback"): models.Import,
    ("get", "/v1/jobs"): models.JobPage,
    ("get", "/v1/jobs/{}"): models.Job,
    ("post", "/v1/jobs/{}/cancel"): models.Job,
}


@pytest.fixture
async def openapi(client: Client) -> dict[str, Any]:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Operations by (method, path with its parameters as ``{}``)."""
    return {
        (method, re.sub(r"\{[^}]*\}", "{}", path)): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
    }


def resolve(document: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    """A schema with ``$ref`` followed and ``allOf`` merged; a nullable one's object part."""
    schema = schema or {}
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema:
        merged: dict[str, Any] = {"properties": {}, "required": []}
        for part in schema["allOf"]:
            part = resolve(document, part)
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return merged
    for key in ("oneOf", "anyOf"):
        objects = [resolve(document, s) for s in schema.get(key, ())]
        objects = [s for s in objects if "properties" in s]
        if len(objects) == 1:
            return objects[0]
    return schema


def struct_of(info: msgspec.inspect.Type) -> msgspec.inspect.StructType | None:
    """The Struct inside a field's type (``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(info, msgspec.inspect.StructType):
        return info
    if isinstance(info, msgspec.inspect.UnionType):
        found = [struct_of(t) for t in info.types]
        return next((s for s in found if s is not None), None)
    if isinstance(info, msgspec.inspect.ListType | msgspec.inspect.DictType):
        item = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        return struct_of(item)
    return None


def item_schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    schema = resolve(document, schema)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            return resolve(document, schema[key])
    return schema


def mismatches(
    document: dict[str, Any], struct: msgspec.inspect.StructType, schema: dict[str, Any], at: str
) -> list[str]:
    """How the Struct disagrees with a named schema (nothing when the schema is free-form)."""
    schema = resolve(document, schema)
    properties = schema.get("properties")
    if not properties:
        return []
    required = set(schema.get("required", []))
    found = []
    for field in struct.fields:
        name = field.encode_name
        if name not in properties:
            found.append(f"{at}.{name}: the server does not declare it")
            continue
        if field.required and name not in required:
            found.append(f"{at}.{name}: the client requires it, the server may leave it out")
        inner = struct_of(field.type)
        if inner is not None:
            found += mismatches(
                document, inner, item_schema(document, properties[name]), f"{at}.{name}"
            )
    return found


def test_every_call_of_the_client_is_in_the_openapi_document(openapi: dict[str, Any]) -> None:
    ops = operations(openapi)
    missing = [call for call in CALLS if call not in ops]
    assert not missing, missing
    for call, sent in CALLS.items():
        declared = {p["name"] for p in ops[call].get("parameters", [])}
        assert sent <= declared, (call, sent - declared)


def test_the_bodies_the_client_sends_fit_the_server_schemas(openapi: dict[str, Any]) -> None:
    ops = operations(openapi)

    def body(call: tuple[str, str]) -> dict[str, Any]:
        content = ops[call]["requestBody"]["content"]
        return resolve(openapi, content["application/json"]["schema"])

    export = body(("post", "/v1/exports"))
    sent = msgspec.inspect.type_info(models.ExportRequest)
    assert isinstance(sent, msgspec.inspect.StructType)
    assert {f.encode_name for f in sent.fields} <= set(export["properties"])
    assert set(export["required"]) <= {f.encode_name for f in sent.fields if f.required}
    assert set(export["properties"]["format"]["enum"]) <= set(FORMATS)
    commit = body(("post", "/v1/imports/{}/commit"))["properties"]
    assert {"abort", "skip"} <= set(commit["on_error"]["enum"])
    assert set(commit["mode"]["enum"]) == {"insert", "upsert", "skip_existing"}
    assert set(body(("put", "/v1/imports/{}/sheet"))["properties"]) == {"sheet"}
    assert set(body(("post", "/v1/uploads"))["properties"]) >= {
        "filename",
        "bytes",
        "content_type",
    }
    direct = ops[("post", "/v1/imports")]["requestBody"]["content"]["application/json"]
    assert {"upload_id", "dataset", "account_id", "sheet"} <= set(direct["schema"]["properties"])
    assert "confirm" in body(("post", "/v1/imports/{}/rollback"))["properties"]


def test_the_answers_the_client_decodes_fit_the_named_schemas(openapi: dict[str, Any]) -> None:
    ops = operations(openapi)
    problems = []
    for call, struct in ANSWERS.items():
        responses = ops[call]["responses"]
        ok = next(code for code in ("200", "201", "202") if code in responses)
        schema = responses[ok].get("content", {}).get("application/json", {}).get("schema")
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        problems += mismatches(openapi, info, schema or {}, f"{call[0].upper()} {call[1]}")
    assert not problems, "\n".join(problems)
