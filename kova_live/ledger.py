"""Money in the database: every movement is a ``transfers`` row and a change to ``balances``,
in the caller's transaction.

A debit is one conditional UPDATE (``amount >= :x``), so two transactions racing for the same
money cannot both take it, on SQLite or PostgreSQL; the CHECK constraint backs it up. Account
names are the core's (``tenant:<id>``, ``provider:<id>``, ``escrow:<id>``, ``network``), and
``external`` (outside the system) has no balance.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, insert, select, text, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import EXTERNAL, InsufficientBalance, require_amount

from .schema import HOLDER_WHERE, balances, transfers

__all__ = ["account_transfers", "balance", "move"]


async def balance(connection: AsyncConnection, account: str) -> int:
    """What ``account`` holds (0 if it never held anything)."""
    value = await connection.scalar(select(balances.c.amount).where(balances.c.account == account))
    return int(value or 0)


def account_transfers(account: str, *, before: int, limit: int) -> Select[Any]:
    """The newest ``limit`` transfers into or out of a tenant's or provider's ``account`` with
    an id below ``before``, newest first.

    Two ranges of the ledger's partial account indexes (each side repeats the indexes'
    condition, so that both databases use them), then the newest ``limit`` of both.
    """
    sides = [
        select(transfers)
        .where(column == account, text(HOLDER_WHERE.format(column.name)), transfers.c.id < before)
        .order_by(transfers.c.id.desc())
        .limit(limit)
        .subquery()
        for column in (transfers.c.source, transfers.c.destination)
    ]
    both = union(*(select(side) for side in sides)).subquery()
    return select(both).order_by(both.c.id.desc()).limit(limit)


async def _credit(connection: AsyncConnection, account: str, amount: int) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(balances).values(account=account, amount=amount)
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[balances.c.account],
            set_={"amount": balances.c.amount + statement.excluded.amount},
        )
    )


async def move(
    connection: AsyncConnection,
    *,
    source: str,
    destination: str,
    amount: int,
    reason: str,
    height: int,
    lease_id: int | None = None,
    start: int | None = None,
    end: int | None = None,
) -> int:
    """Move ``amount`` micro-units and record the transfer; return the transfer's id.

    Raises :class:`kova_core.InsufficientBalance` (nothing changed by this call) if ``source``
    holds less than ``amount``, and :class:`kova_core.InvalidAmount` for an amount that is not
    a positive integer.
    """
    require_amount(amount, "amount", positive=True)
    if source != EXTERNAL:
        result = await connection.execute(
            update(balances)
            .where(balances.c.account == source, balances.c.amount >= amount)
            .values(amount=balances.c.amount - amount)
        )
        if result.rowcount != 1:
            raise InsufficientBalance(source, await balance(connection, source), amount)
    if destination != EXTERNAL:
        await _credit(connection, destination, amount)
    row = await connection.execute(
        insert(transfers)
        .values(
            height=height,
            source=source,
            destination=destination,
            amount=amount,
            reason=reason,
            lease_id=lease_id,
            start_block=start,
            end_block=end,
        )
        .returning(transfers.c.id)
    )
    return int(row.scalar_one())
