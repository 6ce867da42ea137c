"""The client package builds a wheel that works on its own (without the server's code)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_the_client_builds_a_wheel_that_runs_alone(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and egg-info beside the sources.
    source = shutil.copytree(
        ROOT / "clients" / "python",
        tmp_path / "source",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        check=True,
        timeout=120,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("ferry_client-0.1.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read("ferry_client-0.1.0.dist-info/METADATA").decode()
        archive.extractall(tmp_path / "site")
    assert {"ferry_client/py.typed", "ferry_client/cli.py", "ferry_client/models.py"} <= names
    assert not any(name.startswith("services/") for name in names)
    assert "Requires-Dist: httpx" in metadata
    assert "Requires-Dist: msgspec" in metadata
    # Imported from the unpacked wheel, with httpx and msgspec from site-packages but
    # none of its .pth files (-S): neither the server nor the editable client is visible.
    purelib = sysconfig.get_paths()["purelib"]
    code = (
        f"import sys; sys.path[:0] = [{str(tmp_path / 'site')!r}, {purelib!r}];"
        "import ferry_client, importlib.util;"
        "assert importlib.util.find_spec('services') is None, 'server code visible';"
        "print(ferry_client.__file__);"
        "from ferry_client.cli import main; main(['--version'])"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    location, version = result.stdout.splitlines()
    assert location.startswith(str(tmp_path / "site"))
    assert version == "ferry-client 0.1.0"
