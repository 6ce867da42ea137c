"""The console's files as the api serves them, and the download links browsers follow."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import jwt
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.routes.console import FOLDER, Assets
from services.core.deps import Deps
from tests.conftest import SECRET, WorkerRun
from tests.e2e.export_files import seed_records

Client = AsyncTestClient[Litestar]
IMPORT = re.compile(r"""(?:import|from)\s*["']\./([\w.-]+)["']""")


async def test_the_page_is_never_cached_and_allows_nothing_inline(client: Client) -> None:
    response = await client.get("/console")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "connect-src 'self'", "frame-ancestors 'none'"):  # fmt: skip
        assert directive in csp, directive
    assert "unsafe" not in csp  # nothing inline
    assert "http" not in csp  # no other origin
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file
    assert " style=" not in html
    assert "<style" not in html
    assert (await client.get("/", follow_redirects=False)).headers["location"] == "/console"


async def test_assets_have_versioned_names_cached_for_a_year(client: Client) -> None:
    html = (await client.get("/console")).text
    paths = re.findall(r'(?:src|href)="(/console/assets/[^"]+)"', html)
    assert {Path(p).name for p in paths} >= {"app.js", "style.css", "favicon.svg"}
    version = Path(paths[0]).parent.name
    for path in paths:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    script = await client.get(f"/console/assets/{version}/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    stale = await client.get("/console/assets/0123456789abcdef/app.js")
    assert stale.status_code == 404
    assert stale.headers["content-type"] == "application/problem+json"


def test_every_module_a_module_imports_is_served() -> None:
    served = Assets().files
    for name, body in served.items():
        if name.endswith(".js"):
            for wanted in IMPORT.findall(body.decode()):
                assert wanted in served, f"{name} imports ./{wanted}, which is not served"


def test_any_change_to_a_file_changes_the_version(tmp_path: Path) -> None:
    folder = tmp_path / "console"
    shutil.copytree(FOLDER, folder)
    before = Assets(folder).version
    (folder / "style.css").write_text((folder / "style.css").read_text() + "\n/* */\n")
    after = Assets(folder)
    assert after.version != before
    assert f"/console/assets/{after.version}/app.js".encode() in after.page


async def succeeded_export(client: Client, auth: dict[str, str], run_worker: WorkerRun) -> Any:
    body = {"dataset": "bookkeeping_records", "format": "csv", "account_id": "main"}
    job = (await client.post("/v1/exports", headers=auth, json=body)).json()
    await run_worker()
    done = (await client.get(f"/v1/jobs/{job['id']}", headers=auth)).json()
    assert done["status"] == "succeeded"
    return done


async def test_a_link_lets_a_browser_download_one_file_for_a_minute(
    client: Client, auth: dict[str, str], deps: Deps, run_worker: WorkerRun
) -> None:
    await seed_records(deps, "acme", "main", 30)
    job = await succeeded_export(client, auth, run_worker)
    download = job["links"]["download"]
    response = await client.post("/v1/links", headers=auth, json={"href": download})
    assert response.status_code == 201
    link = response.json()
    assert link["href"].startswith(download + "?token=")
    # No Authorization header: the link alone opens the file, as a browser follows it.
    file = await client.get(link["href"])
    assert file.status_code == 200
    assert file.headers["content-disposition"].startswith("attachment")
    assert len(file.text.splitlines()) == 31
    # The token opens nothing else: another path, another method, a forged one.
    token = link["href"].partition("?token=")[2]
    assert (await client.get(f"/v1/jobs/{job['id']}?token={token}")).status_code == 401
    assert (await client.post(f"/v1/jobs/{job['id']}/cancel?token={token}")).status_code == 401
    forged = jwt.encode({**jwt.decode(token, options={"verify_signature": False})}, "x" * 40)
    assert (await client.get(f"{download}?token={forged}")).status_code == 401
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="ferry:link", issuer="ferry")
    assert claims["exp"] - claims["iat"] == 60


async def test_only_files_can_be_linked(client: Client, auth: dict[str, str]) -> None:
    for href in ("/v1/jobs", "/v1/presets", "https://example.com/x", "/v1/exports/x/download"):
        response = await client.post("/v1/links", headers=auth, json={"href": href})
        assert response.status_code == 422, href
        assert response.json()["errors"] == [{"field": "href", "message": "not a file of this api"}]
    assert (await client.post("/v1/links", json={"href": "/v1/jobs"})).status_code == 401
