"""Export presets of one's own: list, save, delete (per org, user and dataset)."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from services.api.openapi import operation, problems, success
from services.api.schemas import PresetList, PresetRequest
from services.api.views import named_dataset
from services.core import presets
from services.core.auth import Principal
from services.core.deps import Deps
from services.core.presets import Preset


@get(
    "/v1/presets",
    tags=["presets"],
    summary="Your export presets",
    operation_id="listPresets",
    responses=problems(422),
    operation_class=operation(),
)
async def list_presets(
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
    dataset: Annotated[str | None, QueryParameter(description="Only this dataset's")] = None,
) -> PresetList:
    """The caller's own presets, by dataset and name. A dataset's built-in presets are in
    `GET /v1/datasets/{name}`."""
    if dataset is not None:
        named_dataset(deps, dataset)
    items = await presets.list_presets(
        deps.db, org_id=principal.org, user_id=principal.sub, dataset=dataset
    )
    return PresetList(items=items)


@post(
    "/v1/presets",
    tags=["presets"],
    summary="Save an export preset",
    status_code=201,
    operation_id="createPreset",
    responses={
        200: success(Preset, "Saved already with these columns: the saved preset"),
        **problems(400, 403, 409, 422),
    },
    operation_class=operation(),
)
async def create_preset(
    data: JSONBody[PresetRequest],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> Response[Preset]:
    """201 with the preset. Saving the same name and columns again answers 200 with the
    saved one; a name the caller already uses for other columns is a 409. Names are the
    caller's own; one of the dataset's built-in preset names is refused (422), as are
    unknown columns. Export with it by sending its `columns`."""
    ds = named_dataset(deps, data.dataset)
    principal.require(f"{ds.name}.read")
    preset, created = await presets.create_preset(
        deps.db,
        ds,
        org_id=principal.org,
        user_id=principal.sub,
        name=data.name,
        columns=data.columns,
    )
    return Response(preset, status_code=201 if created else 200)


@delete(
    "/v1/presets/{preset_id:uuid}",
    tags=["presets"],
    summary="Delete an export preset",
    operation_id="deletePreset",
    responses=problems(404),
    operation_class=operation(),
)
async def delete_preset(
    preset_id: FromPath[uuid.UUID],
    deps: NamedDependency[Deps],
    principal: NamedDependency[Principal],
) -> None:
    """204; 404 when the preset is not the caller's."""
    await presets.delete_preset(deps.db, preset_id, org_id=principal.org, user_id=principal.sub)


routes = [list_presets, create_preset, delete_preset]
