"""Enqueueing background work (the ``work_queue`` table), in the caller's transaction: the
change that asks for work and the work itself commit together. :mod:`kova_live.work` runs it."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from .schema import work_queue

__all__ = ["enqueue"]


async def enqueue(
    connection: AsyncConnection, kind: str, subject_id: int | None, run_at: int, height: int
) -> None:
    """Add an item, in the caller's transaction."""
    await connection.execute(
        insert(work_queue).values(
            kind=kind, subject_id=subject_id, run_at=run_at, state="pending", attempts=0,
            created_at=height,
        )
    )  # fmt: skip
