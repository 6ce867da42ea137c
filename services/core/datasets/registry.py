"""Datasets declared as data: one TOML file each, checked against the live schema."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec

from services.core.db.pool import Connection
from services.core.errors import InvalidInput, NotFound, SettingsError

FieldType = Literal["text", "int", "money", "date", "datetime", "bool", "enum"]

# PostgreSQL types each field type may be stored as.
_STORAGE: dict[str, set[str]] = {
    "text": {"text", "character varying"},
    "enum": {"text", "character varying"},
    "int": {"smallint", "integer", "bigint"},
    "money": {"integer", "bigint"},
    "date": {"date"},
    "datetime": {"timestamp with time zone"},
    "bool": {"boolean"},
}


class Field(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One column of a dataset as users see it."""

    name: str
    label: str
    type: FieldType
    column: str = ""
    expression: str = ""
    required: bool = False
    default: str | None = None
    min: int | None = None
    values: list[str] = []
    aliases: list[str] = []
    description: str = ""

    def __post_init__(self) -> None:
        if not self.column and not self.expression:
            # A stored field's column defaults to its name.
            msgspec.structs.force_setattr(self, "column", self.name)

    @property
    def computed(self) -> bool:
        """Computed fields are exported from an SQL expression and never imported."""
        return bool(self.expression)

    @property
    def sql(self) -> str:
        """The SQL expression of this field over the dataset's table."""
        return self.expression or f'"{self.column}"'


class Dataset(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A table Ferry moves in and out, with its fields and presets."""

    name: str
    label: str
    table: str
    description: str = ""
    org_column: str = "org_id"
    scope_column: str = "account_id"
    primary_key: str = "id"
    order_by: list[str] = msgspec.field(default_factory=lambda: ["id"])
    soft_delete_column: str = "deleted_at"
    batch_column: str = "import_batch_id"
    natural_key: str = ""  # what identifies a record within an account (upserts match on it)
    currency: str = "USD"  # of money fields in every account; exports format them with it
    time_zone: str = "UTC"  # where every account's dates fall (a timestamp → its date there)
    fields: list[Field] = []
    presets: dict[str, list[str]] = {}

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise NotFound(f"dataset {self.name} has no field {name!r}")

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def importable(self) -> list[Field]:
        return [f for f in self.fields if not f.computed]

    def columns_for(self, *, columns: list[str] | None, preset: str | None) -> list[Field]:
        """The fields of an export: explicit ``columns``, a ``preset``, or ``all``."""
        if columns and preset:
            raise InvalidInput(
                "give either columns or preset, not both",
                errors=[{"field": "columns", "message": "not allowed together with preset"}],
            )
        if columns:
            unknown = [c for c in columns if c not in self.field_names]
            if unknown:
                raise InvalidInput(
                    f"unknown column(s): {', '.join(unknown)}",
                    errors=[
                        {"field": "columns", "message": f"unknown column {c!r}"} for c in unknown
                    ],
                )
            return [self.field(c) for c in dict.fromkeys(columns)]
        name = preset or "all"
        if name not in self.presets:
            raise InvalidInput(
                f"unknown preset {name!r}; one of {', '.join(self.presets)}",
                errors=[{"field": "preset", "message": f"unknown preset {name!r}"}],
            )
        return [self.field(c) for c in self.presets[name]]

    def _check(self) -> None:
        names = self.field_names
        if len(set(names)) != len(names):
            raise SettingsError(f"dataset {self.name}: field names repeat")
        for preset, cols in self.presets.items():
            for col in cols:
                if col not in names:
                    raise SettingsError(f"dataset {self.name}: preset {preset} names {col!r}")
        for f in self.fields:
            if f.type == "enum" and not f.values:
                raise SettingsError(f"dataset {self.name}: enum field {f.name} has no values")
            if f.computed and f.required:
                raise SettingsError(f"dataset {self.name}: computed field {f.name} is required")
        if self.natural_key and self.natural_key not in names:
            raise SettingsError(f"dataset {self.name}: natural_key {self.natural_key!r} unknown")
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"dataset {self.name}: time_zone {self.time_zone!r} is not a known zone"
            ) from None


class Registry:
    """The datasets of this deployment, by name."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self._datasets = {d.name: d for d in datasets}

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self._datasets.values())

    def get(self, name: str) -> Dataset:
        try:
            return self._datasets[name]
        except KeyError:
            raise NotFound(f"no dataset named {name!r}") from None

    async def check_schema(self, conn: Connection) -> None:
        """Fail start-up, naming the column, when a dataset does not match the database."""
        for ds in self:
            rows = await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = $1",
                ds.table,
            )
            if not rows:
                raise SettingsError(f"dataset {ds.name}: table {ds.table} does not exist")
            types = {r["column_name"]: r["data_type"] for r in rows}
            plumbing = {ds.org_column, ds.scope_column, ds.primary_key, *ds.order_by}
            plumbing |= {c for c in (ds.soft_delete_column, ds.batch_column) if c}
            for column in sorted(plumbing):
                if column not in types:
                    raise SettingsError(
                        f"dataset {ds.name}: column {ds.table}.{column} does not exist"
                    )
            for f in ds.fields:
                if f.computed:
                    try:
                        await conn.execute(f'SELECT ({f.expression}) FROM "{ds.table}" LIMIT 0')
                    except Exception as exc:  # any SQL error names the field
                        raise SettingsError(
                            f"dataset {ds.name}: expression of field {f.name} fails: {exc}"
                        ) from None
                    continue
                actual = types.get(f.column)
                if actual is None:
                    raise SettingsError(
                        f"dataset {ds.name}: column {ds.table}.{f.column} "
                        f"(field {f.name}) does not exist"
                    )
                if actual not in _STORAGE[f.type]:
                    raise SettingsError(
                        f"dataset {ds.name}: column {ds.table}.{f.column} is {actual}, "
                        f"but field {f.name} is {f.type}"
                    )


def load_registry(directory: str | Path) -> Registry:
    """Decode every ``*.toml`` dataset in ``directory``."""
    paths = sorted(Path(directory).glob("*.toml"))
    if not paths:
        raise SettingsError(f"no dataset files (*.toml) in {directory}")
    datasets = []
    for path in paths:
        try:
            ds = msgspec.toml.decode(path.read_bytes(), type=Dataset)
        except msgspec.ValidationError as exc:
            raise SettingsError(f"{path.name}: {exc}") from None
        ds._check()
        datasets.append(ds)
    return Registry(datasets)
