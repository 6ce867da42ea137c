"""Dataset SQL, built in one place from the registry: quoted identifiers, bound parameters.

Nothing here interpolates a value a caller sent; identifiers come from the dataset
files (checked against the live schema at start-up) and are quoted anyway.
"""

from __future__ import annotations

from services.core.datasets.registry import Dataset


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def table(ds: Dataset) -> str:
    return ident(ds.table)
