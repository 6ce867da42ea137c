"""Errors become RFC 9457 problems; a problem's own members cannot be overwritten."""

from __future__ import annotations

from litestar import get
from litestar.testing import create_test_client

from services.api.problems import EXCEPTION_HANDLERS
from services.core.errors import Conflict, UnsupportedMediaType


@get("/clash", sync_to_thread=False)
def clash() -> None:
    raise Conflict("the import is failed", status="failed", type="x", job_status="failed")


@get("/media", sync_to_thread=False)
def media() -> None:
    raise UnsupportedMediaType("send text/csv")


def test_extras_named_like_a_member_do_not_replace_it() -> None:
    with create_test_client([clash], exception_handlers=EXCEPTION_HANDLERS) as client:
        response = client.get("/clash")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 409
    assert body["type"] == "urn:ferry:problem:conflict"
    assert body["job_status"] == "failed"
    assert body["detail"] == "the import is failed"


def test_an_unsupported_media_type_is_a_415_problem() -> None:
    with create_test_client([media], exception_handlers=EXCEPTION_HANDLERS) as client:
        response = client.get("/media")
    assert response.status_code == 415
    assert response.json()["type"] == "urn:ferry:problem:unsupported-media-type"
