"""The command journal: every market command the API applied, in order, each with the key that
makes it apply once.

A client sends ``Idempotency-Key: <key>`` with a command (the CLI, the provider agent and the
console do; the server makes one for a client that does not). The command's answer is written
to the ``commands`` table in the same transaction as what the command changed, under
(account, key). A retry with the same key, after a lost answer, a timeout or a server crash,
gets the original answer and changes nothing; a key used again for a different request is
refused (422). A command that was refused (any 4xx) changed nothing and is not journaled: its
retry is checked again. Heartbeats and log lines are state reports, not commands: they are not
journaled. Market commands reach the journal through the single writer (:func:`submit`), which
looks their keys up and journals them in the batch that applies them.

The journal is also the record of what happened, in commit order (``id``), with who sent what
(method, path, the request body's SHA-256) at which height.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from aiohttp import web
from sqlalchemy import insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .db import transact
from .schema import commands

__all__ = [
    "KEY_HEADER",
    "MAX_KEY",
    "Answer",
    "Command",
    "KeyReused",
    "answered",
    "command_of",
    "record",
    "record_many",
    "replayed",
    "run",
    "submit",
]

KEY_HEADER = "Idempotency-Key"
MAX_KEY = 128


class Answer(NamedTuple):
    """A command's answer as the journal keeps it."""

    status: int
    body: str  # JSON

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.body, content_type="application/json")


class Command(NamedTuple):
    """Who sends which request under which key (``made``: the server made the key)."""

    account_id: int  # 0: no account (account registration)
    key: str
    method: str
    path: str
    request_sha256: str
    made: bool


class KeyReused(Exception):
    """The key was used before for a different request."""


async def command_of(request: web.Request, account_id: int) -> Command:
    """The command a request is, with its idempotency key (400 naming the header if bad)."""
    from .app import ApiError  # app builds on this module

    raw = request.headers.get(KEY_HEADER)
    made = raw is None
    key = uuid.uuid4().hex if raw is None else raw.strip()
    if not key or len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
        raise ApiError(
            400, "invalid_field",
            f"{KEY_HEADER} must be 1 to {MAX_KEY} printable ASCII characters", KEY_HEADER,
        )  # fmt: skip
    body = await request.read()
    digest = hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n" + body)
    return Command(account_id, key, request.method, request.path[:256], digest.hexdigest(), made)


async def answered(connection: AsyncConnection, found: list[Command]) -> dict[tuple[int, str], Any]:
    """The journal's rows of these commands (account, key) that were applied."""
    wanted = [(c.account_id, c.key) for c in found if not c.made]
    if not wanted:
        return {}
    rows = (
        await connection.execute(
            select(commands).where(tuple_(commands.c.account_id, commands.c.idem_key).in_(wanted))
        )
    ).all()
    return {(r.account_id, r.idem_key): r for r in rows}


def replayed(command: Command, row: Any) -> Answer:
    """The original answer to a retried command; :class:`KeyReused` if it is another request."""
    if row.request_sha256 != command.request_sha256:
        raise KeyReused(
            f"{KEY_HEADER} {command.key!r} was used for another request ({row.method} {row.path})"
        )
    return Answer(row.status, row.response)


async def record(
    connection: AsyncConnection, command: Command, height: int, answer: Answer, now_ms: int
) -> None:
    """Journal a command's answer in the transaction that applies it."""
    await connection.execute(
        insert(commands).values(
            account_id=command.account_id, idem_key=command.key, method=command.method,
            path=command.path, request_sha256=command.request_sha256, height=height,
            status=answer.status, response=answer.body, created_ms=now_ms,
        )
    )  # fmt: skip


async def record_many(
    connection: AsyncConnection, answered: list[tuple[Command, Answer]], height: int, now_ms: int
) -> None:
    """Journal many commands' answers at once (a batch of bids)."""
    await connection.execute(
        insert(commands),
        [
            {
                "account_id": c.account_id, "idem_key": c.key, "method": c.method,
                "path": c.path, "request_sha256": c.request_sha256, "height": height,
                "status": a.status, "response": a.body, "created_ms": now_ms,
            }
            for c, a in answered
        ],
    )  # fmt: skip


async def _earlier(engine: AsyncEngine, command: Command) -> Answer | None:
    """The journaled answer of a command applied before (422 if its key names another)."""
    from .app import ApiError

    if command.made:  # a key the server just made was never used
        return None
    async with engine.connect() as connection:
        row = (await answered(connection, [command])).get((command.account_id, command.key))
    if row is None:
        return None
    try:
        return replayed(command, row)
    except KeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc), KEY_HEADER) from None


async def submit(
    request: web.Request,
    account_id: int,
    apply: Callable[..., Any],
    answer: Callable[[AsyncConnection, Any], Awaitable[Any]] | None = None,
    status: int = 200,
) -> Answer:
    """Apply a market command once, through the single writer (``kova_live.writer``):
    ``apply(market, height, batch) -> (events, value)`` is the command on the ``Market``;
    ``answer(connection, value)`` returns the answer's JSON body, in the transaction that
    makes the command durable (default: the value); the answer is journaled there. A retry of a
    command already applied gets its answer back and changes nothing."""
    from .app import ENGINE, WRITER
    from .writer import Command as WriterCommand

    command = await command_of(request, account_id)
    before = await _earlier(request.app[ENGINE], command)
    if before is not None:
        return before
    return await request.app[WRITER].submit(WriterCommand(apply, answer, command, status))


async def run(
    request: web.Request,
    account_id: int,
    work: Callable[[AsyncConnection], Awaitable[Any]],
    status: int = 200,
) -> Answer:
    """Apply a command that is not the market's (an audit) once: ``work`` changes the
    database in a transaction and returns the answer's JSON body; the answer is journaled in
    that transaction. A retry of a command already applied gets its answer back without
    running ``work``."""
    from .app import CLOCK, ENGINE

    command = await command_of(request, account_id)
    engine: AsyncEngine = request.app[ENGINE]
    clock = request.app[CLOCK]
    before = await _earlier(engine, command)
    if before is not None:
        return before

    async def once(connection: AsyncConnection) -> Answer:
        body = await work(connection)
        answer = Answer(status, json.dumps(body))
        await record(connection, command, clock.height(), answer, clock.now_ms())
        return answer

    try:
        return await transact(engine, once)
    except IntegrityError:
        # the same command, sent twice at once: the other one applied it
        again = await _earlier(engine, command)
        if again is None:
            raise
        return again
