"""The company's web app, on another origin, uses Ferry from a real browser.

A page served by a tiny static server on another loopback port (another origin)
posts a background export with ``fetch`` and a bearer token, follows it with an
``EventSource`` on ``links.events`` to the terminal event, downloads the file
through the api, uploads a CSV with ``FormData`` and follows its validation; and it
can read Ferry's errors and headers. Chromium enforces CORS, so every step proves
the api's CORS answers (preflights, errors, streams) are right.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import TokenFactory, WorkerRun, free_port
from tests.e2e.export_files import seed_records
from tests.e2e.imports_helpers import orders_csv

ROWS = 1_500  # over the browser tests' direct-download limit of 1,000

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>The web app</title></head><body>
<script>
// What a web app on another origin does with Ferry: nothing here is Ferry's code.
let api, auth;
const TERMINAL = ["succeeded", "failed", "cancelled", "validated", "committed", "rolled_back"];

window.setUp = (base, token) => { api = base; auth = {Authorization: "Bearer " + token}; };

// Follow a job's events until its terminal event; resolves with the event names.
function follow(link) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const source = new EventSource(api + link);
    const on = (type) => source.addEventListener(type, (event) => {
      seen.push({type, id: event.lastEventId, data: JSON.parse(event.data)});
      if (TERMINAL.includes(type)) { source.close(); resolve(seen); }
    });
    ["status", "progress", ...TERMINAL].forEach(on);
    setTimeout(() => { source.close(); reject(new Error("no terminal event: " +
      JSON.stringify(seen.map((e) => e.type)))); }, 30000);
  });
}

window.startExport = async () => {
  const response = await fetch(api + "/v1/exports", {
    method: "POST",
    headers: {...auth, "Content-Type": "application/json", "Idempotency-Key": "web-1",
              "X-Request-ID": "web-app-1"},
    body: JSON.stringify({dataset: "bookkeeping_records", format: "csv", account_id: "main"}),
  });
  const job = await response.json();
  window.exportEvents = follow(job.links.events);
  return {status: response.status, job, location: response.headers.get("Location"),
          requestId: response.headers.get("X-Request-ID"),
          rateLimit: response.headers.get("RateLimit"),
          policy: response.headers.get("RateLimit-Policy")};
};

window.download = async (link) => {
  const response = await fetch(api + link, {headers: auth});
  return {status: response.status, disposition: response.headers.get("Content-Disposition"),
          text: await response.text()};
};

window.startImport = async (csv) => {
  const form = new FormData();
  form.append("dataset", "bookkeeping_records");
  form.append("account_id", "main");
  form.append("file", new Blob([csv], {type: "text/csv"}), "orders.csv");
  const response = await fetch(api + "/v1/imports", {method: "POST", headers: auth, body: form});
  const job = await response.json();
  window.importEvents = follow(job.links.events);
  return {status: response.status, job};
};

window.readImport = async (id) =>
  (await fetch(api + "/v1/imports/" + id, {headers: auth})).json();

// Errors must reach the page too, with their problem document and headers.
window.problems = async () => {
  const missing = await fetch(api + "/v1/jobs/no-such-job", {headers: auth});
  const anonymous = await fetch(api + "/v1/jobs");
  return {missing: {status: missing.status, body: await missing.json(),
                    requestId: missing.headers.get("X-Request-ID")},
          anonymous: {status: anonymous.status, body: await anonymous.json()}};
};
</script></body></html>
"""


@contextlib.contextmanager
def static_site(port: int, root: Path) -> Iterator[str]:
    """The web app's own origin: a static server on another loopback port."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def site_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, site_port: int) -> Settings:
    return msgspec.structs.replace(settings, cors_origins=f"http://127.0.0.1:{site_port}")


@pytest.fixture
async def web_app(
    browser: Any, live_server: str, site_port: int, tmp_path: Path, make_token: TokenFactory
) -> Any:
    """The web app's page, on its own origin, set up to call the api at ``live_server``."""
    (tmp_path / "index.html").write_text(PAGE)
    with static_site(site_port, tmp_path) as origin:
        context = await browser.new_context()
        context.set_default_timeout(30_000)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{origin}/index.html")
        assert live_server.split(":")[-1] != str(site_port)  # truly another origin
        await page.evaluate("([api, token]) => setUp(api, token)", [live_server, make_token()])
        yield page
        await context.close()
        assert not errors, errors


async def test_a_page_on_another_origin_exports_follows_downloads_and_imports(
    web_app: Any, deps: Deps, run_worker: WorkerRun
) -> None:
    await seed_records(deps, "acme", "main", ROWS)

    started = await web_app.evaluate("startExport()")
    assert started["status"] == 202
    assert started["location"] == f"/v1/jobs/{started['job']['id']}"
    assert started["requestId"] == "web-app-1"
    assert started["policy"].startswith('"user";q=')
    assert started["rateLimit"]

    await run_worker()
    events = await web_app.evaluate("exportEvents")
    assert events[-1]["type"] == "succeeded"
    done = events[-1]["data"]
    assert done["result"]["rows"] == ROWS

    file = await web_app.evaluate("(link) => download(link)", done["links"]["download"])
    assert file["status"] == 200
    assert "filename" in file["disposition"]
    lines = file["text"].strip().splitlines()
    assert len(lines) == ROWS + 1  # the header, then every record

    uploaded = await web_app.evaluate("(csv) => startImport(csv)", orders_csv(25).decode())
    assert uploaded["status"] == 202
    await run_worker()
    validation = await web_app.evaluate("importEvents")
    assert validation[-1]["type"] == "validated"
    doc = await web_app.evaluate("(id) => readImport(id)", uploaded["job"]["id"])
    assert doc["totals"]["rows"] == 25
    assert doc["totals"]["valid"] == 25

    problems = await web_app.evaluate("problems()")
    assert problems["missing"]["status"] == 404
    assert problems["missing"]["body"]["request_id"] == problems["missing"]["requestId"]
    assert problems["anonymous"]["status"] == 401
    assert "Bearer" in problems["anonymous"]["body"]["detail"]
