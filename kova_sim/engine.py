"""The engines: the core under a simulated clock, every decision the core's.

Theory of operation
-------------------
Time is the block height (integers only). One :class:`kova_core.Market` holds the state; the
engine issues its commands at their heights and reads the events each command returns:

- **settlement**: the market is ticked at every ``settlement_interval``-th block, and at every
  job deadline (a job stopped because its escrow or its maximum runtime ends), which is the one
  change the market makes without a command (:meth:`kova_core.Market.next_deadline`). So what
  happens at a round's or a deadline's block sees it done first. (The core would also catch up
  a round or deadline due before any command, but a check the engine makes before a command,
  such as "is this job's lease still running?", must see it done too.)
- **providers**: each provider polls every ``poll_interval`` blocks from its phase, bidding with
  its group's pricing strategy; with a failure model, it fails after an exponential time (its
  leases fail and their orders reopen) and comes back after an exponential repair time.
- **demand**: each stream's arrivals create deployments or jobs (the tenant is credited the
  deposit first: money enters only by credit). The tenant reviews bids after its review window,
  accepts one per open order with its selection policy, looks again every review window while
  orders stay open, and gives the rest up after its patience. A deployment runs for its lifetime
  from its first lease, then the tenant closes it; a job's lease runs for the job's runtime and
  finishes. A paused deployment may be topped up; an order reopened by a failure is bid on again
  (``redeploy``) or the deployment is closed (``close``).

Things that happen at the same block happen in a fixed order, whatever the engine (the ranks
:data:`SETTLE` … :data:`POLL`, then a key such as the provider id): settlement first, job
deadlines, then failures, jobs finishing, lifetimes ending, top-ups, arrivals, reviews, and polls
last, so a poll sees the orders that opened in its block. Two engines share all of this
(:class:`Simulation`) and differ only in which moments they visit:

- ``exact`` (:class:`ExactSimulation`): SimPy's clock, and every poll of every provider is an
  event, whether or not it finds anything to bid on. The reference.
- ``fast`` (:class:`FastSimulation`): its own event heap, and a provider polls only when the
  poll can change something, many of them late and together, one order at a time, when
  nothing could see the difference; every other action is the same, in the same order, so the
  outputs are identical (the suite checks this table by table; the bids table numbers bids by
  block, provider and order, as the exact engine places them).

Every random draw comes from a generator seeded from the scenario's seed and keyed by what it is
for (a provider's phase, its prices, its failures; a stream's arrivals, durations, top-ups), so
the same scenario and seed give the same run, and changing one group or stream leaves the others'
draws alone (:func:`generator`).
"""

from __future__ import annotations

import gc
import heapq
import math
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, NamedTuple

import numpy as np
import simpy

from kova_core import (
    BidPlaced,
    BidsLost,
    BidsPlaced,
    BidWithdrawn,
    DeploymentPaused,
    DeploymentState,
    DepositTooSmall,
    Event,
    LeaseClosed,
    LeaseStarted,
    LeaseState,
    Manifest,
    ManifestError,
    Market,
    OrderClosed,
    OrderOpened,
    OrderReopened,
    OrderState,
    PricingStrategy,
    Provider,
    ProviderRecovered,
    ProviderState,
    SelectionPolicy,
    TooManyOpenOrders,
    parse_manifest,
    provider_matches,
)

from .commands import CommandLog
from .recorder import Recorder
from .scenario import DemandStream, ProviderGroup, Scenario

__all__ = [
    "ENGINES",
    "ExactSimulation",
    "FastSimulation",
    "ProviderInfo",
    "Simulation",
    "StreamInfo",
    "make_simulation",
    "simulate",
]

ENGINES = ("auto", "exact", "fast")
"""The engines ``kova-sim run --engine`` accepts (``auto`` picks ``fast``)."""


def generator(seed: int, *key: int) -> np.random.Generator:
    """The random generator of one purpose, keyed under the scenario's seed.

    Keys name what draws from it (see :func:`_key`), not the order things were built in, so a
    change to one provider group or demand stream leaves every other one's draws as they were:
    comparing two variants of a scenario compares them on the same random demand (common
    random numbers).
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


_PROVIDERS, _STREAMS = 0, 1
_PHASE, _PRICING, _FAILURES = 0, 1, 2
_ARRIVALS, _DURATIONS, _TOP_UPS = 0, 1, 2


@dataclass(slots=True)
class ProviderInfo:
    """A simulated provider: its group, strategy and random generators."""

    id: int
    group: ProviderGroup
    strategy: PricingStrategy
    rng: np.random.Generator  # handed to its pricing strategy
    failure_rng: np.random.Generator
    phase: int
    failures: int = 0


@dataclass(slots=True)
class StreamInfo:
    """A demand stream: its manifest, policy, tenants and random generators."""

    stream: DemandStream
    manifest: Manifest
    policy: SelectionPolicy
    arrival_rng: np.random.Generator
    duration_rng: np.random.Generator  # lifetimes and runtimes
    top_up_rng: np.random.Generator
    tenant_ids: list[int]
    price_per_block: int  # Σ max price of its replicas: what deposits are counted in
    index: int  # its place in the scenario's demand
    arrivals: int = 0


@dataclass(slots=True)
class _Tenancy:
    """What the engine knows of one deployment or job beyond the market's records."""

    stream: StreamInfo
    duration: int  # lifetime (deployment) or runtime (job), in blocks
    started: bool = False
    reviewing: set[int] = field(default_factory=set)  # orders a review loop is looking after


@dataclass(slots=True)
class _Cohort:
    """The deferred polls of one order: the providers whose one candidate it was when it
    opened, each one's next poll (block, provider id), in that order (see
    ``FastSimulation._catch_up``)."""

    order_id: int
    token: int
    polls: list[tuple[int, int, PricingStrategy, np.random.Generator]]  # block, provider id, …


class _Review(NamedTuple):
    """One review loop: whose orders, its place among reviews, and when the tenant gives up."""

    dep_id: int
    tenancy: _Tenancy
    serial: int
    give_up: int


def manifest_for(stream: DemandStream, run_length: int) -> dict[str, Any]:
    """The Akash SDL manifest a stream's tenants submit: one service, ``replicas`` copies.

    A job stream without ``max_runtime`` gets ``run_length``: no limit within the run.
    """
    r = stream.resources
    compute: dict[str, Any] = {
        "cpu": {"units": f"{r.cpu}m"},
        "memory": {"size": str(r.memory)},
        "storage": {"size": str(r.storage)},
    }
    if r.gpu:
        compute["gpu"] = {"units": r.gpu, "attributes": {"vendor": {"nvidia": None}}}
    placement: dict[str, Any] = {
        "pricing": {"app": {"denom": "ukova", "amount": stream.max_price}},
    }
    if stream.attributes:
        placement["attributes"] = dict(stream.attributes)
    manifest: dict[str, Any] = {
        "version": "2.0",
        "services": {"app": {"image": f"kova/{stream.kind}:sim"}},
        "profiles": {"compute": {"app": {"resources": compute}}, "placement": {"dc": placement}},
        "deployment": {"app": {"dc": {"profile": "app", "count": stream.replicas}}},
    }
    if stream.kind == "job":
        manifest["kind"] = "job"
        manifest["max_runtime"] = stream.max_runtime or run_length
    return manifest


# --------------------------------------------------------------------------- order within a block

SETTLE, FAILURE, JOB_END, LIFETIME, TOP_UP, ARRIVAL, REVIEW, POLL = range(8)
"""What happens first when several things happen at the same block (lower first): settlement
(and, in the fast engine, job deadlines), provider failures and recoveries, jobs finishing,
lifetimes ending, top-ups, arrivals, tenants reviewing bids, providers polling. Within a rank
the key orders them: provider id, lease id, deployment id, stream index, the review's serial."""

_KEY_BITS = 40
ONLINE = ProviderState.ONLINE


def priority(rank: int, key: int) -> int:
    """The total order of one scheduled action within its block (always >= 1)."""
    return 1 + (rank << _KEY_BITS) + key


Action = Callable[[], None]


class Simulation:
    """One run of a scenario: the simulated tenants and providers around one core ``Market``.

    This class holds what both engines share: the setup, and what each tenant and provider does
    when its time comes. An engine only decides when things happen: :class:`ExactSimulation`
    (``exact``) makes every poll and round a SimPy event; :class:`FastSimulation` (``fast``)
    skips the polls that cannot change anything. Make one with :func:`make_simulation`.
    ``keep_events`` keeps every core event (for traces and tests; large runs should not).
    ``commands`` writes every command the engine issues to the market to a command log
    (:mod:`kova_sim.commands`), from the registrations on; only engines whose
    :attr:`records_commands` is true take one. Without it the engine drives a plain ``Market``.
    """

    engine = ""
    records_commands = False
    """Whether this engine's commands can be logged for a replay: every command at its height,
    in order (see :mod:`kova_sim.commands`)."""

    def __init__(
        self, scenario: Scenario, *, keep_events: bool = False, commands: CommandLog | None = None
    ) -> None:
        if commands is not None and not self.records_commands:
            raise ValueError(
                f"the {self.engine} engine's commands cannot be recorded: it carries polls out"
                " late, at heights already passed; record the exact engine's"
            )
        self.scenario = scenario
        market = Market(
            fee_bps=scenario.fee_bps,
            settlement_interval=scenario.settlement_interval,
            limits=scenario.limits.core(),
            defer_rounds=self.defers_rounds(scenario),
            # with per-order aggregates only, the recorder keeps what it needs as bids are placed
            forget_closed_bids=scenario.record.bids == "aggregates",
        )
        self.recorder = Recorder(market, scenario.duration, scenario.record)
        self.commands = commands
        # the market the engine drives: with a command log, one that writes each command
        self.market = (
            market
            if commands is None
            else commands.record(market, duration=scenario.duration, seed=scenario.seed)
        )
        self._deadline_at: int | None = None  # block of the scheduled deadline tick
        self.keep_events = keep_events
        self.events: list[Event] = []
        self.providers: dict[int, ProviderInfo] = {}
        self.streams: list[StreamInfo] = []
        self.tenancies: dict[int, _Tenancy] = {}
        self.wall_seconds = 0.0
        self.actions = 0  # scheduled actions carried out
        self._reviews = 0  # serial numbers of review loops
        self._ran = False
        seed = scenario.seed
        for group in scenario.providers:
            # one strategy object per group (strategies are immutable): a market pricing many
            # polls at once prices a strategy that says it prices alike once per free capacity
            strategy = group.pricing.build(group.costs)
            for i in range(group.count):
                pid = self.market.add_provider(
                    capacity=group.capacity.resources(),
                    name=f"{group.name}-{i}",
                    attributes=group.attributes,
                    gpu_models=("nvidia/*",) if group.capacity.gpu else (),
                )
                key = (_PROVIDERS, _key(group.name), i)
                phase = group.poll_phase
                if phase == "random":
                    phase = int(generator(seed, *key, _PHASE).integers(0, scenario.poll_interval))
                self.providers[pid] = ProviderInfo(
                    id=pid,
                    group=group,
                    strategy=strategy,
                    rng=generator(seed, *key, _PRICING),
                    failure_rng=generator(seed, *key, _FAILURES),
                    phase=phase,
                )
                self.recorder.add_provider(pid, group, phase)
        for index, stream in enumerate(scenario.demand):
            source = manifest_for(stream, scenario.duration)
            manifest = parse_manifest(source)
            if commands is not None:
                commands.manifest_source(manifest, source)
            tenants = [self.market.add_tenant(f"{stream.name}-{i}") for i in range(stream.tenants)]
            self.streams.append(
                StreamInfo(
                    stream=stream,
                    manifest=manifest,
                    policy=stream.selection.build(),
                    arrival_rng=generator(seed, _STREAMS, _key(stream.name), _ARRIVALS),
                    duration_rng=generator(seed, _STREAMS, _key(stream.name), _DURATIONS),
                    top_up_rng=generator(seed, _STREAMS, _key(stream.name), _TOP_UPS),
                    tenant_ids=tenants,
                    price_per_block=sum(s.max_price for s in manifest.order_specs()),
                    index=index,
                )
            )

    @classmethod
    def defers_rounds(cls, scenario: Scenario) -> bool:
        """Whether this engine lets the market defer rounds (``Market(defer_rounds=...)``)."""
        return False

    # ------------------------------------------------------------------ what an engine provides

    def _schedule(self, delay: int, rank: int, key: int, action: Action) -> None:
        """Carry out ``action`` ``delay`` blocks from now, in the block's order (rank, key)."""
        raise NotImplementedError

    @property
    def now(self) -> int:
        """The current block."""
        raise NotImplementedError

    def _start(self) -> None:
        """Schedule what the engine itself drives (polls)."""

    def _run_until(self, until: int) -> None:
        """Carry out every action scheduled before block ``until``."""
        raise NotImplementedError

    def _after(self, events: list[Event]) -> None:
        """Look at a command's events once they are recorded (the fast engine tracks polls)."""

    def _finish(self, duration: int) -> None:
        """Before the last tick: carry out what the engine deferred to before ``duration``."""

    def _touch_provider(self, provider_id: int) -> None:
        """The action being carried out may read or change this provider (or its orders).

        Every action calls one of these ``_touch_*`` first (the fast engine carries out the
        polls it deferred that the action could see; see :class:`FastSimulation`)."""

    def _touch_stream(self, stream: StreamInfo) -> None:
        """The action may read or change this stream's deployments, orders, bids and leases."""

    def _touch_all(self) -> None:
        """The action may read or change anything."""

    # ------------------------------------------------------------------ running

    def run(self, progress: Callable[[int, int], None] | None = None, step: int = 0) -> None:
        """Run to the scenario's end, calling ``progress(now, duration)`` every ``step`` blocks.

        The run covers blocks ``0 .. duration - 1``; a round due at ``duration`` itself runs
        too, so the last settlement is in the results.
        """
        if self._ran:
            raise RuntimeError("a Simulation runs once; make a new one to run again")
        self._ran = True
        started = time.perf_counter()
        self._schedule(self.scenario.settlement_interval, SETTLE, 0, self._settle)
        for info in self.providers.values():
            if info.group.failures is not None:
                self._schedule_failure(info)
        for index, info in enumerate(self.streams):
            self._schedule_arrival(
                index, info, arrival_times(info.stream, info.arrival_rng, self.scenario.duration)
            )
        self._start()
        duration = self.scenario.duration
        step = step or duration
        now = 0
        # Neither engine makes reference cycles (tests/sim/test_engines.py checks), so Python's
        # cyclic collector would only walk the millions of live objects of a large run, again
        # and again, finding nothing: it is paused for the run and restored after.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while now < duration:
                now = min(duration, now + step)
                self._run_until(now)
                if progress is not None:
                    progress(now, duration)
        finally:
            if collecting:
                gc.enable()
        self._finish(duration)
        self._do(self.market.tick, duration)
        self._do(self.market.flush)
        self.wall_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ commands and reactions

    def _do(self, command: Callable[..., list[Event]], *args: Any, **kwargs: Any) -> list[Event]:
        events = command(*args, **kwargs)
        if events:
            self._handle(events)
        return events

    def _handle(self, events: list[Event]) -> None:
        """Record a command's events, react to them, and let the engine look at them."""
        self.recorder.record(events)
        if self.keep_events:
            self.events.extend(events)
        for event in events:
            react = self._reactions.get(type(event))
            if react is not None:
                react(self, event)
        self._after(events)
        self._watch_deadline()

    def _watch_deadline(self) -> None:
        """Schedule a tick at the market's next job deadline, unless one is scheduled by then.

        A job deadline is the one change the market makes without a command. Ticked at its
        block, just after the round, it is carried out before anything else of that block, so
        what the tenant or the job does at that block sees the job already stopped.
        """
        deadline = self.market.next_deadline()
        if deadline is not None and (self._deadline_at is None or deadline < self._deadline_at):
            self._deadline_at = deadline
            self._schedule(deadline - self.now, SETTLE, 1, self._deadline_tick)

    def _deadline_tick(self) -> None:
        self._touch_all()  # the job stopped frees its providers' capacity
        now = self.now
        if self._deadline_at == now:
            self._deadline_at = None
        self._do(self.market.tick, now)
        self._watch_deadline()

    def _on_lease_started(self, event: LeaseStarted) -> None:
        tenancy = self.tenancies[event.deployment_id]
        if tenancy.stream.stream.kind == "job":
            lease_id = event.lease_id
            self._schedule(tenancy.duration, JOB_END, lease_id, lambda: self._job_end(lease_id))
        elif not tenancy.started:
            tenancy.started = True
            dep_id = event.deployment_id
            self._schedule(tenancy.duration, LIFETIME, dep_id, lambda: self._close(dep_id))

    def _on_paused(self, event: DeploymentPaused) -> None:
        tenancy = self.tenancies[event.deployment_id]
        top_up = tenancy.stream.stream.top_up
        draw = tenancy.stream.top_up_rng.random() if top_up.policy == "when-paused" else 1.0
        if draw < top_up.probability:
            dep_id = event.deployment_id
            self._schedule(top_up.delay, TOP_UP, dep_id, lambda: self._top_up(dep_id, tenancy))

    def _on_reopened(self, event: OrderReopened) -> None:
        tenancy = self.tenancies[event.deployment_id]
        if tenancy.stream.stream.on_failure == "redeploy":
            self._review(event.deployment_id, [event.order_id])
        else:
            self._close(event.deployment_id)

    _reactions: ClassVar[dict[type, Callable[[Simulation, Any], None]]] = {
        LeaseStarted: _on_lease_started,
        DeploymentPaused: _on_paused,
        OrderReopened: _on_reopened,
    }

    # ------------------------------------------------------------------ the network

    def _settle(self) -> None:
        # a round pauses and resumes, which no poll reads; a job deadline at this block, which
        # the round's catch-up carries out, frees capacity
        deadline = self.market.next_deadline()
        if deadline is not None and deadline <= self.now:
            self._touch_all()
        self._do(self.market.tick, self.now)
        self._schedule(self.scenario.settlement_interval, SETTLE, 0, self._settle)

    def _poll(self, info: ProviderInfo, orders: Iterable[int] | None = None) -> None:
        self._do(self.market.poll, info.id, info.strategy, info.rng, self.now, orders=orders)

    def _schedule_failure(self, info: ProviderInfo) -> None:
        failures = info.group.failures
        assert failures is not None
        self._schedule(
            _ceil(info.failure_rng.exponential(failures.mtbf)), FAILURE, info.id,
            lambda: self._fail(info),
        )  # fmt: skip

    def _fail(self, info: ProviderInfo) -> None:
        failures = info.group.failures
        assert failures is not None
        info.failures += 1
        self._touch_provider(info.id)
        self._do(self.market.fail_provider, info.id, self.now)
        self._schedule(
            _ceil(info.failure_rng.exponential(failures.mttr)), FAILURE, info.id,
            lambda: self._recover(info),
        )  # fmt: skip

    def _recover(self, info: ProviderInfo) -> None:
        self._touch_provider(info.id)
        self._do(self.market.recover_provider, info.id, self.now)
        self._schedule_failure(info)

    # ------------------------------------------------------------------ tenants

    def _schedule_arrival(self, index: int, info: StreamInfo, times: Iterator[int]) -> None:
        at = next(times, None)
        if at is None:
            return

        def arrive() -> None:
            self._arrive(info)
            self._schedule_arrival(index, info, times)

        self._schedule(at - self.now, ARRIVAL, index, arrive)

    def _arrive(self, info: StreamInfo) -> None:
        self._touch_stream(info)
        stream = info.stream
        tenant = info.tenant_ids[info.arrivals % len(info.tenant_ids)]
        info.arrivals += 1
        duration = sample_blocks(stream.lifetime or stream.runtime, info.duration_rng)
        deposit = stream.deposit.blocks * info.price_per_block
        now = self.now
        self._do(self.market.credit, tenant, deposit, now)
        try:
            events = self.market.create_deployment(tenant, info.manifest, deposit, now)
        except (DepositTooSmall, TooManyOpenOrders, ManifestError):
            # the network's limits refused it (the credit stays in the tenant's balance)
            self.recorder.refused(stream.name)
            return
        dep_id = events[0].deployment_id  # type: ignore[attr-defined]
        self.tenancies[dep_id] = _Tenancy(stream=info, duration=duration)
        self.recorder.add_deployment(dep_id, stream.name)
        self._do(lambda: events)
        self._review(dep_id, self.market.deployments[dep_id].order_ids)

    def _review(self, dep_id: int, order_ids: Iterable[int]) -> None:
        """Start a review loop for the orders no loop is looking after yet.

        The tenant looks at the bids every review window; after its patience, it gives up. An
        order leaves ``tenancy.reviewing`` the moment its loop stops looking after it, so that
        if it reopens later (its lease failed) a new review starts for it.
        """
        tenancy = self.tenancies[dep_id]
        fresh = [o for o in order_ids if o not in tenancy.reviewing]
        if not fresh:
            return
        tenancy.reviewing.update(fresh)
        self._reviews += 1
        serial = self._reviews
        give_up = self.now + tenancy.stream.stream.patience
        self._schedule_look(_Review(dep_id, tenancy, serial, give_up), fresh)

    def _schedule_look(self, review: _Review, waiting: list[int]) -> None:
        # a plain partial, not a closure that schedules itself: no reference cycle (see run)
        window = review.tenancy.stream.stream.review_window
        self._schedule(window, REVIEW, review.serial, partial(self._look_again, review, waiting))

    def _look_again(self, review: _Review, waiting: list[int]) -> None:
        self._touch_stream(review.tenancy.stream)
        still = self._look(review.dep_id, review.tenancy, waiting, review.give_up)
        if still:
            self._schedule_look(review, still)

    def _look(self, dep_id: int, tenancy: _Tenancy, waiting: list[int], give_up: int) -> list[int]:
        """One look at the bids: accept, give up, or keep waiting; returns the orders left."""
        market = self.market
        now = self.now
        dep = market.deployments[dep_id]
        still = []
        for order_id in waiting:
            if dep.state is DeploymentState.CLOSED or (
                market.orders[order_id].state is not OrderState.OPEN
            ):
                tenancy.reviewing.discard(order_id)
                continue
            choice = tenancy.stream.policy.choose(market.bid_views(order_id))
            if choice is not None and dep.state is DeploymentState.ACTIVE:
                tenancy.reviewing.discard(order_id)
                self._do(market.accept_bid, choice.bid_id, now)
            elif now >= give_up:
                tenancy.reviewing.discard(order_id)
                self._do(market.expire_order, order_id, now)
            else:
                still.append(order_id)
        if (
            dep.state is not DeploymentState.CLOSED
            and not still
            and not self._live(dep_id)
            and all(market.orders[o].state is OrderState.CLOSED for o in dep.order_ids)
        ):
            # every order was given up and nothing runs: the tenant walks away
            self._do(market.close_deployment, dep_id, now)
        return still

    def _live(self, dep_id: int) -> bool:
        dep = self.market.deployments[dep_id]
        return any(self.market.leases[i].state is not LeaseState.CLOSED for i in dep.lease_ids)

    def _close(self, dep_id: int) -> None:
        """The tenant closes its deployment now, unless it is closed already."""
        self._touch_stream(self.tenancies[dep_id].stream)
        if self.market.deployments[dep_id].state is not DeploymentState.CLOSED:
            self._do(self.market.close_deployment, dep_id, self.now)

    def _job_end(self, lease_id: int) -> None:
        self._touch_stream(self.tenancies[self.market.leases[lease_id].deployment_id].stream)
        if self.market.leases[lease_id].state is not LeaseState.CLOSED:
            self._do(self.market.finish_job, lease_id, self.now)

    def _top_up(self, dep_id: int, tenancy: _Tenancy) -> None:
        self._touch_stream(tenancy.stream)
        market = self.market
        dep = market.deployments[dep_id]
        if dep.state is not DeploymentState.INSUFFICIENT_FUNDS:
            return
        now = self.now
        amount = market.debt(dep_id) + tenancy.stream.stream.top_up.blocks * (
            tenancy.stream.price_per_block
        )
        self._do(market.credit, dep.tenant_id, amount, now)
        self._do(market.deposit, dep_id, amount, now)


class ExactSimulation(Simulation):
    """The reference engine: SimPy time is the block height; every provider polls every
    ``poll_interval`` blocks from its phase and every round is a SimPy event, whether or not it
    changes anything."""

    engine = "exact"
    records_commands = True

    def __init__(
        self, scenario: Scenario, *, keep_events: bool = False, commands: CommandLog | None = None
    ) -> None:
        super().__init__(scenario, keep_events=keep_events, commands=commands)
        self.env = simpy.Environment()

    @property
    def now(self) -> int:
        return int(self.env.now)

    def _schedule(self, delay: int, rank: int, key: int, action: Action) -> None:
        event = simpy.Event(self.env)
        event._ok = True  # a triggered event, as a Timeout is (simpy.events.Timeout)
        event._value = None
        event.callbacks.append(lambda _: self._act(action))  # type: ignore[union-attr]
        self.env.schedule(event, priority(rank, key), delay)

    def _act(self, action: Action) -> None:
        self.actions += 1
        action()

    def _start(self) -> None:
        for info in self.providers.values():
            self._schedule(info.phase, POLL, info.id, self._poller(info))

    def _poller(self, info: ProviderInfo) -> Action:
        interval = self.scenario.poll_interval

        def poll() -> None:
            self._poll(info)
            self._schedule(interval, POLL, info.id, poll)

        return poll

    def _run_until(self, until: int) -> None:
        self.env.run(until=until)


class FastSimulation(Simulation):
    """The same run as :class:`ExactSimulation`, skipping the polls that cannot change anything.

    A poll changes something only if the provider is online and some open order matches its
    placement, has no bid from it and fits its free capacity: otherwise ``Market.poll`` returns
    no event, draws no random number and changes no state. So this engine keeps, for each
    provider, its *candidates* (open orders it matches and has not bid on), kept up to date from
    the core's events, and schedules a provider's poll (at its next poll block, in the same
    place within the block as the exact engine's) only while one of them fits. Everything else
    is the same code in the same order.

    A provider whose one candidate is an order that just opened (the usual case: most
    providers have nothing else to bid on) does not poll at its time at all: its polls are
    *deferred*, kept with the order's other deferred polls (a cohort), and carried out together
    (``Market.poll_late``) the moment an action could see them or change what they read: any
    action of the same *part* of the market (the providers and streams connected by placement;
    each action says which part it touches, see ``_touch_*``), or the end of the run. A
    provider that gets a second candidate polls at its time again.

    With a compact ledger and no fee (:meth:`defers_rounds`) the market also defers rounds
    (``Market(defer_rounds=True)``): no per-lease work in a round for a deployment whose escrow
    surely covers it; the tables are the same once the run ends with ``Market.flush``.
    """

    engine = "fast"

    @classmethod
    def defers_rounds(cls, scenario: Scenario) -> bool:
        """Rounds are deferred when nothing shows the difference: a compact ledger and no fee."""
        return scenario.record.ledger == "compact" and scenario.fee_bps == 0

    def __init__(
        self, scenario: Scenario, *, keep_events: bool = False, commands: CommandLog | None = None
    ) -> None:
        super().__init__(scenario, keep_events=keep_events, commands=commands)
        self._heap: list[tuple[int, int, int, Action]] = []
        self._seq = 0
        self._now = 0
        self._position = (0, 0)  # (time, priority) of the action being carried out
        self._candidates: dict[int, set[int]] = {pid: set() for pid in self.providers}
        self._poll_at: dict[int, int] = {}  # provider id -> block of its scheduled poll
        self._batches: dict[int, list[int]] = {}  # block -> heap of the providers polling then
        # stream index -> (provider id, its candidates, the provider) for each provider matching
        # the stream's placement, by id
        self._matching: list[list[tuple[int, set[int], Provider]]] = []
        # Deferred polls (see _catch_up): the part of the market each provider and stream
        # belongs to, each part's cohorts of deferred polls as a heap by their next poll (block,
        # provider id, token, cohort), and each deferring provider's (order id, token).
        self._part_of_provider: dict[int, int] = {}
        self._part_of_stream: list[int] = []
        self._deferred: list[list[tuple[int, int, int, _Cohort]]] = []
        self._lazy: dict[int, tuple[int, int]] = {}
        self._tokens = 0
        self._find_parts()
        self.polls = 0  # polls carried out (at their time or late)
        self.deferred_polls = 0  # of those, the ones carried out late

    @property
    def now(self) -> int:
        return self._now

    def _schedule(self, delay: int, rank: int, key: int, action: Action) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self._now + delay, priority(rank, key), self._seq, action))

    def _run_until(self, until: int) -> None:
        heap = self._heap
        while heap and heap[0][0] < until:
            at, prio, _, action = heapq.heappop(heap)
            self._now = at
            self._position = (at, prio)
            self.actions += 1
            action()

    # ------------------------------------------------------------------ polls on demand

    def _find_parts(self) -> None:
        """Each stream's matching providers, and the parts of the market: the providers and
        streams connected by matching (a provider can bid only on its own part's orders)."""
        market = self.market
        parent = list(range(len(self.streams) + len(self.providers)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        pids = sorted(self.providers)
        node = {pid: len(self.streams) + n for n, pid in enumerate(pids)}
        by_group: dict[int, list[int]] = {}
        for pid in pids:
            by_group.setdefault(id(self.providers[pid].group), []).append(pid)
        for index, info in enumerate(self.streams):
            spec = info.manifest.order_specs()[0]
            matching: list[tuple[int, set[int], Provider]] = []
            for members in by_group.values():
                # a group's providers share attributes and GPU models: one check for all
                first = market.providers[members[0]]
                if provider_matches(spec, first.attributes, first.auditors, first.gpu_models):
                    continue
                for pid in members:
                    matching.append((pid, self._candidates[pid], market.providers[pid]))
                    parent[root(node[pid])] = root(index)
            matching.sort(key=lambda entry: entry[0])
            self._matching.append(matching)
        parts: dict[int, int] = {}
        for index in range(len(self.streams)):
            self._part_of_stream.append(parts.setdefault(root(index), len(parts)))
        for pid in pids:
            self._part_of_provider[pid] = parts.setdefault(root(node[pid]), len(parts))
        self._deferred = [[] for _ in parts]

    def _matching_providers(self, order_id: int) -> list[tuple[int, set[int], Provider]]:
        """The providers whose placement an order matches (the same for all of its stream), each
        with its candidates."""
        order = self.market.orders[order_id]
        return self._matching[self.tenancies[order.deployment_id].stream.index]

    def _after(self, events: list[Event]) -> None:
        """Keep candidates and scheduled polls up to date with a command's events."""
        market = self.market
        touched: set[int] = set()
        for event in events:
            kind = type(event)
            if kind is OrderOpened or kind is OrderReopened:
                # a provider with no poll scheduled has no candidate that fits (see _arm), so
                # only this order can arm it
                order_id = event.order_id  # type: ignore[attr-defined]
                needs = market.orders[order_id].resources
                poll_at = self._poll_at
                lazy = self._lazy
                deferring = []
                for pid, mine, provider in self._matching_providers(order_id):
                    mine.add(order_id)
                    if pid in lazy:
                        self._undefer(pid)  # a second candidate: an ordinary poll
                    elif (
                        pid not in poll_at
                        and provider.state is ONLINE
                        and needs.fits_in(provider.free)
                    ):
                        if len(mine) == 1:
                            deferring.append(pid)
                        else:
                            self._schedule_poll(pid)
                if deferring:
                    self._defer(order_id, deferring)
            elif kind is BidsPlaced:
                candidates = self._candidates
                order_id = event.order_id  # type: ignore[attr-defined]
                for pid in event.provider_ids:  # type: ignore[attr-defined]
                    candidates[pid].discard(order_id)
            elif kind is BidsLost:
                touched.update(event.provider_ids)  # type: ignore[attr-defined]
            elif kind is BidPlaced:
                self._candidates[event.provider_id].discard(event.order_id)  # type: ignore[attr-defined]
            elif kind is BidWithdrawn:
                pid = event.provider_id  # type: ignore[attr-defined]
                if market.orders[event.order_id].state is OrderState.OPEN:  # type: ignore[attr-defined]
                    self._candidates[pid].add(event.order_id)  # type: ignore[attr-defined]
                    if pid in self._lazy:
                        self._undefer(pid)
                touched.add(pid)
            elif kind is LeaseClosed or kind is ProviderRecovered:
                touched.add(event.provider_id)  # type: ignore[attr-defined]
            elif kind is LeaseStarted or kind is OrderClosed:
                order_id = event.order_id  # type: ignore[attr-defined]
                lazy = self._lazy
                for pid, mine, _ in self._matching_providers(order_id):
                    mine.discard(order_id)
                    deferred = lazy.get(pid)
                    if deferred is not None and deferred[0] == order_id:
                        # its poll would find nothing: it is not made
                        del lazy[pid], self._poll_at[pid]
        candidates = self._candidates
        for pid in sorted(touched):
            if candidates[pid]:  # else _arm has nothing to schedule
                self._arm(pid)

    def _arm(self, pid: int) -> None:
        """Schedule the provider's next poll if it may bid (and none is scheduled)."""
        candidates = self._candidates[pid]
        if not candidates or pid in self._poll_at:
            return
        provider = self.market.providers[pid]
        if provider.state is not ProviderState.ONLINE:
            return
        free = provider.free
        orders = self.market.orders
        if any(orders[o].resources.fits_in(free) for o in candidates):
            self._schedule_poll(pid)

    def _next_poll(self, pid: int) -> int:
        """The provider's next poll block still to come (this one, if its place in the block is
        not yet passed)."""
        interval = self.scenario.poll_interval
        now = self._now
        at = now + (self.providers[pid].phase - now) % interval
        if at == now and priority(POLL, pid) <= self._position[1] and self._position[0] == now:
            at += interval
        return at

    def _schedule_poll(self, pid: int, at: int | None = None) -> None:
        """Schedule the provider's poll at block ``at`` (default: its next poll block)."""
        if at is None:
            at = self._next_poll(pid)
        now = self._now
        self._poll_at[pid] = at
        batch = self._batches.get(at)
        if batch is None:
            self._batches[at] = [pid]
            self._schedule(at - now, POLL, 0, lambda: self._poll_batch(at))
        else:
            heapq.heappush(batch, pid)

    def _poll_batch(self, at: int) -> None:
        """The polls of block ``at``, by provider id: the last actions of the block.

        Each poll is the exact engine's, at the same place in the block. A poll that only
        placed bids needs no reaction and no rescheduling but its own, so its events are just
        recorded; any other (a deadline the poll's command reached first) goes the full way.
        """
        batch = self._batches[at]
        market = self.market
        candidates = self._candidates
        providers = self.providers
        record = self.recorder.record
        keep = self.keep_events
        poll_at = self._poll_at
        first = priority(POLL, 0)
        part_of = self._part_of_provider
        deferred = self._deferred
        while batch:
            pid = heapq.heappop(batch)
            self._position = (at, first + pid)
            pending = deferred[part_of[pid]]
            if pending and pending[0][0] <= at:
                self._catch_up(pending)
            del poll_at[pid]
            self.polls += 1
            info = providers[pid]
            mine = candidates[pid]
            events = market.poll(pid, info.strategy, info.rng, at, orders=mine)
            if events:
                if all(type(event) is BidPlaced for event in events):
                    record(events)
                    if keep:
                        self.events.extend(events)
                    for event in events:
                        mine.discard(event.order_id)  # type: ignore[attr-defined]
                else:
                    self._handle(events)
            if mine:
                self._arm(pid)
        del self._batches[at]

    # ------------------------------------------------------------------ deferred polls

    def _defer(self, order_id: int, pids: list[int]) -> None:
        """Defer the polls of the providers whose one candidate is ``order_id`` (just opened):
        one cohort, its polls in their order (block, provider id), each provider's next."""
        self._tokens += 1
        token = self._tokens
        mark = (order_id, token)
        lazy, poll_at, infos = self._lazy, self._poll_at, self.providers
        polls = []
        for pid in pids:
            at = self._next_poll(pid)
            lazy[pid] = mark
            poll_at[pid] = at
            info = infos[pid]
            polls.append((at, pid, info.strategy, info.rng))  # as Market.poll_late takes them
        polls.sort()  # by block, then provider id (each provider once: nothing else compared)
        at, pid = polls[0][:2]
        heapq.heappush(
            self._deferred[self._part_of_provider[pid]],
            (at, pid, token, _Cohort(order_id, token, polls)),
        )

    def _undefer(self, pid: int) -> None:
        """A deferring provider's next poll becomes an ordinary scheduled one, at the same block
        (its part has been caught up to now: that poll is still to come)."""
        del self._lazy[pid]
        self._schedule_poll(pid, self._poll_at[pid])

    def _touch_provider(self, provider_id: int) -> None:
        pending = self._deferred[self._part_of_provider[provider_id]]
        if pending:
            self._catch_up(pending)

    def _touch_stream(self, stream: StreamInfo) -> None:
        pending = self._deferred[self._part_of_stream[stream.index]]
        if pending:
            self._catch_up(pending)

    def _touch_all(self) -> None:
        for pending in self._deferred:
            if pending:
                self._catch_up(pending)

    def _finish(self, duration: int) -> None:
        self._position = (duration, 0)
        self._touch_all()

    def _catch_up(self, pending: list[tuple[int, int, int, _Cohort]]) -> None:
        """Carry out a part's deferred polls that come before the action being carried out, as
        the exact engine would have at their time.

        A provider defers its polls while one open order is its only candidate; each action
        that could read or change its part of the market catches that part up first, so what
        such a poll reads (the provider's state and free capacity, the order and its open bids,
        the provider's generator) is what it was at the poll's block. Polls of different orders
        read nothing of each other's, so each order's are carried out together
        (``Market.poll_late``), in their order (block, then provider id): a provider that did
        not bid polls again an interval later, which keeps that order.
        """
        now, place = self._position
        first = priority(POLL, 0)
        due: list[_Cohort] = []
        while pending:
            at, pid, _, cohort = pending[0]
            if at > now or (at == now and first + pid >= place):
                break
            heapq.heappop(pending)
            due.append(cohort)
        market = self.market
        lazy = self._lazy
        poll_at = self._poll_at
        interval = self.scenario.poll_interval
        for cohort in due:
            order_id, mark = cohort.order_id, (cohort.order_id, cohort.token)
            polls: list[tuple[int, int, PricingStrategy, np.random.Generator]] = []
            rest: list[tuple[int, int, PricingStrategy, np.random.Generator]] = []
            for entry in cohort.polls:
                at, pid = entry[0], entry[1]
                if lazy.get(pid) != mark:
                    continue  # it stopped deferring since
                if at < now or (at == now and first + pid < place):
                    polls.append(entry)
                else:
                    rest.append(entry)
            while polls:
                self.polls += len(polls)
                self.deferred_polls += len(polls)
                events, placed = market.poll_late(order_id, polls)
                if events:
                    self._handle(events)
                needs = market.orders[order_id].resources
                again = []
                for (at, pid, strategy, rng), bid in zip(polls, placed, strict=True):
                    if lazy.get(pid) != mark:
                        continue  # the events ended its deferral (the order closed)
                    provider = market.providers[pid]
                    if bid or provider.state is not ONLINE or not needs.fits_in(provider.free):
                        # done, or as _arm: a change to it schedules its next poll
                        del lazy[pid], poll_at[pid]
                        continue
                    at += interval  # it polls again, as the exact engine's would
                    poll_at[pid] = at
                    if at < now or (at == now and first + pid < place):
                        again.append((at, pid, strategy, rng))
                    else:
                        rest.append((at, pid, strategy, rng))
                polls = again
            if rest:
                cohort.polls = rest
                heapq.heappush(pending, (rest[0][0], rest[0][1], cohort.token, cohort))


def make_simulation(
    scenario: Scenario,
    engine: str = "exact",
    *,
    keep_events: bool = False,
    commands: CommandLog | None = None,
) -> Simulation:
    """A simulation of ``scenario`` with the named engine (``auto`` is ``fast``).

    ``commands``: a command log to write the run's commands to (the exact engine only; the
    others raise ``ValueError``)."""
    engines: dict[str, type[Simulation]] = {
        "exact": ExactSimulation,
        "fast": FastSimulation,
        "auto": FastSimulation,
    }
    if engine not in engines:
        raise ValueError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
    return engines[resolve_engine(scenario, engine)](
        scenario, keep_events=keep_events, commands=commands
    )


def resolve_engine(scenario: Scenario, engine: str) -> str:
    """The engine that runs ``scenario`` when ``engine`` is asked for: ``auto`` is ``fast``
    unless the scenario sets a limit that the fast engine cannot defer polls under (then
    ``exact``). Raises ``ValueError`` for ``fast`` with such a limit."""
    needs_exact = scenario.limits.read_by_polls
    if engine == "fast" and needs_exact:
        raise ValueError(
            f"limits.{needs_exact[0]}: the fast engine defers polls, which this limit does not"
            " allow (what a poll reads changes with other orders and with time); run it with"
            " --engine exact (or auto)"
        )
    if engine == "auto":
        return "exact" if needs_exact else "fast"
    return engine


def _ceil(value: float) -> int:
    return max(1, math.ceil(value))


def sample_blocks(dist: Any, rng: np.random.Generator) -> int:
    """One draw of a lifetime or runtime distribution, in whole blocks (at least 1)."""
    kind = dist.distribution
    if kind == "fixed":
        return int(dist.value)
    if kind == "exponential":
        return _ceil(rng.exponential(dist.mean))
    if kind == "uniform":
        return int(rng.integers(dist.low, dist.high, endpoint=True))
    if kind == "lognormal":
        return _ceil(dist.median * math.exp(dist.sigma * rng.standard_normal()))
    raise ValueError(f"unknown distribution {kind!r}")  # the scenario model allows no other


def arrival_times(
    stream: DemandStream, rng: np.random.Generator, duration: int
) -> Generator[int, None, None]:
    """The blocks at which a stream's deployments or jobs arrive, before ``duration``.

    Poisson arrivals are drawn in continuous time and land on the next whole block; a daily
    cycle thins a process at the peak rate (rate x (1 + amplitude)).
    """
    arrivals = stream.arrivals
    if arrivals.process == "scheduled":
        for at in arrivals.at:
            if at < duration:
                yield at
        return
    rate = arrivals.rate / 3600.0  # per block
    cycle = arrivals.daily_cycle
    peak = rate * (1 + cycle.amplitude) if cycle else rate
    t = 0.0
    while True:
        t += rng.exponential(1.0 / peak)
        if math.ceil(t) >= duration:
            return
        if cycle is not None:
            phase = 2 * math.pi * (t - cycle.peak) / 86_400
            accept = (1 + cycle.amplitude * math.cos(phase)) / (1 + cycle.amplitude)
            if rng.random() >= accept:
                continue
        yield math.ceil(t)


def simulate(scenario: Scenario, *, engine: str = "exact", keep_events: bool = False) -> Simulation:
    """Run ``scenario`` with the named engine and return the finished simulation."""
    sim = make_simulation(scenario, engine, keep_events=keep_events)
    sim.run()
    return sim
