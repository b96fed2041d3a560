"""The ingress: public URLs for deployments (``kova-live serve --ingress-port P``).

Each service of a deployment that exposes a port globally gets a route
``<service>-<deployment id>.<domain>`` (``--domain``, default ``deployments.localhost``), and
each hostname its ``expose`` entries ``accept``. Routes are rows of the ``routes`` table, made
with the deployment in its transaction (a hostname another live deployment holds is refused).
The ingress answers every request by its ``Host`` header:

- no such route, or a closed deployment: 404;
- a deployment paused for insufficient funds: 503, with a page saying so;
- no replica running yet, or its provider unreachable: 502;
- otherwise the request is proxied to a running lease's endpoint (the ``host:port`` its
  provider's agent reported; replicas in turn), HTTP/1.1 with streamed bodies and WebSocket
  upgrades, with ``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``.

Before it connects anywhere, the ingress checks each endpoint again as it reads the routes
(:mod:`kova_live.endpoints`): one outside the server's endpoint networks, at one of the
server's own listening sockets, or no longer among its provider's registered addresses and
ports is dropped (and logged once), as if that replica did not run.

A request only ever reaches an endpoint of its own route's deployment and service. The
ingress runs in worker processes of its own (:class:`IngressWorkers`), each with the table of
routes and their endpoints in memory (:class:`Routes`), read again at each new block and when
the server's own handlers change a deployment or a lease; routes thus survive a restart and
follow a re-placed lease to its new provider's endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvloop
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .clock import BlockClock
from .db import async_engine
from .endpoints import EndpointPolicy, Registration
from .schema import deployments, leases, orders, provider_nodes, routes

log = logging.getLogger("kova_live.ingress")
LOG_FORMAT = "%(asctime)s %(name)s %(message)s"  # the server's log lines, and its workers'

__all__ = [
    "Ingress", "IngressError", "IngressSettings", "IngressWorkers", "Routes", "claim_routes",
    "route_urls",
]  # fmt: skip

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "expect",
})  # fmt: skip


NOT_PASSED_BACK = HOP_BY_HOP | {"content-length"}  # the answer's length is the ingress's to set
AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")  # aiohttp would add

# answers are counted by who gave them (a container, or the ingress itself: 404, 502, 503) and
# status, in a slot each: SOURCES.index(source) * STATUSES + status
SOURCES = ("container", "ingress")
STATUSES = 600

SMALL_BODY = 64 * 1024  # bytes: an answer up to this size is read whole, then sent


@dataclass(frozen=True, slots=True)
class IngressSettings:
    """The routes' domain, and where the ingress listens (``port`` None: no ingress), in how
    many worker processes."""

    domain: str = "deployments.localhost"
    port: int | None = None
    host: str = "127.0.0.1"
    workers: int = 1
    scheme: str = "http"  # of the URLs shown to tenants
    tls_cert: str | None = None  # the ingress terminates TLS itself with these
    tls_key: str | None = None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        return context

    def url(self, hostname: str) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        port = "" if self.port in (None, default) else f":{self.port}"
        return f"{self.scheme}://{hostname}{port}/"


class HostnameTaken(Exception):
    """A hostname a manifest accepts is another live deployment's, or under Kova's domain."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


async def claim_routes(
    connection: AsyncConnection,
    deployment_id: int | None,
    manifest: Any,
    settings: IngressSettings,
) -> None:
    """Make the deployment's routes, in the caller's transaction: one generated hostname per
    service that exposes a port globally, and the hostnames its expose entries accept. Raises
    :class:`HostnameTaken` (naming the manifest field) for a hostname held by another
    deployment that is not closed, or one under ``settings.domain``. With no
    ``deployment_id``, only checks (a deployment not created yet), writing nothing."""  # fmt: skip
    suffix = "." + settings.domain
    for name, service in manifest.services.items():
        wanted: list[tuple[str, int, str | None]] = []  # hostname, custom, field
        # a generated hostname is the new deployment's own: nobody else's
        if deployment_id is not None and any(e.global_ for e in service.expose):
            wanted.append((f"{name}-{deployment_id}{suffix}".lower(), 0, None))
        for i, expose in enumerate(service.expose):
            for j, accepted in enumerate(expose.accept):
                path = f"manifest.services.{name}.expose.{i}.accept.{j}"
                hostname = accepted.lower().rstrip(".")
                if hostname.endswith(suffix) or hostname == settings.domain:
                    raise HostnameTaken(path, f"{hostname} is under Kova's own domain")
                wanted.append((hostname, 1, path))
        for hostname, custom, path in wanted:
            query = (
                select(routes.c.deployment_id, deployments.c.state)
                .join(deployments, deployments.c.id == routes.c.deployment_id)
                .where(routes.c.hostname == hostname)
            )
            if deployment_id is not None:
                query = query.with_for_update()
            held = (await connection.execute(query)).first()
            if held is not None and held.deployment_id != deployment_id:
                if held.state != "closed":
                    raise HostnameTaken(
                        path or "manifest", f"{hostname} is deployment {held.deployment_id}'s"
                    )
                if deployment_id is None:
                    continue
                await connection.execute(delete(routes).where(routes.c.hostname == hostname))
            elif held is not None or deployment_id is None:
                continue
            await connection.execute(
                routes.insert().values(
                    hostname=hostname, deployment_id=deployment_id, service=name, custom=custom
                )
            )


async def route_urls(
    connection: AsyncConnection, deployment_id: int, settings: IngressSettings
) -> list[dict[str, Any]]:
    """The deployment's URLs, one per route, generated ones first."""
    rows = (
        await connection.execute(
            select(routes.c.hostname, routes.c.service, routes.c.custom)
            .where(routes.c.deployment_id == deployment_id)
            .order_by(routes.c.custom, routes.c.service, routes.c.hostname)
        )
    ).all()
    return [
        {"service": r.service, "hostname": r.hostname, "url": settings.url(r.hostname),
         "custom": bool(r.custom)}
        for r in rows
    ]  # fmt: skip


@dataclass
class Target:
    """Where a route's requests go: its deployment's state, and its running endpoints."""

    deployment_id: int
    service: str
    state: str
    endpoints: list[str] = field(default_factory=list)
    turn: itertools.count[int] = field(default_factory=itertools.count)

    def next_endpoint(self) -> str:
        return self.endpoints[next(self.turn) % len(self.endpoints)]


class RoutesUnreadable(Exception):
    """The routes were never read: the database cannot be reached."""


class Routes:
    """The routes and their endpoints, in memory: read again at each new block, and after
    :meth:`changed` (which the API's handlers call when they change a deployment or lease).

    When the database cannot be read, the last routes read go on serving (the failure is
    logged, and the read tried again at the next block or change, not at every request);
    before any were read, :meth:`lookup` raises :class:`RoutesUnreadable`."""

    def __init__(
        self, engine: AsyncEngine, height: Callable[[], int],
        endpoints: EndpointPolicy | None = None,
    ) -> None:  # fmt: skip
        self.engine, self.height = engine, height
        self.endpoints = endpoints or EndpointPolicy()
        # (endpoint, its provider's registration) -> why it may not be reached (None: it may),
        # and the endpoints whose refusal was logged
        self.verdicts: dict[tuple[str, str | None, int | None, int | None], str | None] = {}
        self.logged: set[tuple[str, str]] = set()
        self.version = 0
        self.by_host: dict[str, Target] = {}
        self._key: tuple[int, int] | None = None
        self._loading: tuple[tuple[int, int], asyncio.Future[None]] | None = None

    def changed(self) -> None:
        self.version += 1

    async def lookup(self, hostname: str) -> Target | None:
        key = (self.height(), self.version)
        if self._key != key:
            loading = self._loading
            if loading is None or loading[0] != key:
                self._loading = (key, asyncio.ensure_future(self._load(key)))
            try:
                await asyncio.shield(self._loading[1])
            except Exception:  # logged once by _load
                if self._key is None:
                    raise RoutesUnreadable from None
        return self.by_host.get(hostname)

    async def _load(self, key: tuple[int, int]) -> None:
        running = and_(
            leases.c.deployment_id == routes.c.deployment_id,
            leases.c.state == "active", leases.c.status == "running",
            leases.c.endpoint.is_not(None),
        )  # fmt: skip
        query = (
            select(routes.c.hostname, routes.c.deployment_id, routes.c.service,
                   deployments.c.state, leases.c.endpoint, orders.c.service.label("lease_service"),
                   provider_nodes.c.endpoint_addresses, provider_nodes.c.endpoint_port_low,
                   provider_nodes.c.endpoint_port_high)
            .join(deployments, deployments.c.id == routes.c.deployment_id)
            .outerjoin(leases, running)
            .outerjoin(orders, orders.c.id == leases.c.order_id)
            .outerjoin(provider_nodes, provider_nodes.c.provider_id == leases.c.provider_id)
            .order_by(routes.c.hostname, leases.c.id)
        )  # fmt: skip
        try:
            async with self.engine.connect() as connection:
                rows = (await connection.execute(query)).all()
        except Exception as exc:
            why = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [repr(exc)]
            log.warning("cannot read the routes (%s): %s", "serving the last read"
                        if self._key is not None else "none read yet", why[0])  # fmt: skip
            raise
        by_host: dict[str, Target] = {}
        for r in rows:
            target = by_host.get(r.hostname)
            if target is None:
                old = self.by_host.get(r.hostname)
                target = by_host[r.hostname] = Target(r.deployment_id, r.service, r.state)
                if old is not None:
                    target.turn = old.turn
            if r.endpoint is not None and r.lease_service == r.service and self._allowed(r):
                target.endpoints.append(r.endpoint)
        self.by_host = by_host
        self._key = key

    def _allowed(self, row: Any) -> bool:
        """Whether the ingress may connect to a running lease's endpoint: it passes the
        server's endpoint policy with its provider's registration as it stands now. A
        refusal is logged once per endpoint and reason."""
        key = (row.endpoint, row.endpoint_addresses, row.endpoint_port_low,
               row.endpoint_port_high)  # fmt: skip
        if key in self.verdicts:
            problem = self.verdicts[key]
        else:
            if len(self.verdicts) >= 100_000:
                self.verdicts.clear()
            registration = Registration.of(*key[1:])
            problem = self.verdicts[key] = self.endpoints.problem(row.endpoint, registration)
        if problem is None:
            return True
        if (row.endpoint, problem) not in self.logged:
            if len(self.logged) >= 100_000:
                self.logged.clear()
            self.logged.add((row.endpoint, problem))
            log.warning("not proxying to %s: %s", row.endpoint, problem)
        return False


class Page(web.Response):
    """An answer of the ingress's own (404, 502, 503), not a container's."""


def _page(status: int, title: str, text: str) -> web.Response:
    body = f"<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>\n"
    return Page(status=status, text=body, content_type="text/html")


class Ingress:
    """The ingress's server in one worker process (aiohttp's low-level server: every path of
    every host is proxied, with no application router in the way)."""

    def __init__(self, routes_: Routes, answered: Any) -> None:
        """``answered``: where to count answers, a slot each (see :data:`SOURCES`), in memory
        shared with the server process."""
        self.routes = routes_
        self.session: aiohttp.ClientSession | None = None
        self.runner: web.ServerRunner | None = None
        self.answered = answered

    async def start(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        """Serve on the listening socket ``sock`` (which all the workers share)."""
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        # it passes on what the visitor sent, no more: no headers of aiohttp's own, and no
        # cookie jar (one shared by every visitor would send one's cookies with another's)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=AUTO_HEADERS,
        )  # fmt: skip
        self.runner = web.ServerRunner(web.Server(self.answer, access_log=None))
        await self.runner.setup()
        await web.SockSite(self.runner, sock, ssl_context=ssl_context).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.session is not None:
            await self.session.close()

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self.proxy(request)
        slot = (1 if isinstance(response, Page) else 0) * STATUSES + min(response.status, 599)
        self.answered[slot] += 1
        return response

    async def proxy(self, request: web.BaseRequest) -> web.StreamResponse:
        hostname = (request.host or "").rsplit(":", 1)[0].lower().rstrip(".")
        try:
            target = await self.routes.lookup(hostname)
        except RoutesUnreadable:
            return _page(503, "Unavailable", "The ingress cannot read its routes just now.")
        if target is None or target.state == "closed":
            return _page(404, "Not found", f"No deployment answers at {hostname}.")
        if target.state == "insufficient_funds":
            return _page(503, "Paused", f"The deployment at {hostname} is paused: its escrow "
                         "ran out. It comes back when its tenant deposits.")  # fmt: skip
        if not target.endpoints:
            return _page(502, "Bad gateway", f"No replica of {hostname} is running yet.")
        endpoint = target.next_endpoint()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        peer = request.remote or ""
        before = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{before}, {peer}" if before else peer
        headers["X-Forwarded-Proto"] = request.headers.get("X-Forwarded-Proto", request.scheme)
        headers["X-Forwarded-Host"] = request.host
        headers["Host"] = request.host
        url = f"http://{endpoint}{request.rel_url}"
        session = self.session
        assert session is not None
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, session, url, headers)
        if request.headers.get("Expect", "").lower() == "100-continue" and request.body_exists:
            # the visitor waits to be told to send its body; the ingress tells it (as aiohttp's
            # application router would) and does not pass the question on
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        body = request.content if request.body_exists else None
        response: web.StreamResponse | None = None
        try:
            async with session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False,
            ) as upstream:  # fmt: skip
                passed = [(k, v) for k, v in upstream.headers.items()
                          if k.lower() not in NOT_PASSED_BACK]  # fmt: skip
                size = upstream.content_length
                if size is not None and size <= SMALL_BODY and request.method != "HEAD":
                    # most answers: read whole, sent in one write
                    body = await upstream.read()
                    return web.Response(status=upstream.status, reason=upstream.reason,
                                        body=body, headers=CIMultiDict(passed))  # fmt: skip
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in passed:
                    response.headers.add(key, value)
                if size is not None:
                    response.content_length = size
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError, OSError):
            if response is not None and response.prepared:
                # cut off mid-answer: so is the visitor's (ending the answer here would pass a
                # part for the whole); aiohttp takes the closed connection as the visitor gone
                if request.transport is not None:
                    request.transport.close()
                return response
            return _page(502, "Bad gateway", f"The provider serving {hostname} cannot be reached.")


async def _websocket(
    request: web.BaseRequest, session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> web.StreamResponse:
    for name in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"):
        headers.pop(name, None)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                 if p.strip()]  # fmt: skip
    headers.pop("Sec-WebSocket-Protocol", None)
    try:
        upstream = await session.ws_connect(url.replace("http://", "ws://", 1), headers=headers,
                                            protocols=protocols)  # fmt: skip
    except (aiohttp.ClientError, TimeoutError, OSError):
        return _page(502, "Bad gateway", "The provider cannot be reached.")
    downstream = web.WebSocketResponse(protocols=protocols)
    await downstream.prepare(request)

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:
                break
        await sink.close()

    async with upstream:
        tasks = [asyncio.create_task(pump(downstream, upstream)),
                 asyncio.create_task(pump(upstream, downstream))]  # fmt: skip
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return downstream


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (a name, an IPv4 or an IPv6 address). Raises
    :class:`OSError` saying, in one line, why it cannot."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]  # fmt: skip
        return socket.create_server(address, family=family, backlog=1024)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
        raise OSError(f"cannot listen on {host}:{port}: {why}") from None


class IngressError(Exception):
    """An ingress worker could not start (it says why: the port is taken, say)."""


@dataclass
class IngressWorkers:
    """The ingress's worker processes (``kova-live serve --ingress-workers N``), apart from the
    API's: each accepts connections on the ingress's listening socket, which this process
    opens (so a port already taken is refused here, once), and keeps its own
    :class:`Routes`, read from the database at each new block. :meth:`changed`
    (which the API's handlers call when they change a deployment or a lease) tells every
    worker at once, through a pipe, to read them again. A worker ends when that pipe closes:
    when the server stops, or dies. A worker that ends otherwise is started again."""

    database_url: str
    settings: IngressSettings
    genesis_ms: int
    block_ms: int
    count: int = 1
    # the endpoint policy the workers check endpoints with; once they listen, it counts the
    # ingress's own socket among the server's
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)
    processes: list[Any] = field(default_factory=list)
    pipes: list[Any] = field(default_factory=list)
    sock: socket.socket | None = None
    watching: asyncio.Task[None] | None = None
    counts: list[Any] = field(default_factory=list)  # each worker's answers (shared memory)

    async def start(self) -> None:
        """Start the workers; return once every one serves. Raises :class:`IngressError`."""
        host, port = self.settings.host, self.settings.port or 0
        try:
            self.sock = listen(host, port)
        except OSError as exc:
            raise IngressError(str(exc)) from None
        self.endpoints = self.endpoints.listening_also(host, self.sock.getsockname()[1])
        self.processes, self.pipes = [None] * self.count, [None] * self.count
        context = multiprocessing.get_context("spawn")
        # a worker started again counts on where the one before it stopped
        self.counts = [context.RawArray("q", len(SOURCES) * STATUSES) for _ in range(self.count)]
        for i in range(self.count):  # all at once: each takes a second to import what it needs
            self._launch(i)
        said = await asyncio.gather(*(self._serving(i) for i in range(self.count)))
        for word in said:
            if word:
                raise IngressError(word)
        self.watching = asyncio.create_task(self._watch())

    def _launch(self, i: int) -> None:
        """Start worker ``i``."""
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        ours, theirs = context.Pipe()
        process = context.Process(
            target=_worker, name=f"kova-ingress-{i}", daemon=True,
            args=(theirs, self.sock, self.counts[i], self.database_url, self.settings,
                  self.genesis_ms, self.block_ms, self.endpoints),
        )  # fmt: skip
        process.start()
        theirs.close()
        os.set_blocking(ours.fileno(), False)  # a full pipe already says "changed"
        self.processes[i], self.pipes[i] = process, ours

    async def _serving(self, i: int) -> str:
        """Once worker ``i`` serves, ""; or why it cannot."""
        return await asyncio.get_running_loop().run_in_executor(None, _first_word, self.pipes[i])

    async def _watch(self) -> None:
        """Start again any worker that ended (it crashed, or was killed)."""
        while True:
            await asyncio.sleep(1)
            for i, process in enumerate(self.processes):
                if process is not None and not process.is_alive():
                    log.warning("ingress worker %s ended (exit code %s): starting it again",
                                process.pid, process.exitcode)  # fmt: skip
                    self.pipes[i].close()
                    self._launch(i)
                    said = await self._serving(i)
                    if said:
                        log.error("ingress worker %d cannot start again: %s", i, said)

    def answered(self) -> dict[tuple[str, int], int]:
        """How many requests the workers answered, by who answered and status (the ones that
        ever happened)."""
        totals: dict[tuple[str, int], int] = {}
        for counts in self.counts:
            for slot, n in enumerate(counts):
                if n:
                    key = (SOURCES[slot // STATUSES], slot % STATUSES)
                    totals[key] = totals.get(key, 0) + n
        return totals

    def changed(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, AttributeError):  # full (a change is pending
                pipe.send_bytes(b"")  # anyway), gone, or not started yet

    async def stop(self) -> None:
        if self.watching is not None:
            self.watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watching
        for pipe in self.pipes:
            if pipe is not None:
                pipe.close()
        loop = asyncio.get_running_loop()
        for process in self.processes:
            if process is None:
                continue
            await loop.run_in_executor(None, process.join, 10)
            if process.is_alive():
                process.kill()
                await loop.run_in_executor(None, process.join, 10)
        if self.sock is not None:
            self.sock.close()


def _first_word(pipe: Any) -> str:
    """What a starting worker says: "" once it listens, else why it cannot."""
    if not pipe.poll(120):
        return "an ingress worker did not start within 120 s"
    try:
        return pipe.recv_bytes().decode()
    except EOFError:
        return "an ingress worker ended as it started"


def _worker(pipe: Any, sock: socket.socket, counts: Any, url: str, settings: IngressSettings,
            genesis_ms: int, block_ms: int, endpoints: EndpointPolicy) -> None:  # fmt: skip
    """An ingress worker process's life (see :class:`IngressWorkers`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in a terminal stops the server,
    # which closes the pipe: the worker ends with it
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)  # as the server's own
    with contextlib.suppress(BrokenPipeError):
        uvloop.run(_serve(pipe, sock, counts, url, settings, genesis_ms, block_ms, endpoints))


async def _serve(pipe: Any, sock: socket.socket, counts: Any, url: str,
                 settings: IngressSettings, genesis_ms: int, block_ms: int,
                 endpoints: EndpointPolicy) -> None:  # fmt: skip
    engine = async_engine(url, reads_only=True)
    ingress = Ingress(Routes(engine, BlockClock(genesis_ms, block_ms).height, endpoints), counts)
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    try:
        try:
            await ingress.start(sock, settings.ssl_context())
        except (OSError, ValueError) as exc:
            pipe.send_bytes(f"an ingress worker cannot serve: {exc}".encode())
            return
        pipe.send_bytes(b"")

        def readable() -> None:
            try:
                while pipe.poll():
                    pipe.recv_bytes()
            except (EOFError, OSError):
                if not ended.done():
                    ended.set_result(None)
                return
            ingress.routes.changed()

        loop.add_reader(pipe.fileno(), readable)
        loop.add_signal_handler(signal.SIGTERM, lambda: ended.done() or ended.set_result(None))
        gc.collect()
        gc.freeze()  # what start-up made lives as long as the process (see ``serve``)
        await ended
        loop.remove_reader(pipe.fileno())
    finally:
        await ingress.close()
        await engine.dispose()
