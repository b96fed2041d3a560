"""The core's ``Market`` and the database, rows in and rows out: :func:`load_market` rebuilds a
``Market`` from the tables (``Market.restore``), :func:`persist` writes what a batch of the
market's commands changed, found from the events they returned.

These are the two halves of the orchestrator as DESIGN section 2 has it (the ``Market`` in
memory as the single writer, durable before acknowledged, restored at start): the tables are
the ones the orchestrator writes today, so a database it wrote restores as it is.

What each table holds of the market's records:

- ``deployments``: the core's deployment (id, tenant, kind, creation, max runtime, state,
  close, written off) and, for jobs, ``deadline`` (``Market.job_deadline``); the manifest as
  submitted and the tenant's auto-accept policy are the driver's, written when it is created.
- ``orders``: id, deployment, its position among the manifest's ``order_specs()`` (the spec is
  parsed again from the manifest on restore), the spec's resources, price ceiling and
  denomination copied out for queries, state and close.
- ``bids``: every bid ever placed; the market keeps only the open ones in memory.
- ``leases``: the core's lease, column for column (the agent's reports are other columns).
- ``provider_nodes``: capacity, attributes, GPUs, state and record (completed, failed).
- ``balances`` and ``transfers``: the ledger; ``settlement_rounds``: one row per round run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import (
    EXTERNAL,
    Bid,
    BidPlaced,
    BidsLost,
    BidsPlaced,
    BidState,
    BidWithdrawn,
    CloseReason,
    DebtWrittenOff,
    Deployment,
    DeploymentClosed,
    DeploymentCreated,
    DeploymentPaused,
    DeploymentResumed,
    DeploymentState,
    Event,
    Lease,
    LeaseClosed,
    LeasePaused,
    LeaseResumed,
    LeaseStarted,
    LeaseState,
    Market,
    Order,
    OrderClosed,
    OrderOpened,
    OrderReopened,
    OrderState,
    Provider,
    ProviderLost,
    ProviderRecovered,
    ProviderState,
    Resources,
    SettlementRound,
    Tenant,
    Transfer,
    TransferReason,
)

from .market import _TRANSFER_COLUMNS, Settings, _insert_transfers, _joined, order_specs
from .schema import (
    accounts,
    balances,
    bids,
    commands,
    deployments,
    escrow_points,
    leases,
    network,
    orders,
    provider_nodes,
    settlement_rounds,
    transfers,
)

__all__ = ["load_market", "persist"]


def _reason(value: str | None) -> CloseReason | None:
    return None if value is None else CloseReason(value)


async def load_market(connection: AsyncConnection, settings: Settings) -> Market:
    """The ``Market`` the database holds: every tenant, every provider that sent a heartbeat
    (with the auditors whose audits stand), every deployment not closed with its orders, open
    bids and leases, the balances, the last round and the height of the last thing done, and
    the next id of each kind. Closed deployments stay in the tables only."""
    last_round = await connection.scalar(select(func.max(settlement_rounds.c.height))) or 0
    journaled = await connection.scalar(
        select(commands.c.height).order_by(commands.c.id.desc()).limit(1)
    )
    manual = await connection.scalar(select(network.c.manual_height))
    height = max(last_round, journaled or 0, manual or 0)
    credited = withdrawn = 0
    for reason, total in await connection.execute(
        select(transfers.c.reason, func.sum(transfers.c.amount))
        .where(transfers.c.reason.in_([TransferReason.CREDIT, TransferReason.WITHDRAWAL]))
        .group_by(transfers.c.reason)
    ):
        if reason == TransferReason.CREDIT:
            credited = int(total)
        else:
            withdrawn = int(total)
    held = dict((await connection.execute(select(balances.c.account, balances.c.amount))).all())

    tenants = [
        Tenant(id=row.id, name=row.name)
        for row in await connection.execute(
            select(accounts.c.id, accounts.c.name).where(accounts.c.role == "tenant")
        )
    ]
    from .audits import auditors_of  # (the audits' API builds on the app, which builds on this)

    audited = await auditors_of(connection)
    providers = [
        Provider(
            id=row.provider_id,
            name=f"provider-{row.provider_id}",
            capacity=Resources(row.cpu, row.memory, row.storage, row.gpu),
            attributes=json.loads(row.attributes),
            auditors=audited.get(row.provider_id, frozenset()),
            gpu_models=frozenset(json.loads(row.gpu_models)),
            state=ProviderState(row.state),
            completed=row.completed,
            failed=row.failed,
        )
        for row in await connection.execute(select(provider_nodes))
    ]
    live = deployments.c.state != DeploymentState.CLOSED.value
    manifests: dict[int, str] = {}
    deps = []
    for row in await connection.execute(select(deployments).where(live)):
        manifests[row.id] = row.manifest
        deps.append(
            Deployment(
                id=row.id,
                tenant_id=row.tenant_id,
                kind=row.kind,
                created_at=row.created_at,
                max_runtime=row.max_runtime,
                state=DeploymentState(row.state),
                closed_at=row.closed_at,
                close_reason=_reason(row.close_reason),
                written_off=row.written_off,
            )
        )
    of_live = select(deployments.c.id).where(live).scalar_subquery()
    found_orders = [
        Order(
            id=row.id,
            deployment_id=row.deployment_id,
            spec=order_specs(manifests[row.deployment_id])[row.spec_index],
            created_at=row.created_at,
            state=OrderState(row.state),
            closed_at=row.closed_at,
            close_reason=_reason(row.close_reason),
        )
        for row in await connection.execute(
            select(orders).where(orders.c.deployment_id.in_(of_live))
        )
    ]
    open_bids = [
        Bid(row.id, row.order_id, row.provider_id, row.price, row.height, row.response_time)
        for row in await connection.execute(select(bids).where(bids.c.state == BidState.OPEN.value))
    ]
    found_leases = [
        Lease(
            id=row.id,
            deployment_id=row.deployment_id,
            order_id=row.order_id,
            provider_id=row.provider_id,
            bid_id=row.bid_id,
            price=row.price,
            resources=Resources(row.cpu, row.memory, row.storage, row.gpu),
            created_at=row.created_at,
            last_settled=row.last_settled,
            state=LeaseState(row.state),
            debt=row.debt,
            debt_start=row.debt_start,
            debt_end=row.debt_end,
            blocks_paid=row.blocks_paid,
            total_paid=row.total_paid,
            written_off=row.written_off,
            closed_at=row.closed_at,
            close_reason=_reason(row.close_reason),
        )
        for row in await connection.execute(
            select(leases).where(leases.c.deployment_id.in_(of_live))
        )
    ]
    next_ids = {}
    for kind, table in (("deployment", deployments), ("order", orders), ("bid", bids),
                        ("lease", leases)):  # fmt: skip
        next_ids[kind] = (await connection.scalar(select(func.max(table.c.id))) or 0) + 1
    last_account = await connection.scalar(select(func.max(accounts.c.id))) or 0
    next_ids["tenant"] = next_ids["provider"] = last_account + 1
    return Market.restore(
        height=height, last_round=last_round, balances=held, credited=credited,
        withdrawn=withdrawn, tenants=tenants, providers=providers, deployments=deps,
        orders=found_orders, bids=open_bids, leases=found_leases, next_ids=next_ids,
        fee_bps=settings.fee_bps, settlement_interval=settings.settlement_interval,
        accepted_denoms=settings.accepted_denoms, limits=settings.limits, keep_ledger=False,
        forget_closed_bids=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- persisting


def _upsert(connection: AsyncConnection, table: Any, keys: Sequence[str],
            refresh: Iterable[str]) -> Any:  # fmt: skip
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` the ``refresh`` columns."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    return statement.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: statement.excluded[c] for c in refresh},
    )


def _pg_lease_update(rows: list[Lease], refresh: list[str]) -> tuple[str, dict[str, str]]:
    """One ``UPDATE leases ... FROM unnest(...)`` of these leases' ``refresh`` columns, each
    column an array parameter sent as one comma-separated string (a round rewrites 100,000)."""
    kinds = {"state": "text", "close_reason": "text"}
    columns = ["id", *refresh]
    arrays = ", ".join(
        f"CAST(string_to_array(:{c}, ',', '') AS {kinds.get(c, 'bigint')}[])" for c in columns
    )
    sets = ", ".join(f"{c} = d.{c}" for c in refresh)

    def joined(values: Iterable[Any]) -> str:  # '' is NULL: no value here holds a comma
        return ",".join(["" if v is None else str(v) for v in values])

    every = {
        "id": lambda: ",".join([str(x.id) for x in rows]),
        "last_settled": lambda: ",".join([str(x.last_settled) for x in rows]),
        "state": lambda: ",".join([x.state.value for x in rows]),
        "debt": lambda: ",".join([str(x.debt) for x in rows]),
        "debt_start": lambda: joined(x.debt_start for x in rows),
        "debt_end": lambda: joined(x.debt_end for x in rows),
        "blocks_paid": lambda: ",".join([str(x.blocks_paid) for x in rows]),
        "total_paid": lambda: ",".join([str(x.total_paid) for x in rows]),
        "written_off": lambda: ",".join([str(x.written_off) for x in rows]),
        "closed_at": lambda: joined(x.closed_at for x in rows),
        "close_reason": lambda: joined(
            None if x.close_reason is None else x.close_reason.value for x in rows
        ),
    }  # fmt: skip
    values = {c: every[c]() for c in columns}
    statement = (f"UPDATE leases SET {sets} FROM unnest({arrays}) AS d({', '.join(columns)})"
                 " WHERE leases.id = d.id")  # fmt: skip
    return statement, values


def _lease_row(x: Lease) -> dict[str, Any]:
    r = x.resources
    return {
        "id": x.id, "deployment_id": x.deployment_id, "order_id": x.order_id,
        "provider_id": x.provider_id, "bid_id": x.bid_id, "price": x.price,
        "cpu": r.cpu, "memory": r.memory, "storage": r.storage, "gpu": r.gpu,
        "created_at": x.created_at, "last_settled": x.last_settled,
        "state": x.state.value, "debt": x.debt, "debt_start": x.debt_start,
        "debt_end": x.debt_end, "blocks_paid": x.blocks_paid, "total_paid": x.total_paid,
        "written_off": x.written_off, "closed_at": x.closed_at,
        "close_reason": None if x.close_reason is None else x.close_reason.value,
    }  # fmt: skip


_PAID = ["last_settled", "blocks_paid", "total_paid"]  # what a round's payment changes
_LEASE_REFRESH = ["last_settled", "state", "debt", "debt_start", "debt_end", "blocks_paid",
                  "total_paid", "written_off", "closed_at", "close_reason"]  # fmt: skip


@dataclass
class Rows:
    """What a batch of the market's commands changed, as rows ready to write
    (:func:`rows_of`), so that the Python work of a large batch (a round over 100,000 leases)
    can be done away from the event loop, and only the statements run on it."""

    postgresql: bool
    deployments: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    # the rows of orders the batch made, by tenant, in id order: write_rows numbers them
    new_orders: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    bid_states: list[tuple[str, list[int]]] = field(default_factory=list)
    new_bids: list[dict[str, Any]] = field(default_factory=list)
    new_leases: list[dict[str, Any]] = field(default_factory=list)
    leases: list[dict[str, Any]] = field(default_factory=list)
    lease_updates: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # PostgreSQL
    transfers: list[tuple[Any, ...]] = field(default_factory=list)
    transfers_copy: list[bytes] = field(default_factory=list)  # PostgreSQL COPY text, in parts
    balances: list[tuple[str, int]] = field(default_factory=list)
    providers: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, int]] = field(default_factory=list)
    escrow_points: list[dict[str, int]] = field(default_factory=list)


def rows_of(
    market: Market,
    events: Sequence[Event],
    new_deployments: Mapping[int, tuple[str, str | None]] | None = None,
    touched_providers: Iterable[int] = (),
    *,
    postgresql: bool = False,
) -> Rows:
    """The rows :func:`persist` writes (see there), from the market's records as they are now;
    pure (no I/O), for a database that is PostgreSQL or not."""
    deps: set[int] = set()
    order_ids: set[int] = set()
    lease_ids: set[int] = set()
    provider_ids: set[int] = set(touched_providers)
    accounts_moved: set[str] = set()
    placed: list[dict[str, Any]] = []
    bid_states: dict[int, str] = {}
    moved: list[tuple[Any, ...]] = []
    started: set[int] = set()  # leases the batch started: rows to insert
    # leases an event other than a payment names: the others were only paid (a round), and
    # only their settlement columns changed
    lease_events: set[int] = set()
    rounds: list[dict[str, int]] = []
    # deployments whose escrow moved other than by a round's routine payments (a deposit, a
    # refund, a close): with those the batch changed the burn rate of, a point of their
    # escrow's history each (GET /v1/deployments/{id}/escrow; rounds add none: between two
    # points the escrow falls at the burn rate the first one gives)
    pointed: set[int] = set()
    for e in events:
        if isinstance(e, Transfer):
            if e.reason not in (TransferReason.SETTLEMENT, TransferReason.FEE):
                for account in (e.source, e.destination):
                    if account.startswith("escrow:"):
                        pointed.add(int(account[7:]))
            moved.append((e.height, e.source, e.destination, e.amount, e.reason, e.lease_id,
                          e.start, e.end))  # fmt: skip
            accounts_moved.add(e.source)
            accounts_moved.add(e.destination)
            if e.lease_id is not None:
                lease_ids.add(e.lease_id)
        elif isinstance(e, BidPlaced):
            placed.append({"id": e.bid_id, "order_id": e.order_id, "provider_id": e.provider_id,
                           "price": e.price, "height": e.height,
                           "response_time": e.response_time,
                           "state": BidState.OPEN.value})  # fmt: skip
        elif isinstance(e, BidsPlaced):
            for bid_id, provider_id, price, at in zip(e.bid_ids, e.provider_ids, e.prices,
                                                      e.heights, strict=True):  # fmt: skip
                created = market.orders[e.order_id].created_at
                placed.append({"id": bid_id, "order_id": e.order_id, "provider_id": provider_id,
                               "price": price, "height": at, "response_time": at - created,
                               "state": BidState.OPEN.value})  # fmt: skip
        elif isinstance(e, BidsLost):
            bid_states.update(dict.fromkeys(e.bid_ids, BidState.LOST.value))
        elif isinstance(e, BidWithdrawn):
            bid_states[e.bid_id] = BidState.WITHDRAWN.value
        elif isinstance(e, LeaseStarted):
            lease_ids.add(e.lease_id)
            started.add(e.lease_id)
            order_ids.add(e.order_id)
            deps.add(e.deployment_id)
            provider_ids.add(e.provider_id)
            bid_states[market.leases[e.lease_id].bid_id] = BidState.ACCEPTED.value
        elif isinstance(e, (LeasePaused, LeaseResumed, LeaseClosed, DebtWrittenOff)):
            lease_ids.add(e.lease_id)
            lease_events.add(e.lease_id)
            deps.add(e.deployment_id)
            provider_ids.add(e.provider_id)
        elif isinstance(e, (OrderOpened, OrderReopened, OrderClosed)):
            order_ids.add(e.order_id)
            deps.add(e.deployment_id)
        elif isinstance(e, DeploymentCreated):
            if e.deployment_id not in (new_deployments or {}):
                raise ValueError(f"deployment {e.deployment_id} was created: name its manifest")
            deps.add(e.deployment_id)
        elif isinstance(e, (DeploymentPaused, DeploymentResumed, DeploymentClosed)):
            deps.add(e.deployment_id)
        elif isinstance(e, (ProviderLost, ProviderRecovered)):
            provider_ids.add(e.provider_id)
        elif isinstance(e, SettlementRound):
            rounds.append({"height": e.height, "deployments_paid": e.deployments_paid,
                           "deployments_paused": e.deployments_paused,
                           "amount_paid": e.amount_paid})  # fmt: skip
    for account in accounts_moved:  # a job's deadline moves with its escrow
        if account.startswith("escrow:"):
            dep_id = int(account[7:])
            if market.deployments[dep_id].is_job:
                deps.add(dep_id)
    out = Rows(postgresql=postgresql)
    made = new_deployments or {}
    if deps:
        rows = []
        for dep_id in sorted(deps):
            dep = market.deployments[dep_id]
            manifest, auto_accept = made.get(dep_id, ("", None))
            rows.append({
                "id": dep.id, "tenant_id": dep.tenant_id, "kind": dep.kind,
                "manifest": manifest, "max_runtime": dep.max_runtime,
                "created_at": dep.created_at, "state": dep.state.value,
                "closed_at": dep.closed_at,
                "close_reason": None if dep.close_reason is None else dep.close_reason.value,
                "written_off": dep.written_off, "deadline": market.job_deadline(dep.id),
                "auto_accept": auto_accept,
            })  # fmt: skip
        out.deployments = rows
    if order_ids:
        rows = []
        for order_id in sorted(order_ids):
            order = market.orders[order_id]
            spec, r = order.spec, order.spec.resources
            rows.append({
                "id": order.id, "deployment_id": order.deployment_id,
                "spec_index": market.deployments[order.deployment_id].order_ids.index(order.id),
                "service": spec.service, "replica": spec.replica, "cpu": r.cpu,
                "memory": r.memory, "storage": r.storage, "gpu": r.gpu,
                "max_price": spec.max_price, "denom": spec.denom,
                "created_at": order.created_at, "state": order.state.value,
                "closed_at": order.closed_at,
                "close_reason": None if order.close_reason is None else order.close_reason.value,
                "tenant_seq": 0,  # an order made by the batch is numbered by write_rows
            })  # fmt: skip
            if new_deployments and order.deployment_id in new_deployments:
                tenant_id = market.deployments[order.deployment_id].tenant_id
                out.new_orders.setdefault(tenant_id, []).append(rows[-1])
        out.orders = rows
    # bids placed before the batch first (one a provider withdrew may be bid again in the
    # batch: at most one open bid per provider and order), then the batch's, in their state now
    new_bids = {row["id"] for row in placed}
    for state in sorted(set(bid_states.values())):
        ids = sorted(i for i, s in bid_states.items() if s == state and i not in new_bids)
        if ids:
            out.bid_states.append((state, ids))
    for row in placed:
        row["state"] = bid_states.get(row["id"], row["state"])
    out.new_bids = placed
    if lease_ids:
        ordered = sorted(lease_ids)
        if postgresql:  # the leases started are inserted, the others updated at once
            out.new_leases = [_lease_row(market.leases[i]) for i in ordered if i in started]
            old = [market.leases[i] for i in ordered if i not in started]
            changed = [x for x in old if x.id in lease_events]
            paid = [x for x in old if x.id not in lease_events]
            for leases_, columns in ((changed, _LEASE_REFRESH), (paid, _PAID)):
                if leases_:
                    out.lease_updates.append(_pg_lease_update(leases_, columns))
        else:
            out.leases = [_lease_row(market.leases[i]) for i in ordered]
    if moved:
        if postgresql and len(moved) >= 100:
            out.transfers_copy = _copy_text(moved)
        else:
            out.transfers = moved
        accounts_moved.discard(EXTERNAL)
        out.balances = [(a, market.balance(a)) for a in sorted(accounts_moved)]
    if provider_ids:
        rows = []
        for provider_id in sorted(provider_ids):
            p = market.providers[provider_id]
            c = p.capacity
            rows.append({
                "provider_id": p.id, "cpu": c.cpu, "memory": c.memory, "storage": c.storage,
                "gpu": c.gpu, "attributes": json.dumps(dict(p.attributes), sort_keys=True),
                "gpu_models": json.dumps(sorted(p.gpu_models)), "state": p.state.value,
                "last_seen": market.height, "completed": p.completed, "failed": p.failed,
            })  # fmt: skip
        out.providers = rows
    out.rounds = rounds
    pointed |= deps
    out.escrow_points = [
        {"deployment_id": dep_id, "height": market.height, "escrow": market.escrow(dep_id),
         "burn_rate": market.burn_rate(dep_id)}
        for dep_id in sorted(pointed)
    ]  # fmt: skip
    return out


def _copy_text(rows: list[tuple[Any, ...]], part: int = 20_000) -> list[bytes]:
    """Ledger rows in ``COPY ... FROM STDIN``'s text format, ``part`` rows a piece (no value
    holds a tab, a newline or a backslash: numbers, account names and reasons)."""
    null = "\\N"
    pieces = []
    for i in range(0, len(rows), part):
        pieces.append("".join([
            f"{h}\t{src}\t{dst}\t{amount}\t{reason}\t{null if lease is None else lease}\t"
            f"{null if start is None else start}\t{null if end is None else end}\n"
            for h, src, dst, amount, reason, lease, start, end in rows[i : i + part]
        ]).encode())  # fmt: skip
    return pieces


async def write_rows(connection: AsyncConnection, rows: Rows) -> None:
    """Write what :func:`rows_of` made, in the caller's transaction."""
    for tenant_id, made in rows.new_orders.items():  # after the tenant's orders so far
        before = select(func.coalesce(func.max(orders.c.tenant_seq) + 1, 0)).select_from(
            orders.join(deployments, deployments.c.id == orders.c.deployment_id)
        ).where(deployments.c.tenant_id == tenant_id)
        first = await connection.scalar(before)
        for seq, row in enumerate(made, start=first):
            row["tenant_seq"] = seq
    if rows.deployments:
        await connection.execute(
            _upsert(connection, deployments, ["id"],
                    ["state", "closed_at", "close_reason", "written_off", "deadline"]),
            rows.deployments,
        )  # fmt: skip
    if rows.orders:
        await connection.execute(
            _upsert(connection, orders, ["id"], ["state", "closed_at", "close_reason"]),
            rows.orders,
        )
    # bids placed before the batch first (one a provider withdrew may be bid again in the
    # batch: at most one open bid per provider and order), then the batch's, in their state now
    for state, ids in rows.bid_states:
        await connection.execute(update(bids).where(bids.c.id.in_(ids)).values(state=state))
    if rows.new_bids:
        await connection.execute(bids.insert(), rows.new_bids)
    if rows.new_leases:
        await connection.execute(leases.insert(), rows.new_leases)
    for statement, values in rows.lease_updates:
        await connection.execute(text(statement), values)
    if rows.leases:
        await connection.execute(_upsert(connection, leases, ["id"], _LEASE_REFRESH), rows.leases)
    if rows.transfers:
        await _insert_transfers(connection, rows.transfers)
    if rows.transfers_copy:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection  # the psycopg AsyncConnection of this very transaction
        assert driver is not None
        statement = f"COPY transfers ({', '.join(_TRANSFER_COLUMNS)}) FROM STDIN"
        async with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for piece in rows.transfers_copy:
                await copy.write(piece)
    if rows.balances:
        held = rows.balances
        if connection.dialect.name == "postgresql":  # one statement, two array parameters
            await connection.execute(
                text(
                    "INSERT INTO balances (account, amount)"
                    " SELECT * FROM unnest(string_to_array(:accounts, ','),"
                    " CAST(string_to_array(:amounts, ',') AS bigint[]))"
                    " ON CONFLICT (account) DO UPDATE SET amount = excluded.amount"
                ),  # account names have no comma
                {"accounts": _joined(a for a, _ in held), "amounts": _joined(v for _, v in held)},
            )
        else:
            await connection.execute(
                _upsert(connection, balances, ["account"], ["amount"]),
                [{"account": a, "amount": v} for a, v in held],
            )
    if rows.escrow_points:
        await connection.execute(escrow_points.insert(), rows.escrow_points)
    if rows.providers:
        await connection.execute(
            _upsert(connection, provider_nodes, ["provider_id"],
                    ["cpu", "memory", "storage", "gpu", "attributes", "gpu_models", "state",
                     "completed", "failed"]),
            rows.providers,
        )  # fmt: skip
    if rows.rounds:
        await connection.execute(settlement_rounds.insert(), rows.rounds)


async def persist(
    connection: AsyncConnection,
    market: Market,
    events: Sequence[Event],
    new_deployments: Mapping[int, tuple[str, str | None]] | None = None,
    touched_providers: Iterable[int] = (),
) -> None:
    """Write what ``events`` (a batch of the market's commands, in order) changed, from the
    market's records as they are now, in the caller's transaction. ``new_deployments``: the
    manifest text and auto-accept policy (JSON or None) of each deployment the batch created
    (raises ``ValueError`` for one it does not name). ``touched_providers``: providers the
    batch added or changed without an event (``add_provider``, ``update_provider``,
    ``set_auditors``); their ``provider_nodes`` rows are made or rewritten. The accounts named
    must exist. Call it before ``market.forget_closed()``. (:func:`rows_of` then
    :func:`write_rows`, which the writer calls apart.)"""
    postgresql = connection.dialect.name == "postgresql"
    await write_rows(connection, rows_of(market, events, new_deployments, touched_providers,
                                         postgresql=postgresql))  # fmt: skip
