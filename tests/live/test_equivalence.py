"""The orchestrator's database market against the core's in-memory Market: the same commands at
the same heights must give the same outcome (success, or the same error) and the same ledger,
transfer for transfer, on SQLite and on PostgreSQL.

Random histories (seeded) mix deployments and jobs of one and two replicas, bids at random
prices, accepts, deposits too small and large enough to resume, closes, jobs finishing (with
exit code 0 or not), leases failing, provider failures, expiries, rounds with and without a fee,
and time jumps that skip several rounds and reach job deadlines (escrow run out, max runtime).
"""

import asyncio
import random

from sqlalchemy import insert, select

from kova_core import KovaError, Market, Resources, parse_manifest
from kova_live import market as sql
from kova_live.db import async_engine, migrate
from kova_live.ledger import move
from kova_live.schema import accounts, deployments, leases, orders, transfers


def manifest_text(replicas, max_price, job_runtime=None):
    kind = "" if job_runtime is None else f"kind: job\nmax_runtime: {job_runtime}\n"
    return f"""
version: "2.0"
{kind}services:
  web:
    image: busybox:1.36
profiles:
  compute:
    web:
      resources:
        cpu: {{units: 1}}
        memory: {{size: 1Gi}}
        storage: {{size: 1Gi}}
  placement:
    dc:
      pricing:
        web: {{denom: ukova, amount: {max_price}}}
deployment:
  web:
    dc:
      profile: web
      count: {replicas}
"""


BOX = Resources(cpu=4000, memory=8 * 2**30, storage=100 * 2**30)


class Twin:
    """The same history applied to a core Market and to the database."""

    def __init__(self, connection_factory, fee_bps, rng):
        self.market = Market(fee_bps=fee_bps)
        self.settings = sql.Settings(settlement_interval=60, fee_bps=fee_bps)
        self.engine = connection_factory
        self.rng = rng
        self.names = {"network": "network", "external": "external"}  # sql account -> core account
        self.tenants = []  # (core id, sql id)
        self.providers = []
        self.height = 0
        self.outcomes = []
        # ids differ where PostgreSQL spends a sequence value in a transaction that rolls back
        self.deps, self.orders, self.bids, self.leases = {}, {}, {}, {}  # core id -> sql id

    async def both(self, label, core_call, sql_call):
        """Run a command on each side; both must succeed, or both fail with the same error."""
        try:
            core_result, core_error = core_call(), None
        except KovaError as exc:
            core_result, core_error = None, type(exc).__name__
        try:
            async with self.engine.begin() as connection:
                sql_result, sql_error = await sql_call(connection), None
        except KovaError as exc:
            sql_result, sql_error = None, type(exc).__name__
        assert core_error == sql_error, f"{label} at {self.height}: core {core_error}, sql {sql_error}"
        self.outcomes.append((label, core_error))
        return core_result, sql_result

    async def add_accounts(self, tenants, providers):
        async with self.engine.begin() as connection:
            for role, count, into in (("tenant", tenants, self.tenants), ("provider", providers, self.providers)):
                for i in range(count):
                    sql_id = (
                        await connection.execute(
                            insert(accounts)
                            .values(role=role, name=f"{role}{i}", token_hash=f"{role}{i}".ljust(64, "x"),
                                    created_height=0)
                            .returning(accounts.c.id)
                        )
                    ).scalar_one()
                    core_id = (self.market.add_tenant() if role == "tenant"
                               else self.market.add_provider(capacity=BOX))
                    into.append((core_id, sql_id))
                    self.names[f"{role}:{sql_id}"] = f"{role}:{core_id}"
                    if role == "provider":
                        await sql.heartbeat(connection, sql_id, BOX, {}, [], 0)

    async def step(self):
        rng, market, h = self.rng, self.market, self.height
        action = rng.choices(
            ["credit", "deploy", "bid", "accept", "deposit", "close", "wait", "fail", "recover",
             "expire", "finish", "fail_lease"],
            weights=[1, 2, 4, 3, 3, 1, 4, 0.3, 1, 0.3, 1, 0.4],
        )[0]
        if action == "credit":
            core_t, sql_t = rng.choice(self.tenants)
            amount = rng.randint(1, 400) * 1_000_000
            market.credit(core_t, amount, h)

            async def credit(c):
                await sql.catch_up(c, h, self.settings)
                await move(c, source="external", destination=f"tenant:{sql_t}", amount=amount,
                           reason="credit", height=h)
            async with self.engine.begin() as connection:
                await credit(connection)
        elif action == "deploy":
            core_t, sql_t = rng.choice(self.tenants)
            runtime = rng.choice([None, None, 30, 90, 400])  # a job for a max runtime
            text = manifest_text(rng.choice([1, 1, 2]), rng.choice([800_000, 1_000_000, 2_000_000]),
                                 runtime)
            parsed = parse_manifest(text)
            deposit = rng.randint(0, 120) * 1_000_000
            async def deploy(c):
                dep_id = await sql.create_deployment(c, sql_t, parsed, text, deposit, h, self.settings)
                query = select(orders.c.id).where(orders.c.deployment_id == dep_id).order_by(orders.c.spec_index)
                return dep_id, (await c.execute(query)).scalars().all()

            events, made = await self.both(
                "deploy", lambda: market.create_deployment(core_t, parsed, deposit, h), deploy
            )
            if events is not None:
                created = next(e for e in events if type(e).__name__ == "DeploymentCreated")
                opened = [e.order_id for e in events if type(e).__name__ == "OrderOpened"]
                self.deps[created.deployment_id] = made[0]
                self.orders.update(zip(opened, made[1], strict=True))
        elif action == "bid" and market.orders:
            open_now = [o.id for o in market.open_orders()]
            order_id = rng.choice(open_now if open_now and rng.random() < 0.8 else list(market.orders))
            core_p, sql_p = rng.choice(self.providers)
            price = rng.choice([300_000, 500_000, 1_000_000, 1_500_000])
            events, made = await self.both(
                "bid",
                lambda: market.place_bid(order_id, core_p, price, h),
                lambda c: sql.place_bid(c, sql_p, self.orders[order_id], price, h, self.settings),
            )
            if events is not None:
                self.bids[next(e for e in events if type(e).__name__ == "BidPlaced").bid_id] = made
        elif action == "accept" and market.bids:
            bid_id = rng.choice(list(market.bids))
            tenant = market.deployments[market.orders[market.bids[bid_id].order_id].deployment_id].tenant_id
            sql_t = dict(self.tenants)[tenant]
            events, made = await self.both(
                "accept",
                lambda: market.accept_bid(bid_id, h),
                lambda c: sql.accept_bid(c, sql_t, self.bids[bid_id], h, self.settings),
            )
            if events is not None:
                self.leases[next(e for e in events if type(e).__name__ == "LeaseStarted").lease_id] = made
        elif action == "deposit" and market.deployments:
            dep_id = rng.choice(list(market.deployments))
            amount = rng.choice([1, 30, 200]) * 1_000_000
            tenant = market.deployments[dep_id].tenant_id
            market.credit(tenant, amount, h)
            async with self.engine.begin() as c:
                await sql.catch_up(c, h, self.settings)
                await move(c, source="external", destination=f"tenant:{dict(self.tenants)[tenant]}",
                           amount=amount, reason="credit", height=h)

            async def top_up(c):
                await sql.catch_up(c, h, self.settings)
                dep = await sql.locked_deployment(c, self.deps[dep_id])
                await sql.deposit(c, dep, amount, h, self.settings)
            await self.both("deposit", lambda: market.deposit(dep_id, amount, h), top_up)
        elif action == "close" and market.deployments:
            dep_id = rng.choice(list(market.deployments))

            async def close(c):
                await sql.catch_up(c, h, self.settings)
                await sql.close_deployment(c, await sql.locked_deployment(c, self.deps[dep_id]), h,
                                           self.settings, sql.CloseReason.TENANT_CLOSED)
            await self.both("close", lambda: market.close_deployment(dep_id, h), close)
        elif action == "fail":
            core_p, sql_p = rng.choice(self.providers)
            await self.both(
                "fail",
                lambda: market.fail_provider(core_p, h),
                lambda c: sql.fail_provider(c, sql_p, h, self.settings),
            )
        elif action == "recover":
            lost = [(c, s) for c, s in self.providers if str(market.providers[c].state) == "lost"]
            if lost:
                core_p, sql_p = rng.choice(lost)
                market.recover_provider(core_p, h)
                async with self.engine.begin() as c:  # the agent's heartbeat brings it back
                    await sql.catch_up(c, h, self.settings)
                    await sql.heartbeat(c, sql_p, BOX, {}, [], h)
        elif action == "expire" and market.orders:
            order_id = rng.choice(list(market.orders))
            await self.both(
                "expire",
                lambda: market.expire_order(order_id, h),
                lambda c: sql.expire_order(c, self.orders[order_id], h, self.settings),
            )
        elif action == "finish" and market.leases:
            running = [i for i, x in market.leases.items() if str(x.state) == "active"
                       and market.deployments[x.deployment_id].is_job]
            lease_id = rng.choice(running if running and rng.random() < 0.8 else list(market.leases))
            succeeded = rng.random() < 0.7
            await self.both(
                "finish",
                lambda: market.finish_job(lease_id, h, succeeded=succeeded),
                lambda c: sql.finish_job(c, self.leases[lease_id], h, self.settings,
                                         succeeded=succeeded),
            )
        elif action == "fail_lease" and market.leases:
            live = [i for i, x in market.leases.items() if str(x.state) != "closed"]
            lease_id = rng.choice(live if live and rng.random() < 0.8 else list(market.leases))
            await self.both(
                "fail_lease",
                lambda: market.fail_lease(lease_id, h),
                lambda c: sql.fail_lease(c, self.leases[lease_id], h, self.settings),
            )
        else:
            self.height += rng.choice([1, 7, 30, 59, 60, 61, 150, 400])

    async def ledgers(self):
        async with self.engine.begin() as connection:
            await sql.catch_up(connection, self.height, self.settings)
            rows = (await connection.execute(select(transfers).order_by(transfers.c.id))).all()
        self.market.tick(self.height)
        core = [
            (t.height, t.source, t.destination, t.amount, t.reason, t.lease_id, t.start, t.end)
            for t in self.market.ledger
        ]
        names = dict(self.names)
        names.update({f"escrow:{s}": f"escrow:{c}" for c, s in self.deps.items()})
        lease_ids = {s: c for c, s in self.leases.items()}
        ours = [
            (r.height, names[r.source], names[r.destination], r.amount, r.reason,
             lease_ids.get(r.lease_id), r.start_block, r.end_block)
            for r in rows
        ]
        return core, ours

    async def states(self):
        """Each deployment's and lease's state and close reason, core ids, on each side."""
        async with self.engine.begin() as connection:
            deps = {r.id: (r.state, r.close_reason) for r in await connection.execute(select(deployments))}
            rows = {r.id: (r.state, r.close_reason) for r in await connection.execute(select(leases))}
        core_deps = {i: (str(d.state), d.close_reason and str(d.close_reason))
                     for i, d in self.market.deployments.items()}
        core_leases = {i: (str(x.state), x.close_reason and str(x.close_reason))
                       for i, x in self.market.leases.items()}
        ours_deps = {c: deps[s] for c, s in self.deps.items()}
        ours_leases = {c: rows[s] for c, s in self.leases.items()}
        return (core_deps, core_leases), (ours_deps, ours_leases)


HISTORIES = [(1, 0), (2, 250), (3, 0)]  # (seed, fee in basis points)


def test_the_database_market_is_the_core_market(database_url):
    """Three random histories, each on a fresh database: every one must agree with the core;
    together they must reach every kind of outcome."""
    outcomes, reasons, job_ends, lease_ends = set(), set(), set(), set()
    for seed, fee_bps in HISTORIES:
        twin, core, core_states = _history(database_url, seed, fee_bps)
        outcomes |= {(label, error) for label, error in twin.outcomes}
        reasons |= {t[4] for t in core}
        job_ends |= {reason for _, reason in core_states[0].values()}
        lease_ends |= {reason for _, reason in core_states[1].values()}
    # the histories reached the interesting places
    assert {"settlement", "debt", "close", "refund", "fee"} <= reasons
    assert ("fail", None) in outcomes and ("expire", None) in outcomes
    assert ("accept", None) in outcomes and ("bid", None) in outcomes
    assert ("finish", None) in outcomes and ("fail_lease", None) in outcomes
    assert any(error for _, error in outcomes)
    # jobs ended every way: finished well and badly, out of funds, timed out, failed leases
    assert {"job_completed", "job_failed", "job_out_of_funds", "tenant_closed"} <= job_ends
    assert {"job_completed", "job_failed", "container_failed", "job_timed_out",
            "provider_lost"} <= lease_ends


def _history(database_url, seed, fee_bps):
    """One history on a fresh copy of the schema; asserts both sides agree, returns the twin,
    the core's ledger and the core's states."""
    asyncio.run(_drop_all(database_url))
    migrate(database_url)

    async def run():
        engine = async_engine(database_url)
        try:
            twin = Twin(engine, fee_bps, random.Random(seed))
            await twin.add_accounts(tenants=3, providers=3)
            for _ in range(500):
                await twin.step()
            return twin, *(await twin.ledgers()), *(await twin.states())
        finally:
            await engine.dispose()

    twin, core, ours, core_states, our_states = asyncio.run(run())
    assert ours == core, f"seed {seed}: the ledgers differ"
    assert our_states == core_states, f"seed {seed}: deployment or lease states differ"
    return twin, core, core_states


async def _drop_all(database_url):
    """Empty the database (each history starts from nothing)."""
    from sqlalchemy import MetaData

    engine = async_engine(database_url)
    try:
        async with engine.begin() as connection:
            def drop(sync_connection):
                found = MetaData()
                found.reflect(sync_connection)
                found.drop_all(sync_connection)
            await connection.run_sync(drop)
    finally:
        await engine.dispose()
