"""Who may call: 401 for bad tokens, 403 for missing permissions, 404 across orgs."""

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from litestar import Litestar
from litestar.testing import AsyncTestClient

from services.api.app import create_app
from services.core.auth import mint_token
from services.core.deps import Deps
from services.core.settings import Settings
from tests.conftest import SECRET, JobFactory, TokenFactory, free_port

PROBLEM = "application/problem+json"


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_a_valid_token_gets_in(
    client: AsyncTestClient[Litestar], auth: dict[str, str], make_job: JobFactory
) -> None:
    job = await make_job()
    response = await client.get(f"/v1/jobs/{job.id}", headers=auth)
    assert response.status_code == 200
    assert response.json()["id"] == str(job.id)


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "send Authorization: Bearer <token>"),
        ("Basic dXNlcjpwdw==", "send Authorization: Bearer <token>"),
        ("Bearer not.a.jwt", "the token is not valid"),
    ],
)
async def test_a_missing_or_malformed_token_is_401(
    client: AsyncTestClient[Litestar], header: str | None, detail: str
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await client.get("/v1/datasets", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"] == "Bearer"
    assert detail in response.json()["detail"]


async def test_a_token_with_a_bad_signature_is_401(
    client: AsyncTestClient[Litestar], settings: Settings
) -> None:
    forged = mint_token(
        settings,
        sub="alice",
        org="acme",
        perms=["bookkeeping_records.read"],
        key="some-other-secret-" + "y" * 32,
    )
    response = await client.get("/v1/datasets", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert "Signature verification failed" in response.json()["detail"]


async def test_an_expired_token_is_401(
    client: AsyncTestClient[Litestar], make_token: TokenFactory
) -> None:
    expired = make_token(ttl=-5)
    response = await client.get("/v1/datasets", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["detail"] == "the token has expired"


async def test_an_unsigned_alg_none_token_is_401(client: AsyncTestClient[Litestar]) -> None:
    claims = {
        "sub": "alice",
        "org": "acme",
        "perms": ["bookkeeping_records.read"],
        "aud": "ferry",
        "iss": "ferry",
        "exp": int(time.time()) + 600,
    }
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    response = await client.get("/v1/datasets", headers={"Authorization": f"Bearer {unsigned}"})
    assert response.status_code == 401


async def test_a_token_for_another_audience_is_401(client: AsyncTestClient[Litestar]) -> None:
    claims = {
        "sub": "alice",
        "org": "acme",
        "aud": "billing",
        "iss": "ferry",
        "exp": int(time.time()) + 600,
    }
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    response = await client.get("/v1/datasets", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "Audience doesn't match" in response.json()["detail"]


async def test_a_missing_permission_is_403(
    client: AsyncTestClient[Litestar], make_job: JobFactory, make_token: TokenFactory
) -> None:
    job = await make_job()
    token = make_token(perms=["invoices.read"])
    response = await client.get(f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "bookkeeping_records.read" in response.json()["detail"]


async def test_a_job_of_another_org_is_404(
    client: AsyncTestClient[Litestar], make_job: JobFactory, make_token: TokenFactory
) -> None:
    job = await make_job(org_id="globex")
    response = await client.get(
        f"/v1/jobs/{job.id}", headers={"Authorization": f"Bearer {make_token(org='acme')}"}
    )
    assert response.status_code == 404
    assert response.json()["type"] == "urn:ferry:problem:not-found"
    history = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {make_token()}"})
    assert history.json()["items"] == []


# --- RS256 through a JWKS endpoint -------------------------------------------------------


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_url(rsa_key: rsa.RSAPrivateKey) -> Iterator[str]:
    """A real JWKS document served on loopback."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()
    server.server_close()


async def test_rs256_tokens_are_checked_against_the_jwks(
    settings: Settings, deps: Deps, rsa_key: rsa.RSAPrivateKey, jwks_url: str
) -> None:
    import msgspec

    jwks_settings = msgspec.structs.replace(settings, jwt_jwks_url=jwks_url)
    app = create_app(jwks_settings)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    good = mint_token(
        jwks_settings,
        sub="svc-reports",
        org="acme",
        perms=[],
        key=pem,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The classic confusion attack: HS256 "signed" with the public key. Refused, since
    # the accepted algorithms come from configuration, never from the token.
    hs = mint_token(
        jwks_settings, sub="mallory", org="acme", perms=[], key=SECRET, headers={"kid": "k1"}
    )
    async with AsyncTestClient(app=app) as c:
        ok = await c.get("/v1/datasets", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200
        bad = await c.get("/v1/datasets", headers={"Authorization": f"Bearer {hs}"})
        assert bad.status_code == 401
    assert public_pem  # the key pair is real
