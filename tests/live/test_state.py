"""The core's Market and the database, rows out and rows in (``kova_live.state``), on SQLite
and PostgreSQL: the simulator's recorded commands applied to a ``Market`` and each command's
events persisted, the ``Market`` rebuilt from the database halfway (``load_market``) and the rest
applied to the rebuilt one, must leave the database holding the simulator's ledger, leases and
escrows; and a database written by today's orchestrator (a replay over HTTP) restores to the
market the simulator had at the same point."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from sqlalchemy import insert, text

from kova_core import LeaseState, Market
from kova_live import schema
from kova_live.db import _alembic, async_engine, migrate
from kova_live.market import Settings
from kova_live.replay import compare
from kova_live.schema import accounts
from kova_live.state import load_market, persist
from kova_sim.commands import _Replay, market_for, read_commands, replay_into
from kova_sim.run import run_scenario
from kova_sim.scenario import parse_scenario

from .conftest import BACKENDS, Server, fresh_database
from .test_operators import operator_token

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def recorded(name: str, duration: str, divisor: int, folder: Path) -> tuple[dict, list[dict]]:
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    data["duration"] = duration
    for group in data["providers"]:
        group["count"] = max(1, group["count"] // divisor)
    path = folder / "commands.jsonl"
    run_scenario(parse_scenario(data), None, engine="exact", commands=path)
    return read_commands(path)


class _Persisting(_Replay):
    """The log's commands, each one's events kept for persisting; tenants and providers get
    the account ids the database gave them."""

    def __init__(self, market: Market, header: dict, account_ids: dict[tuple[str, int], int]):
        super().__init__(market, header)
        self.account_ids = account_ids
        self.events: list[Any] = []
        self.made: dict[int, tuple[str, None]] = {}
        self.touched: list[int] = []

    def _add_tenant(self, line: dict, height: int) -> int:
        tenant_id = self.account_ids["tenant", line["tenant_id"]]
        if tenant_id in self.market.tenants:  # restored from its account row
            return tenant_id
        return self.market.add_tenant(line["name"], tenant_id=tenant_id)

    def _add_provider(self, line: dict, height: int) -> int:
        from kova_core import Resources

        provider_id = self.market.add_provider(
            capacity=Resources(**line["capacity"]), name=line["name"],
            attributes=line["attributes"], auditors=line["auditors"],
            gpu_models=line["gpu_models"],
            provider_id=self.account_ids["provider", line["provider_id"]],
        )  # fmt: skip
        self.touched.append(provider_id)
        return provider_id

    def _results(self, line: dict, answer: Any) -> None:
        super()._results(line, answer)
        if isinstance(answer, list):
            self.events += answer
        if line["command"] == "create_deployment":
            self.made[self.ids["deployment"][line["deployment_id"]]] = (
                json.dumps(line["manifest"]), None)


async def _accounts(url: str, commands: list[dict]) -> dict[tuple[str, int], int]:
    """An account row for each tenant and provider of the log (one id space, as live)."""
    ids: dict[tuple[str, int], int] = {}
    rows = []
    for c in commands:
        if c["command"] in ("add_tenant", "add_provider"):
            role = c["command"].removeprefix("add_")
            ids[role, c[f"{role}_id"]] = len(ids) + 1
            rows.append({"id": len(ids), "role": role, "name": c["name"][:100],
                         "token_hash": f"{len(ids)}".rjust(64, "0"), "created_height": 0})  # fmt: skip
    engine = async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(insert(accounts), rows)
    await engine.dispose()
    return ids


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "duration"), [("jobs-batch", "40m"), ("mixed-strategies", "3h"),
                                                ("budget-exhaustion", "1h")])  # fmt: skip
def test_persisted_and_restored_it_ends_with_the_simulators_ledger(name, duration, backend,
                                                                    tmp_path):  # fmt: skip
    header, commands = recorded(name, duration, 4, tmp_path)
    reference = market_for(header)
    replay_into(reference, header, commands)
    settings = Settings(settlement_interval=header["settlement_interval"],
                        fee_bps=header["fee_bps"])  # fmt: skip

    async def run(url: str) -> _Persisting:
        ids = await _accounts(url, commands)
        market = Market(fee_bps=settings.fee_bps, settlement_interval=settings.settlement_interval,
                        keep_ledger=False, forget_closed_bids=True)  # fmt: skip
        replay = _Persisting(market, header, ids)
        engine = async_engine(url)
        try:
            half = len(commands) // 50 * 25  # just after a batch was persisted
            for i, line in enumerate(commands):
                if i == half:  # the orchestrator restarts: the Market is what the tables hold
                    async with engine.connect() as connection:
                        restored = await load_market(connection, settings)
                    assert restored.open_orders() == replay.market.open_orders()
                    assert {k: v for k, v in restored.balances.items() if v} == {
                        k: v for k, v in replay.market.balances.items() if v}
                    replay.market = restored
                replay.issue(line)
                if i % 25 == 24 or i == len(commands) - 1:  # a batch, one transaction
                    async with engine.begin() as connection:
                        await persist(connection, replay.market, replay.events, replay.made,
                                      replay.touched)  # fmt: skip
                    replay.events, replay.made, replay.touched = [], {}, []
                    replay.market.forget_closed()
        finally:
            await engine.dispose()
        return replay

    with fresh_database(backend, tmp_path) as url:
        migrate(url)
        replay = asyncio.run(run(url))
        figures = compare(url, reference, replay.ids)
    assert figures["transfers"] == len(reference.ledger)
    assert figures["leases"] == len(reference.leases) > 0


UPGRADE = Path(__file__).parent / "data" / "upgrade-ec78abb.json.gz"


async def _load_rows(url: str, tables: dict[str, list[dict]]) -> None:
    """The saved rows into their tables, as they were; each id sequence then goes on from the
    highest id (as it would on the database itself)."""
    engine = async_engine(url)
    try:
        async with engine.begin() as connection:
            for table in schema.metadata.sorted_tables:
                rows = tables.get(table.name, [])
                if rows:
                    await connection.execute(insert(table), rows)
                id_column = table.c.get("id")
                if rows and id_column is not None and id_column.autoincrement is not False:
                    await connection.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                             f" (SELECT max(id) FROM {table.name}))")
                    )  # fmt: skip
    finally:
        await engine.dispose()


def test_a_database_written_by_the_sql_orchestrator_upgrades_and_restores_to_the_simulators_market(
    tmp_path,
):
    """The upgrade: a network run by the orchestrator before it ran the core's ``Market``
    (commit ec78abb: its commands written to the tables in SQL; the rows are saved in
    ``tests/live/data``, made by ``make_upgrade_fixture.py`` with that code) is migrated to
    today's schema, restored into a ``Market`` equal to the simulator's at that point, and
    today's server runs on: its rounds pay from the restored escrows and money is conserved."""
    with gzip.open(UPGRADE, "rt") as f:
        saved = json.load(f)
    header, commands = recorded(saved["scenario"], saved["duration"], saved["divisor"], tmp_path)
    prefix = commands[: len(commands) * 2 // 3]
    assert len(prefix) == saved["commands"]  # the simulator records the same log today
    reference = market_for(header)
    replay_into(reference, header, prefix)
    settings = Settings(settlement_interval=header["settlement_interval"],
                        fee_bps=header["fee_bps"])  # fmt: skip
    with fresh_database("postgresql", tmp_path) as url:
        command.upgrade(_alembic(url), saved["alembic"])  # the schema the rows were written in
        asyncio.run(_load_rows(url, saved["tables"]))
        migrate(url)  # then to today's

        async def load() -> Market:
            engine = async_engine(url)
            try:
                async with engine.connect() as connection:
                    return await load_market(connection, settings)
            finally:
                await engine.dispose()

        market = asyncio.run(load())
        # today's server takes over the network: its clock moves on and its rounds pay
        ops = operator_token(url)
        server = Server(url, tmp_path / "data", 1.0, "--clock", "manual", "--order-expiry",
                        "1000000000")  # fmt: skip
        try:
            at = server.client.get("/healthz").json()["height"]
            later = (at // settings.settlement_interval + 3) * settings.settlement_interval
            moved = server.client.post("/v1/clock", headers=ops, json={"height": later})
            assert moved.status_code == 200, moved.text
        finally:
            server.stop()
        after = asyncio.run(load())
    assert after.last_round == later and after.money_drift() == 0
    assert sum(x.total_paid for x in after.leases.values()) > sum(
        x.total_paid for x in market.leases.values())  # fmt: skip
    ids = {kind: {int(logged): live for logged, live in saved["ids"][kind].items()}
           for kind in saved["ids"]}  # fmt: skip
    back = {kind: {live: logged for logged, live in ids[kind].items()} for kind in ids}
    assert sorted(back["order"][o.id] for o in market.open_orders()) == [
        o.id for o in reference.open_orders()]
    live = {back["lease"][i]: x for i, x in market.leases.items()}
    for lease_id, lease in reference.leases.items():
        if reference.deployments[lease.deployment_id].state.value == "closed":
            assert lease_id not in live  # closed deployments stay in the tables only
            continue
        got = live[lease_id]
        assert (got.state, got.price, got.last_settled, got.blocks_paid, got.total_paid,
                got.debt) == (lease.state, lease.price, lease.last_settled, lease.blocks_paid,
                              lease.total_paid, lease.debt), lease_id  # fmt: skip
    for dep_id, dep in market.deployments.items():
        assert market.escrow(dep_id) == reference.escrow(back["deployment"][dep_id])
        assert dep.state == reference.deployments[back["deployment"][dep_id]].state
    for provider_id, provider in market.providers.items():
        twin = reference.providers[back["provider"][provider_id]]
        assert (provider.free, provider.completed, provider.failed, provider.state) == (
            twin.free, twin.completed, twin.failed, twin.state)
    assert market.money_drift() == 0
    assert any(x.state is LeaseState.ACTIVE for x in market.leases.values())
