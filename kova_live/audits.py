"""Audits: auditors vouch for providers' attributes, and manifests' ``signedBy`` trusts them.

As on Akash, anyone may register as an auditor (``POST /v1/accounts`` with ``role:
"auditor"``) and a tenant's manifest names the auditors it trusts: its placement's ``signedBy:
{allOf: [...], anyOf: [...]}`` lists identities, and an auditor's identity is
``auditor:<account id>`` (ids are unique; names are not).

An audit (``POST /v1/providers/{id}/audits``) signs attributes the provider's last heartbeat
registered, each with the value it registered (by default all of them). A provider counts as
audited by ``auditor:<id>`` while every attribute that audit signed still equals what the
provider registers: a heartbeat that changes or drops a signed attribute voids the audit (it
stays listed, void, until the auditor signs again or revokes it), and one that changes it back
restores it. :func:`auditors_of` applies that rule (the core's ``audit_voided_by``) and tells
the orchestrator's ``Market`` (``set_auditors``): at start when it is restored, on every
heartbeat, and after every audit signed or revoked. The market's placement check then sees the
same auditors as the heartbeat's reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import MAX_AMOUNT, audit_voided_by

from . import journal
from .app import (
    CLOCK,
    READER,
    WRITER,
    ApiError,
    RequestBody,
    authenticate,
    decimal,
    read_body,
)
from .market import _among
from .schema import accounts, audits, provider_nodes
from .writer import Command, Unavailable

log = logging.getLogger("kova_live.audits")

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_TEXT",
    "NewAudit",
    "add_routes",
    "auditors_of",
    "identity",
]

MAX_ATTRIBUTES = 64  # attributes one audit may sign (a heartbeat registers at most as many)
MAX_TEXT = 128  # characters of an attribute's name or value in an audit


def identity(auditor_id: int) -> str:
    """An auditor's identity, as manifests name it in ``signedBy``: ``auditor:<account id>``."""
    return f"auditor:{auditor_id}"


async def auditors_of(
    connection: AsyncConnection,
    provider_ids: Iterable[int] | None = None,
    registering: dict[int, dict[str, str]] | None = None,
) -> dict[int, frozenset[str]]:
    """The identities of the auditors whose audits of each provider stand (every attribute
    signed still registered with the same value), for these providers (``None``: every
    provider). ``registering``: attributes a provider registers now, in place of those its
    row holds (a heartbeat's, not written yet). One statement; a provider nobody audited is
    absent."""
    registering = registering or {}
    query = select(
        audits.c.provider_id, audits.c.auditor_id, audits.c.attributes,
        provider_nodes.c.attributes.label("registered"),
    ).join(provider_nodes, provider_nodes.c.provider_id == audits.c.provider_id)  # fmt: skip
    if provider_ids is not None:
        ids = sorted(set(provider_ids))
        if not ids:
            return {}
        query = query.where(_among(audits.c.provider_id, ids, connection))
    found: dict[int, set[str]] = {}
    registered: dict[str, dict[str, str]] = {}  # a provider's attributes' JSON, parsed once
    for row in await connection.execute(query):
        if row.provider_id in registering:
            if not audit_voided_by(json.loads(row.attributes), registering[row.provider_id]):
                found.setdefault(row.provider_id, set()).add(identity(row.auditor_id))
            continue
        now = registered.get(row.registered)
        if now is None:
            now = registered[row.registered] = json.loads(row.registered)
        if not audit_voided_by(json.loads(row.attributes), now):
            found.setdefault(row.provider_id, set()).add(identity(row.auditor_id))
    return {provider: frozenset(names) for provider, names in found.items()}


# --------------------------------------------------------------------------- the API

NAME = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
VALUE = Annotated[str, Field(max_length=MAX_TEXT)]


class NewAudit(RequestBody):
    """``POST /v1/providers/{id}/audits``: the ``attributes`` the auditor vouches for (at most
    64; names of 1 to 128 characters, values of at most 128), each with the value the
    provider's last heartbeat registered. Without them (or with an empty body), every attribute
    the provider registers now."""

    attributes: dict[NAME, VALUE] | None = Field(default=None, max_length=MAX_ATTRIBUTES)

    @field_validator("attributes", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # the names and their number, checked here so that a problem names ``attributes``;
        # a value's problem names ``attributes.<name>`` (pydantic's own check)
        if not isinstance(value, dict):
            return value  # None, or pydantic's own refusal of what is not an object
        if len(value) > MAX_ATTRIBUTES:
            raise PydanticCustomError(
                "too_many", "at most {most} attributes, not {count}",
                {"most": MAX_ATTRIBUTES, "count": len(value)},
            )  # fmt: skip
        for name in value:
            if not 1 <= len(name) <= MAX_TEXT:
                raise PydanticCustomError(
                    "attribute_name",
                    "attribute names are 1 to {most} characters; one has {length}",
                    {"most": MAX_TEXT, "length": len(name)},
                )
        return value


async def _auditor(request: web.Request) -> Any:
    caller = await authenticate(request)
    if caller.role != "auditor":
        raise ApiError(403, "forbidden", "only auditors may do this")
    return caller


def _provider_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    value = decimal(raw, 0, MAX_AMOUNT)
    if value is None:
        raise ApiError(404, "not_found", f"no provider {raw[:40]!r}")
    return value


async def _registered(connection: AsyncConnection, provider_id: int) -> dict[str, str]:
    """The attributes the provider's last heartbeat registered: 404 if there is no such
    provider, 409 if it never sent a heartbeat."""
    row = (
        await connection.execute(
            select(accounts.c.role, provider_nodes.c.attributes)
            .select_from(accounts)
            .outerjoin(provider_nodes, provider_nodes.c.provider_id == accounts.c.id)
            .where(accounts.c.id == provider_id)
        )
    ).first()
    if row is None or row.role != "provider":
        raise ApiError(404, "not_found", f"no provider {provider_id}")
    if row.attributes is None:
        raise ApiError(
            409, "no_heartbeat",
            f"provider {provider_id} has not sent a heartbeat yet: it has registered no"
            " attributes to audit",
        )  # fmt: skip
    attributes: dict[str, str] = json.loads(row.attributes)
    return attributes


def _view(row: Any, registered: dict[str, str]) -> dict[str, Any]:
    signed = json.loads(row.attributes)
    void = audit_voided_by(signed, registered)
    return {
        "provider_id": row.provider_id, "auditor": identity(row.auditor_id),
        "auditor_id": row.auditor_id, "attributes": signed, "height": row.height,
        "valid": not void, "voided_by": void,
    }  # fmt: skip


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


async def sign(request: web.Request) -> web.Response:
    """An auditor audits a provider: it vouches for attributes the provider registered (by
    default all of them). Its earlier audit of the provider, if any, is replaced."""
    auditor = await _auditor(request)
    provider_id = _provider_id(request)
    empty = not (await request.read()).strip()
    body: NewAudit = NewAudit() if empty else await read_body(request, NewAudit)
    height = request.app[CLOCK].height()

    async def work(connection: AsyncConnection) -> dict[str, Any]:
        registered = await _registered(connection, provider_id)
        signed = dict(registered) if body.attributes is None else body.attributes
        for name in sorted(signed):
            have = registered.get(name)
            if have != signed[name]:
                now = "registers no such attribute" if have is None else (
                    f"registered {_shown(name)}={_shown(have)}"
                )  # fmt: skip
                raise ApiError(
                    409, "attribute_mismatch",
                    f"provider {provider_id}'s last heartbeat {now}, not"
                    f" {_shown(name)}={_shown(signed[name])}",
                    f"attributes.{name}",
                )  # fmt: skip
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        values = {"attributes": json.dumps(signed, sort_keys=True), "height": height}
        statement = dialect.insert(audits).values(
            provider_id=provider_id, auditor_id=auditor.id, **values
        )
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=[audits.c.provider_id, audits.c.auditor_id], set_=values
            )
        )
        row = (await connection.execute(_audits(provider_id, auditor.id))).one()
        return _view(row, registered)

    answered = await journal.run(request, auditor.id, work, status=201)
    await _tell_market(request, provider_id)
    return answered.response()


async def _tell_market(request: web.Request, provider_id: int) -> None:
    """The market's copy of whose audits of the provider stand, from the table (a retry of an
    audit, or one whose server died before this, sets it right: it is read afresh each time,
    by every heartbeat too, and a restored market reads it)."""
    async with request.app[READER].connect() as connection:
        standing = (await auditors_of(connection, [provider_id])).get(provider_id, frozenset())

    def apply(market: Any, height: int, batch: Any) -> tuple[list[Any], None]:
        if provider_id not in market.providers:
            return [], None
        batch.touched_providers.add(provider_id)
        return market.set_auditors(provider_id, standing, height), None

    try:
        await request.app[WRITER].submit(Command(apply))
    except Unavailable:  # the audit is made; the provider's next heartbeat tells the market
        log.warning("provider %s: its auditors reach the market with its next heartbeat",
                    provider_id)  # fmt: skip


def _audits(provider_id: int, auditor_id: int | None = None) -> Any:
    query = select(audits).where(audits.c.provider_id == provider_id)
    if auditor_id is not None:
        query = query.where(audits.c.auditor_id == auditor_id)
    return query.order_by(audits.c.auditor_id)


async def revoke(request: web.Request) -> web.Response:
    """An auditor takes back its audit of a provider."""
    auditor = await _auditor(request)
    provider_id = _provider_id(request)

    async def work(connection: AsyncConnection) -> dict[str, Any]:
        gone = await connection.execute(
            delete(audits).where(
                audits.c.provider_id == provider_id, audits.c.auditor_id == auditor.id
            )
        )
        if not gone.rowcount:  # raised inside: nothing is journaled, a retry is checked again
            raise ApiError(
                404, "not_found", f"{identity(auditor.id)} has no audit of provider {provider_id}"
            )
        return {"provider_id": provider_id, "auditor": identity(auditor.id), "revoked": True}

    answered = await journal.run(request, auditor.id, work)
    await _tell_market(request, provider_id)
    return answered.response()


async def list_audits(request: web.Request) -> web.Response:
    """A provider's audits (any account may look), each with whether it stands and, if not,
    which signed attributes the provider no longer registers; ``auditors``: the identities of
    those that stand, as the market checks ``signedBy`` against them."""
    await authenticate(request)
    provider_id = _provider_id(request)
    async with request.app[READER].connect() as connection:
        try:
            registered = await _registered(connection, provider_id)
        except ApiError as exc:
            if exc.status != 409:
                raise
            registered = {}  # no heartbeat yet: nothing registered, so nothing audited
        rows = (await connection.execute(_audits(provider_id))).all()
    views = [_view(row, registered) for row in rows]
    return web.json_response(
        {
            "provider_id": provider_id,
            "auditors": sorted(v["auditor"] for v in views if v["valid"]),
            "audits": views,
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the audit routes."""
    app.router.add_post("/v1/providers/{id}/audits", sign)
    app.router.add_delete("/v1/providers/{id}/audits", revoke)
    app.router.add_get("/v1/providers/{id}/audits", list_audits)
