"""Webhook pieces without I/O: signatures, which addresses may be reached, retry delays."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from typing import Any

import pytest

from services.core.errors import SettingsError
from services.core.settings import Settings, load_settings
from services.core.webhooks import addresses
from services.core.webhooks.deliveries import retry_delay
from services.core.webhooks.signing import signature_header, verify_signature
from tests.conftest import ROOT

BODY = b'{"id":"e1","type":"job.succeeded","data":{}}'
NOW = 1_767_225_600


# --- signatures ---------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_as_the_readme_says() -> None:
    header = signature_header(["whsec_abc"], NOW, BODY)
    expected = hmac.new(b"whsec_abc", b"%d." % NOW + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_a_signature_verifies_with_its_secret_only_for_its_body_and_time() -> None:
    header = signature_header(["whsec_abc"], NOW, BODY)
    assert verify_signature("whsec_abc", header, BODY, now=NOW + 10)
    assert not verify_signature("whsec_other", header, BODY, now=NOW)
    assert not verify_signature("whsec_abc", header, BODY + b" ", now=NOW)
    # A body replayed later than the tolerance is refused, and so is a forged time.
    assert not verify_signature("whsec_abc", header, BODY, tolerance=300, now=NOW + 301)
    forged = header.replace(f"t={NOW}", f"t={NOW + 500}")
    assert not verify_signature("whsec_abc", forged, BODY, now=NOW + 500)


def test_during_a_rotation_either_secret_verifies() -> None:
    header = signature_header(["whsec_new", "whsec_old"], NOW, BODY)
    new, old = (signature_header([s], NOW, BODY).split(",")[1] for s in ("whsec_new", "whsec_old"))
    assert header == f"t={NOW},{new},{old}"  # the new secret's first
    assert verify_signature("whsec_new", header, BODY, now=NOW)
    assert verify_signature("whsec_old", header, BODY, now=NOW)
    assert not verify_signature("whsec_older", header, BODY, now=NOW)


@pytest.mark.parametrize("header", ["", "t=,v1=", f"v1={'0' * 64}", f"t={NOW}", "garbage"])
def test_a_malformed_signature_header_never_verifies(header: str) -> None:
    assert not verify_signature("whsec_abc", header, BODY, now=NOW)


# --- addresses ----------------------------------------------------------------------------

PUBLIC = Settings()
PRIVATE_OK = Settings(webhook_allow_private=True)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
        ("100.64.0.1", "reserved"),  # carrier-grade NAT
        ("::ffff:10.0.0.1", "private"),  # an IPv4-mapped IPv6 address is its IPv4 one
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str, kind: str) -> None:
    assert addresses.refusal(ipaddress.ip_address(address), PUBLIC) == kind


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert addresses.refusal(ipaddress.ip_address(address), PUBLIC) is None


def test_allow_private_lets_loopback_and_private_through_but_not_link_local() -> None:
    assert addresses.refusal(ipaddress.ip_address("127.0.0.1"), PRIVATE_OK) is None
    assert addresses.refusal(ipaddress.ip_address("10.0.0.1"), PRIVATE_OK) is None
    assert addresses.refusal(ipaddress.ip_address("169.254.169.254"), PRIVATE_OK) == "link-local"
    assert addresses.refusal(ipaddress.ip_address("224.0.0.1"), PRIVATE_OK) == "multicast"


def test_an_allowed_network_lets_exactly_its_addresses_through() -> None:
    settings = Settings(webhook_allow_cidrs="10.1.0.0/16, 169.254.1.0/24")
    assert addresses.refusal(ipaddress.ip_address("10.1.200.3"), settings) is None
    assert addresses.refusal(ipaddress.ip_address("169.254.1.9"), settings) is None
    assert addresses.refusal(ipaddress.ip_address("10.2.0.1"), settings) == "private"


def test_a_malformed_allowed_network_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"FERRY_WEBHOOK_ALLOW_CIDRS: '10\.0\.0\.0/33'"):
        load_settings({"FERRY_WEBHOOK_ALLOW_CIDRS": "10.0.0.0/8,10.0.0.0/33"})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/hook", "must start with https://"),
        ("ftp://example.com/hook", "must start with https://"),
        ("https:///hook", "has no host"),
        ("https://user:pw@example.com/hook", "must not carry credentials"),
        ("https://example.com/hook#x", "must not have a #fragment"),
        ("https://example.com/a b", "must not contain spaces or control characters"),
        ("https://exam\x00ple.com/", "must not contain spaces or control characters"),
        ("https://example.com:99999/hook", "not a URL"),
        ("https://example.com/" + "x" * 2100, "longer than 2048 characters"),
    ],
)
def test_a_malformed_url_is_refused_naming_the_url_field(url: str, message: str) -> None:
    with pytest.raises(addresses.Refused) as refused:
        addresses.check_url(url, PUBLIC)
    assert message in refused.value.detail
    assert refused.value.errors == [{"field": "url", "message": refused.value.reason}]


def test_http_urls_are_accepted_only_when_configured() -> None:
    allowed = addresses.check_url("http://example.com/hook", Settings(webhook_allow_http=True))
    assert allowed.hostname == "example.com"


# --- retries ------------------------------------------------------------------------------


def test_retry_delays_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    settings = Settings(webhook_retry_seconds=30, webhook_retry_max_seconds=3600)
    low = [retry_delay(n, settings, rand=lambda: 0.0) for n in range(1, 10)]
    high = [retry_delay(n, settings, rand=lambda: 1.0) for n in range(1, 10)]
    assert high == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert low == [h / 2 for h in high]
    # Even the unluckiest jitter never makes a retry come sooner than the one before.
    assert all(low[n + 1] >= high[n] for n in range(6))
    assert retry_delay(10_000, settings, rand=lambda: 1.0) == 3600  # no overflow


def test_the_readmes_verification_snippet_verifies_what_ferry_signs() -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", readme, re.S)
    assert snippet is not None, "README's Webhooks part lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(snippet[1], namespace)  # noqa: S102 - our own README
    verify = namespace["verify_signature"]
    now = int(time.time())
    header = signature_header(["whsec_new", "whsec_old"], now, BODY)
    assert verify("whsec_new", header, BODY)
    assert verify("whsec_old", header, BODY)
    assert not verify("whsec_new", header, BODY + b"x")
    assert not verify("whsec_new", signature_header(["whsec_new"], now - 301, BODY), BODY)
