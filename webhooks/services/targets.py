"""The SSRF guard: which URLs may receive webhooks, decided on the addresses their host resolves to."""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from core.errors import InvalidInput

_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "169.254.170.2",  # AWS ECS task credentials
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlNotAllowed(Exception):
    """The URL may not be a webhook's target; the message says why, for its owner."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def breaker_key(self) -> str:
        return f"{self.host}:{self.port}"


def target_of(url: str) -> Target:
    """The parts of a URL the schema already validated (webhooks/schemas.py)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise UrlNotAllowed("Only http and https URLs with a host can receive webhooks.")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UrlNotAllowed("The URL's port is invalid.") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=scheme, host=parts.hostname, port=port, path=path)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), which is where a packet would really go."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str) -> str | None:
    """Why a webhook may not be sent to this IP address, or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        candidates = [embedded] if ip.ipv4_mapped is not None else [ip, embedded]
    for candidate in candidates:
        if candidate in _METADATA_ADDRESSES:
            return "a cloud metadata address"
        if candidate.is_loopback:
            if settings.WEBHOOK_ALLOW_LOOPBACK:
                continue
            return "a loopback address"
        for label, flag in (
            ("an unspecified address", candidate.is_unspecified),
            ("a link-local address", candidate.is_link_local),
            ("a multicast address", candidate.is_multicast),
            ("a private address", candidate.is_private),
            ("a reserved address", candidate.is_reserved),
            ("a non-public address", not candidate.is_global),
        ):
            if flag:
                return label
    return None


def resolve_public(target: Target) -> list[str]:
    """The host's addresses, all of them allowed. Raises UrlNotAllowed, or OSError when resolving fails."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            # Every address must pass: a client connecting to any of them must not reach an internal service.
            raise UrlNotAllowed(f"The URL's host resolves to {refusal}; webhooks are only sent to public addresses.")
    if not addresses:
        raise OSError("no address")
    return addresses


def url_check(url: str) -> None:
    """A URL being registered: refused as the validation error of `url` (422) when it may not receive webhooks."""
    try:
        resolve_public(target_of(url))
    except UrlNotAllowed as exc:
        raise InvalidInput(loc=["body", "url"], msg=str(exc), type="url_not_allowed") from None
    except (OSError, UnicodeError, ValueError):
        raise InvalidInput(
            loc=["body", "url"], msg="The URL's host could not be resolved.", type="url_unresolvable"
        ) from None
