"""The README tells the truth about the Makefile."""

import os
import re
import subprocess

from tests.conftest import ROOT


def make(*args: str) -> str:
    """What ``make`` prints here, also when the tests themselves run under ``make test``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_the_readme_shows_what_make_help_prints() -> None:
    printed = make("help")
    shown = re.search(r"```\n\$ make help\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert shown is not None, "README's Development section lost its `make help` block"
    assert shown[1] == printed
    assert "make test" in printed
    assert "make all" in printed


def test_make_all_is_what_ci_runs_and_lints_once() -> None:
    assert "exec make test" in (ROOT / ".ci" / "run").read_text()
    commands = make("-n", "all").splitlines()
    assert commands == make("-n", "test").splitlines()
    assert sum(".venv/bin/ruff check ." in c for c in commands) == 1
    assert sum(".venv/bin/mypy services" in c for c in commands) == 1
    assert sum(".venv/bin/pytest" in c for c in commands) == 1
