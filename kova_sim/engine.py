"""The ``exact`` engine: the core under a SimPy clock, every poll and round a SimPy event.

Theory of operation
-------------------
SimPy time is the block height (integers only). One :class:`kova_core.Market` holds the state;
SimPy processes issue its commands at their heights and the engine reads the events each command
returns:

- **settlement**: a process ticks the market at every ``settlement_interval``-th block. (The
  core also catches up any round due before a command, so a command at a round's block always
  sees that round done first, whichever process SimPy runs first.)
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

Every random draw comes from a generator seeded from the scenario's seed and keyed by what it is
for (a provider's phase, its prices, its failures; a stream's arrivals, durations, top-ups), so
the same scenario and seed give the same run, and changing one group or stream leaves the others'
draws alone (:func:`generator`).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import simpy

from kova_core import (
    DeploymentPaused,
    DeploymentState,
    Event,
    LeaseStarted,
    LeaseState,
    Manifest,
    Market,
    OrderReopened,
    OrderState,
    PricingStrategy,
    SelectionPolicy,
    parse_manifest,
)

from .recorder import Recorder
from .scenario import DemandStream, ProviderGroup, Scenario

__all__ = ["ENGINES", "ProviderInfo", "Simulation", "StreamInfo", "simulate"]

ENGINES = ("exact",)
"""The engines ``kova-sim run --engine`` accepts."""

Process = Generator[simpy.Event, Any, None]


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
    arrivals: int = 0


@dataclass(slots=True)
class _Tenancy:
    """What the engine knows of one deployment or job beyond the market's records."""

    stream: StreamInfo
    duration: int  # lifetime (deployment) or runtime (job), in blocks
    started: bool = False
    reviewing: set[int] = field(default_factory=set)  # orders a review loop is looking after


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


class Simulation:
    """One run of a scenario with the exact engine.

    ``keep_events`` keeps every core event (for traces and tests; large runs should not).
    """

    def __init__(self, scenario: Scenario, *, keep_events: bool = False) -> None:
        self.scenario = scenario
        self.env = simpy.Environment()
        self.market = Market(
            fee_bps=scenario.fee_bps, settlement_interval=scenario.settlement_interval
        )
        self.recorder = Recorder(self.market, scenario.duration)
        self.keep_events = keep_events
        self.events: list[Event] = []
        self.providers: dict[int, ProviderInfo] = {}
        self.streams: list[StreamInfo] = []
        self.tenancies: dict[int, _Tenancy] = {}
        self.wall_seconds = 0.0
        self._ran = False
        seed = scenario.seed
        for group in scenario.providers:
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
                    strategy=group.pricing.build(group.costs),
                    rng=generator(seed, *key, _PRICING),
                    failure_rng=generator(seed, *key, _FAILURES),
                    phase=phase,
                )
                self.recorder.add_provider(pid, group, phase)
        for stream in scenario.demand:
            manifest = parse_manifest(manifest_for(stream, scenario.duration))
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
                )
            )

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
        env = self.env
        env.process(self._settlement())
        for info in self.providers.values():
            env.process(self._poller(info))
            if info.group.failures is not None:
                env.process(self._failures(info))
        for info in self.streams:
            env.process(self._arrivals(info))
        duration = self.scenario.duration
        step = step or duration
        now = 0
        while now < duration:
            now = min(duration, now + step)
            env.run(until=now)
            if progress is not None:
                progress(now, duration)
        self._do(self.market.tick, duration)
        self.wall_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ commands and reactions

    def _do(self, command: Callable[..., list[Event]], *args: Any) -> list[Event]:
        events = command(*args)
        if events:
            self.recorder.record(events)
            if self.keep_events:
                self.events.extend(events)
            for event in events:
                react = self._reactions.get(type(event))
                if react is not None:
                    react(self, event)
        return events

    def _on_lease_started(self, event: LeaseStarted) -> None:
        tenancy = self.tenancies[event.deployment_id]
        if tenancy.stream.stream.kind == "job":
            self.env.process(self._job_run(event.lease_id, tenancy.duration))
        elif not tenancy.started:
            tenancy.started = True
            self.env.process(self._lifetime(event.deployment_id, tenancy.duration))

    def _on_paused(self, event: DeploymentPaused) -> None:
        tenancy = self.tenancies[event.deployment_id]
        top_up = tenancy.stream.stream.top_up
        draw = tenancy.stream.top_up_rng.random() if top_up.policy == "when-paused" else 1.0
        if draw < top_up.probability:
            self.env.process(self._top_up(event.deployment_id, tenancy))

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

    # ------------------------------------------------------------------ processes

    def _settlement(self) -> Process:
        interval = self.scenario.settlement_interval
        while True:
            yield self.env.timeout(interval)
            self._do(self.market.tick, int(self.env.now))

    def _poller(self, info: ProviderInfo) -> Process:
        env, market, interval = self.env, self.market, self.scenario.poll_interval
        yield env.timeout(info.phase)
        while True:
            self._do(market.poll, info.id, info.strategy, info.rng, int(env.now))
            yield env.timeout(interval)

    def _failures(self, info: ProviderInfo) -> Process:
        failures = info.group.failures
        assert failures is not None
        while True:
            yield self.env.timeout(_ceil(info.failure_rng.exponential(failures.mtbf)))
            info.failures += 1
            self._do(self.market.fail_provider, info.id, int(self.env.now))
            yield self.env.timeout(_ceil(info.failure_rng.exponential(failures.mttr)))
            self._do(self.market.recover_provider, info.id, int(self.env.now))

    def _arrivals(self, info: StreamInfo) -> Process:
        for at in arrival_times(info.stream, info.arrival_rng, self.scenario.duration):
            if at > self.env.now:
                yield self.env.timeout(at - self.env.now)
            self._arrive(info)

    def _arrive(self, info: StreamInfo) -> None:
        stream = info.stream
        tenant = info.tenant_ids[info.arrivals % len(info.tenant_ids)]
        info.arrivals += 1
        duration = sample_blocks(stream.lifetime or stream.runtime, info.duration_rng)
        deposit = stream.deposit.blocks * info.price_per_block
        now = int(self.env.now)
        self._do(self.market.credit, tenant, deposit, now)
        events = self.market.create_deployment(tenant, info.manifest, deposit, now)
        dep_id = events[0].deployment_id  # type: ignore[attr-defined]
        self.tenancies[dep_id] = _Tenancy(stream=info, duration=duration)
        self.recorder.add_deployment(dep_id, stream.name)
        self._do(lambda: events)
        self._review(dep_id, self.market.deployments[dep_id].order_ids)

    def _review(self, dep_id: int, order_ids: Iterable[int]) -> None:
        tenancy = self.tenancies[dep_id]
        fresh = [o for o in order_ids if o not in tenancy.reviewing]
        if fresh:
            tenancy.reviewing.update(fresh)
            self.env.process(self._reviewer(dep_id, fresh, tenancy))

    def _reviewer(self, dep_id: int, order_ids: list[int], tenancy: _Tenancy) -> Process:
        """The tenant looks at the bids every review window; after its patience, gives up.

        An order leaves ``tenancy.reviewing`` the moment this loop stops looking after it, so
        that if it reopens later (its lease failed) a new review starts for it.
        """
        stream = tenancy.stream.stream
        market = self.market
        give_up = int(self.env.now) + stream.patience
        waiting = list(order_ids)
        while waiting:
            yield self.env.timeout(stream.review_window)
            now = int(self.env.now)
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
            waiting = still
            if (
                dep.state is not DeploymentState.CLOSED
                and not waiting
                and not self._live(dep_id)
                and all(market.orders[o].state is OrderState.CLOSED for o in dep.order_ids)
            ):
                # every order was given up and nothing runs: the tenant walks away
                self._do(market.close_deployment, dep_id, now)

    def _live(self, dep_id: int) -> bool:
        dep = self.market.deployments[dep_id]
        return any(self.market.leases[i].state is not LeaseState.CLOSED for i in dep.lease_ids)

    def _lifetime(self, dep_id: int, lifetime: int) -> Process:
        yield self.env.timeout(lifetime)
        self._close(dep_id)

    def _close(self, dep_id: int) -> None:
        """The tenant closes its deployment now, unless it is closed already."""
        if self.market.deployments[dep_id].state is not DeploymentState.CLOSED:
            self._do(self.market.close_deployment, dep_id, int(self.env.now))

    def _job_run(self, lease_id: int, runtime: int) -> Process:
        yield self.env.timeout(runtime)
        if self.market.leases[lease_id].state is not LeaseState.CLOSED:
            self._do(self.market.finish_job, lease_id, int(self.env.now))

    def _top_up(self, dep_id: int, tenancy: _Tenancy) -> Process:
        top_up = tenancy.stream.stream.top_up
        if top_up.delay:
            yield self.env.timeout(top_up.delay)
        market = self.market
        dep = market.deployments[dep_id]
        if dep.state is not DeploymentState.INSUFFICIENT_FUNDS:
            return
        now = int(self.env.now)
        amount = market.debt(dep_id) + top_up.blocks * tenancy.stream.price_per_block
        self._do(market.credit, dep.tenant_id, amount, now)
        self._do(market.deposit, dep_id, amount, now)


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


def simulate(scenario: Scenario, *, keep_events: bool = False) -> Simulation:
    """Run ``scenario`` with the exact engine and return the finished simulation."""
    sim = Simulation(scenario, keep_events=keep_events)
    sim.run()
    return sim
