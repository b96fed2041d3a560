"""The orchestrator's HTTP API (aiohttp): JSON under ``/v1``.

Every market command is a call on the orchestrator's ``kova_core.Market`` (``kova_live.writer``:
the single writer), made durable in a database transaction that commits before the response is
sent: an acknowledged command is durable. Errors are JSON, ``{"error": {"code", "message",
"field"}}``, with a 4xx status naming what was wrong; bad input changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from kova_core import InsufficientBalance, KovaError, ManifestError, format_micro

from .clock import BlockClock, ManualClock
from .db import retriable, snapshot_reader
from .endpoints import EndpointPolicy
from .ingress import IngressSettings, IngressWorkers
from .journal import KEY_HEADER, KeyReused
from .leader import Leadership
from .ledger import account_transfers, balance
from .limits import LimitSettings, rate_limits
from .market import Settings
from .metrics import METRICS, Metrics, metrics_middleware, serve_metrics
from .openapi import serve_openapi
from .schema import accounts, invites
from .work import WorkSettings, clock_loop, react, worker_loop
from .writer import NotLeader, Unavailable, Writer

__all__ = [
    "INT64_MAX",
    "ApiError",
    "ApiSettings",
    "RequestBody",
    "core_error",
    "create_app",
    "decimal",
    "hash_token",
    "new_secret",
    "wall_ms",
]

MAX_BODY = 1024 * 1024  # bytes; larger requests get 413
INT64_MAX = 2**63 - 1  # the largest integer any field, parameter or path id may hold
ENGINE: web.AppKey[AsyncEngine] = web.AppKey("engine", AsyncEngine)
READER: web.AppKey[AsyncEngine] = web.AppKey("reader", AsyncEngine)
"""Reads of several statements go through this one: one snapshot each (``snapshot_reader``)."""
CLOCK: web.AppKey[BlockClock] = web.AppKey("clock", BlockClock)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
WORK: web.AppKey[WorkSettings] = web.AppKey("work", WorkSettings)
WRITER: web.AppKey[Writer] = web.AppKey("writer", Writer)
LEADERSHIP: web.AppKey[Leadership] = web.AppKey("leadership", Leadership)


@dataclass(slots=True)
class ApiSettings:
    """The API's own settings: the most leases ``GET /v1/leases`` answers at once
    (``kova-live serve --page-size``), where leases' endpoints may be (the endpoint networks,
    ``--endpoint-networks``, and the server's own listening sockets, which no endpoint may be:
    the ingress's is added once it listens), who may register (``--registration``: ``open``,
    ``invite`` with an operator's invite code, ``closed``), the rate limits
    (:mod:`kova_live.limits`), and the largest manifest ``POST /v1/deployments`` takes
    (``--max-manifest-bytes``), checked before it is parsed."""

    page_size: int = 1000
    endpoints: EndpointPolicy = field(default_factory=EndpointPolicy)
    max_manifest_bytes: int = 64 * 1024
    registration: Literal["open", "invite", "closed"] = "invite"
    limits: LimitSettings = field(default_factory=LimitSettings)
    advertise_url: str = ""  # this process's URL as others reach it (``--advertise-url``)
    # a standby answers a market command 307 to the leader instead of 503 (``--redirect``)
    redirect_to_leader: bool = False
    console: bool = True  # Kova Console at /console/ (``--console/--no-console``)


API: web.AppKey[ApiSettings] = web.AppKey("api", ApiSettings)


class Caller(NamedTuple):
    """The account a request's token belongs to. (One object per remembered account: a
    database row would keep its result's metadata and dicts alive, four times as many objects
    for the garbage collector to walk through on each full collection.)"""

    id: int
    role: str
    name: str


class Caches:
    """What this process may remember between requests.

    ``accounts``: token hash -> :class:`Caller`, of accounts in good standing (an account
    never changes role); a handler that suspends an account or replaces its token calls
    :meth:`forget_token` once its transaction has committed. ``accounts_version`` counts those
    calls: a request that read an account from the database before one caches it only if none
    came in between, so a token revoked meanwhile is never remembered.
    ``open_orders``: pages of the serialised open-order list (by cursor and page size), for one
    block and one ``orders_version``. Handlers that change orders bump the version; changes made
    by background work show by the next block at the latest. ``loading``: the one read of each
    page under way, which every poll that finds the page out of date awaits. ``claiming``: held
    by a deployment that asks for hostnames of its own from the check that they are free until
    it is created, so two such deployments never both pass the check.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, Caller] = {}
        self.accounts_version = 0
        self.claiming = asyncio.Lock()
        self.orders_version = 0
        self.open_orders: dict[tuple[int, int, str, int], bytes] = {}
        self.loading: dict[tuple[int, int, str, int], asyncio.Future[bytes]] = {}  # the reads
        self.routes: IngressWorkers | None = None  # the ingress's, once it runs

    def forget_token(self, token_hash: str) -> None:
        """A token no longer stands for its account as it did (suspended, replaced)."""
        self.accounts_version += 1
        self.accounts.pop(token_hash, None)

    def orders_changed(self) -> None:
        """Forget the cached open-order list (and the ingress's routes: whatever changes
        orders may change what serves a deployment)."""
        self.orders_version += 1
        self.routes_changed()

    def routes_changed(self) -> None:
        """Tell the ingress to read its routes again (a provider's registered endpoints
        changed, say)."""
        if self.routes is not None:
            self.routes.changed()


CACHES: web.AppKey[Caches] = web.AppKey("caches", Caches)
INGRESS: web.AppKey[IngressSettings] = web.AppKey("ingress", IngressSettings)

log = logging.getLogger("kova_live")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error the client caused (or may retry): a status, a code, a message, the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> web.Response:
        """As a JSON response."""
        body = {"error": {"code": self.code, "message": self.message, "field": self.field}}
        return web.json_response(body, status=self.status)


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
    429: "rate_limited",
}  # fmt: skip


# core errors a request can cause: (status, field) by class; the code is the class name in
# snake_case. Anything else from the core is a 409 conflict with the market's state.
_CORE_ERRORS: dict[str, tuple[int, str | None]] = {
    "UnknownEntity": (404, None),
    "ManifestError": (400, "manifest"),
    "InvalidAmount": (400, None),
    "PriceAboveMax": (409, "price"),
    "InsufficientBalance": (409, None),
    "DepositTooSmall": (400, "deposit"),
    "TooManyOpenOrders": (409, None),
}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def core_error(exc: KovaError) -> ApiError:
    """A core error as the API reports it."""
    name = type(exc).__name__
    status, field = _CORE_ERRORS.get(name, (409, None))
    if isinstance(exc, ManifestError) and exc.problems:  # the first problem's field
        first = exc.problems[0]
        return ApiError(
            400, "invalid_manifest", f"{len(exc.problems)} problem(s); first: {first.message}",
            f"manifest.{first.path}",
        )  # fmt: skip
    if isinstance(exc, InsufficientBalance):
        held, needed = format_micro(exc.balance), format_micro(exc.amount)
        message = f"{exc.account} holds {held}, this needs {needed}"
    else:
        message = str(exc)
    code = "not_found" if status == 404 else _snake(name)
    return ApiError(status, code, message, field)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON: the API's own, the core's, and aiohttp's (404, 405, 413)."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except KovaError as exc:
        return core_error(exc).response()
    except KeyReused as exc:
        return ApiError(422, "idempotency_key_reused", str(exc), KEY_HEADER).response()
    except Unavailable as exc:
        leader = exc.leader if isinstance(exc, NotLeader) else None
        if leader and request.app[API].redirect_to_leader:  # clients that reach us directly
            location = leader.rstrip("/") + request.path_qs
            response = ApiError(307, "standby", f"send it to the leader: {location}").response()
            response.headers["Location"] = location
            return response
        response = ApiError(503, "unavailable", str(exc)).response()
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    except DBAPIError as exc:
        if not retriable(exc):  # a bug, as below
            log.exception("%s %s failed", request.method, request.path)
            return ApiError(500, "internal_error", "the server failed; the error is logged"
                            ).response()  # fmt: skip
        # still contended after every retry: nothing was changed, the client may try again
        busy = ApiError(503, "busy", "the database is busy; nothing was changed, try again")
        response = busy.response()
        response.headers["Retry-After"] = "1"
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else f"the body is larger than {MAX_BODY} bytes"
        response = ApiError(exc.status, code, message).response()
        if isinstance(exc, web.HTTPMethodNotAllowed):  # what the route does take
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except (asyncio.CancelledError, ConnectionError):
        raise  # the client went away: there is no one to answer
    except Exception:
        # a bug: logged with its traceback here, and answered as JSON like every error, without
        # it (the client learns nothing of the server's insides)
        log.exception("%s %s failed", request.method, request.path)
        return ApiError(500, "internal_error", "the server failed; the error is logged").response()


def hash_token(token: str) -> str:
    """How a bearer token is stored: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


# --------------------------------------------------------------------------- request bodies


INVITE_PATTERN = "^[A-Za-z0-9_-]+$"  # what ``new_secret`` makes


def new_secret(prefix: str) -> str:
    """A new token (``kova_``) or invite code (``kinv_``): 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


class RequestBody(BaseModel):
    """A JSON request body: unknown fields and type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NewAccount(RequestBody):
    """``POST /v1/accounts``: an auditor's identity, which manifests' ``signedBy`` name,
    is ``auditor:<id>`` (the ``account`` in the reply). ``invite``: an operator's invite code,
    which ``serve --registration invite`` (the default) requires and uses up."""

    role: Literal["tenant", "provider", "auditor"]
    name: str = Field(min_length=1, max_length=100)
    invite: str | None = Field(default=None, min_length=1, max_length=64,
                               pattern=INVITE_PATTERN)  # fmt: skip


def decimal(raw: str, low: int, high: int) -> int | None:
    """``raw`` as an integer from ``low`` to ``high`` if it is one written in decimal digits
    (ASCII, no sign), else None. Its length is checked before it is converted: Python refuses to
    convert more than 4300 digits, and no more than 19 are needed for :data:`INT64_MAX`."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    value = int(digits)
    return value if low <= value <= high else None


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _unstorable_text(value: Any, path: tuple[int | str, ...]) -> tuple[int | str, ...] | None:
    """Where a JSON value holds a string no database can store as text (a NUL character, an
    unpaired surrogate), if anywhere."""
    if isinstance(value, str):
        if "\x00" in value:
            return path
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path
        return None
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ()
    )  # fmt: skip
    for key, item in items:
        if isinstance(key, str) and _unstorable_text(key, ()) is not None:
            return (*path, key)
        found = _unstorable_text(item, (*path, key))
        if found is not None:
            return found
    return None


MAX_DEPTH = 64  # arrays and objects within one another in a request body


def _too_deep(data: Any) -> bool:
    """Whether ``data`` nests arrays and objects more than :data:`MAX_DEPTH` deep (checked
    level by level, without recursion, before anything walks it recursively)."""
    level = [data] if isinstance(data, dict | list) else []
    for _ in range(MAX_DEPTH):
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


async def read_body(request: web.Request, model: type[BaseModel]) -> Any:
    """The request's JSON body, validated: 400 naming the field on any problem."""
    raw = await request.read()
    try:  # NaN and Infinity, which Python's parser takes by default, are not JSON
        data = json.loads(raw or b"null", parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    except RecursionError:  # nested deeper than the parser goes
        raise ApiError(400, "malformed_json", f"the body nests deeper than {MAX_DEPTH}") from None
    if _too_deep(data):
        raise ApiError(400, "malformed_json", f"the body nests deeper than {MAX_DEPTH}")
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    unstorable = _unstorable_text(data, ())
    if unstorable is not None:
        raise ApiError(
            400, "invalid_field", "text must not contain NUL characters or unpaired surrogates",
            _field(unstorable),
        )  # fmt: skip
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ApiError(400, "invalid_field", message, _field(first["loc"])) from None


# --------------------------------------------------------------------------- authentication


async def authenticate(request: web.Request) -> Caller:
    """The account whose bearer token the request carries; 401 without a valid one."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    digest = hash_token(token.strip())
    caches = request.app[CACHES]
    caller = caches.accounts.get(digest)
    if caller is None:
        version = caches.accounts_version
        async with request.app[READER].connect() as connection:
            row = (
                await connection.execute(select(accounts).where(accounts.c.token_hash == digest))
            ).first()
        if row is None:
            raise ApiError(401, "unauthorized", "unknown token")
        if row.suspended_ms is not None:
            raise ApiError(403, "account_suspended", f"account {row.id} is suspended by an "
                           "operator; its token no longer works")  # fmt: skip
        caller = Caller(row.id, row.role, row.name)
        if version == caches.accounts_version:  # no token revoked while this one was read
            if len(caches.accounts) >= 200_000:
                caches.accounts.clear()
            caches.accounts[digest] = caller
    return caller


async def account_of(request: web.Request) -> int | None:
    """The id of the account whose token the request carries, if valid (for rate limits)."""
    try:
        return (await authenticate(request)).id
    except ApiError:
        return None


def wall_ms() -> int:
    """Now, in Unix milliseconds (when invites and suspensions happened)."""
    return time.time_ns() // 1_000_000


def _ledger_name(row: Any) -> str:
    return f"{row.role}:{row.id}"


# --------------------------------------------------------------------------- handlers


async def healthz(request: web.Request) -> web.Response:
    """Liveness and the database's readiness."""
    async with request.app[READER].connect() as connection:
        await connection.execute(text("SELECT 1"))
    return web.json_response({"status": "ok", "height": request.app[CLOCK].height()})


async def status(request: web.Request) -> web.Response:
    """The network at a glance: height, block length, accounts by role; this process's role
    (``leader`` or ``standby``) and the leader's URL."""
    clock = request.app[CLOCK]
    async with request.app[READER].connect() as connection:
        by_role = select(accounts.c.role, func.count()).group_by(accounts.c.role)
        counts = dict((await connection.execute(by_role)).all())
    role, leader_url = _role(request.app)
    return web.json_response(
        {
            "height": clock.height(),
            "block_seconds": clock.block_ms / 1000,
            "tenants": counts.get("tenant", 0),
            "providers": counts.get("provider", 0),
            "role": role,
            "leader": leader_url,
            "registration": request.app[API].registration,
        }
    )


def _role(app: web.Application) -> tuple[str, str | None]:
    leadership = app.get(LEADERSHIP)
    if leadership is None:  # SQLite: this process alone serves
        return "leader", app[API].advertise_url or None
    return leadership.role, leadership.leader_url


async def leader(request: web.Request) -> web.Response:
    """200 from the leader, 503 from a standby (with the leader's URL): what a load balancer's
    health check asks to send market commands to the one process that runs them."""
    role, leader_url = _role(request.app)
    if role != "leader":
        raise ApiError(503, "standby", f"this orchestrator is a standby; the leader: {leader_url}")
    leadership = request.app.get(LEADERSHIP)
    epoch = None if leadership is None else leadership.epoch  # None: SQLite, no terms
    return web.json_response({"role": role, "leader": leader_url, "epoch": epoch})


async def create_account(request: web.Request) -> web.Response:
    """Register a tenant, a provider or an auditor, as ``serve --registration`` allows: with
    ``invite``, the body's invite code is used up in the same transaction (two registrations
    with one code: one succeeds). The token is shown once, only its hash is kept."""
    policy = request.app[API].registration
    if policy == "closed":
        raise ApiError(403, "registration_closed", "this network does not register "
                       "accounts over the API; an operator makes them (kova-live admin "
                       "account)")  # fmt: skip
    body: NewAccount = await read_body(request, NewAccount)
    if policy == "invite" and body.invite is None:
        raise ApiError(403, "invite_required", "this network registers accounts by invitation: "
                       "send an operator's invite code (kova-live invite)", "invite")  # fmt: skip
    token = new_secret("kova_")
    height = request.app[CLOCK].height()
    async with request.app[ENGINE].begin() as connection:
        account_id = (
            await connection.execute(
                insert(accounts)
                .values(
                    role=body.role,
                    name=body.name,
                    token_hash=hash_token(token),
                    created_height=height,
                )
                .returning(accounts.c.id)
            )
        ).scalar_one()
        if policy == "invite":
            assert body.invite is not None
            used = await connection.execute(
                update(invites)
                .where(invites.c.code_hash == hash_token(body.invite),
                       invites.c.used_by.is_(None))
                .values(used_by=account_id, used_height=height, used_ms=wall_ms())
            )  # fmt: skip
            if used.rowcount != 1:  # the account's row goes with the transaction
                raise ApiError(403, "invalid_invite", "no such invite code, or it has been used "
                               "(each registers one account)", "invite")  # fmt: skip
    return web.json_response(
        {
            "id": account_id,
            "role": body.role,
            "name": body.name,
            "account": f"{body.role}:{account_id}",
            "token": token,
        },
        status=201,
    )


async def me(request: web.Request) -> web.Response:
    """The caller's account and balance (micro-units, and units as an exact string)."""
    row = await authenticate(request)
    async with request.app[READER].connect() as connection:
        held = await balance(connection, _ledger_name(row))
    return web.json_response(
        {
            "id": row.id,
            "role": row.role,
            "name": row.name,
            "account": _ledger_name(row),
            "balance": held,
            "balance_units": format_micro(held),
        }
    )


async def rotate_token(request: web.Request) -> web.Response:
    """Replace the caller's token: the new one is answered once, the old one stops working
    now. (Not journaled: the answer holds a secret. A lost answer leaves the account with a
    token nobody has; an operator's suspend and resume gives it a new one.)"""
    caller = await authenticate(request)
    old = hash_token(request.headers["Authorization"].partition(" ")[2].strip())
    token = new_secret("kova_")
    async with request.app[ENGINE].begin() as connection:
        replaced = await connection.execute(
            update(accounts)
            .where(accounts.c.id == caller.id, accounts.c.token_hash == old,
                   accounts.c.suspended_ms.is_(None))
            .values(token_hash=hash_token(token))
        )  # fmt: skip
    request.app[CACHES].forget_token(old)
    if replaced.rowcount != 1:  # rotated (or suspended) by another request meanwhile
        raise ApiError(401, "unauthorized", "this token has just been replaced or revoked")
    return web.json_response({"id": caller.id, "account": _ledger_name(caller), "token": token})


def int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """The query parameter ``name``: an integer from ``low`` to ``high`` (400 naming it
    otherwise), or ``default`` when absent."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = decimal(raw, low, high)
    if value is None:
        raise ApiError(400, "invalid_field", f"must be an integer from {low} to {high}", name)
    return value


async def my_transactions(request: web.Request) -> web.Response:
    """Every transfer into or out of the caller's account, newest first, a page at a time
    (``limit``, and ``before``: the id to continue below)."""
    row = await authenticate(request)
    limit = int_query(request, "limit", 100, 1, 1000)
    before = int_query(request, "before", 2**63 - 1, 1, 2**63 - 1)
    name = _ledger_name(row)
    async with request.app[READER].connect() as connection:
        rows = (await connection.execute(account_transfers(name, before=before, limit=limit))).all()
    items = [
        {
            "id": t.id,
            "height": t.height,
            "source": t.source,
            "destination": t.destination,
            "amount": t.amount,
            "reason": t.reason,
            "lease_id": t.lease_id,
            "start": t.start_block,
            "end": t.end_block,
        }
        for t in rows
    ]
    following = items[-1]["id"] if len(items) == limit else None
    return web.json_response({"transactions": items, "next_before": following})


def create_app(
    engine: AsyncEngine,
    clock: BlockClock,
    settings: Settings,
    work: WorkSettings | None = None,
    files_dir: Path | None = None,
    ingress: IngressSettings | None = None,
    api: ApiSettings | None = None,
) -> web.Application:
    """The application, on an engine whose database is at the newest schema; uploaded files
    live in ``files_dir`` (default: a folder ``kova-files`` in the system's temporary folder).
    With ``ingress.port``, the ingress listens there too (:mod:`kova_live.ingress`), on the
    same host as the API, in ``ingress.workers`` processes of its own. ``api``: the page size
    and the endpoint policy (its listeners: the API's own socket, which the caller opened)."""
    api = api or ApiSettings()
    from .console import CONSOLE, topics_of, vouched_address

    limits = rate_limits(api.limits, account_of, vouched_address)
    app = web.Application(middlewares=[metrics_middleware, json_errors, limits],
                          client_max_size=MAX_BODY)  # fmt: skip
    app[METRICS] = Metrics()
    app[ENGINE] = engine
    app[READER] = snapshot_reader(engine)
    app[CLOCK] = clock
    app[SETTINGS] = settings
    app[WORK] = work or WorkSettings()
    app[CACHES] = Caches()
    app[INGRESS] = ingress or IngressSettings()
    app[API] = api
    writer = app[WRITER] = Writer(
        engine, clock.height, settings, refusals=(ApiError,),
        observe=app[METRICS].bid_batch.observe, react=react,
    )  # fmt: skip

    def committed(market: Any, events: list[Any]) -> None:
        """Wake the console's event streams that show what the batch changed."""
        console = app.get(CONSOLE)  # None: --no-console
        changes = None if console is None else console.changes
        if changes is not None and changes.listening():
            changes.publish(topics_of(market, events))

    writer.committed = committed

    tasks: list[asyncio.Task[None]] = []

    async def lead(epoch: int | None) -> None:
        """Begin a term as the leader: the market, restored from the database; the work queue
        (with a fresh heartbeat grace for every provider) and the clock."""
        writer.epoch = epoch
        await writer.start()
        if isinstance(clock, ManualClock) and writer.market is not None:
            clock.resume(writer.market.height)  # where the last leader left it
        # the restored market lives long: out of the garbage collector's way (see ``serve``),
        # a full collection would walk every lease, order and deployment and stall every
        # request in flight
        gc.collect()
        gc.freeze()
        tasks[:] = [
            asyncio.create_task(
                worker_loop(engine, clock, writer, app[WORK], app[METRICS].held.set)
            ),
            asyncio.create_task(clock_loop(writer, clock)),  # rounds and job deadlines
        ]
        app[METRICS].leader.set(1)
        app[METRICS].takeovers.inc()

    async def lose() -> None:
        """End the term: no more commands, the loops stopped, the market dropped."""
        app[METRICS].leader.set(0)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks.clear()
        await writer.stop()

    async def background(app: web.Application) -> AsyncIterator[None]:
        runner = None
        if engine.dialect.name == "postgresql":  # a leader and standbys (kova_live.leader)
            leadership = app[LEADERSHIP] = Leadership(
                engine.url.render_as_string(hide_password=False), engine, app[API].advertise_url,
                lead, lose,
            )  # fmt: skip
            writer.on_fenced = leadership.fenced
            leadership.heard = lambda url: setattr(writer, "leader_url", url)
            runner = asyncio.create_task(leadership.run())
            await leadership.tried.wait()  # a lone server leads before it serves
        else:  # SQLite: one serving process (``serve`` holds the file's lock)
            await lead(None)
        yield
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if writer.started:
            await lose()

    async def serve_ingress(app: web.Application) -> AsyncIterator[None]:
        settings = app[INGRESS]
        if settings.port is None:
            yield
            return
        workers = IngressWorkers(engine.url.render_as_string(hide_password=False), settings,
                                 clock.genesis_ms, clock.block_ms, settings.workers,
                                 endpoints=app[API].endpoints)  # fmt: skip
        app[CACHES].routes = workers
        app[METRICS].ingress.read = workers.answered
        try:
            await workers.start()
            app[API].endpoints = workers.endpoints  # with the ingress's own socket
            yield
        finally:
            app[CACHES].routes = None
            await workers.stop()

    # the ingress first: a port it cannot have stops the server before any work has begun
    app.cleanup_ctx.append(serve_ingress)
    app.cleanup_ctx.append(background)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/v1/openapi.json", serve_openapi)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/leader", leader)
    app.router.add_post("/v1/accounts", create_account)
    app.router.add_get("/v1/accounts/me", me)
    app.router.add_get("/v1/accounts/me/transactions", my_transactions)
    app.router.add_post("/v1/accounts/me/token", rotate_token)
    from . import console, deployments, files, history, operators  # they build on this module

    deployments.add_routes(app)
    history.add_routes(app)
    files.add_routes(app)
    operators.add_routes(app)
    if api.console:
        console.add_routes(app)
    app[files.FILES_DIR] = files_dir or Path(tempfile.gettempdir()) / "kova-files"

    async def close_engine(app: web.Application) -> None:
        await writer.close()
        await engine.dispose()

    app.on_cleanup.append(close_engine)
    return app
