"""Where a lease's endpoint may be: the policy the API applies to a provider's ``running``
report and the ingress applies again before it connects.

A provider registers, in its heartbeat, the IP addresses its leases are reached at and the
port range they publish on (:class:`Registration`). A reported endpoint (``host:port``) is
accepted only if:

- its host is an IP literal (IPv6 in brackets): a name could resolve anywhere, and to
  something else tomorrow;
- the address is one of the provider's registered addresses, and the port is inside its
  registered range;
- the address is inside the server's endpoint networks (``kova-live serve
  --endpoint-networks``: CIDRs and/or ``public``, the globally routable addresses);
- it is not one of the orchestrator's own listening sockets (the API's or the ingress's port,
  at an address the server listens on; for a wildcard listener, any address of this machine).

Otherwise the ingress would be an open proxy into whatever the orchestrator's machine can
reach: its own ``/metrics``, a database, a neighbour on a private network.

This module imports nothing else from :mod:`kova_live`, so the API and the ingress's worker
processes share it as it is.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field

__all__ = [
    "Address",
    "EndpointPolicy",
    "Listener",
    "Networks",
    "Registration",
    "format_endpoint",
    "listener",
    "parse_address",
    "parse_endpoint",
    "parse_networks",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ADDRESSES = 16  # a provider registers at most this many addresses
ENDPOINT_FORM = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})")


def _unmapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) as the IPv4 address it reaches, so
    that one address has one form in every comparison."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_address(text: str) -> Address:
    """An IP address literal (IPv4, or IPv6 without brackets), normalised; :class:`ValueError`
    saying why it is not one. Unspecified (``0.0.0.0``, ``::``) and multicast addresses are
    refused: no lease is reached at them (and a connection to ``0.0.0.0`` reaches this
    machine)."""
    if not isinstance(text, str):
        raise ValueError("an IP address is a string")
    if "%" in text:
        raise ValueError(f"{text!r}: an address with a scope (%zone) is not reachable from "
                         "another machine")  # fmt: skip
    try:
        address = _unmapped(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(
            f"{text[:80]!r} is not an IP address (IPv4 or IPv6, no names: a name could "
            "resolve anywhere)"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{address} is not an address a lease can be reached at")
    return address


def parse_endpoint(endpoint: str) -> tuple[Address, int]:
    """``host:port`` with an IP literal host (IPv6 in brackets): the address and the port;
    :class:`ValueError` saying why not."""
    match = ENDPOINT_FORM.fullmatch(endpoint)
    if match is None:
        raise ValueError("an endpoint is host:port, an IPv6 host in brackets")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError("the endpoint's port is not between 1 and 65535")
    if match["host"] is not None:
        try:
            address = ipaddress.IPv4Address(match["host"])
        except ValueError:
            raise ValueError(
                f"the endpoint's host {match['host'][:80]!r} is not an IP address: a provider "
                "reports its leases at an IPv4 address or a bracketed IPv6 address (a name "
                "could resolve anywhere)"
            ) from None
    else:
        try:
            address = ipaddress.IPv6Address(match["v6"])
        except ValueError:
            raise ValueError(f"[{match['v6'][:80]}] is not an IPv6 address") from None
        if "%" in match["v6"]:
            raise ValueError("an endpoint's address has no scope (%zone)")
    return _unmapped(address), port


def format_endpoint(address: Address, port: int) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Networks:
    """The networks endpoints may be in: ``public`` (globally routable: ``is_global``) and/or
    explicit CIDRs."""

    public: bool = True
    cidrs: tuple[Network, ...] = ()

    def __contains__(self, address: Address) -> bool:
        address = _unmapped(address)
        if self.public and address.is_global:
            return True
        return any(address.version == n.version and address in n for n in self.cidrs)

    def __str__(self) -> str:
        words = (["public"] if self.public else []) + [str(n) for n in self.cidrs]
        return ",".join(words)

    def describe(self) -> str:
        """In words, for an error message."""
        parts = ["public (globally routable) addresses"] if self.public else []
        parts += [str(n) for n in self.cidrs]
        return ", ".join(parts)


def parse_networks(text: str) -> Networks:
    """``--endpoint-networks``: comma-separated CIDRs (``10.0.0.0/8``, ``2001:db8::/32``; a lone
    address is its /32 or /128) and/or the word ``public``. :class:`ValueError` saying what
    is wrong."""
    public, cidrs = False, []
    for word in (w.strip() for w in text.split(",")):
        if not word:
            raise ValueError(f"{text!r} has an empty item: give CIDRs and/or public, "
                             "separated by commas")  # fmt: skip
        if word.lower() == "public":
            public = True
            continue
        try:
            network = ipaddress.ip_network(word, strict=True)
        except ValueError as exc:
            raise ValueError(f"{word!r} is neither a CIDR (such as 10.0.0.0/8) nor public: "
                             f"{exc}") from None  # fmt: skip
        if network.version == 6 and network.network_address.ipv4_mapped is not None:
            raise ValueError(f"{word!r}: write IPv4-mapped networks as IPv4 CIDRs")
        if network not in cidrs:
            cidrs.append(network)
    return Networks(public=public, cidrs=tuple(cidrs))


@dataclass(frozen=True, slots=True)
class Registration:
    """What a provider registered in its heartbeat: the addresses its leases are reached at
    and the inclusive port range they publish on."""

    addresses: tuple[Address, ...]
    low: int
    high: int

    def stored(self) -> str:
        """The addresses as the database keeps them: a JSON list of their normal forms."""
        return json.dumps([str(a) for a in self.addresses])

    @classmethod
    def of(cls, addresses: str | None, low: int | None, high: int | None) -> Registration | None:
        """From the database's columns (None: nothing registered)."""
        if addresses is None or low is None or high is None:
            return None
        return _registration(addresses, low, high)


@functools.lru_cache(maxsize=4096)
def _registration(addresses: str, low: int, high: int) -> Registration | None:
    try:
        parsed = tuple(parse_address(a) for a in json.loads(addresses))
    except (ValueError, TypeError):
        return None  # not written by this code: as good as nothing registered
    return Registration(parsed, low, high)


@dataclass(frozen=True, slots=True)
class Listener:
    """One of the server's listening sockets: its port, and the addresses it listens at
    (None: a wildcard, every address of this machine)."""

    port: int
    addresses: frozenset[Address] | None

    def covers(self, address: Address, port: int) -> bool:
        if port != self.port:
            return False
        if self.addresses is None:
            return _is_local(address)
        return address in self.addresses


def listener(host: str, port: int) -> Listener:
    """The listener of a server bound to ``host`` (a name, an address, or a wildcard: ``""``,
    ``0.0.0.0``, ``::``) and ``port``."""
    try:
        address = _unmapped(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        address = None
    if host == "" or (address is not None and address.is_unspecified):
        return Listener(port, None)
    if address is not None:
        return Listener(port, frozenset({address}))
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return Listener(port, None)  # cannot tell which: as strict as a wildcard
    addresses = set()
    for *_, sockaddr in found:
        try:
            addresses.add(_unmapped(ipaddress.ip_address(str(sockaddr[0]).split("%")[0])))
        except ValueError:
            continue
    return Listener(port, frozenset(addresses) if addresses else None)


@functools.lru_cache(maxsize=1024)
def _is_local(address: Address) -> bool:
    """Whether ``address`` is one of this machine's: binding a socket to it succeeds only then
    (remembered: a machine's addresses rarely change, and this is asked on every report)."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    """The server's endpoint networks and its own listening sockets (the API's and the
    ingress's), which no endpoint may be."""

    networks: Networks = field(default_factory=Networks)
    listeners: tuple[Listener, ...] = ()

    def listening_also(self, host: str, port: int) -> EndpointPolicy:
        """This policy, with one more of the server's own listeners."""
        return EndpointPolicy(self.networks, (*self.listeners, listener(host, port)))

    def address_problem(self, address: Address) -> str | None:
        """Why a provider may not register ``address``, if it may not."""
        if address not in self.networks:
            return (f"{address} is outside the networks this server's endpoints may be in "
                    f"({self.networks.describe()}; the operator sets them with "
                    "kova-live serve --endpoint-networks)")  # fmt: skip
        return None

    def problem(self, endpoint: str, registration: Registration | None) -> str | None:
        """Why a lease may not be reached at ``endpoint`` (``host:port``), if it may not: which
        rule it breaks. ``registration`` is its provider's (None: it registered nothing)."""
        try:
            address, port = parse_endpoint(endpoint)
        except ValueError as exc:
            return str(exc)
        if registration is None:
            return ("the provider has registered no endpoint addresses: its agent registers "
                    "them in its heartbeat (kova-live provider --public-address)")  # fmt: skip
        if address not in registration.addresses:
            registered = ", ".join(str(a) for a in registration.addresses)
            return (f"{address} is not one of the addresses the provider registered "
                    f"({registered})")  # fmt: skip
        if not registration.low <= port <= registration.high:
            return (f"port {port} is outside the port range the provider registered "
                    f"({registration.low}-{registration.high})")  # fmt: skip
        outside = self.address_problem(address)
        if outside is not None:
            return outside
        if any(own.covers(address, port) for own in self.listeners):
            return (f"{format_endpoint(address, port)} is the orchestrator's own listening "
                    "socket (its API or its ingress)")  # fmt: skip
        return None
