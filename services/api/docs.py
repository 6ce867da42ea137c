"""The API reference at ``/schema``: Swagger UI from files that ship with Ferry.

The page, its script, stylesheet and icon all come from this api (``static/``, versions
in ``static/README.md``), and its Content-Security-Policy lets the browser fetch
nothing from anywhere else, so the docs work offline and leak nothing to a CDN.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from litestar import Request, Router
from litestar.datastructures import ResponseHeader
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)


class SwaggerUI(OpenAPIRenderPlugin):
    """Swagger UI on ``/schema`` and ``/schema/swagger``, from ``/schema/static``."""

    def __init__(self, base: str) -> None:
        super().__init__(path=["/", "/swagger"], favicon="")
        self.base = base

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(openapi_schema["info"]["title"])
        static = f"{self.base}/static"
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API reference</title>
<link rel="icon" type="image/png" href="{static}/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css">
</head>
<body data-openapi="{self.base}/openapi.json">
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{static}/docs.js"></script>
</body>
</html>
""".encode()


def docs_router(base: str = "/schema") -> Router:
    """The router the OpenAPI plugin serves ``/schema`` from: the page, the document
    and the vendored assets, all under the CSP."""
    return Router(
        base,
        route_handlers=[
            create_static_files_router(
                "/static", directories=[STATIC], include_in_schema=False, send_as_attachment=False
            )
        ],
        include_in_schema=False,
        response_headers=[ResponseHeader(name="Content-Security-Policy", value=CSP)],
    )
