"""`make bench`: run every benchmark module (``bench/<name>.py`` with ``main()``) in turn.

`python -m bench exports` runs one. Results are printed and written to bench/out/.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import OUT

SKIP = {"common"}


def main() -> None:
    wanted = sys.argv[1:]
    modules = pkgutil.iter_modules([str(Path(__file__).parent)])
    names = [m.name for m in modules if m.name not in SKIP and not m.name.startswith("_")]
    OUT.mkdir(parents=True, exist_ok=True)
    reports = []
    for name in sorted(names):
        if wanted and name not in wanted:
            continue
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):
            continue
        print(f"# {name}", flush=True)
        text = module.main()
        reports.append(text)
        (OUT / f"{name}.md").write_text(text)
    print("\n".join(reports))


if __name__ == "__main__":
    main()
