"""Kova Console: the web pages for tenants and providers, served by ``kova-live serve`` at
``/console/``.

Theory of operation
-------------------
The console is a client of the public API, like ``kova``: every page reads, and every form
changes, through the same ``/v1`` routes with the signed-in account's token, over HTTP to the
very socket the page's request came in on. So the console has no rule of its own: what a tenant
may see or do, the limits, the errors and their fields are the API's. The API counts the
console's calls against the browser's address and account (its rate limits), because the
console says whose they are with a secret only this process knows (:data:`CLIENT_HEADER`).

- **Sessions.** Signing in (or up) keeps the account's token in an ``HttpOnly``,
  ``SameSite=Strict`` cookie (``Secure`` over HTTPS), never in the page. Every form that
  changes something carries a CSRF token that must equal a second cookie's (double submit);
  a post without it is refused (403) before anything is sent to the API. A new token (sign
  up, rotation) is shown once.
- **Pages** are rendered on the server (Jinja2, escaping everything), readable without
  JavaScript. With it, htmx (vendored in ``static/``, nothing fetched from elsewhere) swaps
  the parts that change when the server says so over Server-Sent Events: a page's event
  stream wakes when the orchestrator's writer commits a batch that touches what the page
  shows (:class:`Changes`), or every :data:`RECHECK` seconds on a standby, reads the page's
  data through the API and sends ``changed`` when it differs. Logs follow the same way, line
  by line. The page never polls.
- **Charts** (escrow over time with its forecast pause, a provider's earnings) are SVG drawn
  on the server from the API's numbers (:mod:`kova_live.console.charts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup

from kova_core import (
    SELECTION_POLICIES,
    BidPlaced,
    BidsLost,
    BidsPlaced,
    BidWithdrawn,
    DeploymentCreated,
    Event,
    InvalidAmount,
    Market,
    SettlementRound,
    Transfer,
    TransferReason,
    format_micro,
    parse_amount,
)

from ..limits import client_address
from . import charts

__all__ = [
    "CLIENT_HEADER",
    "CONSOLE",
    "Changes",
    "Console",
    "add_routes",
    "topics_of",
    "vouched_address",
]

log = logging.getLogger("kova_live.console")

HERE = Path(__file__).parent
SESSION = "kova_session"  # the cookie that holds the account's token
CSRF = "kova_csrf"  # the cookie a form's csrf field must equal
CLIENT_HEADER = "X-Kova-Console-Client"
"""``<secret> <address>``: the console's own calls name the browser's address (for the API's
rate limits); only a call that knows this process's secret is believed."""
RECHECK = 5.0  # seconds: how often an event stream looks again when nothing woke it
KEEPALIVE = 15.0  # seconds: a comment line on a quiet stream, so proxies keep it open
MAX_STREAMS = 1000  # event streams this process holds open at once
BLOCKS_SHOWN = 20  # ledger entries on a tenant's page
TEXT_LIMIT = 1024 * 1024  # the SDL a form may carry (the API has its own limit, usually less)


class Changes:
    """Who listens for what: an event stream waits for a topic (``deployment:<id>``,
    ``provider:<id>``, ``tenant:<id>``); the writer publishes the topics each committed batch
    touched (:func:`topics_of`)."""

    def __init__(self) -> None:
        self.waiting: dict[str, set[asyncio.Event]] = {}

    def listening(self) -> bool:
        return bool(self.waiting)

    @contextlib.contextmanager
    def subscribe(self, topics: Iterable[str]) -> Any:
        wake = asyncio.Event()
        names = list(topics)
        for name in names:
            self.waiting.setdefault(name, set()).add(wake)
        try:
            yield wake
        finally:
            for name in names:
                waiting = self.waiting.get(name)
                if waiting is not None:
                    waiting.discard(wake)
                    if not waiting:
                        del self.waiting[name]

    def publish(self, topics: Iterable[str]) -> None:
        for name in topics:
            for wake in self.waiting.get(name, ()):
                wake.set()


ROUTINE = frozenset({TransferReason.SETTLEMENT, TransferReason.FEE})
"""A round's payments: every active deployment's and provider's, named at once by ``round``."""


def topics_of(market: Market, events: list[Event]) -> set[str]:
    """The topics a batch's events touch: each deployment, tenant and provider they name (a
    bid's order names its deployment), and ``round`` for a settlement round, which changes
    every active deployment's escrow and every paid provider's balance (a round over 100,000
    leases is one topic, not 200,000 payments to look through). Runs on the event loop after
    each commit, only while someone listens."""
    found: set[str] = set()
    for e in events:
        if isinstance(e, Transfer):
            if e.reason in ROUTINE:
                continue
            for account in (e.source, e.destination):
                kind, _, number = account.partition(":")
                if kind == "escrow":
                    found.add(f"deployment:{number}")
                elif kind in ("tenant", "provider"):
                    found.add(account)
            continue
        if isinstance(e, SettlementRound):
            found.add("round")
            continue
        dep_id = getattr(e, "deployment_id", None)
        if dep_id is not None:
            found.add(f"deployment:{dep_id}")
        provider_id = getattr(e, "provider_id", None)
        if provider_id is not None:
            found.add(f"provider:{provider_id}")
        if isinstance(e, DeploymentCreated):
            found.add(f"tenant:{e.tenant_id}")
        elif isinstance(e, (BidPlaced, BidsPlaced, BidsLost, BidWithdrawn)):
            order = market.orders.get(e.order_id)
            if order is not None:
                found.add(f"deployment:{order.deployment_id}")
            for who in getattr(e, "provider_ids", ()):
                found.add(f"provider:{who}")
    return found


class Console:
    """The console's state in one process: the secret its own API calls carry, the HTTP
    client they go through, who listens for changes, and the open event streams."""

    def __init__(self) -> None:
        self.secret = secrets.token_urlsafe(32)
        self.client: aiohttp.ClientSession | None = None
        self.changes = Changes()
        self.streams = 0
        self.closing = asyncio.Event()


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)


# --------------------------------------------------------------------------- the API client


class Refused(Exception):
    """The API said no: its status, code, message and field."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


class SignedOut(Exception):
    """No session, or its token no longer works."""


async def api(
    request: web.Request, method: str, path: str, *, token: str | None = None,
    body: Any = None, params: dict[str, Any] | None = None, key: str | None = None,
) -> Any:
    """The API's answer to one call made for the browser behind ``request`` (raises
    :class:`Refused` with the API's error, :class:`SignedOut` on 401)."""
    console = request.app[CONSOLE]
    if console.client is None:
        raise Refused(503, "starting", "the console is starting; try again", None)
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        raise Refused(503, "unavailable", "the console cannot reach its API", None)
    host, port = sockname[0], sockname[1]
    host = f"[{host}]" if ":" in host else host
    from ..app import API

    address = client_address(request, request.app[API].limits.trusted_proxies)
    headers = {CLIENT_HEADER: f"{console.secret} {address}"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    try:
        async with console.client.request(
            method, f"http://{host}:{port}{path}", json=body, params=params, headers=headers,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            status = response.status
            location = response.headers.get("Location")
    except (aiohttp.ClientError, OSError) as exc:
        raise Refused(503, "unavailable", f"the API did not answer: {exc}", None) from None
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if status == 401 and token is not None:
        raise SignedOut()
    if status >= 300:
        error = (answer or {}).get("error") if isinstance(answer, dict) else None
        error = error if isinstance(error, dict) else {}
        message = str(error.get("message") or f"HTTP {status}")
        if status == 307 and location:
            message = f"this orchestrator is a standby; the leader is at {location}"
        raise Refused(status, str(error.get("code") or "error"), message, error.get("field"))
    return answer


def vouched_address(request: web.Request) -> str | None:
    """The browser's address a console call names, if it carries this process's secret (the
    API's rate limits count it; any other request: ``None``)."""
    header = request.headers.get(CLIENT_HEADER)
    if header is None:
        return None
    secret, _, address = header.partition(" ")
    console = request.app.get(CONSOLE)
    if console is None or not address or not hmac.compare_digest(secret, console.secret):
        return None
    return address[:100]


# --------------------------------------------------------------------------- sessions


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: int | None = None) -> None:  # fmt: skip
    response.set_cookie(name, value, path="/console", httponly=True, samesite="Strict",
                        secure=_secure(request), max_age=max_age)  # fmt: skip


def _csrf_of(request: web.Request) -> str:
    """The browser's CSRF token (a new one, set on the response by the middleware, if none)."""
    token = request.cookies.get(CSRF, "")
    if len(token) < 20:
        token = request.get("new_csrf") or secrets.token_urlsafe(24)
        request["new_csrf"] = token
    return token


async def _form(request: web.Request) -> Any:
    """The posted form, once its CSRF field has been checked against the cookie (403 and
    nothing done otherwise); and, where the browser says where the post came from, that it
    came from this console."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.host:
            raise web.HTTPForbidden(text="this form was posted from another site")
    try:
        form = await request.post()
    except (ValueError, UnicodeDecodeError, AssertionError) as exc:  # not a form a browser sends
        raise web.HTTPBadRequest(text=f"this is not a form: {exc}") from None
    cookie = request.cookies.get(CSRF, "")
    sent = form.get("csrf")
    if not cookie or not isinstance(sent, str) or not hmac.compare_digest(cookie, sent):
        raise web.HTTPForbidden(text="this form's CSRF token is missing or wrong; reload the "
                                "page and send it again")  # fmt: skip
    return form


def _token(request: web.Request) -> str:
    token = request.cookies.get(SESSION)
    if not token:
        raise SignedOut()
    return token


def _text(form: Any, name: str, most: int = 200) -> str:
    value = form.get(name, "")
    if not isinstance(value, str):
        return ""
    return value.strip()[:most]


# --------------------------------------------------------------------------- rendering


def _units(micro: Any) -> str:
    return format_micro(int(micro)) if isinstance(micro, int) else "—"


def _per_hour(micro: Any, block_seconds: float) -> str:
    return charts.per_hour(micro, block_seconds) if isinstance(micro, int) else "—"


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return "—"
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value >= size and value % (size // 1024 or 1) == 0:
            return f"{value / size:.3g} {unit}B"
    return f"{value} B"


def _cpu(millis: Any) -> str:
    return f"{millis / 1000:g}" if isinstance(millis, int) else "—"


def _when(height: Any, now: int, block_seconds: float) -> str:
    """A height as a wall-clock time (UTC) and how far from now."""
    if not isinstance(height, int):
        return "—"
    seconds = (height - now) * block_seconds
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() + seconds))
    minutes = abs(seconds) / 60
    span = (f"{minutes / 60:.1f} h" if minutes >= 90 else
            f"{minutes:.0f} min" if minutes >= 1.5 else f"{abs(seconds):.0f} s")  # fmt: skip
    return f"{at} ({'in ' + span if seconds >= 0 else span + ' ago'})"


def _render(request: web.Request, template: str, context: dict[str, Any],
            status: int = 200) -> web.Response:  # fmt: skip
    context = {"csrf": _csrf_of(request), "path": request.path, **context}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _redirect(location: str) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    response.headers["Cache-Control"] = "no-store"
    return response


def _flash_url(path: str, **params: str) -> str:
    return f"{path}?{urlencode(params)}" if params else path


# --------------------------------------------------------------------------- middleware


@web.middleware
async def console_pages(request: web.Request, handler: Callable[[web.Request],
                        Awaitable[web.StreamResponse]]) -> web.StreamResponse:  # fmt: skip
    """The console's requests: a signed-out visitor to a page goes to the sign-in form, an
    error is a page (never a traceback), and every response sets the CSRF cookie it needs."""
    if not request.path.startswith("/console"):
        return await handler(request)
    try:
        response = await handler(request)
    except SignedOut:
        response = _redirect("/console/signin")
        response.del_cookie(SESSION, path="/console")
    except Refused as exc:
        response = _render(request, "error.html", {"title": "The API refused", "status":
                           exc.status, "message": exc.message, "me": None}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _render(request, "error.html", {"title": exc.reason, "status": exc.status,
                           "message": exc.text or exc.reason, "me": None}, status=exc.status)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        response = _render(request, "error.html", {"title": "Server error", "status": 500,
                           "message": "the console failed; the error is logged", "me": None},
                           status=500)  # fmt: skip
    new = request.get("new_csrf")
    if new and not response.prepared:
        _set_cookie(request, response, CSRF, new)
    if not response.prepared:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
    return response


# --------------------------------------------------------------------------- sign in and up


async def _me(request: web.Request) -> dict[str, Any]:
    return await api(request, "GET", "/v1/accounts/me", token=_token(request))


async def index(request: web.Request) -> web.StreamResponse:
    me = await _me(request)
    if me["role"] == "tenant":
        return await tenant_home(request, me)
    if me["role"] == "provider":
        return await provider_home(request, me)
    return _render(request, "error.html", {"title": "Not for this account", "status": 403,
                   "message": f"the console is for tenants and providers; this is an "
                   f"{me['role']} account: use the API or the CLI", "me": me}, status=403)


async def signin_form(request: web.Request) -> web.Response:
    return _render(request, "signin.html", {"me": None, "error": None})


async def signin(request: web.Request) -> web.Response:
    form = await _form(request)
    token = _text(form, "token", 400)
    if not token:
        return _render(request, "signin.html", {"me": None, "error": "paste your account "
                       "token"}, status=400)  # fmt: skip
    try:
        await api(request, "GET", "/v1/accounts/me", token=token)
    except SignedOut:
        return _render(request, "signin.html", {"me": None, "error": "this token is unknown, "
                       "replaced or revoked"}, status=401)  # fmt: skip
    except Refused as exc:
        return _render(request, "signin.html", {"me": None, "error": exc.message},
                       status=exc.status)  # fmt: skip
    response = _redirect("/console/")
    _set_cookie(request, response, SESSION, token)
    return response


async def signout(request: web.Request) -> web.Response:
    await _form(request)
    response = _redirect("/console/signin")
    response.del_cookie(SESSION, path="/console")
    return response


async def _registration(request: web.Request) -> str:
    status = await api(request, "GET", "/v1/status")
    return str(status.get("registration", "open"))


async def signup_form(request: web.Request) -> web.Response:
    return _render(request, "signup.html", {"me": None, "error": None, "field": None,
                   "registration": await _registration(request), "values": {}})  # fmt: skip


async def signup(request: web.Request) -> web.Response:
    form = await _form(request)
    values = {"role": _text(form, "role"), "name": _text(form, "name"),
              "invite": _text(form, "invite")}  # fmt: skip
    body: dict[str, Any] = {"role": values["role"], "name": values["name"]}
    if values["invite"]:
        body["invite"] = values["invite"]
    try:
        made = await api(request, "POST", "/v1/accounts", body=body)
    except Refused as exc:
        return _render(request, "signup.html", {
            "me": None, "error": exc.message, "field": exc.field, "values": values,
            "registration": await _registration(request)}, status=exc.status)  # fmt: skip
    response = _render(request, "token.html", {"me": None, "made": made, "rotated": False})
    _set_cookie(request, response, SESSION, made["token"])
    return response


async def rotate(request: web.Request) -> web.Response:
    await _form(request)
    made = await api(request, "POST", "/v1/accounts/me/token", token=_token(request))
    me = await api(request, "GET", "/v1/accounts/me", token=made["token"])
    response = _render(request, "token.html", {"me": me, "made": made, "rotated": True})
    _set_cookie(request, response, SESSION, made["token"])
    return response


# --------------------------------------------------------------------------- tenants


async def _status(request: web.Request) -> dict[str, Any]:
    return await api(request, "GET", "/v1/status")


def _tenant_state(balance: int, listed: dict[str, Any]) -> list[Any]:
    """What decides whether a tenant's page changed (its page and tenant_events digest it)."""
    return [balance, [(d["id"], d["state"]) for d in listed["deployments"]]]


async def tenant_home(request: web.Request, me: dict[str, Any]) -> web.Response:
    token = _token(request)
    state = request.query.get("state", "")
    kind = request.query.get("kind", "")
    listed = await api(request, "GET", "/v1/deployments", token=token)
    items = [d for d in listed["deployments"]
             if (not state or d["state"] == state) and (not kind or d["kind"] == kind)]
    ledger = await api(request, "GET", "/v1/accounts/me/transactions", token=token,
                       params={"limit": BLOCKS_SHOWN})  # fmt: skip
    status = await _status(request)
    seen = _digest(_tenant_state(me["balance"], listed))
    return _render(request, "tenant.html", {
        "me": me, "deployments": items, "seen": seen, "all": len(listed["deployments"]),
        "state": state, "kind": kind, "ledger": ledger["transactions"], "status": status,
        "states": sorted({d["state"] for d in listed["deployments"]} | {"active", "closed"}),
    })  # fmt: skip


def _deploy_context(me: dict[str, Any], values: dict[str, str], **more: Any) -> dict[str, Any]:
    return {"me": me, "values": values, "policies": sorted(SELECTION_POLICIES), "check": None,
            "error": None, "field": None, "warnings": [], **more}  # fmt: skip


async def deploy_form(request: web.Request) -> web.Response:
    me = await _me(request)
    if me["role"] != "tenant":
        raise web.HTTPForbidden(text="only tenants deploy")
    values = {"sdl": "", "deposit": "", "hours": "24", "policy": "", "wait": "15",
              "key": secrets.token_urlsafe(16)}  # fmt: skip
    return _render(request, "deploy.html", _deploy_context(me, values))


async def deploy(request: web.Request) -> web.Response:
    form = await _form(request)
    me = await _me(request)
    token = _token(request)
    sdl = form.get("sdl", "")
    upload = form.get("file")
    if upload is not None and not isinstance(upload, str) and getattr(upload, "file", None):
        raw = upload.file.read(TEXT_LIMIT + 1)
        if raw:
            sdl = raw.decode("utf-8", errors="replace")
    sdl = sdl if isinstance(sdl, str) else ""
    values = {"sdl": sdl[:TEXT_LIMIT], "deposit": _text(form, "deposit", 40),
              "hours": _text(form, "hours", 10) or "24", "policy": _text(form, "policy", 64),
              "wait": _text(form, "wait", 10) or "15",
              "key": _text(form, "key", 64) or secrets.token_urlsafe(16)}  # fmt: skip

    def again(error: str, field: str | None, status: int = 400, **more: Any) -> web.Response:
        return _render(request, "deploy.html", _deploy_context(
            me, values, error=error, field=field, **more), status=status)  # fmt: skip

    if not sdl.strip():
        return again("paste an SDL file or choose one to upload", "sdl")
    hours = values["hours"]
    if not hours.isdigit() or not 1 <= int(hours) <= 8760:
        return again("a whole number of hours from 1 to 8760", "hours")
    check_body = {"manifest": sdl, "hours": int(hours)}
    try:
        check = await api(request, "POST", "/v1/deployments/check", token=token,
                          body=check_body)  # fmt: skip
    except Refused as exc:
        return again(exc.message, _form_field(exc.field), exc.status)
    if form.get("action") != "deploy" or not check.get("valid"):
        status = 200 if check.get("valid") else 400
        if not values["deposit"] and check.get("deposit_for_hours"):
            values["deposit"] = format_micro(check["deposit_for_hours"]["amount"])
        return _render(request, "deploy.html", _deploy_context(
            me, values, check=check, warnings=check.get("warnings", [])), status=status)
    try:
        deposit = parse_amount(values["deposit"])
    except InvalidAmount as exc:
        return again(f"deposit: {exc}", "deposit", check=check)
    body: dict[str, Any] = {"manifest": sdl, "deposit": deposit}
    if values["policy"]:
        if not values["wait"].isdigit():
            return again("a whole number of blocks", "wait", check=check)
        body["auto_accept"] = {"policy": values["policy"], "wait": int(values["wait"])}
    try:
        made = await api(request, "POST", "/v1/deployments", token=token, body=body,
                         key=values["key"])  # fmt: skip
    except Refused as exc:
        return again(exc.message, _form_field(exc.field), exc.status, check=check)
    notes = [f"{w['field']}: {w['message']}" for w in made.get("warnings", [])]
    params = {"note": "created"} | ({"warnings": str(len(notes))} if notes else {})
    return _redirect(_flash_url(f"/console/deployments/{made['id']}", **params))


def _form_field(field: Any) -> str | None:
    """The form's field an API error names (``manifest.services.web`` is the SDL's)."""
    if not isinstance(field, str):
        return None
    if field == "manifest" or field.startswith("manifest."):
        return "sdl"
    if field.startswith("auto_accept"):
        return "policy"
    return field


SORTS = {
    "price": lambda b: (b["price"], b["id"]),
    "provider": lambda b: (b["provider_id"], b["id"]),
    "reputation": lambda b: (-b["reputation"], b["id"]),
    "response": lambda b: (b["response_time"], b["id"]),
    "order": lambda b: (b["order_id"], b["price"], b["id"]),
}


async def _deployment_look(request: web.Request, dep_id: int) -> list[Any]:
    """What decides whether a deployment's page changed: its view and its open bids."""
    token = _token(request)
    base = f"/v1/deployments/{dep_id}"
    return [await api(request, "GET", base, token=token),
            await api(request, "GET", f"{base}/bids", token=token)]  # fmt: skip


async def _deployment_data(request: web.Request, dep_id: int) -> dict[str, Any]:
    """What a deployment's page shows, read through the API."""
    token = _token(request)
    base = f"/v1/deployments/{dep_id}"
    look = await _deployment_look(request, dep_id)
    view, offers = look[0], look[1]["bids"]
    escrow = await api(request, "GET", f"{base}/escrow", token=token)
    status = await _status(request)
    with_bids = {b["order_id"] for b in offers}
    why: dict[int, Any] = {}
    for order in view["orders"]:
        if order["state"] == "open" and order["id"] not in with_bids:
            with contextlib.suppress(Refused):
                why[order["id"]] = await api(request, "GET",
                                             f"/v1/orders/{order['id']}/candidates", token=token)
    result = None
    if view["kind"] == "job":
        with contextlib.suppress(Refused):
            result = await api(request, "GET", f"{base}/result", token=token)
    return {"view": view, "bids": offers, "escrow": escrow, "status": status, "why": why,
            "result": result, "seen": _digest(look)}  # fmt: skip


def _deployment_context(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    sort = request.query.get("sort", "price")
    sort = sort if sort in SORTS else "price"
    descending = request.query.get("dir") == "desc"
    offers = sorted(data["bids"], key=SORTS[sort], reverse=descending)
    view, status = data["view"], data["status"]
    block_seconds = float(status["block_seconds"])
    chart = charts.escrow_chart(data["escrow"]["points"], view, status["height"], block_seconds)
    orders = {o["id"]: o for o in view["orders"]}
    return {
        **data, "bids": offers, "sort": sort, "descending": descending, "orders": orders,
        "chart": Markup(chart), "block_seconds": block_seconds, "height": status["height"],
        "pause_time": _when(view["pauses_at"], status["height"], block_seconds),
    }  # fmt: skip


def _dep_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 19:
        raise web.HTTPNotFound(text=f"no deployment {raw[:40]!r}")
    return int(raw)


async def deployment_page(request: web.Request) -> web.Response:
    me = await _me(request)
    if me["role"] != "tenant":
        raise web.HTTPNotFound(text="tenants' deployments are theirs")
    dep_id = _dep_id(request)
    try:
        data = await _deployment_data(request, dep_id)
    except Refused as exc:
        if exc.status == 404:
            raise web.HTTPNotFound(text=f"no deployment {dep_id}") from None
        raise
    context = _deployment_context(request, data)
    note = request.query.get("note", "")
    return _render(request, "deployment.html", {**context, "me": me, "dep_id": dep_id, "note": note,
                   "error": request.query.get("error", ""), "field": None,
                   "query": _sort_query(context)})  # fmt: skip


def _sort_query(context: dict[str, Any]) -> str:
    return urlencode({"sort": context["sort"], "dir": "desc" if context["descending"] else "asc"})


async def deployment_action(request: web.Request) -> web.Response:
    """Deposit, close and accept, from the deployment's page (back to it, with the outcome)."""
    form = await _form(request)
    dep_id = _dep_id(request)
    token = _token(request)
    action = request.match_info["action"]
    page = f"/console/deployments/{dep_id}"
    key = _text(form, "key", 64) or None
    try:
        if action == "deposit":
            try:
                amount = parse_amount(_text(form, "amount", 40))
            except InvalidAmount as exc:
                return _redirect(_flash_url(page, error=f"deposit: {exc}"))
            if amount == 0:
                return _redirect(_flash_url(page, error="deposit: more than 0"))
            await api(request, "POST", f"/v1/deployments/{dep_id}/deposit", token=token,
                      body={"amount": amount}, key=key)  # fmt: skip
            return _redirect(_flash_url(page, note=f"deposited {format_micro(amount)}"))
        if action == "close":
            await api(request, "POST", f"/v1/deployments/{dep_id}/close", token=token, key=key)
            return _redirect(_flash_url(page, note="closed"))
        if action == "accept":
            bid = _text(form, "bid", 20)
            if not bid.isdigit():
                return _redirect(_flash_url(page, error="accept: no bid chosen"))
            lease = await api(request, "POST", f"/v1/bids/{bid}/accept", token=token, key=key)
            return _redirect(_flash_url(page, note=f"accepted bid {bid}: lease {lease['id']}"))
    except Refused as exc:
        if exc.status == 404 and action != "accept":
            raise web.HTTPNotFound(text=f"no deployment {dep_id}") from None
        return _redirect(_flash_url(page, error=f"{action}: {exc.message}"))
    raise web.HTTPNotFound(text=f"no action {action[:40]!r}")


# --------------------------------------------------------------------------- event streams


async def _stream(request: web.Request, topics: list[str],
                  look: Callable[[], Awaitable[Any]],
                  send: Callable[[web.StreamResponse, Any, Any], Awaitable[Any]],
                  ) -> web.StreamResponse:  # fmt: skip
    """An event stream: ``look()`` reads what the page shows, whenever a topic wakes it or
    every :data:`RECHECK` seconds, and ``send(response, before, now)`` writes what changed
    (and returns what to compare with next). Ends when the browser goes or the server stops."""
    console = request.app[CONSOLE]
    if console.streams >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(text="too many open event streams; try again")
    first = await look()  # before the stream opens: a 404 or 401 is still a page
    # what the page showed (its digest, in the stream's URL): what changed between the page's
    # reads and this first look is sent at once, not taken for the starting point
    shown = request.query.get("seen") or None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})  # fmt: skip
    console.streams += 1
    try:
        await response.prepare(request)
        seen = await send(response, shown, first)
        quiet = time.monotonic()
        with console.changes.subscribe(topics) as wake:
            while not console.closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), RECHECK)
                if console.closing.is_set():
                    break
                wake.clear()
                await asyncio.sleep(0.2)  # a burst of batches: one look
                try:
                    now = await look()
                except Refused:
                    continue  # the API is busy or moving: look again later
                sent = await send(response, seen, now)
                if sent is not seen:
                    seen, quiet = sent, time.monotonic()
                elif time.monotonic() - quiet > KEEPALIVE:
                    await response.write(b": still here\n\n")
                    quiet = time.monotonic()
    except (ConnectionError, SignedOut):
        pass  # the browser went, or the session ended
    finally:
        console.streams -= 1
    return response


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


async def _changed(response: web.StreamResponse, before: Any, now: Any) -> Any:
    digest = _digest(now)
    if before is not None and digest != before:
        await response.write(b"event: changed\ndata: " + digest.encode() + b"\n\n")
    return digest if digest != before else before


async def deployment_events(request: web.Request) -> web.StreamResponse:
    """``changed`` whenever the deployment's page would show something else."""
    me = await _me(request)
    dep_id = _dep_id(request)
    if me["role"] != "tenant":
        raise web.HTTPNotFound()

    async def look() -> Any:
        return await _deployment_look(request, dep_id)

    try:
        return await _stream(request, [f"deployment:{dep_id}", "round"], look, _changed)
    except Refused as exc:
        if exc.status == 404:
            raise web.HTTPNotFound(text=f"no deployment {dep_id}") from None
        raise


async def deployment_logs(request: web.Request) -> web.StreamResponse:
    """The deployment's log lines as they arrive: each batch one ``line`` event of HTML."""
    me = await _me(request)
    dep_id = _dep_id(request)
    token = _token(request)
    if me["role"] != "tenant":
        raise web.HTTPNotFound()
    env = aiohttp_jinja2.get_env(request.app)
    lines = env.get_template("log_lines.html")
    after = 0

    async def look() -> Any:
        nonlocal after
        got = await api(request, "GET", f"/v1/deployments/{dep_id}/logs", token=token,
                        params={"after": after, "limit": 500})  # fmt: skip
        after = got["next_after"]
        return got["lines"]

    async def send(response: web.StreamResponse, before: Any, now: Any) -> Any:
        if now:
            html = lines.render(lines=now).replace("\n", "")
            await response.write(f"event: line\ndata: {html}\n\n".encode())
            return object()
        return before

    try:
        return await _stream(request, [f"logs:{dep_id}", f"deployment:{dep_id}"], look, send)
    except Refused as exc:
        if exc.status == 404:
            raise web.HTTPNotFound(text=f"no deployment {dep_id}") from None
        raise


# --------------------------------------------------------------------------- providers


async def _provider_look(request: web.Request, token: str) -> tuple[Any, Any]:
    """With the balance, what decides whether a provider's page changed: its newest leases
    and its open bids (its page and provider_events digest them)."""
    recent = await api(request, "GET", "/v1/leases", token=token, params={"limit": 20})
    open_bids = await api(request, "GET", "/v1/bids", token=token, params={"state": "open"})
    return recent, open_bids


async def _provider_data(request: web.Request, me: dict[str, Any]) -> dict[str, Any]:
    token = _token(request)
    live = await api(request, "GET", "/v1/leases", token=token, params={"state": "live"})
    recent, open_bids = await _provider_look(request, token)
    seen = _digest([recent, open_bids, me["balance"]])
    listed = await api(request, "GET", "/v1/providers")
    node = next((p for p in listed["providers"] if p["provider_id"] == me["id"]), None)
    ledger = await api(request, "GET", "/v1/accounts/me/transactions", token=token,
                       params={"limit": 1000})  # fmt: skip
    status = await _status(request)
    return {"live": live["leases"], "recent": recent["leases"], "node": node,
            "bids": open_bids["bids"], "ledger": ledger["transactions"], "status": status,
            "seen": seen}


async def provider_home(request: web.Request, me: dict[str, Any]) -> web.Response:
    data = await _provider_data(request, me)
    return _render(request, "provider.html", _provider_context(me, data))


def _provider_context(me: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    in_use = {k: sum(lease["resources"][k] for lease in data["live"])
              for k in ("cpu", "memory", "storage", "gpu")}  # fmt: skip
    account = me["account"]
    earned = [t for t in data["ledger"] if t["destination"] == account]
    status = data["status"]
    chart = charts.earnings_chart(earned, status["height"], float(status["block_seconds"]))
    return {**data, "me": me, "in_use": in_use, "earned": sum(t["amount"] for t in earned),
            "chart": Markup(chart), "height": status["height"],
            "block_seconds": float(status["block_seconds"])}  # fmt: skip


async def provider_events(request: web.Request) -> web.StreamResponse:
    me = await _me(request)
    if me["role"] != "provider":
        raise web.HTTPNotFound()
    token = _token(request)

    async def look() -> Any:
        recent, open_bids = await _provider_look(request, token)
        mine = await api(request, "GET", "/v1/accounts/me", token=token)
        return [recent, open_bids, mine["balance"]]

    return await _stream(request, [f"provider:{me['id']}", "round"], look, _changed)


async def tenant_events(request: web.Request) -> web.StreamResponse:
    """``changed`` whenever the tenant's balance or list of deployments would show otherwise."""
    me = await _me(request)
    if me["role"] != "tenant":
        raise web.HTTPNotFound()
    token = _token(request)

    async def look() -> Any:
        mine = await api(request, "GET", "/v1/accounts/me", token=token)
        listed = await api(request, "GET", "/v1/deployments", token=token)
        return _tenant_state(mine["balance"], listed)

    return await _stream(request, [f"tenant:{me['id']}", "round"], look, _changed)


# --------------------------------------------------------------------------- routes


def _versioned(folder: Path) -> Callable[[str], str]:
    """``static(name)``: the file's URL with a digest of its content (cached for good)."""
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
               for path in folder.iterdir() if path.is_file()}  # fmt: skip

    def static(name: str) -> str:
        return f"/console/static/{name}?v={digests[name]}"

    return static


def _filters() -> dict[str, Callable[..., str]]:
    return {"units": _units, "per_hour": _per_hour, "size": _size, "cpu": _cpu,
            "q": lambda v: quote(str(v), safe="")}  # fmt: skip


def add_routes(app: web.Application) -> None:
    """The console's pages under ``/console/``, its static files, and the hook through which
    the writer tells it what changed."""
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined,
                               trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    env.filters.update(_filters())
    env.globals["when"] = _when
    env.globals["static"] = _versioned(HERE / "static")
    # an idempotency key for each form that moves money: sent twice, it happens once
    env.globals["new_key"] = lambda: secrets.token_urlsafe(16)
    console = app[CONSOLE] = Console()
    app.middlewares.append(console_pages)

    async def client(app: web.Application) -> Any:
        console.client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.DummyCookieJar())
        yield
        await console.client.close()

    async def closing(app: web.Application) -> None:
        console.closing.set()  # the event streams end, so the server stops at once
        console.changes.publish(list(console.changes.waiting))  # woken now, not in 5 s

    app.cleanup_ctx.append(client)
    app.on_shutdown.append(closing)
    router = app.router
    async def to_index(request: web.Request) -> web.Response:
        return _redirect("/console/")

    router.add_get("/console", to_index)
    router.add_get("/console/", index)
    router.add_get("/console/signin", signin_form)
    router.add_post("/console/signin", signin)
    router.add_get("/console/signup", signup_form)
    router.add_post("/console/signup", signup)
    router.add_post("/console/signout", signout)
    router.add_post("/console/token", rotate)
    router.add_get("/console/deploy", deploy_form)
    router.add_post("/console/deploy", deploy)
    router.add_get("/console/deployments/{id}", deployment_page)
    router.add_get("/console/deployments/{id}/events", deployment_events)
    router.add_get("/console/deployments/{id}/logs", deployment_logs)
    router.add_post("/console/deployments/{id}/{action}", deployment_action)
    router.add_get("/console/provider/events", provider_events)
    router.add_get("/console/tenant/events", tenant_events)
    router.add_static("/console/static/", HERE / "static", append_version=True)
