"""Which webhook URLs Ferry may reach: public addresses over https, unless configured.

A URL is checked when it is registered and again before every delivery, since DNS can
change in between. Every address its host resolves to must be allowed (one private
address among public ones is refused), and the delivery connects to an address that
was checked, so a second lookup cannot swap in another one.

Refused: loopback, private (RFC 1918, ULA), link-local (cloud metadata lives there),
multicast, unspecified and reserved addresses. ``FERRY_WEBHOOK_ALLOW_PRIVATE`` lets
loopback and private ones through, ``FERRY_WEBHOOK_ALLOW_CIDRS`` any listed network;
``FERRY_WEBHOOK_ALLOW_HTTP`` accepts ``http://`` URLs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

from services.core.errors import InvalidInput
from services.core.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL = 2048
# What FERRY_WEBHOOK_ALLOW_PRIVATE lets through; the other refusals need a CIDR.
PRIVATE_KINDS = frozenset({"loopback", "private"})


class Target(NamedTuple):
    """A checked URL and the addresses its host resolved to (all of them allowed)."""

    url: SplitResult
    addresses: list[IPAddress]


class Refused(InvalidInput):
    """The webhook URL is not one Ferry may reach."""

    def __init__(self, message: str) -> None:
        super().__init__(f"url: {message}", errors=[{"field": "url", "message": message}])
        self.reason = message


def check_url(url: str, settings: Settings) -> SplitResult:
    """The URL split, when its form is acceptable (scheme, host, no credentials)."""
    if len(url) > MAX_URL:
        raise Refused(f"longer than {MAX_URL} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise Refused("must not contain spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL ({exc})") from None
    schemes = {"https", "http"} if settings.webhook_allow_http else {"https"}
    if parts.scheme not in schemes:
        raise Refused("must start with " + " or ".join(f"{s}://" for s in sorted(schemes)))
    if not parts.hostname:
        raise Refused("has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry credentials; check the Ferry-Signature header instead")
    if parts.fragment:
        raise Refused("must not have a #fragment")
    if port == 0:
        raise Refused("port 0 cannot be reached")
    return parts


def refusal(address: IPAddress, settings: Settings) -> str | None:
    """Why ``address`` may not be reached (``"private"``, …), or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if any(address in network for network in settings.webhook_networks):
        return None
    kind = _kind(address)
    if kind is None or (settings.webhook_allow_private and kind in PRIVATE_KINDS):
        return None
    return kind


def _kind(address: IPAddress) -> str | None:
    checks = (
        ("multicast", address.is_multicast),
        ("link-local", address.is_link_local),
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("reserved", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


async def resolve(url: str, settings: Settings) -> Target:
    """Check ``url`` and every address of its host; ``Refused`` says what is wrong."""
    parts = check_url(url, settings)
    host = parts.hostname
    assert host is not None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _lookup(host, port, settings.webhook_timeout_seconds)
    for address in addresses:
        if reason := refusal(address, settings):
            subject = host if str(address) == host else f"{host} resolves to {address}, which"
            raise Refused(f"{subject} is not a public address ({reason})")
    return Target(parts, addresses)


async def _lookup(host: str, port: int, seconds: float) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(seconds):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise Refused(f"the host {host} did not resolve within {seconds:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"the host {host} does not resolve ({exc})") from None
    # sockaddr[0] is the address text; IPv6 ones may carry a %scope, which ip_address refuses
    found = {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}
    if not found:
        raise Refused(f"the host {host} does not resolve")
    return sorted(found, key=lambda a: (a.version, int(a)))
