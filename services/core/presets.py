"""Export presets a person saves for themselves: a named column set of one dataset.

A dataset's own presets (``essential``, ``financial``, ``all``) are declared in its
TOML; these sit beside them, one list per org, user and dataset, and an export
sends their columns like any other column choice.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from services.core.datasets import Dataset
from services.core.db.pool import Pool
from services.core.db.queries import Q
from services.core.errors import Conflict, InvalidInput, NotFound

MAX_PER_DATASET = 100
MAX_NAME = 60


class Preset(msgspec.Struct, kw_only=True):
    """A saved column set."""

    id: uuid.UUID
    dataset: str
    name: str
    columns: list[str]
    created_at: datetime


def _preset(row: asyncpg.Record) -> Preset:
    return Preset(
        id=row["id"],
        dataset=row["dataset"],
        name=row["name"],
        columns=list(row["columns"]),
        created_at=row["created_at"],
    )


def check(ds: Dataset, name: str, columns: list[str]) -> tuple[str, list[str]]:
    """The trimmed name and the columns without repeats; InvalidInput names what is wrong."""
    errors = []
    name = " ".join(name.split())
    if not name:
        errors.append({"field": "name", "message": "required"})
    elif len(name) > MAX_NAME:
        errors.append({"field": "name", "message": f"longer than {MAX_NAME} characters"})
    elif name in ds.presets:
        errors.append({"field": "name", "message": f"{name!r} is one of the dataset's presets"})
    if not columns:
        errors.append({"field": "columns", "message": "choose at least one column"})
    unknown = [c for c in columns if c not in ds.field_names]
    errors += [{"field": "columns", "message": f"unknown column {c!r}"} for c in unknown]
    if errors:
        raise InvalidInput(
            "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
        )
    return name, list(dict.fromkeys(columns))


async def list_presets(db: Pool, *, org_id: str, user_id: str, dataset: str | None) -> list[Preset]:
    rows = await db.fetch(Q.list_presets, org_id, user_id, dataset)
    return [_preset(r) for r in rows]


async def create_preset(
    db: Pool, ds: Dataset, *, org_id: str, user_id: str, name: str, columns: list[str]
) -> tuple[Preset, bool]:
    """Save a preset; ``(preset, created)``.

    Saving the same name and columns again returns the saved one (a retried request
    is harmless); the same name with other columns is a 409, as is one preset too many.
    """
    name, columns = check(ds, name, columns)
    try:
        row = await db.fetchrow(
            Q.insert_preset, uuid.uuid4(), org_id, user_id, ds.name, name, columns, MAX_PER_DATASET
        )
    except asyncpg.UniqueViolationError:
        row = await db.fetchrow(Q.get_preset_by_name, org_id, user_id, ds.name, name)
        if row is not None and list(row["columns"]) == columns:
            return _preset(row), False
        raise Conflict(
            f"you already have a preset named {name!r}; delete it first or choose another name",
            errors=[{"field": "name", "message": "already taken"}],
        ) from None
    if row is None:
        raise Conflict(f"you have {MAX_PER_DATASET} presets of this dataset; delete one first")
    return _preset(row), True


async def delete_preset(db: Pool, preset_id: uuid.UUID, *, org_id: str, user_id: str) -> None:
    """Delete one of the person's presets; 404 for another person's or an unknown one."""
    if await db.fetchval(Q.delete_preset, preset_id, org_id, user_id) is None:
        raise NotFound("no such preset")
