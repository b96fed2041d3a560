"""The orchestrator's market commands: each a call on its ``kova_core.Market`` (the single writer,
``kova_live.writer``), with the few helpers the handlers share; and the helpers that store the
market's records (``kova_live.state``).

Theory of operation
-------------------
Nothing here decides a market rule: every rule (what a bid may be, what a round pays, when a
deployment pauses or a job ends) is the core's, applied by ``Market``. What the orchestrator
adds is who may ask (a tenant's deployment is its own: another tenant is told it does not exist)
and the words of its API (a provider that never sent a heartbeat is told to send one).
A command here is ``(market, height, batch) -> (events, value)``, as the writer applies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, cast, func, insert
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import (
    Deployment,
    IllegalTransition,
    KovaError,
    Limits,
    Market,
    OrderSpec,
    UnknownEntity,
    parse_manifest,
)

from .schema import transfers

__all__ = [
    "NoHeartbeat",
    "Settings",
    "bidder",
    "closed",
    "order_specs",
    "owned",
    "tenant",
]

RESOURCE_COLUMNS = ("cpu", "memory", "storage", "gpu")
PART = 2000  # rows written between two turns of the event loop


class NoHeartbeat(KovaError):
    """A provider bid before its agent said what machine it has."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The network's settlement settings (the ``network`` row)."""

    settlement_interval: int = 60
    fee_bps: int = 0
    # the denominations manifests may price in (``serve --accepted-denoms``); None: any
    accepted_denoms: frozenset[str] | None = None
    # the network's limits (``serve --min-deposit-blocks``, ``--max-replicas``…; the core's
    # rules): none unless serve's flags set them, as tests that build an app directly expect
    limits: Limits = field(default_factory=Limits)


# --------------------------------------------------------------------------- who may ask


def tenant(market: Market, tenant_id: int) -> int:
    """The tenant account ``tenant_id`` as the market knows it (an account registered since
    the market was restored joins it on its first command)."""
    if tenant_id not in market.tenants:
        market.add_tenant(tenant_id=tenant_id)
    return tenant_id


def owned(market: Market, deployment_id: int, tenant_id: int) -> Deployment:
    """The tenant's deployment (another tenant's is reported as missing: its existence is not
    disclosed). Raises :class:`kova_core.UnknownEntity`."""
    dep = market.deployments.get(deployment_id)
    if dep is None or dep.tenant_id != tenant_id:
        raise UnknownEntity("deployment", deployment_id)
    return dep


def closed(entity: str, entity_id: int, command: str) -> IllegalTransition:
    """The refusal of a command naming a closed deployment, order, bid or lease that the market
    has forgotten (the database still has its row, in state ``closed``, ``lost`` or the like):
    as the core refuses it while it remembers it."""
    return IllegalTransition(entity, entity_id, "closed", command)


def bidder(market: Market, provider_id: int) -> int:
    """A provider that has sent a heartbeat (the market knows its machine). Raises
    :class:`NoHeartbeat`."""
    if provider_id not in market.providers:
        raise NoHeartbeat("send a heartbeat (POST /v1/providers/heartbeat) before bidding")
    return provider_id


# --------------------------------------------------------------------------- manifests


@lru_cache(maxsize=4096)
def order_specs(manifest: str) -> tuple[OrderSpec, ...]:
    """A manifest's order specs, one per replica (parsed once per manifest text)."""
    return parse_manifest(manifest).order_specs()


def _among(column_: Any, ids: list[int], connection: AsyncConnection) -> Any:
    """``column IN ids``: ``= ANY(:array)`` on PostgreSQL (one parameter), ``IN (...)`` else."""
    if connection.dialect.name == "postgresql":
        return column_ == func.any(_pg_array(ids))
    return column_.in_(ids)


def _pg_array(values: list[int]) -> Any:
    """A PostgreSQL ``bigint[]`` parameter sent as one comma-separated string (psycopg dumps
    each element of a list in Python, several times slower for a round's 100,000)."""
    return cast(func.string_to_array(_joined(values), ","), postgresql.ARRAY(BigInteger))


def _joined(values: Iterable[Any]) -> str:
    return ",".join(map(str, values))


_TRANSFER_COLUMNS = (
    "height", "source", "destination", "amount", "reason", "lease_id", "start_block", "end_block",
)  # fmt: skip


async def _insert_transfers(connection: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
    """Append ledger rows (tuples in ``_TRANSFER_COLUMNS`` order): with COPY on PostgreSQL
    (psycopg formats the rows in C and sends them in large blocks), else in one
    executemany."""
    if connection.dialect.name != "postgresql" or len(rows) < 100:
        await connection.execute(
            insert(transfers), [dict(zip(_TRANSFER_COLUMNS, row, strict=True)) for row in rows]
        )
        return
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection  # the psycopg AsyncConnection of this very transaction
    assert driver is not None
    statement = f"COPY transfers ({', '.join(_TRANSFER_COLUMNS)}) FROM STDIN"
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for i, row in enumerate(rows):
            await copy.write_row(row)
            if i % (10 * PART) == 10 * PART - 1:  # a turn for the event loop now and then
                await asyncio.sleep(0)
