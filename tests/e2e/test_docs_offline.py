"""The API reference at /schema works offline: the page and everything it loads come
from the api itself, and its Content-Security-Policy forbids fetching from elsewhere."""

from __future__ import annotations

import re

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)["']?\s*\)""")
ABSOLUTE = re.compile(r"""["'(=]\s*(?:https?:)?//""")


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_docs_page_loads_only_from_the_api(
    client: AsyncTestClient[Litestar], page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    assert "script-src 'self'" in csp
    html = response.text
    assert not ABSOLUTE.search(html), "the page names another host"
    assets = REFERENCE.findall(html)
    assert any(a.endswith(".js") for a in assets)
    assert any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        assert not asset.startswith("//"), asset
        loaded = await client.get(asset)
        assert loaded.status_code == 200, asset
        assert loaded.content, asset
        if asset.endswith(".css"):
            for url in CSS_URL.findall(loaded.text):
                assert url.startswith(("data:", "/", "#")) or "://" not in url, url
    # The script it starts Swagger UI with reads the document from this api.
    script = (await client.get("/schema/static/docs.js")).text
    assert "validatorUrl: null" in script
    assert "document.body.dataset.openapi" in script
    assert 'data-openapi="/schema/openapi.json"' in html


async def test_the_document_is_still_served_as_json(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")
