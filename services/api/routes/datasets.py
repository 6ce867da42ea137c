"""What can be exported and imported: datasets, their fields and presets."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath

from services.api.openapi import operation, problems
from services.api.schemas import Dataset, DatasetList
from services.api.views import dataset_view
from services.core.auth import Principal
from services.core.deps import Deps


@get(
    "/v1/datasets",
    tags=["datasets"],
    summary="List datasets",
    operation_id="listDatasets",
    responses=problems(),
    operation_class=operation(),
)
async def list_datasets(
    deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> DatasetList:
    """Every dataset, with what the caller may do with it."""
    return DatasetList(items=[dataset_view(ds, principal) for ds in deps.registry])


@get(
    "/v1/datasets/{name:str}",
    tags=["datasets"],
    summary="One dataset",
    operation_id="getDataset",
    responses=problems(404),
    operation_class=operation(),
)
async def get_dataset(
    name: FromPath[str], deps: NamedDependency[Deps], principal: NamedDependency[Principal]
) -> Dataset:
    """Fields (label, type, required, aliases) and presets of one dataset."""
    return dataset_view(deps.registry.get(name), principal)


routes = [list_datasets, get_dataset]
