"""The single writer (``kova_live.writer``) on SQLite and PostgreSQL: the simulator's recorded
commands submitted twenty at a time are applied to the ``Market`` in order and committed in
batches; a batch whose transaction fails is answered ``Unavailable`` as a whole, changes
nothing, and the ``Market`` is rebuilt from the database; sent again, its commands apply once,
and the database ends with the simulator's ledger, leases and escrows."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from kova_core import Market
from kova_live.db import async_engine, migrate
from kova_live.market import Settings
from kova_live.replay import compare
from kova_live.writer import Batch, Command, Unavailable, Writer
from kova_sim.commands import market_for, replay_into

from .conftest import BACKENDS, fresh_database
from .test_state import _accounts, _Persisting, recorded


def _applying(replay: _Persisting, line: dict) -> Command:
    def apply(market: Market, height: int, batch: Batch) -> tuple[list[Any], int]:
        replay.market = market
        replay.events, replay.made, replay.touched = [], {}, []
        replay.issue(line)  # at the line's own height; refusals as the simulator had them
        batch.new_deployments.update(replay.made)
        batch.touched_providers.update(replay.touched)
        return replay.events, line["seq"]

    return Command(apply)


async def _poisoned(connection: Any, value: Any) -> Any:
    raise RuntimeError("the disk is full")  # the transaction fails after the batch's rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_commit_whole_or_not_at_all_and_end_with_the_simulators_ledger(backend,
                                                                               tmp_path):  # fmt: skip
    header, commands = recorded("mixed-strategies", "2h", 4, tmp_path)
    reference = market_for(header)
    replay_into(reference, header, commands)
    settings = Settings(settlement_interval=header["settlement_interval"],
                        fee_bps=header["fee_bps"])  # fmt: skip

    async def run(url: str) -> tuple[_Persisting, Writer, int]:
        ids = await _accounts(url, commands)
        engine = async_engine(url)
        writer = Writer(engine, lambda: 0, settings)
        await writer.start()
        replay = _Persisting(writer.market, header, ids)
        failed = 0
        try:
            for start in range(0, len(commands), 20):
                chunk = commands[start : start + 20]
                kept = copy.deepcopy((replay.ids, replay._taken))
                submitted = [_applying(replay, line) for line in chunk]
                if start // 20 % 7 == 3:  # now and then the write fails
                    submitted.append(Command(lambda m, h, b: ([], None), _poisoned))
                outcomes = await asyncio.gather(*(writer.submit(c) for c in submitted),
                                                return_exceptions=True)  # fmt: skip
                if any(isinstance(o, Unavailable) for o in outcomes):
                    assert all(isinstance(o, Unavailable) for o in outcomes)  # all or nothing
                    failed += 1
                    replay.ids, replay._taken = kept  # none of them happened: send them again
                    again = await asyncio.gather(*(writer.submit(_applying(replay, line))
                                                   for line in chunk))  # fmt: skip
                    assert again == [line["seq"] for line in chunk]
                else:
                    assert outcomes == [line["seq"] for line in chunk]
        finally:
            await writer.close()
            await engine.dispose()
        return replay, writer, failed

    with fresh_database(backend, tmp_path) as url:
        migrate(url)
        replay, writer, failed = asyncio.run(run(url))
        figures = compare(url, reference, replay.ids)
    assert failed > 3 and writer.rebuilt == failed
    assert writer.batches < len(commands) / 5  # group commit: many commands a transaction
    assert figures["transfers"] == len(reference.ledger) > 0
    assert figures["leases"] == len(reference.leases) > 0
