"""api and worker are siblings on core: neither imports the other, core imports neither.
The Python client stands alone: it never imports the server, and of the server only
``services/cli.py`` hands commands to it.

Every import statement of every module under ``services/`` is read with ``ast``
(also imports inside functions), so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python" / "src" / "ferry_client"

# package -> packages it must never import
FORBIDDEN = {
    "services.api": ("services.worker", "ferry_client"),
    "services.worker": ("services.api", "ferry_client"),
    "services.core": ("services.api", "services.worker", "ferry_client"),
    "ferry_client": ("services",),
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in the file, relative ones resolved."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from services import worker` imports services.worker
            found += [(node.lineno, module)]
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        for layer, banned in FORBIDDEN.items():
            if name != layer and not name.startswith(layer + "."):
                continue
            bad = {}  # one report per statement: its line and the first banned name
            for line, target in imports(path, root):
                if any(target == b or target.startswith(b + ".") for b in banned):
                    bad.setdefault(line, target)
            found += [f"{path.relative_to(root.parent)}:{n} imports {t}" for n, t in bad.items()]
    return found


def test_api_worker_and_core_keep_their_layers() -> None:
    found = violations(SERVICES) + violations(CLIENT)
    assert not found, "layering broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("api/routes/x.py", "from services.worker.queue import enqueue", "imports services.worker"),
        ("api/x.py", "def f():\n    import services.worker.settings", "x.py:2 imports"),
        ("worker/x.py", "from ..api import app", "imports services.api"),
        ("core/x.py", "from services import worker", "imports services.worker"),
    ],
)
def test_a_forbidden_import_is_reported_with_its_module_and_line(
    tmp_path: Path, module: str, source: str, expected: str
) -> None:
    root = tmp_path / "services"
    path = root / module
    path.parent.mkdir(parents=True)
    path.write_text(source + "\n")
    found = violations(root)
    assert len(found) == 1
    assert expected in found[0]
    assert found[0].startswith(f"services/{module}:")
