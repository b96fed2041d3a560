"""Rate limits: token buckets per account and per client address, in the serving process's memory.

Three kinds of request each have their own buckets (``kova-live serve --rate-limit-accounts``,
``--rate-limit-writes``, ``--rate-limit-reads``; each ``RATE,BURST``, or ``0`` for none):

- ``accounts``: registrations (``POST /v1/accounts``), per client address only (the caller has
  no account yet);
- ``writes``: every other request that is not a GET/HEAD/OPTIONS, per address and per account
  (both must have a token to spare; each pays one);
- ``reads``: GETs under ``/v1``, per address and per account, with a larger bucket (providers'
  agents and tenants poll). ``/healthz`` and ``/metrics`` are never limited.

A refused request is answered ``429`` with ``Retry-After`` (whole seconds, at least 1) and
``{"error": {"code": "rate_limited", ...}}``; it changes nothing. The client address is the
peer's, or, when the peer is a trusted proxy (``--trusted-proxy``), the nearest address in
``X-Forwarded-For`` that is not one; IPv6 addresses count by their /64 (one host is given a
whole /64). The buckets live in this process alone: several orchestrators would each keep
their own. Each kind keeps at most ``max_buckets`` buckets, the least recently used forgotten
first (a forgotten bucket is full again), so a flood of addresses cannot exhaust memory.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the server imports aiohttp; `kova-live provider` reads only the defaults
    from aiohttp import web

__all__ = [
    "Buckets",
    "LimitSettings",
    "Rate",
    "client_address",
    "parse_proxies",
    "parse_rate",
    "rate_limits",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


class Rate(NamedTuple):
    """Tokens a bucket gains per second, and the most it holds (a burst)."""

    per_second: float
    burst: int


def parse_rate(text: str) -> Rate | None:
    """``RATE,BURST`` (e.g. ``20,200``: 20 a second, bursts of 200) as a :class:`Rate`; ``0``
    or ``off``: no limit (``None``). Raises :class:`ValueError` saying what is wrong."""
    raw = text.strip().lower()
    if raw in ("0", "off", "0,0"):
        return None
    rate, sep, burst = raw.partition(",")
    try:
        per_second, most = float(rate), int(burst)
    except ValueError:
        raise ValueError(f"expected RATE,BURST such as 20,200 (or 0: none), got {text!r}") from None
    if not sep or not 0 < per_second <= 1e6 or not 1 <= most <= 10**6:  # NaN is not above 0
        raise ValueError(f"RATE must be above 0 and at most 1000000 (per second), BURST from 1 "
                         f"to 1000000; got {text!r}")  # fmt: skip
    return Rate(per_second, most)


def parse_proxies(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (``--trusted-proxy``); empty: none."""
    found = []
    for part in text.split(","):
        if part.strip():
            try:
                found.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"{part.strip()!r} is not a network: {exc}") from None
    return tuple(found)


class Buckets:
    """Token buckets of one :class:`Rate`, by key, at most ``max_buckets`` of them (least
    recently used forgotten first). ``clock``: seconds, monotonic (tests pass their own)."""

    def __init__(self, rate: Rate, max_buckets: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.rate, self.max_buckets, self.clock = rate, max_buckets, clock
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()  # [tokens, when]

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: Hashable, now: float) -> list[float]:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(self.rate.burst), now]
            while len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            gained = (now - bucket[1]) * self.rate.per_second
            bucket[0], bucket[1] = min(float(self.rate.burst), bucket[0] + gained), now
        return bucket

    def wait(self, keys: Iterable[Hashable]) -> float:
        """The seconds until each key's bucket has a token (0: each has one now); takes none."""
        now = self.clock()
        short = max((1.0 - self._bucket(key, now)[0] for key in keys), default=0.0)
        return max(0.0, short) / self.rate.per_second

    def take(self, keys: Iterable[Hashable]) -> float:
        """One token from each key's bucket if every one has a token: 0. Otherwise nothing is
        taken and the answer is the seconds until each will have one."""
        now = self.clock()
        buckets = [self._bucket(key, now) for key in keys]
        short = max((1.0 - b[0] for b in buckets), default=0.0)
        if short > 0:
            return short / self.rate.per_second
        for bucket in buckets:
            bucket[0] -= 1.0
        return 0.0


DEFAULT_ACCOUNTS = Rate(0.1, 20)  # registrations: 6 a minute per address, 20 at once
DEFAULT_WRITES = Rate(50, 500)  # a busy provider ships logs and bids for many leases
DEFAULT_READS = Rate(100, 1000)  # agents and tenants poll


@dataclass(slots=True)
class LimitSettings:
    """``kova-live serve``'s rate-limit flags (``None``: that kind is not limited); the
    defaults are the flags' (see ``docs/live.md``)."""

    accounts: Rate | None = DEFAULT_ACCOUNTS
    writes: Rate | None = DEFAULT_WRITES
    reads: Rate | None = DEFAULT_READS
    trusted_proxies: tuple[Network, ...] = ()
    max_buckets: int = 100_000
    clock: Callable[[], float] = field(default=time.monotonic)


def _key(address: str) -> str:
    """An address as its bucket is keyed: IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(request: web.Request, proxies: tuple[Network, ...]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    rightmost ``X-Forwarded-For`` address that is not a trusted proxy (what comes left of it
    the client may have written itself)."""
    peer = request.remote or "unknown"
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", [])
            for hop in header.split(",")]  # fmt: skip
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # not an address: the header is not to be believed
        if not _trusted(hop, proxies):
            return hop
    return peer


UNLIMITED = frozenset({"/healthz", "/metrics"})


def rate_limits(
    settings: LimitSettings,
    account_of: Callable[[web.Request], Awaitable[int | None]],
    forwarded: Callable[[web.Request], str | None] | None = None,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware. ``account_of``: the id of the account whose token the request carries
    (``None`` without a valid one; those requests count by address alone). ``forwarded``: the
    address a request made on a client's behalf by this very process names (the console's
    calls to the API), or ``None`` for any other request."""
    from aiohttp import web

    def kind(rate: Rate | None) -> Buckets | None:
        return None if rate is None else Buckets(rate, settings.max_buckets, settings.clock)

    registrations, writes = kind(settings.accounts), kind(settings.writes)
    reads = kind(settings.reads)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNLIMITED:
            return await handler(request)
        if request.method == "POST" and request.path == "/v1/accounts":
            buckets, per_account = registrations, False
        elif request.method in ("GET", "HEAD", "OPTIONS"):
            buckets, per_account = reads, True
        else:
            buckets, per_account = writes, True
        if buckets is None:
            return await handler(request)
        address = (forwarded and forwarded(request)) or client_address(
            request, settings.trusted_proxies
        )
        keys: list[Hashable] = [("address", _key(address))]
        # the address first: finding the token's account may read the database, which a
        # flood of made-up tokens from one address must not reach unthrottled
        wait = buckets.wait(keys)
        if wait == 0 and per_account and "Authorization" in request.headers:
            account = await account_of(request)
            if account is not None:
                keys.append(("account", account))
        if wait == 0:
            wait = buckets.take(keys)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            who = "account or address" if len(keys) > 1 else "address"
            message = f"too many requests from this {who}; try again in {seconds} s"
            body = {"error": {"code": "rate_limited", "message": message, "field": None}}
            return web.json_response(body, status=429, headers={"Retry-After": str(seconds)})
        return await handler(request)

    return middleware
