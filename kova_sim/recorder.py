"""The recorder: reads the core's events as a run goes and turns the run into columnar tables.

It keeps running totals (escrow held, revenue, leases active and paused, CPU in use) so that each
settlement round adds one row to the time series, and at the end it builds the tables of orders,
bids, leases, the ledger and providers from the market's records. Tables are
:class:`pyarrow.Table` with fixed schemas: money columns are int64 micro-units, blocks are int64.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from statistics import median
from typing import Any

import numpy as np
import pyarrow as pa

from kova_core import (
    Bid,
    BidPlaced,
    BidsPlaced,
    BidState,
    DebtWrittenOff,
    DeploymentPaused,
    DeploymentResumed,
    Event,
    LeaseClosed,
    LeasePaused,
    LeaseResumed,
    LeaseStarted,
    Market,
    ProviderLost,
    SettlementRound,
    Transfer,
)

from .scenario import ProviderGroup, Record

__all__ = ["SCHEMAS", "Recorder", "compact_ledger"]

_I = pa.int64()
_S = pa.string()
_F = pa.float64()

SCHEMAS: dict[str, pa.Schema] = {
    "deployments": pa.schema(
        [
            ("deployment_id", _I), ("stream", _S), ("kind", _S), ("tenant_id", _I),
            ("replicas", _I), ("created_at", _I), ("first_lease_at", _I), ("state", _S),
            ("closed_at", _I), ("close_reason", _S), ("deposited", _I), ("spent", _I),
            ("refunded", _I), ("escrow", _I), ("pauses", _I), ("resumes", _I),
            ("written_off", _I),
        ]
    ),
    "orders": pa.schema(
        [
            ("order_id", _I), ("deployment_id", _I), ("stream", _S), ("kind", _S),
            ("tenant_id", _I), ("replica", _I), ("cpu", _I), ("memory", _I), ("storage", _I),
            ("max_price", _I), ("created_at", _I), ("first_lease_at", _I),
            ("time_to_lease", _I), ("leases", _I), ("bids", _I), ("bid_min_price", _I),
            ("bid_median_price", _F), ("bid_max_price", _I), ("state", _S),
            ("closed_at", _I), ("close_reason", _S),
        ]
    ),
    "bids": pa.schema(
        [
            ("bid_id", _I), ("order_id", _I), ("provider_id", _I), ("price", _I),
            ("height", _I), ("response_time", _I), ("state", _S),
        ]
    ),
    "leases": pa.schema(
        [
            ("lease_id", _I), ("deployment_id", _I), ("order_id", _I), ("provider_id", _I),
            ("stream", _S), ("kind", _S), ("price", _I), ("cpu", _I), ("memory", _I),
            ("storage", _I), ("created_at", _I), ("closed_at", _I), ("close_reason", _S),
            ("state", _S), ("blocks_paid", _I), ("total_paid", _I), ("debt", _I),
            ("written_off", _I),
        ]
    ),
    "ledger": pa.schema(
        [
            ("block", _I), ("source", _S), ("destination", _S), ("amount", _I),
            ("reason", _S), ("lease_id", _I), ("start", _I), ("end", _I),
        ]
    ),
    "providers": pa.schema(
        [
            ("provider_id", _I), ("name", _S), ("group", _S), ("strategy", _S),
            ("poll_phase", _I), ("cpu", _I), ("memory", _I), ("storage", _I),
            ("revenue", _I), ("cost", _I), ("profit", _I), ("utilisation", _F),
            ("leases_won", _I), ("leases_completed", _I), ("leases_failed", _I),
            ("failures", _I), ("reputation", _F), ("state", _S),
        ]
    ),
    "timeseries": pa.schema(
        [
            ("block", _I), ("active_leases", _I), ("paused_leases", _I), ("open_orders", _I),
            ("deployments_paid", _I), ("deployments_paused", _I), ("accepted", _I),
            ("accepted_mean_price", _F), ("accepted_median_price", _F),
            ("active_mean_price", _F), ("escrow_held", _I), ("revenue", _I),
            ("tenant_spend", _I), ("written_off", _I), ("cpu_in_use", _I),
            ("cpu_capacity", _I), ("utilisation", _F),
        ]
    ),
}  # fmt: skip
"""The columns of each output table."""

GIB = 1024**3


class Recorder:
    """Reads every event of a run; builds the output tables at the end."""

    def __init__(self, market: Market, duration: int, record: Record | None = None) -> None:
        self.market = market
        self.duration = duration
        self.recording = record or Record()
        self.bid_prices: dict[int, array[int]] = {}  # order id -> the price of each bid on it
        self.group_of: dict[int, ProviderGroup] = {}
        self.phase_of: dict[int, int] = {}
        self.stream_of: dict[int, str] = {}  # deployment id -> stream name
        self.refused_arrivals = 0  # deployments and jobs the network's limits refused
        self.first_lease_at: dict[int, int] = {}  # order id -> block
        self.leases_of_order: dict[int, int] = {}
        self.provider_failures: dict[int, int] = {}
        self.paused_events = 0
        self.resumed_events = 0
        self.escrow_held = 0
        self.revenue = 0
        self.fees = 0
        self.written_off = 0
        self.active = 0
        self.paused = 0
        self.active_price_sum = 0
        self.cpu_in_use = 0
        self.cpu_capacity = 0
        self.accepted_prices: list[int] = []
        self._paused_leases: set[int] = set()
        self.pauses_of: dict[int, int] = {}  # deployment id -> times a round paused it
        self.resumes_of: dict[int, int] = {}
        self.rows: dict[str, list[Any]] = {f.name: [] for f in SCHEMAS["timeseries"]}
        self.events = 0
        self._handlers: dict[type, Callable[[Any], None]] = {
            Transfer: self._transfer,
            BidPlaced: self._bid_placed,
            BidsPlaced: self._bids_placed,
            LeaseStarted: self._lease_started,
            LeasePaused: self._lease_paused,
            LeaseResumed: self._lease_resumed,
            LeaseClosed: self._lease_closed,
            DeploymentPaused: self._deployment_paused,
            DeploymentResumed: self._deployment_resumed,
            DebtWrittenOff: self._written_off,
            ProviderLost: self._provider_lost,
            SettlementRound: self._round,
        }

    def add_provider(self, provider_id: int, group: ProviderGroup, phase: int) -> None:
        """Note a provider's group and poll phase."""
        self.group_of[provider_id] = group
        self.phase_of[provider_id] = phase
        self.cpu_capacity += group.capacity.cpu

    def refused(self, stream: str) -> None:
        """Note an arrival of ``stream`` that the network's limits refused."""
        self.refused_arrivals += 1

    def add_deployment(self, deployment_id: int, stream: str) -> None:
        """Note which demand stream a deployment or job came from."""
        self.stream_of[deployment_id] = stream

    # ------------------------------------------------------------------ events

    def record(self, events: Iterable[Event]) -> None:
        """Read a command's events, in order."""
        handlers = self._handlers
        for event in events:
            self.events += 1
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)

    def _transfer(self, t: Transfer) -> None:
        if t.destination.startswith("escrow:"):
            self.escrow_held += t.amount
        if t.source.startswith("escrow:"):
            self.escrow_held -= t.amount
            if t.destination.startswith("provider:"):
                self.revenue += t.amount
            elif t.destination == "network":
                self.fees += t.amount

    def _bid_placed(self, e: BidPlaced) -> None:
        self._prices_of(e.order_id).append(e.price)

    def _bids_placed(self, e: BidsPlaced) -> None:
        self._prices_of(e.order_id).extend(e.prices)

    def _prices_of(self, order_id: int) -> array[int]:
        prices = self.bid_prices.get(order_id)
        if prices is None:
            prices = self.bid_prices[order_id] = array("q")
        return prices

    def _lease_started(self, e: LeaseStarted) -> None:
        lease = self.market.leases[e.lease_id]
        self.first_lease_at.setdefault(e.order_id, e.height)
        self.leases_of_order[e.order_id] = self.leases_of_order.get(e.order_id, 0) + 1
        self.active += 1
        self.active_price_sum += e.price
        self.cpu_in_use += lease.resources.cpu
        self.accepted_prices.append(e.price)

    def _lease_paused(self, e: LeasePaused) -> None:
        self._paused_leases.add(e.lease_id)
        self.active -= 1
        self.paused += 1
        self.active_price_sum -= self.market.leases[e.lease_id].price

    def _lease_resumed(self, e: LeaseResumed) -> None:
        self._paused_leases.discard(e.lease_id)
        self.active += 1
        self.paused -= 1
        self.active_price_sum += self.market.leases[e.lease_id].price

    def _lease_closed(self, e: LeaseClosed) -> None:
        lease = self.market.leases[e.lease_id]
        if e.lease_id in self._paused_leases:  # the lease is closed now; was it paused before?
            self.paused -= 1
            self._paused_leases.discard(e.lease_id)
        else:
            self.active -= 1
            self.active_price_sum -= lease.price
        self.cpu_in_use -= lease.resources.cpu

    def _deployment_paused(self, e: DeploymentPaused) -> None:
        self.paused_events += 1
        self.pauses_of[e.deployment_id] = self.pauses_of.get(e.deployment_id, 0) + 1

    def _deployment_resumed(self, e: DeploymentResumed) -> None:
        self.resumed_events += 1
        self.resumes_of[e.deployment_id] = self.resumes_of.get(e.deployment_id, 0) + 1

    def _written_off(self, e: DebtWrittenOff) -> None:
        self.written_off += e.amount

    def _provider_lost(self, e: ProviderLost) -> None:
        self.provider_failures[e.provider_id] = self.provider_failures.get(e.provider_id, 0) + 1

    def _round(self, e: SettlementRound) -> None:
        rows = self.rows
        prices = self.accepted_prices
        rows["block"].append(e.height)
        rows["active_leases"].append(self.active)
        rows["paused_leases"].append(self.paused)
        rows["open_orders"].append(len(self.market.open_orders()))
        rows["deployments_paid"].append(e.deployments_paid)
        rows["deployments_paused"].append(e.deployments_paused)
        rows["accepted"].append(len(prices))
        rows["accepted_mean_price"].append(sum(prices) / len(prices) if prices else None)
        rows["accepted_median_price"].append(float(median(prices)) if prices else None)
        rows["active_mean_price"].append(
            self.active_price_sum / self.active if self.active else None
        )
        accrued = self.market.accrued  # owed by deferred rounds, not yet moved (see Market)
        rows["escrow_held"].append(self.escrow_held - accrued)
        rows["revenue"].append(self.revenue + accrued)
        rows["tenant_spend"].append(self.revenue + accrued + self.fees)
        rows["written_off"].append(self.written_off)
        rows["cpu_in_use"].append(self.cpu_in_use)
        rows["cpu_capacity"].append(self.cpu_capacity)
        rows["utilisation"].append(
            self.cpu_in_use / self.cpu_capacity if self.cpu_capacity else 0.0
        )
        self.accepted_prices = []

    # ------------------------------------------------------------------ tables

    def tables(self) -> dict[str, pa.Table]:
        """The run's tables, by name (see :data:`SCHEMAS`)."""
        return {
            "deployments": self._table("deployments", self._deployment_rows()),
            "orders": self._table("orders", self._order_rows()),
            "bids": self._table("bids", self._bid_rows()),
            "leases": self._table("leases", self._lease_rows()),
            "ledger": self._table("ledger", self._ledger_rows()),
            "providers": self._table("providers", self._provider_rows()),
            "timeseries": pa.Table.from_pydict(self.rows, schema=SCHEMAS["timeseries"]),
        }

    @staticmethod
    def _table(name: str, rows: Iterable[tuple[Any, ...]]) -> pa.Table:
        schema = SCHEMAS[name]
        columns = list(zip(*rows, strict=True)) or [() for _ in schema]
        return pa.Table.from_arrays(
            [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
            schema=schema,
        )

    def _deployment_rows(self) -> Iterable[tuple[Any, ...]]:
        market = self.market
        money: dict[tuple[int, str], int] = {}  # (deployment id, deposited|spent|refunded)
        for t in market.ledger:
            if t.destination.startswith("escrow:"):
                key = (int(t.destination[7:]), "deposited")
            elif t.source.startswith("escrow:"):
                kind = "refunded" if t.reason == "refund" else "spent"
                key = (int(t.source[7:]), kind)
            else:
                continue
            money[key] = money.get(key, 0) + t.amount
        for dep in market.deployments.values():
            first = [self.first_lease_at[o] for o in dep.order_ids if o in self.first_lease_at]
            yield (
                dep.id, self.stream_of.get(dep.id, ""), dep.kind, dep.tenant_id,
                len(dep.order_ids), dep.created_at, min(first, default=None), str(dep.state),
                dep.closed_at, None if dep.close_reason is None else str(dep.close_reason),
                money.get((dep.id, "deposited"), 0), money.get((dep.id, "spent"), 0),
                money.get((dep.id, "refunded"), 0), market.escrow(dep.id),
                self.pauses_of.get(dep.id, 0), self.resumes_of.get(dep.id, 0), dep.written_off,
            )  # fmt: skip

    def _order_rows(self) -> Iterable[tuple[Any, ...]]:
        market = self.market
        prices_of = self.bid_prices
        for order in market.orders.values():
            dep = market.deployments[order.deployment_id]
            r = order.resources
            first = self.first_lease_at.get(order.id)
            prices = prices_of.get(order.id, ())
            yield (
                order.id, dep.id, self.stream_of.get(dep.id, ""), dep.kind, dep.tenant_id,
                order.spec.replica, r.cpu, r.memory, r.storage, order.max_price,
                order.created_at, first, None if first is None else first - order.created_at,
                self.leases_of_order.get(order.id, 0), len(prices),
                min(prices, default=None), float(median(sorted(prices))) if prices else None,
                max(prices, default=None), str(order.state), order.closed_at,
                None if order.close_reason is None else str(order.close_reason),
            )  # fmt: skip

    def _published_ids(self) -> dict[int, int]:
        """Each bid's id in the bids table: bids numbered by block, then provider, then order.

        That is the order polls place them in, so it is the market's own numbering when every
        poll is carried out at its time (the exact engine); an engine that carries some polls
        out late (the fast one) numbers them otherwise inside, and publishes the same ids.
        """
        bids = self.market.bids
        if not bids:
            return {}
        ids = np.fromiter(bids.keys(), dtype=np.int64, count=len(bids))
        keys = np.array(
            [(b.height, b.provider_id, b.order_id) for b in bids.values()], dtype=np.int64
        )
        order = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0]))
        published = np.empty_like(ids)
        published[order] = np.arange(1, len(ids) + 1, dtype=np.int64)
        return dict(zip(ids.tolist(), published.tolist(), strict=True))

    def _recorded_bids(self) -> list[tuple[int, Bid]]:
        """The bids the scenario's ``record.bids`` keeps, each with its published id, by it."""
        mode = self.recording.bids
        if mode == "aggregates":
            return []
        bids = self.market.bids
        published = self._published_ids()
        if mode == "all":
            return sorted((published[b.id], b) for b in bids.values())
        by_order: dict[int, list[Bid]] = {}
        for bid in bids.values():
            by_order.setdefault(bid.order_id, []).append(bid)
        kept: list[Bid] = []
        for order_bids in by_order.values():
            cheapest = sorted(order_bids, key=lambda b: (b.price, b.id))[: self.recording.top_k]
            chosen = {b.id for b in cheapest}
            kept += cheapest
            kept += [b for b in order_bids if b.state is BidState.ACCEPTED and b.id not in chosen]
        return sorted((published[b.id], b) for b in kept)

    def _bid_rows(self) -> Iterable[tuple[Any, ...]]:
        for bid_id, b in self._recorded_bids():
            yield (
                bid_id,
                b.order_id,
                b.provider_id,
                b.price,
                b.height,
                b.response_time,
                str(b.state),
            )

    def _lease_rows(self) -> Iterable[tuple[Any, ...]]:
        market = self.market
        for lease in market.leases.values():
            dep = market.deployments[lease.deployment_id]
            r = lease.resources
            yield (
                lease.id, dep.id, lease.order_id, lease.provider_id,
                self.stream_of.get(dep.id, ""), dep.kind, lease.price, r.cpu, r.memory,
                r.storage, lease.created_at, lease.closed_at,
                None if lease.close_reason is None else str(lease.close_reason),
                str(lease.state), lease.blocks_paid, lease.total_paid, lease.debt,
                lease.written_off,
            )  # fmt: skip

    def _ledger_rows(self) -> Iterable[tuple[Any, ...]]:
        rows = (
            (t.height, t.source, t.destination, t.amount, t.reason, t.lease_id, t.start, t.end)
            for t in self.market.ledger
        )
        if self.recording.ledger == "all":
            return rows
        return compact_ledger(rows)

    def _provider_rows(self) -> Iterable[tuple[Any, ...]]:
        market = self.market
        held: dict[int, int] = {}  # cpu-blocks held by leases
        won: dict[int, int] = {}
        cost: dict[int, int] = {}
        for lease in market.leases.values():
            end = self.duration if lease.closed_at is None else min(lease.closed_at, self.duration)
            blocks = max(0, end - lease.created_at)
            pid = lease.provider_id
            held[pid] = held.get(pid, 0) + lease.resources.cpu * blocks
            won[pid] = won.get(pid, 0) + 1
            costs = self.group_of[pid].costs
            cost[pid] = cost.get(pid, 0) + blocks * unit_cost(lease.resources, costs)
        for pid, provider in market.providers.items():
            group = self.group_of[pid]
            revenue = market.balance(f"provider:{pid}")
            c = provider.capacity
            denominator = c.cpu * self.duration
            yield (
                pid, provider.name, group.name, group.pricing.strategy, self.phase_of[pid],
                c.cpu, c.memory, c.storage, revenue, cost.get(pid, 0),
                revenue - cost.get(pid, 0),
                held.get(pid, 0) / denominator if denominator else 0.0,
                won.get(pid, 0), provider.completed, provider.failed,
                self.provider_failures.get(pid, 0), float(provider.reputation),
                str(provider.state),
            )  # fmt: skip


def compact_ledger(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Ledger rows ``(block, source, destination, amount, reason, lease_id, start, end)`` with
    each lease's settlement transfers over consecutive rounds merged into one row (amounts
    added, ``start`` of the first, ``end`` and ``block`` of the last), sorted by every column.

    Merging depends only on which transfers there are, not their order, so a ledger whose
    rounds were paid one by one and one whose rounds were paid in runs compact the same.
    """
    settlement: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    out: list[tuple[Any, ...]] = []
    for row in rows:
        if row[4] == "settlement":
            settlement.setdefault((row[5], row[1], row[2]), []).append(row)
        else:
            out.append(row)
    for group in settlement.values():
        group.sort(key=lambda r: r[6])
        block, source, destination, amount, reason, lease_id, start, end = group[0]
        for row in group[1:]:
            if row[6] == end:
                amount, end, block = amount + row[3], row[7], row[0]
            else:
                out.append((block, source, destination, amount, reason, lease_id, start, end))
                block, amount, start, end = row[0], row[3], row[6], row[7]
        out.append((block, source, destination, amount, reason, lease_id, start, end))
    return sorted(out, key=lambda r: tuple((v is None, v) for v in r))


def unit_cost(resources: Any, costs: Any) -> int:
    """What running ``resources`` costs per block at a group's unit costs (micro, rounded down):
    per core, per GiB of memory and of storage, per GPU."""
    numerator = (
        resources.cpu * costs.cpu * GIB
        + resources.memory * costs.memory * 1000
        + resources.storage * costs.storage * 1000
        + resources.gpu * costs.gpu * 1000 * GIB
    )
    return numerator // (1000 * GIB)
