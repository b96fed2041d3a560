"""The market's commands on the database: bids, leases, settlement rounds, resume, close.

Theory of operation
-------------------
The database holds the state; these functions change it inside the caller's transaction, at a
block height the caller gives (the server's clock; a test's own numbers). What is paid is
decided by the core's pure settlement functions (``plan_round``, ``plan_close``, ``owed``,
``fee_share``), lifecycles by the core's ``transition`` tables, placement by
``provider_matches``: the simulator and the orchestrator share one rule book.

As in the core, every command first catches up every settlement round due at or before its
height (:func:`catch_up`), so a deposit at block 125 comes after the round at 120 however late
the server's round loop runs. A round is recorded in ``settlement_rounds`` by its height and runs
under a lock (an advisory lock on PostgreSQL, the write lock on SQLite), so no round runs twice.
A round reads the active leases of every billing deployment in one query, plans each deployment
with ``plan_round``, and writes the results in bulk: transfers, balances, leases, deployments.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from kova_core import (
    NETWORK,
    BidState,
    Claim,
    CloseReason,
    DeploymentNotPayable,
    DeploymentState,
    DuplicateBid,
    InsufficientCapacity,
    KovaError,
    LeaseState,
    NotAJob,
    OrderNotOpen,
    OrderSpec,
    OrderState,
    Payment,
    PlacementMismatch,
    PriceAboveMax,
    ProviderOffline,
    ProviderState,
    Resources,
    TransferReason,
    UnknownEntity,
    deployment_denom,
    escrow_account,
    job_next_deadline,
    job_out_of_funds,
    job_outcome,
    owed,
    parse_manifest,
    plan_close,
    plan_round,
    provider_account,
    provider_matches,
    tenant_account,
    transition,
)

from .ledger import balance, move
from .queue import enqueue
from .schema import (
    balances,
    bids,
    deployments,
    leases,
    orders,
    provider_nodes,
    settlement_rounds,
    transfers,
)

__all__ = [
    "BidRequest",
    "NoHeartbeat",
    "accept_bid",
    "catch_up",
    "close_deployment",
    "create_deployment",
    "deposit",
    "fail_lease",
    "finish_job",
    "free_capacity",
    "heartbeat",
    "locked_deployment",
    "order_spec",
    "place_bid",
    "place_bids",
    "provider_matches",
    "recover_provider",
    "resume_if_covered",
    "settle_to_now",
    "withdraw_bid",
]

RESOURCE_COLUMNS = ("cpu", "memory", "storage", "gpu")
PART = 2000  # rows (deployments) a round handles between two turns of the event loop
ROUND_LOCK = 0x6B6F7661  # "kova": PostgreSQL advisory lock key of the settlement round


class NoHeartbeat(KovaError):
    """A provider bid before its agent said what machine it has."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The network's settlement settings (the ``network`` row)."""

    settlement_interval: int = 60
    fee_bps: int = 0
    # the denominations manifests may price in (``serve --accepted-denoms``); None: any
    accepted_denoms: frozenset[str] | None = None


# --------------------------------------------------------------------------- settlement rounds


async def catch_up(connection: AsyncConnection, height: int, settings: Settings) -> int:
    """Run every settlement round and job deadline due at or before ``height`` that has not
    run, in the core's order (``Market._advance``: by height, a deadline before a round at the
    same block, deadlines by job id); return how many rounds ran.

    Cheap when nothing is due (two indexed reads); otherwise takes the round lock and reads
    again.
    """
    interval = settings.settlement_interval
    due = height // interval * interval
    # one round trip: the last round run, and whether a job deadline is due
    last, deadline = (
        await connection.execute(
            select(
                select(func.max(settlement_rounds.c.height)).scalar_subquery(),
                select(func.min(deployments.c.deadline))
                .where(deployments.c.deadline <= height)
                .scalar_subquery(),
            )
        )
    ).one()
    rounds_due = due > 0 and (last is None or last < due)
    if not rounds_due and deadline is None:
        return 0
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ROUND_LOCK})
        last = await connection.scalar(select(func.max(settlement_rounds.c.height)))
    ran = 0
    last = last or 0
    while True:
        next_round = last + interval
        deadline = await _next_deadline(connection, min(height, next_round))
        if deadline is not None:
            await _job_deadline_reached(connection, deadline[1], deadline[0], settings)
        elif next_round <= height:
            await run_round(connection, next_round, settings)
            last = next_round
            ran += 1
        else:
            return ran


async def settle_to_now(
    connection: AsyncConnection, clock: Callable[[], int], settings: Settings
) -> int:
    """The height at which a command runs in this transaction, with every round and job
    deadline up to it carried out: call it first in the transaction, and use what it returns.

    Heights never go back: a command acts at a height no lower than anything another
    transaction has already applied. The clock is read here, inside the transaction, not
    before it (a command that waited for a lock would otherwise act in the past, after a
    round at a later height had run and, say, pay a block twice). On PostgreSQL the command
    then holds the round lock shared, so no round runs until it commits; a round that ran
    between its catch-up and that lock is seen by reading the clock again (the command then
    acts just before the next round or deadline not yet applied). On SQLite the transaction
    holds the database's write lock from its start.
    """
    height = clock()
    await catch_up(connection, height, settings)
    if connection.dialect.name != "postgresql":
        return height
    await connection.execute(
        text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": ROUND_LOCK}
    )
    later = clock()
    if later == height:
        return height
    last = await connection.scalar(select(func.max(settlement_rounds.c.height))) or 0
    limit = last + settings.settlement_interval - 1
    deadline = await _next_deadline(connection, later)
    if deadline is not None:
        limit = min(limit, deadline[0] - 1)
    return max(height, min(later, limit))


async def _next_deadline(connection: AsyncConnection, until: int) -> tuple[int, int] | None:
    """The earliest job deadline at or before ``until``, as (height, job id), if any."""
    row = (
        await connection.execute(
            select(deployments.c.deadline, deployments.c.id)
            .where(deployments.c.deadline <= until)
            .order_by(deployments.c.deadline, deployments.c.id)
            .limit(1)
        )
    ).first()
    return None if row is None else (int(row.deadline), int(row.id))


async def run_round(connection: AsyncConnection, height: int, settings: Settings) -> None:
    """One settlement round at ``height`` (DESIGN section 1), all in the caller's transaction."""
    # every active lease of every billing deployment, with the deployment's escrow
    escrow = literal("escrow:") + cast(deployments.c.id, String)
    # read in parts, and every part of the work below lets the event loop answer the requests
    # waiting (a round over 100,000 leases is a second of Python: polls would wait that long)
    result = await connection.stream(
        select(
            leases.c.id, leases.c.deployment_id, leases.c.provider_id, leases.c.price,
            leases.c.last_settled, leases.c.total_paid, balances.c.amount,
        )
        .join(deployments, deployments.c.id == leases.c.deployment_id)
        .outerjoin(balances, balances.c.account == escrow)
        .where(leases.c.state == LeaseState.ACTIVE.value)
        .where(deployments.c.kind == "deployment")
        .where(deployments.c.state == DeploymentState.ACTIVE.value)
        .order_by(leases.c.deployment_id, leases.c.id)
        .execution_options(yield_per=PART)
    )  # fmt: skip
    by_deployment: dict[int, list[Any]] = defaultdict(list)
    async for part in result.partitions():
        for row in part:
            by_deployment[row[1]].append(row)
        await asyncio.sleep(0)
    writes = _Writes(height)
    paid = paused = amount = 0
    paid_leases: list[int] = []
    paused_leases: list[int] = []
    paused_deployments: list[int] = []
    for done, (dep_id, lease_rows) in enumerate(by_deployment.items()):
        if done % PART == PART - 1:
            await asyncio.sleep(0)
        # each an active lease's claim, as _claim makes it: its blocks since last settled
        claims = [
            Claim(lease_id=lease_id, provider_id=provider_id, amount=owed(price, since, height),
                  start=since, end=height, paid_before=total_paid)
            for lease_id, _, provider_id, price, since, total_paid, _ in lease_rows
        ]  # fmt: skip
        plan = plan_round(lease_rows[0][6] or 0, claims, settings.fee_bps)
        if plan is None:
            paused += 1
            for row in lease_rows:  # the lifecycle rule lives in the core's tables
                transition("lease", row[0], LeaseState.ACTIVE, "pause")
                paused_leases.append(row[0])
            transition("deployment", dep_id, DeploymentState.ACTIVE, "pause")
            paused_deployments.append(dep_id)
            continue
        paid += 1
        for payment in plan:
            writes.pay(dep_id, payment, TransferReason.SETTLEMENT)
            amount += payment.gross
        paid_leases += [row[0] for row in lease_rows]
    await writes.apply(connection)
    # set-based, for exactly the leases read above: a round pays each lease in full what it
    # owes, (height - last_settled) x price, or records that much as its debt and pauses it
    since = height - leases.c.last_settled
    for chunk in _chunks(paid_leases, connection):
        await connection.execute(
            update(leases)
            .where(_among(leases.c.id, chunk, connection))
            .values(
                total_paid=leases.c.total_paid + since * leases.c.price,
                blocks_paid=leases.c.blocks_paid + since,
                last_settled=height,
            )
        )
    for chunk in _chunks(paused_leases, connection):
        await connection.execute(
            update(leases)
            .where(_among(leases.c.id, chunk, connection))
            .values(
                state=LeaseState.INSUFFICIENT_FUNDS.value,
                debt=since * leases.c.price,
                debt_start=leases.c.last_settled,
                debt_end=height,
                last_settled=height,
            )
        )
    for chunk in _chunks(paused_deployments, connection):
        await connection.execute(
            update(deployments)
            .where(_among(deployments.c.id, chunk, connection))
            .values(state=DeploymentState.INSUFFICIENT_FUNDS.value)
        )
    await connection.execute(
        insert(settlement_rounds).values(
            height=height, deployments_paid=paid, deployments_paused=paused, amount_paid=amount
        )
    )


def _chunks(ids: list[int], connection: AsyncConnection) -> Iterable[list[int]]:
    """Id lists for one statement each: all at once as one array on PostgreSQL, else short
    enough for SQLite's parameter limit."""
    size = len(ids) or 1 if connection.dialect.name == "postgresql" else 5000
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


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


def _claim(row: Any, height: int) -> Claim:
    """What a lease row is owed at ``height`` (the core's ``Market._claim``): an active lease,
    its blocks since it was last settled; a paused one, the debt recorded when it paused."""
    if row.state == LeaseState.INSUFFICIENT_FUNDS:
        amount, start, end = row.debt, row.debt_start, row.debt_end
    else:
        amount, start, end = owed(row.price, row.last_settled, height), row.last_settled, height
    return Claim(
        lease_id=row.id,
        provider_id=row.provider_id,
        amount=amount,
        start=start,
        end=end,
        paid_before=row.total_paid,
    )


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


class _Writes:
    """What a round (or a resume, or a close) decided, written in bulk at the end."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.transfers: list[tuple[Any, ...]] = []  # in _TRANSFER_COLUMNS order
        self.debits: dict[str, int] = defaultdict(int)
        self.credits: dict[str, int] = defaultdict(int)
        self.lease_updates: list[dict[str, Any]] = []
        self.deployment_states: list[dict[str, Any]] = []

    def pay(self, dep_id: int, payment: Payment, reason: str) -> None:
        claim = payment.claim
        escrow = escrow_account(dep_id)
        height, lease_id, start, end = self.height, claim.lease_id, claim.start, claim.end
        net, fee = payment.gross - payment.fee, payment.fee
        if net:
            provider = provider_account(claim.provider_id)
            self.transfers.append((height, escrow, provider, net, reason, lease_id, start, end))
            self.credits[provider] += net
        if fee:
            self.transfers.append(
                (height, escrow, NETWORK, fee, TransferReason.FEE, lease_id, start, end)
            )
            self.credits[NETWORK] += fee
        if net or fee:
            self.debits[escrow] += net + fee

    def deployment_state(self, dep_id: int, state: DeploymentState) -> None:
        self.deployment_states.append({"b_id": dep_id, "b_state": state.value})

    async def apply(self, connection: AsyncConnection) -> None:
        if self.transfers:
            await _insert_transfers(connection, self.transfers)
        if self.debits:
            # in account order, as every transaction takes them: no deadlock between rounds
            ordered = sorted(self.debits.items())
            made = 0
            if connection.dialect.name == "postgresql":  # one statement, two array parameters
                result = await connection.execute(
                    text(
                        "UPDATE balances SET amount = balances.amount - d.amount"
                        " FROM unnest(string_to_array(:accounts, ','),"
                        " CAST(string_to_array(:amounts, ',') AS bigint[])) AS d(account, amount)"
                        " WHERE balances.account = d.account AND balances.amount >= d.amount"
                    ),  # account names have no comma
                    {
                        "accounts": _joined(k for k, _ in ordered),
                        "amounts": _joined(v for _, v in ordered),
                    },
                )
                made = result.rowcount
            else:
                result = await connection.execute(
                    update(balances)
                    .where(balances.c.account == bindparam("b_account"))
                    .where(balances.c.amount >= bindparam("b_amount"))
                    .values(amount=balances.c.amount - bindparam("b_amount")),
                    [{"b_account": k, "b_amount": v} for k, v in ordered],
                )
                made = result.rowcount
            # every debit was planned within its escrow, so each must match its row; if one did
            # not, raising rolls the whole transaction back rather than create money
            if made != len(ordered):
                raise RuntimeError(f"{len(ordered)} debits planned, {made} made")
        if self.credits:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            statement = dialect.insert(balances)
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[balances.c.account],
                    set_={"amount": balances.c.amount + statement.excluded.amount},
                ),
                [{"account": k, "amount": v} for k, v in sorted(self.credits.items())],
            )
        if self.lease_updates:
            await connection.execute(
                update(leases)
                .where(leases.c.id == bindparam("b_id"))
                .values(
                    last_settled=bindparam("b_settled"),
                    total_paid=leases.c.total_paid + bindparam("b_gross"),
                    blocks_paid=leases.c.blocks_paid + bindparam("b_blocks"),
                ),
                self.lease_updates,
            )
        if self.deployment_states:
            await connection.execute(
                update(deployments)
                .where(deployments.c.id == bindparam("b_id"))
                .values(state=bindparam("b_state")),
                self.deployment_states,
            )


# --------------------------------------------------------------------------- providers and bids


async def heartbeat(
    connection: AsyncConnection,
    provider_id: int,
    capacity: Resources,
    attributes: dict[str, str],
    gpu_models: Iterable[str],
    height: int,
    pricing: str | None = None,
    endpoints: tuple[str, int, int] | None = None,
) -> None:
    """Record what a provider's machine has (and, as JSON, the pricing strategy its agent bids
    with, if it says; and where its leases are reached: the addresses as a JSON list, and the
    lowest and highest port, if it says); it is online from now. A heartbeat that does not
    say how it prices, or where its leases are, leaves nothing of it registered."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    addresses, low, high = endpoints if endpoints is not None else (None, None, None)
    values = {
        "cpu": capacity.cpu, "memory": capacity.memory, "storage": capacity.storage,
        "gpu": capacity.gpu, "attributes": json.dumps(attributes, sort_keys=True),
        "gpu_models": json.dumps(sorted({g.lower() for g in gpu_models})),
        "state": "online", "last_seen": height, "pricing": pricing,
        "endpoint_addresses": addresses, "endpoint_port_low": low, "endpoint_port_high": high,
    }  # fmt: skip
    statement = dialect.insert(provider_nodes).values(
        provider_id=provider_id, completed=0, failed=0, **values
    )
    await connection.execute(
        statement.on_conflict_do_update(index_elements=[provider_nodes.c.provider_id], set_=values)
    )


@lru_cache(maxsize=4096)
def order_specs(manifest: str) -> tuple[OrderSpec, ...]:
    """A manifest's order specs, one per replica (parsed once per manifest text)."""
    return parse_manifest(manifest).order_specs()


async def order_spec(connection: AsyncConnection, order: Any) -> OrderSpec:
    """An order's full spec (placement included), from its deployment's manifest."""
    manifest = await connection.scalar(
        select(deployments.c.manifest).where(deployments.c.id == order.deployment_id)
    )
    return order_specs(manifest)[order.spec_index]


async def free_capacity(connection: AsyncConnection, node: Any) -> Resources:
    """A provider's capacity less what its live leases hold and its open bids reserve."""
    held = (await _held(connection, [node.provider_id])).get(node.provider_id, Resources())
    return _capacity(node) - held


def _capacity(node: Any) -> Resources:
    return Resources(cpu=node.cpu, memory=node.memory, storage=node.storage, gpu=node.gpu)


async def _held(connection: AsyncConnection, provider_ids: list[int]) -> dict[int, Resources]:
    """What the live leases hold and the open bids reserve, of each of these providers that
    holds anything (one statement: both sums, by provider)."""

    def sums(table: Any) -> list[Any]:
        return [func.sum(table.c[name]) for name in RESOURCE_COLUMNS]

    held_by_leases = (
        select(leases.c.provider_id, *sums(leases))
        .where(_among(leases.c.provider_id, provider_ids, connection))
        .where(leases.c.state != LeaseState.CLOSED.value)
        .group_by(leases.c.provider_id)
    )
    reserved_by_bids = (
        select(bids.c.provider_id, *sums(orders))
        .join(orders, orders.c.id == bids.c.order_id)
        .where(_among(bids.c.provider_id, provider_ids, connection))
        .where(bids.c.state == BidState.OPEN.value)
        .group_by(bids.c.provider_id)
    )
    held: dict[int, Resources] = {}
    for provider_id, *amounts in await connection.execute(
        union_all(held_by_leases, reserved_by_bids)
    ):
        more = Resources(**{n: int(a) for n, a in zip(RESOURCE_COLUMNS, amounts, strict=True)})
        held[provider_id] = held.get(provider_id, Resources()) + more
    return held


@dataclass(frozen=True, slots=True)
class BidRequest:
    """A provider's bid of ``price`` per block on an order, not yet checked (``command``: the
    request as the journal knows it, with its idempotency key)."""

    provider_id: int
    order_id: int
    price: int
    command: Any = None


async def place_bid(
    connection: AsyncConnection,
    provider_id: int,
    order_id: int,
    price: int,
    height: int,
    settings: Settings,
) -> int:
    """A provider bids ``price`` per block on an open order; return the bid's id.

    The checks and their order are the core's ``Market.place_bid``. Raises
    :class:`NoHeartbeat`, :class:`kova_core.ProviderOffline`, :class:`kova_core.UnknownEntity`,
    :class:`kova_core.OrderNotOpen`, :class:`kova_core.PriceAboveMax`,
    :class:`kova_core.DuplicateBid`, :class:`kova_core.PlacementMismatch`,
    :class:`kova_core.InsufficientCapacity`.
    """
    (outcome,) = await place_bids(
        connection, [BidRequest(provider_id, order_id, price)], height, settings
    )
    if isinstance(outcome, KovaError):
        raise outcome
    return int(outcome["id"])


async def place_bids(
    connection: AsyncConnection, requests: list[BidRequest], height: int, settings: Settings
) -> list[dict[str, Any] | KovaError]:
    """Place many bids in one transaction, each as :func:`place_bid` would, one after the
    other in the order given (a bid reserves its resources before the next is checked); return,
    for each request, the new bid's row as a dict or the error that refused it.

    A handful of statements for the whole list (the orders and providers concerned, locked in
    id order; their open bids; their manifests; their held resources; their auditors; one
    insert), so that the server can take many bids per transaction.
    """
    await catch_up(connection, height, settings)
    order_ids = sorted({r.order_id for r in requests})
    provider_ids = sorted({r.provider_id for r in requests})
    found = await _locked(connection, orders.c.id, order_ids)
    nodes = await _locked(connection, provider_nodes.c.provider_id, provider_ids)
    open_bids: dict[tuple[int, int], int | None] = {
        (row.order_id, row.provider_id): row.id
        for row in await connection.execute(
            select(bids.c.order_id, bids.c.provider_id, bids.c.id).where(
                _among(bids.c.provider_id, provider_ids, connection),
                _among(bids.c.order_id, order_ids, connection),
                bids.c.state == BidState.OPEN.value,
            )
        )
    }
    dep_ids = sorted({order.deployment_id for order in found.values()})
    manifests = dict(
        (
            await connection.execute(
                select(deployments.c.id, deployments.c.manifest).where(
                    _among(deployments.c.id, dep_ids, connection)
                )
            )
        ).all()
    )
    held = await _held(connection, provider_ids)
    from .audits import auditors_of  # (it builds on the app, which imports this module)

    audited = await auditors_of(connection, provider_ids)
    outcomes: list[dict[str, Any] | KovaError] = []
    new: list[dict[str, Any]] = []  # the bids made here, in the order of their requests
    made: dict[tuple[int, int], int] = {}  # (order, provider) -> index in ``new``
    duplicates: list[tuple[int, int]] = []  # of a bid made here: (index in outcomes, in new)
    for request in requests:
        provider_id = request.provider_id
        key = (request.order_id, provider_id)
        try:
            order = found.get(request.order_id)
            if order is None:
                raise UnknownEntity("order", request.order_id)
            node = nodes.get(provider_id)
            if node is None:
                raise NoHeartbeat("send a heartbeat (POST /v1/providers/heartbeat) before bidding")
            if node.state != "online":
                raise ProviderOffline(f"provider {provider_id} is {node.state}")
            if order.state != OrderState.OPEN:
                raise OrderNotOpen(f"order {order.id} is {order.state}")
            if request.price > order.max_price:
                raise PriceAboveMax(
                    f"price {request.price} is above order {order.id}'s max price"
                    f" {order.max_price}"
                )
            if key in open_bids:
                raise DuplicateBid(
                    f"provider {provider_id} already has open bid {open_bids[key]}"
                    f" on order {order.id}"
                )
            if key in made:  # its id is known once the bids are inserted
                duplicates.append((len(outcomes), made[key]))
                outcomes.append(DuplicateBid(""))
                continue
            spec = order_specs(manifests[order.deployment_id])[order.spec_index]
            mismatch = provider_matches(
                spec,
                json.loads(node.attributes),
                audited.get(provider_id, frozenset()),
                frozenset(json.loads(node.gpu_models)),
            )
            if mismatch:
                raise PlacementMismatch(
                    f"provider {provider_id} cannot serve order {order.id}: {mismatch}"
                )
            holds = held.get(provider_id, Resources())
            free = _capacity(node) - holds
            if not spec.resources.fits_in(free):
                raise InsufficientCapacity(
                    f"provider {provider_id} has {free} free, order {order.id} needs"
                    f" {spec.resources}"
                )
        except KovaError as refused:
            outcomes.append(refused)
            continue
        held[provider_id] = holds + spec.resources
        made[key] = len(new)
        bid = {
            "order_id": order.id, "provider_id": provider_id, "price": request.price,
            "height": height, "response_time": height - order.created_at,
            "state": BidState.OPEN.value,
        }  # fmt: skip
        new.append(bid)
        outcomes.append(bid)
    if new:
        await _insert_bids(connection, new)
    for at, index in duplicates:
        bid = new[index]
        outcomes[at] = DuplicateBid(
            f"provider {bid['provider_id']} already has open bid {bid['id']}"
            f" on order {bid['order_id']}"
        )
    return outcomes


async def _locked(connection: AsyncConnection, key: Any, ids: list[int]) -> dict[int, Any]:
    """The rows of ``key``'s table whose ``key`` is among ``ids``, locked in key order (as
    every transaction that locks several takes them: no deadlock), by key."""
    statement = select(key.table).where(_among(key, ids, connection)).order_by(key)
    rows = await connection.execute(statement.with_for_update())
    return {row._mapping[key]: row for row in rows}


async def _insert_bids(connection: AsyncConnection, new: list[dict[str, Any]]) -> None:
    """Insert new bids (at most one per order and provider) and set each one's ``id``. On
    PostgreSQL one statement whose text is the same for any number of bids, so that psycopg
    prepares it once (an insert of many VALUES rows would be new text for each count)."""
    if connection.dialect.name != "postgresql":
        statement = insert(bids).returning(bids.c.id, sort_by_parameter_order=True)
        made_ids = (await connection.execute(statement, new)).scalars().all()
        for bid, bid_id in zip(new, made_ids, strict=True):
            bid["id"] = int(bid_id)
        return
    columns = ("order_id", "provider_id", "price", "height", "response_time")
    rows = await connection.execute(
        text(
            "INSERT INTO bids (order_id, provider_id, price, height, response_time, state)"
            " SELECT n.*, :state FROM unnest("
            + ", ".join(f"CAST(string_to_array(:{c}, ',') AS bigint[])" for c in columns)
            + ") AS n RETURNING id, order_id, provider_id"
        ),
        {"state": BidState.OPEN.value, **{c: _joined(bid[c] for bid in new) for c in columns}},
    )
    by_key = {(bid["order_id"], bid["provider_id"]): bid for bid in new}
    for bid_id, order_id, provider_id in rows:
        by_key[order_id, provider_id]["id"] = int(bid_id)


async def withdraw_bid(
    connection: AsyncConnection, provider_id: int, bid_id: int, height: int, settings: Settings
) -> None:
    """A provider takes back its own open bid. Raises :class:`kova_core.UnknownEntity` (not its
    bid) or :class:`kova_core.IllegalTransition` (not open)."""
    await catch_up(connection, height, settings)
    bid = (
        await connection.execute(select(bids).where(bids.c.id == bid_id).with_for_update())
    ).first()
    if bid is None or bid.provider_id != provider_id:
        raise UnknownEntity("bid", bid_id)
    new = transition("bid", bid.id, BidState(bid.state), "withdraw")
    await connection.execute(update(bids).where(bids.c.id == bid.id).values(state=new.value))


# --------------------------------------------------------------------------- leases


async def accept_bid(
    connection: AsyncConnection, tenant_id: int, bid_id: int, height: int, settings: Settings
) -> int:
    """The tenant accepts a bid on one of its orders: a lease starts; return its id.

    Raises :class:`kova_core.UnknownEntity` (no such bid on the tenant's orders),
    :class:`kova_core.IllegalTransition` (bid or order not open),
    :class:`kova_core.DeploymentNotPayable` (the deployment is paused). A job's deadline is
    recomputed, and one already reached (an escrow that cannot pay this block) stops it at once,
    in this command, as in the core.
    """
    await catch_up(connection, height, settings)
    bid = (await connection.execute(select(bids).where(bids.c.id == bid_id))).first()
    if bid is None:
        raise UnknownEntity("bid", bid_id)
    the_order = select(orders).where(orders.c.id == bid.order_id)
    order = (await connection.execute(the_order.with_for_update())).one()
    dep = (
        await connection.execute(
            select(deployments).where(deployments.c.id == order.deployment_id).with_for_update()
        )
    ).one()
    if dep.tenant_id != tenant_id:
        raise UnknownEntity("bid", bid_id)
    bid = (await connection.execute(select(bids).where(bids.c.id == bid_id))).one()  # locked now
    transition("bid", bid.id, BidState(bid.state), "accept")
    if dep.state == DeploymentState.INSUFFICIENT_FUNDS:
        raise DeploymentNotPayable(
            f"deployment {dep.id} is paused for insufficient funds: deposit first"
        )
    matched = transition("order", order.id, OrderState(order.state), "match")
    await connection.execute(
        update(orders).where(orders.c.id == order.id).values(state=matched.value)
    )
    await connection.execute(
        update(bids).where(bids.c.id == bid.id).values(state=BidState.ACCEPTED.value)
    )
    await connection.execute(
        update(bids)
        .where(bids.c.order_id == order.id, bids.c.state == "open")
        .values(state=BidState.LOST.value)
    )
    lease_id = int(
        (
            await connection.execute(
                insert(leases)
                .values(
                    deployment_id=dep.id, order_id=order.id, provider_id=bid.provider_id,
                    bid_id=bid.id, price=bid.price, cpu=order.cpu, memory=order.memory,
                    storage=order.storage, gpu=order.gpu, created_at=height, last_settled=height,
                    state=LeaseState.ACTIVE.value, debt=0, debt_start=0, debt_end=0,
                    blocks_paid=0, total_paid=0, written_off=0,
                )
                .returning(leases.c.id)
            )
        ).scalar_one()
    )  # fmt: skip
    if dep.kind == "job":
        await schedule_job(connection, dep.id, height)
        await catch_up(connection, height, settings)
    return lease_id


async def resume_if_covered(
    connection: AsyncConnection, dep: Any, height: int, settings: Settings
) -> bool:
    """A paused deployment whose escrow now covers its debt pays it and resumes (billing
    restarts at ``height``); otherwise nothing changes. Returns whether it resumed."""
    if dep.state != DeploymentState.INSUFFICIENT_FUNDS:
        return False
    paused = (
        await connection.execute(
            select(leases)
            .where(leases.c.deployment_id == dep.id, leases.c.state == "insufficient_funds")
            .order_by(leases.c.id)
        )
    ).all()
    claims = [_claim(r, height) for r in paused]
    plan = plan_round(await balance(connection, escrow_account(dep.id)), claims, settings.fee_bps)
    if plan is None:
        return False
    writes = _Writes(height)
    for row, payment in zip(paused, plan, strict=True):
        transition("lease", row.id, LeaseState(row.state), "resume")
        writes.pay(dep.id, payment, TransferReason.DEBT)
        writes.lease_updates.append(
            {"b_id": row.id, "b_settled": height, "b_gross": payment.gross,
             "b_blocks": payment.blocks_paid(row.price)}
        )  # fmt: skip
    new = transition("deployment", dep.id, DeploymentState(dep.state), "resume")
    writes.deployment_state(dep.id, new)
    await writes.apply(connection)
    await connection.execute(
        update(leases)
        .where(leases.c.deployment_id == dep.id, leases.c.state == "insufficient_funds")
        .values(state=LeaseState.ACTIVE.value, debt=0)
    )
    return True


async def _close_leases(
    connection: AsyncConnection,
    dep_id: int,
    live: list[Any],
    height: int,
    settings: Settings,
    reason: CloseReason,
) -> None:
    """Final settlement of some leases of one deployment, then close them (the core's
    ``_close_leases``): escrow pays what ``plan_close`` gives, the rest is written off, and the
    provider's record counts the lease as completed or failed, as ``reason`` says."""
    claims = [_claim(r, height) for r in live]
    writes = _Writes(height)
    written_off = 0
    plan = plan_close(await balance(connection, escrow_account(dep_id)), claims, settings.fee_bps)
    for row, payment in zip(live, plan, strict=True):
        transition("lease", row.id, LeaseState(row.state), "close")
        writes.pay(dep_id, payment, TransferReason.CLOSE)
        blocks = payment.blocks_paid(row.price)
        written_off += payment.written_off
        await connection.execute(
            update(leases)
            .where(leases.c.id == row.id)
            .values(
                state=LeaseState.CLOSED.value, closed_at=height, close_reason=reason.value, debt=0,
                last_settled=height if row.state == LeaseState.ACTIVE else row.last_settled,
                total_paid=row.total_paid + payment.gross, blocks_paid=row.blocks_paid + blocks,
                written_off=row.written_off + payment.written_off,
            )
        )  # fmt: skip
        counter = (
            provider_nodes.c.completed if reason.counts_as_completed
            else provider_nodes.c.failed if reason.provider_at_fault else None
        )  # fmt: skip
        if counter is not None:
            await connection.execute(
                update(provider_nodes)
                .where(provider_nodes.c.provider_id == row.provider_id)
                .values({counter.key: counter + 1})
            )
    await writes.apply(connection)
    if written_off:
        await connection.execute(
            update(deployments)
            .where(deployments.c.id == dep_id)
            .values(written_off=deployments.c.written_off + written_off)
        )


async def close_deployment(
    connection: AsyncConnection, dep: Any, height: int, settings: Settings, reason: CloseReason
) -> None:
    """Close a deployment: settle its leases to ``height`` (paying what escrow can, writing off
    the rest, as ``plan_close`` decides), close leases, orders and their open bids, refund."""
    new_state = transition("deployment", dep.id, DeploymentState(dep.state), "close")
    live = (
        await connection.execute(
            select(leases)
            .where(leases.c.deployment_id == dep.id, leases.c.state != "closed")
            .order_by(leases.c.id)
        )
    ).all()
    escrow = escrow_account(dep.id)
    await _close_leases(connection, dep.id, live, height, settings, reason)
    open_orders = (
        await connection.execute(
            select(orders.c.id, orders.c.state).where(
                orders.c.deployment_id == dep.id, orders.c.state != "closed"
            )
        )
    ).all()
    for order in open_orders:
        await _close_order(connection, order, height, reason)
    await connection.execute(
        update(deployments)
        .where(deployments.c.id == dep.id)
        .values(
            state=new_state.value, closed_at=height, close_reason=reason.value, deadline=None
        )
    )  # fmt: skip
    left = await balance(connection, escrow)
    if left:
        await move(
            connection, source=escrow, destination=tenant_account(dep.tenant_id), amount=left,
            reason=TransferReason.REFUND, height=height,
        )  # fmt: skip


# --------------------------------------------------------------------------- deployments


async def create_deployment(
    connection: AsyncConnection,
    tenant_id: int,
    manifest: Any,
    source: str,
    deposit: int,
    height: int,
    settings: Settings,
    auto_accept: str | None = None,
) -> int:
    """Create a deployment from a parsed manifest (``source`` is its text, kept as submitted):
    the deposit moves from the tenant's balance into the new escrow and one order opens per
    service replica (``auto_accept``: the tenant's policy as JSON, kept with it). Returns the
    deployment's id. Raises :class:`kova_core.ManifestError` (several denominations, or one
    the network does not accept), :class:`kova_core.InsufficientBalance`."""
    specs = manifest.order_specs()
    deployment_denom(specs, settings.accepted_denoms)
    await catch_up(connection, height, settings)
    dep_id = int(
        (
            await connection.execute(
                insert(deployments)
                .values(
                    tenant_id=tenant_id, kind="job" if manifest.is_job else "deployment",
                    manifest=source, max_runtime=manifest.max_runtime, created_at=height,
                    state=DeploymentState.ACTIVE.value, written_off=0, auto_accept=auto_accept,
                )
                .returning(deployments.c.id)
            )
        ).scalar_one()
    )  # fmt: skip
    if deposit:
        await move(
            connection, source=tenant_account(tenant_id), destination=escrow_account(dep_id),
            amount=deposit, reason=TransferReason.DEPOSIT, height=height,
        )  # fmt: skip
    for index, spec in enumerate(specs):
        r = spec.resources
        await connection.execute(
            insert(orders).values(
                deployment_id=dep_id, spec_index=index, service=spec.service,
                replica=spec.replica, cpu=r.cpu, memory=r.memory, storage=r.storage, gpu=r.gpu,
                max_price=spec.max_price, denom=spec.denom, created_at=height,
                state=OrderState.OPEN.value,
            )
        )  # fmt: skip
    return dep_id


async def deposit(
    connection: AsyncConnection, dep: Any, amount: int, height: int, settings: Settings
) -> None:
    """Move ``amount`` from the tenant's balance into the escrow; a paused deployment whose
    escrow now covers its debt resumes. Raises :class:`kova_core.IllegalTransition` (closed),
    :class:`kova_core.InsufficientBalance`."""
    if dep.state == DeploymentState.CLOSED:
        transition("deployment", dep.id, DeploymentState(dep.state), "deposit")
    await move(
        connection, source=tenant_account(dep.tenant_id), destination=escrow_account(dep.id),
        amount=amount, reason=TransferReason.DEPOSIT, height=height,
    )  # fmt: skip
    await resume_if_covered(connection, dep, height, settings)
    if dep.kind == "job":
        await schedule_job(connection, dep.id, height)


async def locked_deployment(connection: AsyncConnection, deployment_id: int) -> Any:
    """A deployment's row, locked for this transaction (``None`` if there is none)."""
    query = select(deployments).where(deployments.c.id == deployment_id).with_for_update()
    return (await connection.execute(query)).first()


# --------------------------------------------------------------------------- failures and expiry


async def fail_provider(
    connection: AsyncConnection, provider_id: int, height: int, settings: Settings
) -> list[int]:
    """A provider is lost (the core's ``fail_provider``): its open bids are withdrawn, each of
    its leases is settled to ``height`` and closed as ``provider_lost`` (against its reputation),
    and the lease's order opens for bids again. Returns the reopened orders' ids. Raises
    :class:`kova_core.UnknownEntity`, :class:`kova_core.IllegalTransition` (already lost)."""
    await catch_up(connection, height, settings)
    nodes = select(provider_nodes).where(provider_nodes.c.provider_id == provider_id)
    node = (await connection.execute(nodes.with_for_update())).first()
    if node is None:
        raise UnknownEntity("provider", provider_id)
    lost = transition("provider", provider_id, ProviderState(node.state), "fail")
    await connection.execute(
        update(provider_nodes)
        .where(provider_nodes.c.provider_id == provider_id)
        .values(state=lost.value)
    )
    await connection.execute(
        update(bids)
        .where(bids.c.provider_id == provider_id, bids.c.state == "open")
        .values(state=BidState.WITHDRAWN.value)
    )
    live = (
        (
            await connection.execute(
                select(leases.c.id)
                .where(leases.c.provider_id == provider_id, leases.c.state != "closed")
                .order_by(leases.c.id)
            )
        )
        .scalars()
        .all()
    )
    reopened = []
    for lease_id in live:
        row = (await connection.execute(select(leases).where(leases.c.id == lease_id))).one()
        await _fail_lease(connection, row, height, settings, CloseReason.PROVIDER_LOST)
        reopened.append(row.order_id)
    return reopened


async def recover_provider(connection: AsyncConnection, provider_id: int, height: int) -> None:
    """A lost provider is back online (the core's ``recover_provider``); its heartbeat is
    counted from ``height``. Raises :class:`kova_core.UnknownEntity`,
    :class:`kova_core.IllegalTransition` (not lost)."""
    nodes = select(provider_nodes).where(provider_nodes.c.provider_id == provider_id)
    node = (await connection.execute(nodes.with_for_update())).first()
    if node is None:
        raise UnknownEntity("provider", provider_id)
    online = transition("provider", provider_id, ProviderState(node.state), "recover")
    await connection.execute(
        update(provider_nodes)
        .where(provider_nodes.c.provider_id == provider_id)
        .values(state=online.value, last_seen=height)
    )


async def expire_order(
    connection: AsyncConnection, order_id: int, height: int, settings: Settings
) -> None:
    """Give up on an open order (the core's ``expire_order``): it closes as ``expired`` and its
    open bids are lost. Raises :class:`kova_core.UnknownEntity`,
    :class:`kova_core.IllegalTransition` (not open)."""
    await catch_up(connection, height, settings)
    the_order = select(orders).where(orders.c.id == order_id)
    order = (await connection.execute(the_order.with_for_update())).first()
    if order is None:
        raise UnknownEntity("order", order_id)
    await _close_order(connection, order, height, CloseReason.EXPIRED, "expire")


async def _close_order(
    connection: AsyncConnection,
    order: Any,
    height: int,
    reason: CloseReason,
    command: str = "close",
) -> None:
    """Close an order (``command``: close or expire) for ``reason``; its open bids are lost."""
    closed = transition("order", order.id, OrderState(order.state), command)
    await connection.execute(
        update(orders)
        .where(orders.c.id == order.id)
        .values(state=closed.value, closed_at=height, close_reason=reason.value)
    )
    await connection.execute(
        update(bids)
        .where(bids.c.order_id == order.id, bids.c.state == "open")
        .values(state=BidState.LOST.value)
    )


# --------------------------------------------------------------------------- leases end, jobs


async def fail_lease(
    connection: AsyncConnection,
    lease_id: int,
    height: int,
    settings: Settings,
    reason: CloseReason = CloseReason.CONTAINER_FAILED,
) -> None:
    """A lease ends through its provider's fault (the core's ``fail_lease``): it is settled up
    to ``height``, closed, counted against the provider, and its order opens for bids again.
    Raises :class:`kova_core.UnknownEntity`, :class:`kova_core.IllegalTransition` (closed)."""
    await catch_up(connection, height, settings)
    row = (await connection.execute(select(leases).where(leases.c.id == lease_id))).first()
    if row is None:
        raise UnknownEntity("lease", lease_id)
    await _fail_lease(connection, row, height, settings, reason)


async def _fail_lease(
    connection: AsyncConnection, row: Any, height: int, settings: Settings, reason: CloseReason
) -> None:
    dep = await locked_deployment(connection, row.deployment_id)
    row = (await connection.execute(select(leases).where(leases.c.id == row.id))).one()
    if row.state == LeaseState.CLOSED:
        transition("lease", row.id, LeaseState.CLOSED, "close")
    await _close_leases(connection, row.deployment_id, [row], height, settings, reason)
    state = await connection.scalar(select(orders.c.state).where(orders.c.id == row.order_id))
    again = transition("order", row.order_id, OrderState(state), "reopen")
    await connection.execute(
        update(orders).where(orders.c.id == row.order_id).values(state=again.value)
    )
    if dep.kind == "job":
        await schedule_job(connection, dep.id, height)
    if dep.auto_accept is not None:  # the orchestrator chooses the next lease, too
        wait = json.loads(dep.auto_accept)["wait"]
        await enqueue(connection, "auto_accept", row.order_id, height + wait, height)


async def finish_job(
    connection: AsyncConnection, lease_id: int, height: int, settings: Settings, *, succeeded: bool
) -> None:
    """A job's container ran to completion on this lease (the core's ``finish_job``): the job
    pays ``runtime x price`` for it (what escrow can), the lease and its order close
    (``job_completed``, or ``job_failed``, which counts against the provider), and once none of
    its orders is open or running the job closes and the rest of its escrow is refunded.
    Raises :class:`kova_core.UnknownEntity`, :class:`kova_core.NotAJob`,
    :class:`kova_core.IllegalTransition` (the lease is closed)."""
    await catch_up(connection, height, settings)
    row = (await connection.execute(select(leases).where(leases.c.id == lease_id))).first()
    if row is None:
        raise UnknownEntity("lease", lease_id)
    dep = await locked_deployment(connection, row.deployment_id)
    if dep.kind != "job":
        raise NotAJob(f"lease {row.id} belongs to deployment {dep.id}, which is not a job")
    row = (await connection.execute(select(leases).where(leases.c.id == lease_id))).one()
    if row.state == LeaseState.CLOSED:
        transition("lease", row.id, LeaseState.CLOSED, "close")
    reason = CloseReason.JOB_COMPLETED if succeeded else CloseReason.JOB_FAILED
    await _close_leases(connection, dep.id, [row], height, settings, reason)
    order = (await connection.execute(select(orders).where(orders.c.id == row.order_id))).one()
    await _close_order(connection, order, height, reason)
    await _maybe_finish_job(connection, dep.id, height, settings)


async def schedule_job(connection: AsyncConnection, job_id: int, height: int) -> None:
    """Recompute a job's deadline (the core's ``Market._schedule_job``): the earlier of the last
    block its escrow pays for and a running lease reaching the job's max runtime. A new
    deadline enqueues a ``job_deadline`` work item for its block, in this transaction (commands
    catch deadlines up too; the item makes the job stop on time when no command comes)."""
    dep = (await connection.execute(select(deployments).where(deployments.c.id == job_id))).one()
    running = (
        await connection.execute(
            select(leases.c.created_at, leases.c.last_settled, leases.c.price).where(
                leases.c.deployment_id == job_id, leases.c.state == LeaseState.ACTIVE.value
            )
        )
    ).all()
    escrow = await balance(connection, escrow_account(job_id))
    deadline = job_next_deadline(
        escrow, [(r.created_at, r.last_settled, r.price) for r in running], dep.max_runtime
    )
    if deadline != dep.deadline:
        await connection.execute(
            update(deployments).where(deployments.c.id == job_id).values(deadline=deadline)
        )
        if deadline is not None:
            await enqueue(connection, "job_deadline", job_id, deadline, height)


async def _job_deadline_reached(
    connection: AsyncConnection, job_id: int, height: int, settings: Settings
) -> None:
    """The core's ``Market._job_deadline_reached``: a job whose escrow pays for no block beyond
    this one stops (``job_out_of_funds``); otherwise its leases past the max runtime stop
    (``job_timed_out``)."""
    dep = await locked_deployment(connection, job_id)
    running = (
        await connection.execute(
            select(leases)
            .where(leases.c.deployment_id == job_id, leases.c.state == LeaseState.ACTIVE.value)
            .order_by(leases.c.id)
        )
    ).all()
    escrow = await balance(connection, escrow_account(job_id))
    if job_out_of_funds(escrow, [(r.last_settled, r.price) for r in running], height):
        await close_deployment(connection, dep, height, settings, CloseReason.JOB_OUT_OF_FUNDS)
        return
    assert dep.max_runtime is not None  # a deadline with escrow to spare is a timeout
    for row in running:
        if row.created_at + dep.max_runtime <= height:
            await _close_leases(
                connection, job_id, [row], height, settings, CloseReason.JOB_TIMED_OUT
            )
            order = (
                await connection.execute(select(orders).where(orders.c.id == row.order_id))
            ).one()
            await _close_order(connection, order, height, CloseReason.JOB_TIMED_OUT)
    await _maybe_finish_job(connection, job_id, height, settings)


async def _maybe_finish_job(
    connection: AsyncConnection, job_id: int, height: int, settings: Settings
) -> None:
    """A job none of whose orders is open or running closes (refunding what is left);
    otherwise its deadline is recomputed."""
    dep = await locked_deployment(connection, job_id)
    if dep.state == DeploymentState.CLOSED:
        return
    still = await connection.scalar(
        select(func.count())
        .select_from(orders)
        .where(orders.c.deployment_id == job_id, orders.c.state != OrderState.CLOSED.value)
    )
    if still:
        await schedule_job(connection, job_id, height)
        return
    reasons = (
        await connection.execute(
            select(leases.c.close_reason).where(leases.c.deployment_id == job_id)
        )
    ).scalars()
    reason = job_outcome(CloseReason(r) for r in reasons if r is not None)
    await close_deployment(connection, dep, height, settings, reason)
