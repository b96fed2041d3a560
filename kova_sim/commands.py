"""Command logs: the commands a simulation issues to the core, for another driver to replay.

A run of the exact engine is a sequence of commands to one :class:`kova_core.Market`, each at a
block height. ``kova-sim run --record-commands`` writes that sequence to ``commands.jsonl`` in
the run folder, so that a different driver (the live orchestrator, over HTTP) can issue the
same commands at the same heights and must end with the same ledger, leases and escrows. The
format is in ``docs/simulator.md`` ("Recording the commands"); in short, JSON Lines, keys
sorted, compact separators, deterministic bytes:

- line 1, the header: ``{"format": "kova-commands", "version": 1, "settlement_interval",
  "fee_bps", "accepted_denoms", "limits", "duration", "seed"}``: the network's settings
  (``limits``: the fields of ``kova_core.Limits``; a log without them has none), the run's
  length and its seed;
- then one line per command, in the order the engine issued them: ``{"seq", "height",
  "command", ...arguments..., ...results...}``, ``seq`` counting from 1 (line ``seq + 1``).
  Results are the ids the market assigned (``deployment_id`` and ``order_ids``, ``bid_id``,
  ``lease_id``; a registration's ``tenant_id`` or ``provider_id``), so a replayer can map them
  to its own. A command the market refused (a :class:`kova_core.KovaError`) is written with
  ``"error": "<class name>"`` and no results.

What is written, and why:

- **Polls are written as the bids they placed**: one ``place_bid`` line per ``BidPlaced`` event
  a ``Market.poll`` returned (a poll that placed nothing writes nothing). On a live network the
  pricing strategy runs in the provider's agent, and what reaches the orchestrator are bids.
- **Ticks** are written as the engine issues them (rounds, job deadlines, and the last one, at
  the run's ``duration``): a command catches up every round and deadline up to its height
  anyway, so the ticks between commands change nothing a replay ends with, but the last one is
  how a replayer knows where the clock stops. ``Market.flush`` (no height; a no-op unless rounds
  are deferred, which the exact engine never does) is not written.
- **Only the exact engine can be recorded.** The fast engine carries polls out late, at heights
  already passed (``Market.poll_late``); a log of them would go back in time.
  :class:`RecordingMarket` refuses ``poll_late`` and the commands the format has no line for
  (``withdraw``, ``settle_deployment``) rather than leave a gap in the history.

:class:`RecordingMarket` stands in for the market it wraps: each command it is given is issued
to the market, then written (after the market answers, with the ids it assigned; before the
engine reacts to the events, so the engine's reactions come after it in the log). So a command
issued directly and handed to the engine's event handling later (``_arrive``'s
``create_deployment``) is written once, when it is issued. Everything else (the records and
queries) is read through from the market. When a run does not record, the engine talks to a
plain ``Market``: recording costs nothing then.

:func:`read_commands` reads a log back, checking every line (a malformed one is an error naming
the line); :func:`replay_into` issues a log's commands to a fresh market, mapping ids, and
checks that each outcome (the ids assigned, a refusal and its class) is the recorded one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, cast

from kova_core import (
    BidPlaced,
    CloseReason,
    DeploymentCreated,
    Event,
    KovaError,
    LeaseStarted,
    Limits,
    Manifest,
    Market,
    OrderOpened,
    Resources,
    parse_manifest,
)

__all__ = [
    "FILE_NAME",
    "FORMAT",
    "VERSION",
    "CommandLog",
    "CommandsError",
    "RecordingMarket",
    "ReplayError",
    "dumps",
    "market_for",
    "read_commands",
    "replay_into",
]

FORMAT = "kova-commands"
VERSION = 1
FILE_NAME = "commands.jsonl"
"""The log's name in a run folder."""


def dumps(value: Any) -> str:
    """One line of a log: JSON with sorted keys and compact separators (deterministic bytes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class CommandsError(ValueError):
    """A command log is malformed; the message names the file and the line."""


class ReplayError(Exception):
    """A replay went another way than the log says; the message names the command's ``seq``."""


# --------------------------------------------------------------------------- writing


class CommandLog:
    """Writes a command log to an open text file, one line per command.

    :meth:`record` writes the header and returns the market to drive; the engine also tells the
    log what each manifest was parsed from (:meth:`manifest_source`), since ``create_deployment``
    is given the parsed :class:`kova_core.Manifest` and the log holds the manifest a tenant
    submits.
    """

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._seq = 0
        # id(manifest) -> (the manifest, kept alive so that its id stays its own; its source)
        self._sources: dict[int, tuple[Manifest, dict[str, Any]]] = {}

    @property
    def commands(self) -> int:
        """Commands written so far."""
        return self._seq

    def record(self, market: Market, *, duration: int, seed: int) -> Market:
        """Write the header (``market``'s settings, the run's duration and seed) and return the
        market to drive instead of ``market``: a :class:`RecordingMarket` around it."""
        if self._seq or market.tenants or market.providers or market.height:
            raise ValueError("a command log records a fresh market, from its first command")
        denoms = market.accepted_denoms
        header = {
            "format": FORMAT,
            "version": VERSION,
            "settlement_interval": market.settlement_interval,
            "fee_bps": market.fee_bps,
            "accepted_denoms": None if denoms is None else sorted(denoms),
            "limits": dataclasses.asdict(market.limits),
            "duration": duration,
            "seed": seed,
        }
        self._file.write(dumps(header) + "\n")
        # it stands for a Market: everything it does not record it reads through
        return cast(Market, RecordingMarket(market, self))

    def manifest_source(self, manifest: Manifest, source: Mapping[str, Any]) -> None:
        """Say what ``manifest`` was parsed from: the JSON object a deployment's line holds."""
        self._sources[id(manifest)] = (manifest, json.loads(json.dumps(source)))

    def source_of(self, manifest: Manifest) -> dict[str, Any]:
        """The source of a manifest given to :meth:`manifest_source`."""
        known = self._sources.get(id(manifest))
        if known is None or known[0] is not manifest:
            raise ValueError(
                "create_deployment was given a manifest whose source the command log was not"
                " told (CommandLog.manifest_source)"
            )
        return known[1]

    def write(self, height: int, command: str, fields: dict[str, Any]) -> None:
        """Write one command's line (``seq`` is the next one)."""
        self._seq += 1
        line = {"seq": self._seq, "height": height, "command": command, **fields}
        self._file.write(dumps(line) + "\n")


def _one(events: list[Event], kind: type[Event]) -> Any:
    """The (last) event of a kind among a command's events (catch-up events come first)."""
    for event in reversed(events):
        if type(event) is kind:
            return event
    raise RuntimeError(f"the market's answer has no {kind.__name__} event")  # pragma: no cover


def _order_ids(events: list[Event], deployment_id: int) -> list[int]:
    return [
        e.order_id for e in events if type(e) is OrderOpened and e.deployment_id == deployment_id
    ]


class RecordingMarket:
    """A :class:`kova_core.Market` whose commands are written to a :class:`CommandLog`.

    Each command is issued to the wrapped market and written once it answers (with the ids it
    assigned), or with ``error`` if the market refused it (the error is raised again). Records
    and queries are read through. Make one with :meth:`CommandLog.record`.
    """

    __slots__ = ("_log", "market")

    def __init__(self, market: Market, log: CommandLog) -> None:
        self.market = market
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self.market, name)

    def _issue(
        self, command: str, height: int, fields: dict[str, Any], call: Callable[..., Any],
        *args: Any, **kwargs: Any,
    ) -> Any:  # fmt: skip
        """Issue a command; if the market refuses it, write it with its error and raise."""
        try:
            return call(*args, **kwargs)
        except KovaError as exc:
            self._log.write(height, command, {**fields, "error": type(exc).__name__})
            raise

    def _plain(
        self, command: str, height: int, fields: dict[str, Any], call: Callable[..., list[Event]],
        *args: Any, **kwargs: Any,
    ) -> list[Event]:  # fmt: skip
        """Issue and write a command that has no result."""
        events = self._issue(command, height, fields, call, *args, **kwargs)
        self._log.write(height, command, fields)
        return cast(list[Event], events)

    # ------------------------------------------------------------------ registration

    def add_tenant(self, name: str = "") -> int:
        height = self.market.height
        fields: dict[str, Any] = {"name": name}
        tenant_id = self._issue("add_tenant", height, fields, self.market.add_tenant, name)
        self._log.write(height, "add_tenant", {**fields, "tenant_id": tenant_id})
        return cast(int, tenant_id)

    def add_provider(
        self,
        *,
        capacity: Resources,
        name: str = "",
        attributes: Mapping[str, str] | None = None,
        auditors: Iterable[str] = (),
        gpu_models: Iterable[str] = (),
    ) -> int:
        height = self.market.height
        auditors, gpu_models = tuple(auditors), tuple(gpu_models)
        fields: dict[str, Any] = {
            "name": name,
            "capacity": capacity._asdict(),
            "attributes": dict(attributes or {}),
            "auditors": sorted(auditors),
            "gpu_models": sorted(gpu_models),
        }
        provider_id = self._issue(
            "add_provider", height, fields, self.market.add_provider,
            capacity=capacity, name=name, attributes=attributes, auditors=auditors,
            gpu_models=gpu_models,
        )  # fmt: skip
        self._log.write(height, "add_provider", {**fields, "provider_id": provider_id})
        return cast(int, provider_id)

    # ------------------------------------------------------------------ tenants

    def credit(self, tenant_id: int, amount: int, height: int) -> list[Event]:
        fields = {"tenant_id": tenant_id, "amount": amount}
        return self._plain("credit", height, fields, self.market.credit, tenant_id, amount, height)

    def create_deployment(
        self, tenant_id: int, manifest: Manifest, deposit: int, height: int
    ) -> list[Event]:
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "manifest": self._log.source_of(manifest),
            "deposit": deposit,
        }
        events: list[Event] = self._issue(
            "create_deployment", height, fields, self.market.create_deployment,
            tenant_id, manifest, deposit, height,
        )  # fmt: skip
        dep_id = _one(events, DeploymentCreated).deployment_id
        fields["deployment_id"] = dep_id
        fields["order_ids"] = _order_ids(events, dep_id)
        self._log.write(height, "create_deployment", fields)
        return events

    def deposit(self, deployment_id: int, amount: int, height: int) -> list[Event]:
        fields = {"deployment_id": deployment_id, "amount": amount}
        call = self.market.deposit
        return self._plain("deposit", height, fields, call, deployment_id, amount, height)

    def accept_bid(self, bid_id: int, height: int) -> list[Event]:
        fields: dict[str, Any] = {"bid_id": bid_id}
        events: list[Event] = self._issue(
            "accept_bid", height, fields, self.market.accept_bid, bid_id, height
        )
        fields["lease_id"] = _one(events, LeaseStarted).lease_id
        self._log.write(height, "accept_bid", fields)
        return events

    def expire_order(self, order_id: int, height: int) -> list[Event]:
        fields = {"order_id": order_id}
        return self._plain(
            "expire_order", height, fields, self.market.expire_order, order_id, height
        )

    def close_deployment(self, deployment_id: int, height: int) -> list[Event]:
        fields = {"deployment_id": deployment_id}
        call = self.market.close_deployment
        return self._plain("close_deployment", height, fields, call, deployment_id, height)

    def finish_job(self, lease_id: int, height: int, *, succeeded: bool = True) -> list[Event]:
        fields = {"lease_id": lease_id, "succeeded": succeeded}
        call = self.market.finish_job
        return self._plain(
            "finish_job", height, fields, call, lease_id, height, succeeded=succeeded
        )

    # ------------------------------------------------------------------ providers

    def place_bid(self, order_id: int, provider_id: int, price: int, height: int) -> list[Event]:
        fields: dict[str, Any] = {"order_id": order_id, "provider_id": provider_id, "price": price}
        events: list[Event] = self._issue(
            "place_bid", height, fields, self.market.place_bid,
            order_id, provider_id, price, height,
        )  # fmt: skip
        fields["bid_id"] = _one(events, BidPlaced).bid_id
        self._log.write(height, "place_bid", fields)
        return events

    def poll(
        self, provider_id: int, strategy: Any, rng: Any, height: int, **kwargs: Any
    ) -> list[Event]:
        """A poll is written as the bids it placed, one ``place_bid`` line each, in its order.

        (A poll the market refuses, for an unknown provider or a bad height, placed nothing and
        writes nothing: on a live network it never leaves the provider's agent.)
        """
        events = self.market.poll(provider_id, strategy, rng, height, **kwargs)
        write = self._log.write
        for event in events:
            if type(event) is BidPlaced:
                write(event.height, "place_bid", {
                    "order_id": event.order_id, "provider_id": event.provider_id,
                    "price": event.price, "bid_id": event.bid_id,
                })  # fmt: skip
        return events

    def withdraw_bid(self, bid_id: int, height: int) -> list[Event]:
        fields = {"bid_id": bid_id}
        return self._plain("withdraw_bid", height, fields, self.market.withdraw_bid, bid_id, height)

    def fail_lease(
        self, lease_id: int, height: int, reason: CloseReason = CloseReason.CONTAINER_FAILED
    ) -> list[Event]:
        fields = {"lease_id": lease_id, "reason": str(reason)}
        call = self.market.fail_lease
        return self._plain("fail_lease", height, fields, call, lease_id, height, reason)

    def fail_provider(self, provider_id: int, height: int) -> list[Event]:
        fields = {"provider_id": provider_id}
        call = self.market.fail_provider
        return self._plain("fail_provider", height, fields, call, provider_id, height)

    def recover_provider(self, provider_id: int, height: int) -> list[Event]:
        fields = {"provider_id": provider_id}
        call = self.market.recover_provider
        return self._plain("recover_provider", height, fields, call, provider_id, height)

    # ------------------------------------------------------------------ the clock

    def tick(self, height: int) -> list[Event]:
        return self._plain("tick", height, {}, self.market.tick, height)

    # ------------------------------------------------------------------ not recordable

    def poll_late(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "Market.poll_late cannot be recorded: late polls happen at heights already passed"
            " (record the exact engine's runs, whose polls are all on time)"
        )

    def withdraw(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the command log has no line for Market.withdraw")

    def settle_deployment(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the command log has no line for Market.settle_deployment")


# --------------------------------------------------------------------------- reading

# What each kind of field holds.
_ID, _AMOUNT, _BOOL, _STR, _OBJECT, _CAPACITY, _ATTRIBUTES, _STRINGS, _IDS = range(9)

_COMMON = {"seq", "height", "command", "error"}

# command -> (its arguments, its results), each field -> what it holds
_FIELDS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "add_tenant": ({"name": _STR}, {"tenant_id": _ID}),
    "add_provider": (
        {
            "name": _STR,
            "capacity": _CAPACITY,
            "attributes": _ATTRIBUTES,
            "auditors": _STRINGS,
            "gpu_models": _STRINGS,
        },
        {"provider_id": _ID},
    ),
    "credit": ({"tenant_id": _ID, "amount": _AMOUNT}, {}),
    "create_deployment": (
        {"tenant_id": _ID, "manifest": _OBJECT, "deposit": _AMOUNT},
        {"deployment_id": _ID, "order_ids": _IDS},
    ),
    "deposit": ({"deployment_id": _ID, "amount": _AMOUNT}, {}),
    "place_bid": ({"order_id": _ID, "provider_id": _ID, "price": _AMOUNT}, {"bid_id": _ID}),
    "withdraw_bid": ({"bid_id": _ID}, {}),
    "accept_bid": ({"bid_id": _ID}, {"lease_id": _ID}),
    "expire_order": ({"order_id": _ID}, {}),
    "close_deployment": ({"deployment_id": _ID}, {}),
    "finish_job": ({"lease_id": _ID, "succeeded": _BOOL}, {}),
    "fail_lease": ({"lease_id": _ID, "reason": _STR}, {}),
    "fail_provider": ({"provider_id": _ID}, {}),
    "recover_provider": ({"provider_id": _ID}, {}),
    "tick": ({}, {}),
}
COMMANDS = tuple(_FIELDS)
"""The commands a log may hold."""

_HEADER = {
    "format": _STR,
    "version": _ID,
    "settlement_interval": _ID,
    "fee_bps": _AMOUNT,
    "duration": _AMOUNT,
    "seed": _AMOUNT,
    "accepted_denoms": _STRINGS,  # or null
    "limits": _OBJECT,  # kova_core.Limits' fields; optional (logs before it have none: no limits)
}
_OPTIONAL = {"limits"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(kind: int, value: Any) -> str | None:
    """What is wrong with a field's value, or None."""
    if kind in (_ID, _AMOUNT):
        return None if _is_int(value) else "an integer"
    if kind == _BOOL:
        return None if isinstance(value, bool) else "true or false"
    if kind == _STR:
        return None if isinstance(value, str) else "a string"
    if kind == _OBJECT:
        return None if isinstance(value, dict) else "an object"
    if kind == _CAPACITY:
        ok = isinstance(value, dict) and sorted(value) == sorted(Resources._fields)
        if ok and all(_is_int(v) for v in value.values()):
            return None
        return f"an object of integers {', '.join(Resources._fields)}"
    if kind == _ATTRIBUTES:
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return None if ok else "an object of strings"
    if kind == _STRINGS:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "a list of strings"
    if kind == _IDS:
        ok = isinstance(value, list) and all(_is_int(v) for v in value)
        return None if ok else "a list of integers"
    raise AssertionError(kind)  # pragma: no cover


def _check_header(line: Any) -> str | None:
    if not isinstance(line, dict):
        return "the header is not a JSON object"
    if line.get("format") != FORMAT:
        return f"not a command log: the header's format is {line.get('format')!r}, not {FORMAT!r}"
    if line.get("version") != VERSION:
        return f"version {line.get('version')!r} is not supported (this reader reads {VERSION})"
    missing = [k for k in _HEADER if k not in line and k not in _OPTIONAL]
    if missing:
        return f"the header lacks {', '.join(missing)}"
    extra = sorted(set(line) - set(_HEADER))
    if extra:
        return f"the header has unknown fields: {', '.join(extra)}"
    for key, kind in _HEADER.items():
        if key not in line or (key == "accepted_denoms" and line[key] is None):
            continue
        wrong = _problem(kind, line[key])
        if wrong:
            return f"the header's {key} must be {wrong}, got {line[key]!r}"
    if "limits" in line:
        try:
            Limits(**line["limits"])
        except (TypeError, KovaError) as exc:
            return f"the header's limits are not kova_core.Limits: {exc}"
    return None


def _check_command(line: Any, seq: int) -> str | None:
    if not isinstance(line, dict):
        return "not a JSON object"
    if line.get("seq") != seq or not _is_int(line.get("seq")):
        got = line.get("seq")
        return f"seq must be {seq} (commands are numbered from 1, in order), got {got!r}"
    height = line.get("height")
    if not _is_int(height) or height < 0:
        return f"height must be a non-negative integer, got {height!r}"
    command = line.get("command")
    if command not in _FIELDS:
        return f"unknown command {command!r} (known: {', '.join(COMMANDS)})"
    arguments, results = _FIELDS[command]
    error = line.get("error")
    if "error" in line and not (isinstance(error, str) and error):
        return f"error must be the name of an exception class, got {error!r}"
    wanted = arguments if error is not None else {**arguments, **results}
    missing = [k for k in wanted if k not in line]
    if missing:
        return f"{command} lacks {', '.join(missing)}"
    extra = sorted(set(line) - set(wanted) - _COMMON)
    if extra:
        also = " (a refused command has no results)" if error is not None else ""
        return f"{command} has unknown fields: {', '.join(extra)}{also}"
    for key, kind in wanted.items():
        wrong = _problem(kind, line[key])
        if wrong:
            return f"{command}'s {key} must be {wrong}, got {line[key]!r}"
    return None


def read_commands(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a command log: its header and its commands, each checked.

    Raises :class:`CommandsError` naming the file and the line of the first problem (not JSON,
    not an object, an unknown command, a missing or mistyped field, ``seq`` out of order, a
    header of another format or version), and ``OSError`` if the file cannot be read.
    """
    path = Path(path)
    header: dict[str, Any] | None = None
    commands: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as file:
        for number, text in enumerate(file, start=1):
            where = f"{path}, line {number}"
            try:
                line = json.loads(text)
            except ValueError as exc:
                raise CommandsError(f"{where}: not JSON ({exc})") from None
            problem = _check_header(line) if number == 1 else _check_command(line, number - 1)
            if problem:
                raise CommandsError(f"{where}: {problem}")
            if number == 1:
                header = line
            else:
                commands.append(line)
    if header is None:
        raise CommandsError(f"{path}: empty; a command log starts with its header line")
    return header, commands


# --------------------------------------------------------------------------- replaying

_KINDS = ("tenant", "provider", "deployment", "order", "bid", "lease")


def market_for(header: Mapping[str, Any]) -> Market:
    """A fresh market with a log's settings (fee, settlement interval, accepted denominations)."""
    return Market(
        fee_bps=header["fee_bps"],
        settlement_interval=header["settlement_interval"],
        accepted_denoms=header["accepted_denoms"],
        limits=Limits(**header.get("limits", {})),
    )


class _Replay:
    """Issues a log's commands to a market, mapping the log's ids to the market's."""

    def __init__(self, market: Market, header: Mapping[str, Any]) -> None:
        self.market = market
        self.denoms = header["accepted_denoms"]
        self.ids: dict[str, dict[int, int]] = {kind: {} for kind in _KINDS}
        self._taken: dict[str, set[int]] = {kind: set() for kind in _KINDS}
        self._manifests: dict[str, Manifest] = {}
        self.line: dict[str, Any] = {}

    def fail(self, message: str) -> ReplayError:
        line = self.line
        return ReplayError(f"seq {line['seq']} ({line['command']} at {line['height']}): {message}")

    def mapped(self, kind: str, field: str) -> int:
        """The market's id for the log's id in ``field``."""
        logged = self.line[field]
        mine = self.ids[kind].get(logged)
        if mine is not None:
            return mine
        if "error" in self.line:
            return 0  # no market assigns 0: the market refuses it as the recorded one did
        raise self.fail(f"names {kind} {logged}, which no earlier command introduced")

    def bind(self, kind: str, logged: int, mine: int) -> None:
        """The market assigned ``mine`` where the log's run assigned ``logged``."""
        if logged in self.ids[kind]:
            raise self.fail(f"{kind} {logged} was introduced by an earlier command")
        if mine in self._taken[kind]:
            raise self.fail(f"the market assigned {kind} {mine} a second time")
        self.ids[kind][logged] = mine
        self._taken[kind].add(mine)

    def manifest(self, source: dict[str, Any]) -> Manifest:
        key = dumps(source)
        manifest = self._manifests.get(key)
        if manifest is None:
            manifest = parse_manifest(source, accepted_denoms=self.denoms)
            self._manifests[key] = manifest
        return manifest

    def issue(self, line: dict[str, Any]) -> None:
        self.line = line
        command, error = line["command"], line.get("error")
        try:
            answer = getattr(self, f"_{command}")(line, line["height"])
        except KovaError as exc:
            got = type(exc).__name__
            if error is None:
                raise self.fail(f"the market refused it: {got}: {exc}") from exc
            if got != error:
                raise self.fail(
                    f"recorded as refused with {error}, the market raised {got}: {exc}"
                ) from exc
            return
        except ValueError as exc:  # arguments the market cannot take (a bad fail_lease reason)
            raise self.fail(str(exc)) from exc
        if error is not None:
            raise self.fail(f"recorded as refused with {error}, the market accepted it")
        self._results(line, answer)

    def _results(self, line: dict[str, Any], answer: Any) -> None:
        command = line["command"]
        if command == "add_tenant":
            self.bind("tenant", line["tenant_id"], answer)
        elif command == "add_provider":
            self.bind("provider", line["provider_id"], answer)
        elif command == "create_deployment":
            dep_id = _one(answer, DeploymentCreated).deployment_id
            self.bind("deployment", line["deployment_id"], dep_id)
            orders = _order_ids(answer, dep_id)
            if len(orders) != len(line["order_ids"]):
                raise self.fail(f"{len(orders)} orders opened, not {len(line['order_ids'])}")
            for logged, mine in zip(line["order_ids"], orders, strict=True):
                self.bind("order", logged, mine)
        elif command == "place_bid":
            self.bind("bid", line["bid_id"], _one(answer, BidPlaced).bid_id)
        elif command == "accept_bid":
            self.bind("lease", line["lease_id"], _one(answer, LeaseStarted).lease_id)

    # one method per command: issue it with the market's ids; return the market's answer

    def _add_tenant(self, line: dict[str, Any], height: int) -> int:
        return self.market.add_tenant(line["name"])

    def _add_provider(self, line: dict[str, Any], height: int) -> int:
        return self.market.add_provider(
            capacity=Resources(**line["capacity"]),
            name=line["name"],
            attributes=line["attributes"],
            auditors=line["auditors"],
            gpu_models=line["gpu_models"],
        )

    def _credit(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.credit(self.mapped("tenant", "tenant_id"), line["amount"], height)

    def _create_deployment(self, line: dict[str, Any], height: int) -> list[Event]:
        tenant_id = self.mapped("tenant", "tenant_id")
        manifest = self.manifest(line["manifest"])  # a ManifestError is the command's refusal
        return self.market.create_deployment(tenant_id, manifest, line["deposit"], height)

    def _deposit(self, line: dict[str, Any], height: int) -> list[Event]:
        dep_id = self.mapped("deployment", "deployment_id")
        return self.market.deposit(dep_id, line["amount"], height)

    def _place_bid(self, line: dict[str, Any], height: int) -> list[Event]:
        order_id = self.mapped("order", "order_id")
        provider_id = self.mapped("provider", "provider_id")
        return self.market.place_bid(order_id, provider_id, line["price"], height)

    def _withdraw_bid(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.withdraw_bid(self.mapped("bid", "bid_id"), height)

    def _accept_bid(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.accept_bid(self.mapped("bid", "bid_id"), height)

    def _expire_order(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.expire_order(self.mapped("order", "order_id"), height)

    def _close_deployment(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.close_deployment(self.mapped("deployment", "deployment_id"), height)

    def _finish_job(self, line: dict[str, Any], height: int) -> list[Event]:
        lease_id = self.mapped("lease", "lease_id")
        return self.market.finish_job(lease_id, height, succeeded=line["succeeded"])

    def _fail_lease(self, line: dict[str, Any], height: int) -> list[Event]:
        lease_id = self.mapped("lease", "lease_id")
        return self.market.fail_lease(lease_id, height, CloseReason(line["reason"]))

    def _fail_provider(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.fail_provider(self.mapped("provider", "provider_id"), height)

    def _recover_provider(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.recover_provider(self.mapped("provider", "provider_id"), height)

    def _tick(self, line: dict[str, Any], height: int) -> list[Event]:
        return self.market.tick(height)


def replay_into(
    market: Market, header: Mapping[str, Any], commands: Iterable[Mapping[str, Any]]
) -> dict[str, dict[int, int]]:
    """Issue a log's commands to ``market``, a fresh one with the header's settings
    (:func:`market_for`), and return how the log's ids map to the market's, per kind
    (``tenant``, ``provider``, ``deployment``, ``order``, ``bid``, ``lease``).

    Each command's ids are mapped to the market's; each outcome is checked against the log: a
    command recorded as refused must be refused with the same error class, any other must be
    accepted, and the ids the market assigns must be new (each maps one logged id). Raises
    :class:`ReplayError` naming the command's ``seq`` at the first difference, ``ValueError``
    if ``market`` is not fresh or its settings are not the header's.
    """
    if market.tenants or market.providers or market.deployments or market.height:
        raise ValueError("replay_into needs a fresh market (no tenants, providers, deployments)")
    denoms = header["accepted_denoms"]
    settings = {
        "fee_bps": (market.fee_bps, header["fee_bps"]),
        "settlement_interval": (market.settlement_interval, header["settlement_interval"]),
        "accepted_denoms": (
            market.accepted_denoms,
            None if denoms is None else frozenset(denoms),
        ),
        "limits": (market.limits, Limits(**header.get("limits", {}))),
    }
    for name, (mine, logged) in settings.items():
        if mine != logged:
            raise ValueError(f"the market's {name} is {mine!r}, the log's {logged!r}")
    replay = _Replay(market, header)
    for line in commands:
        replay.issue(dict(line))
    return replay.ids
