"""Named SQL from ``queries.sql``, loaded once: ``Q.get_job``."""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


class Queries:
    """Attribute access to the statements of a ``-- name: x`` annotated file."""

    def __init__(self, text: str) -> None:
        parts = _HEADER.split(text)
        self._sql: dict[str, str] = {
            name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)
        }

    def __getattr__(self, name: str) -> str:
        try:
            return self._sql[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None

    def names(self) -> list[str]:
        return sorted(self._sql)


Q = Queries((Path(__file__).parent / "queries.sql").read_text())
