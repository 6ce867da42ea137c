"""What can be exported and imported: datasets, their fields and presets."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath

from services.core.auth import Principal
from services.core.datasets import Dataset
from services.core.deps import Deps
from services.core.exports.spec import CONTENT_TYPES


def dataset_view(ds: Dataset, principal: Principal) -> dict[str, Any]:
    return {
        "name": ds.name,
        "label": ds.label,
        "description": ds.description,
        "permissions": {
            "read": principal.can(f"{ds.name}.read"),
            "write": principal.can(f"{ds.name}.write"),
        },
        "fields": [
            {
                "name": f.name,
                "label": f.label,
                "type": f.type,
                "required": f.required,
                "computed": f.computed,
                "importable": not f.computed,
                **({"values": f.values} if f.values else {}),
                **({"min": f.min} if f.min is not None else {}),
                **({"default": f.default} if f.default is not None else {}),
                "aliases": f.aliases,
                "description": f.description,
            }
            for f in ds.fields
        ],
        "presets": ds.presets,
        "export_formats": list(CONTENT_TYPES),
        "links": {
            "self": f"/v1/datasets/{ds.name}",
            "export": f"/v1/datasets/{ds.name}/export.csv",
        },
    }


@get("/v1/datasets", tags=["datasets"], summary="List datasets")
async def list_datasets(
    deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> dict[str, Any]:
    """Every dataset, with what the caller may do with it."""
    return {"items": [dataset_view(ds, principal) for ds in deps.registry]}


@get("/v1/datasets/{name:str}", tags=["datasets"], summary="One dataset")
async def get_dataset(
    name: FromPath[str], deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> dict[str, Any]:
    """Fields (label, type, required, aliases) and presets of one dataset."""
    return dataset_view(deps.registry.get(name), principal)


routes = [list_datasets, get_dataset]
