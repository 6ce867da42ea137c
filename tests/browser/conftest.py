"""Browser tests: the console in headless Chromium against a real Ferry.

The api runs on a real uvicorn (``live_server``), jobs in a real in-process worker,
and Chromium is Debian's ``chromium`` (or ``$CHROMIUM``) driven by Playwright's
Python API. Without Chromium or Playwright these tests skip and say so in one
line — unless ``CI`` is set, where they fail instead: CI must run them.

Every test leaves screenshots of what it saw in ``tests/browser/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.core.settings import Settings
from tests.conftest import TokenFactory

SHOTS = Path(__file__).resolve().parent / "screenshots"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 20_000

# Records every Notification the page makes, and lets a test hide the page
# (document.visibilityState) the way switching to another tab does.
INIT_SCRIPT = """
(() => {
  const Real = window.Notification;
  window.__notifications = [];
  class Recorded extends Real {
    constructor(title, options = {}) {
      super(title, options);
      window.__notifications.push({ title, body: options.body || "" });
      window.__lastNotification = this;
    }
  }
  window.Notification = Recorded;
  let hidden = false;
  window.__setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true, get() { return hidden ? "hidden" : "visible"; },
  });
  Object.defineProperty(Document.prototype, "hidden", {
    configurable: true, get() { return hidden; },
  });
})();
"""

_missing: list[str] = []


def find_chromium() -> str | None:
    if path := os.environ.get("CHROMIUM"):
        return path if Path(path).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run under CI: {reason}")
    if not _missing:
        _missing.append(reason)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable, or a skip (a failure under CI) saying what is missing."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed (make setup installs the dev extra)")
    path = find_chromium()
    if path is None:
        _unavailable("no Chromium found (apt-get install -y chromium, or set CHROMIUM=path)")
    assert path is not None
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _missing:
        terminalreporter.write_line(f"browser tests skipped: {_missing[0]}", yellow=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small limits so a few thousand records already make a background export; the
    reference XLSX engine so that export takes long enough to show its progress."""
    return msgspec.structs.replace(
        settings, direct_export_max_rows=1000, xlsx_engine="xlsxwriter", sse_heartbeat_seconds=0.5
    )


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any, live_server: str) -> AsyncIterator[Any]:
    """A page of a fresh browser context that may notify and download."""
    context = await browser.new_context(
        base_url=live_server,
        accept_downloads=True,
        permissions=["notifications"],
        viewport={"width": 1280, "height": 1000},
    )
    await context.add_init_script(INIT_SCRIPT)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium logs every 4xx answer as "Failed to load resource"; the console expects
    # some (413, 409). Anything else it logs as an error is a bug (a CSP refusal too).
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield page
    await context.close()
    assert not errors, errors  # a script error or a CSP violation is a bug


@pytest.fixture
def sign_in_url(make_token: TokenFactory) -> str:
    """The console link as `make run` prints it: the token in the fragment."""
    return f"/console#token={make_token()}"


async def screenshot(page: Any, name: str, at: Any = None) -> None:
    """The whole page; or, with ``at`` (a locator), the window scrolled to it."""
    SHOTS.mkdir(exist_ok=True)
    if at is not None:
        await at.evaluate("el => el.scrollIntoView({block: 'start'})")
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=at is None)
