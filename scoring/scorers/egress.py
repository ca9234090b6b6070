"""Where an organization's LLM endpoint may connect.

An organization's owner sets its endpoint's base_url, and the workers (and the web server, for
Test rule and scorer previews) then call it and report its answers in scoring errors. Unchecked,
an owner could aim it at what only the server can reach, a cloud metadata address or an
internal service, and read the replies. So an organization's endpoint must resolve to public
addresses, or to networks the operator allows (SCORING_LLM_ALLOWED_NETWORKS: a model served on
the same network or on the same machine). The endpoint in the environment (OPENAI_BASE_URL) is
the operator's own and is not checked.

The check runs when the endpoint is saved, for a clear error then, and again on every
connection, against the very address connected to: a name that resolved to a public address
when it was saved can resolve to another one later (DNS rebinding).
"""

import ipaddress
import logging
import socket
from functools import lru_cache

import httpx2
from django.conf import settings

logger = logging.getLogger(__name__)


class BlockedAddress(Exception):
    """The endpoint's host is not one organizations' endpoints may reach."""


def check_url(url: str) -> None:
    """Raise BlockedAddress if `url`'s host resolves only to addresses that are not allowed. A
    host that does not resolve here passes: the workers may see another DNS, and a call to an
    unreachable endpoint fails with its own clear error."""
    host = httpx2.URL(url).host
    try:
        address(host, 443)
    except OSError:
        pass


def address(host: str, port: int) -> str:
    """The address to connect to for `host`: the first it resolves to that is allowed. Raises
    BlockedAddress if none is, OSError if it does not resolve."""
    found = list(
        dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    )
    for candidate in found:
        if _allowed(candidate):
            return candidate
    # The addresses go to the server's log, not to the caller: an answer naming them would let
    # an organization's owner learn what internal names resolve to.
    logger.warning("LLM endpoint host %s refused: it resolves to %s.", host, ", ".join(found))
    raise BlockedAddress(
        f"The LLM endpoint's host {host} is not on a public address. The server's operator can "
        "allow such networks with SCORING_LLM_ALLOWED_NETWORKS (docs/operations.md)."
    )


def _allowed(text: str) -> bool:
    ip = ipaddress.ip_address(text.partition("%")[0])  # less an IPv6 zone ("fe80::1%eth0")
    reached = _ipv4_carried(ip) or ip
    allowed = _networks(tuple(settings.SCORING_LLM_ALLOWED_NETWORKS))
    return (reached.is_global and ip not in _NAT64_LOCAL) or any(
        address in network for address in {ip, reached} for network in allowed
    )


# IPv6 addresses that lead to an IPv4 address written in them: a private one must not pass as
# public (Python deems these IPv6 ranges global). NAT64's local-use prefixes place it where the
# network decides, so they are refused unless allowed.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _ipv4_carried(ip) -> ipaddress.IPv4Address | None:
    if ip.version == 4:
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@lru_cache(maxsize=8)
def _networks(texts: tuple[str, ...]) -> list:
    return [ipaddress.ip_network(text, strict=False) for text in texts]


class CheckedTransport(httpx2.HTTPTransport):
    """An HTTP transport that connects only to allowed addresses. It resolves the host once,
    checks the address, and connects to that address, keeping the name for the Host header and
    for TLS (SNI and certificate checks), so that the name cannot resolve to another address
    between the check and the connection.

    A connection is pooled under the address, so one transport must serve a single host (its
    client does not follow redirects). A client given a transport ignores the environment's
    proxies (httpx), so every connection goes through the check."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        try:
            connect_to = address(url.host, url.port or (443 if url.scheme == "https" else 80))
        except OSError as exc:
            raise httpx2.ConnectError(f"{url.host} cannot be resolved: {exc}", request=request) from exc
        if connect_to == url.host:
            return super().handle_request(request)
        request.url = url.copy_with(host=connect_to)
        request.extensions = {**request.extensions, "sni_hostname": url.host}
        try:
            return super().handle_request(request)
        finally:
            request.url = url  # what errors and logs show
