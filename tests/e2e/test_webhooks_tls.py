"""Webhooks over real TLS: a receiver's certificate is checked, against the host name.

The worker connects to the address it checked, not to the name (``addresses``), so the
name goes in SNI and the certificate must be checked against it, not against the
address. A test certificate authority signs receivers' certificates on loopback:
untrusted until ``FERRY_WEBHOOK_CA_FILE`` names it, and then only for the right name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.core.deps import Deps
from services.core.settings import Settings
from services.core.webhooks.signing import verify_signature
from tests.conftest import WorkerRun
from tests.e2e.test_webhooks import Client, Receiver, deliveries, manager, register

__all__ = ["manager"]  # the fixture of alice, who may manage webhooks


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Receivers on loopback, over https only; a failed delivery gives up within 1 s."""
    return msgspec.structs.replace(
        settings,
        webhook_allow_private=True,
        webhook_retry_seconds=0.2,
        webhook_retry_window_seconds=1.0,
        webhook_timeout_seconds=5.0,
    )


def _certificate(
    subject: str, issuer: str, public: Any, signer: Any, *extensions: tuple[Any, bool]
) -> x509.Certificate:
    """A certificate for ``subject``, signed by ``signer`` in ``issuer``'s name, valid now."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256())


@dataclasses.dataclass
class Authority:
    """A certificate authority of the test's own: its PEM file, and ``issue`` to have it
    sign a receiver's certificate for a host name (certificate and key files)."""

    ca_file: Path
    issue: Callable[[str], tuple[Path, Path]]


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=True,
        crl_sign=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = _certificate(
        "Ferry test CA",
        "Ferry test CA",
        key.public_key(),
        key,
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (usage, True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    )
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(host: str) -> tuple[Path, Path]:
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(
            host,
            "Ferry test CA",
            leaf_key.public_key(),
            key,
            (x509.SubjectAlternativeName([x509.DNSName(host)]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), False),
        )
        cert, private = tmp_path / f"{host}.pem", tmp_path / f"{host}.key"
        cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        private.write_bytes(
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert, private

    return Authority(ca_file, issue)


@pytest.fixture
async def tls_receiver(authority: Authority) -> AsyncIterator[Receiver]:
    """https://localhost:<port>, with a certificate the test authority made for it."""
    receiver = Receiver(tls=authority.issue("localhost"))
    await receiver.start()
    yield receiver
    await receiver.stop()


async def ping(
    client: Client, manager: dict[str, str], receiver: Receiver, run_worker: WorkerRun, deps: Deps
) -> dict[str, Any]:
    """Register ``receiver``, send it a test event, run a worker on ``deps``: the delivery."""
    hook = await register(client, manager, receiver.url, ["job.succeeded"])
    sent = await client.post(f"/v1/webhooks/{hook['id']}/test", headers=manager)
    assert sent.status_code == 202, sent.text
    await run_worker(deps=deps)
    [delivery] = await deliveries(client, manager, hook)
    return {**delivery, "secret": hook["secret"]}


def trusting(deps: Deps, settings: Settings, ca_file: Path) -> Deps:
    trusted = msgspec.structs.replace(settings, webhook_ca_file=str(ca_file))
    return dataclasses.replace(deps, settings=trusted)


async def test_a_receiver_whose_authority_is_not_trusted_gets_nothing(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    tls_receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    delivery = await ping(client, manager, tls_receiver, run_worker, deps)
    assert delivery["status"] == "failed"
    assert all("CERTIFICATE_VERIFY_FAILED" in a["error"] for a in delivery["attempts"])
    assert tls_receiver.got == []  # no request got through the handshake


async def test_a_private_authority_named_in_the_settings_is_trusted(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    authority: Authority,
    tls_receiver: Receiver,
    run_worker: WorkerRun,
) -> None:
    delivery = await ping(
        client, manager, tls_receiver, run_worker, trusting(deps, settings, authority.ca_file)
    )
    assert delivery["status"] == "succeeded"
    [got] = tls_receiver.got
    assert got.headers["host"] == f"localhost:{tls_receiver.port}"
    assert verify_signature(delivery["secret"], got.headers["ferry-signature"], got.body)


async def test_a_certificate_for_another_name_is_refused_even_from_a_trusted_authority(
    client: Client,
    manager: dict[str, str],
    deps: Deps,
    settings: Settings,
    authority: Authority,
    run_worker: WorkerRun,
) -> None:
    impostor = Receiver(tls=authority.issue("billing.example.com"))
    await impostor.start()
    try:
        delivery = await ping(
            client, manager, impostor, run_worker, trusting(deps, settings, authority.ca_file)
        )
    finally:
        await impostor.stop()
    assert delivery["status"] == "failed"
    errors = [a["error"] for a in delivery["attempts"]]
    assert all("CERTIFICATE_VERIFY_FAILED" in e and "localhost" in e for e in errors), errors
    assert impostor.got == []


def test_a_ca_file_that_cannot_be_read_stops_start_up(tmp_path: Path) -> None:
    from services.core.errors import SettingsError
    from services.core.settings import load_settings

    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    for path in (not_pem, tmp_path / "missing.pem"):
        with pytest.raises(SettingsError, match="FERRY_WEBHOOK_CA_FILE"):
            load_settings({"FERRY_WEBHOOK_CA_FILE": str(path)})
