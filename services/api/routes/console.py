"""The web console at ``/console``: plain files in ``services/api/console``, no build step.

The page is sent with ``no-cache`` and a strict Content-Security-Policy: scripts,
styles and connections from this origin only, nothing inline. It names its files
under ``/console/assets/<version>/``, the version being a hash of every file's
content: they are cached for a year, a release never mixes old and new files, and
the ES modules import each other by relative path, so they need no rewriting. An
asset of another version is a 404, never today's file under yesterday's name.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from litestar import Response, get
from litestar.params import FromPath
from litestar.response import Redirect

from services.core.errors import NotFound

FOLDER = Path(__file__).resolve().parents[1] / "console"
PAGE = "index.html"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


class Assets:
    """The console's files, read once (a few small files), and their version."""

    def __init__(self, folder: Path = FOLDER) -> None:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != PAGE)
        self.files = {p.name: p.read_bytes() for p in files}
        digest = hashlib.sha256()
        for name, body in self.files.items():
            digest.update(name.encode() + b"\0" + body + b"\0")
        self.version = digest.hexdigest()[:16]
        page = (folder / PAGE).read_text()
        self.page = page.replace("{{assets}}", f"/console/assets/{self.version}").encode()


ASSETS = Assets()


@get("/", include_in_schema=False)
async def root() -> Redirect:
    """A person opening the api's address lands on the console."""
    return Redirect("/console", status_code=302)


@get("/console", include_in_schema=False)
async def console_page() -> Response[bytes]:
    return Response(
        ASSETS.page,
        media_type="text/html",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CSP,
            **SECURITY_HEADERS,
        },
    )


@get("/console/assets/{version:str}/{name:str}", include_in_schema=False)
async def console_asset(version: FromPath[str], name: FromPath[str]) -> Response[bytes]:
    body = ASSETS.files.get(name)
    if version != ASSETS.version or body is None:
        raise NotFound("no such console file (the console was updated: reload the page)")
    suffix = Path(name).suffix
    media = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(
        body,
        media_type=media,
        headers={"Cache-Control": "public, max-age=31536000, immutable", **SECURITY_HEADERS},
    )


routes = [root, console_page, console_asset]
