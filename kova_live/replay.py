"""Replay a simulator's command log (``kova-sim run --record-commands``) against a live
orchestrator over HTTP, and compare what the two drivers made of it.

The server runs on a manual clock (``serve --clock manual``) with an operator account, open
registration (``--registration open``: the replayer registers every party over the API) and
no rate limits (``--rate-limit-writes 0`` and the same for accounts and reads): before
each command the replayer moves the clock to the command's height (``POST /v1/clock``), then
sends the command as the party who gave it in the simulation — a tenant creates, funds, accepts,
gives up on an order and closes; a provider bids and reports its job's end; the operator
credits, takes providers down and back. Every command carries an ``Idempotency-Key`` made of
the log's sequence number, so a command whose answer was lost (the server was killed with it in
flight) is sent again after the restart and applies once.

:func:`compare` reads the server's database and checks it against the market the simulator's
log builds in the core (``kova_sim.commands.replay_into``): the ledger transfer for transfer,
every lease's state, price, blocks paid, total paid, debt and close reason, and every
deployment's escrow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from kova_core import Limits, Market

from .db import sync_engine
from .schema import balances, deployments, leases, transfers

__all__ = ["ReplayMismatch", "Replayer", "compare", "serve_flags"]

KINDS = ("tenant", "provider", "deployment", "order", "bid", "lease")


def serve_flags(header: Mapping[str, Any]) -> list[str]:
    """The flags of ``kova-live serve`` that give its market the network limits of a command
    log's header (a log without limits: none; the server's order lifetime is then forever,
    and orders close only when the simulated tenants give up on them)."""
    limits = Limits(**header.get("limits", {}))
    share = limits.tenant_share_bps
    return [
        "--min-deposit-blocks", str(limits.min_deposit_blocks),
        "--max-replicas", str(limits.max_replicas or 0),
        "--max-open-orders", str(limits.max_open_orders or 0),
        "--order-size", "largest-provider" if limits.largest_provider else "any",
        "--order-expiry", str(limits.order_lifetime or 0),
        "--tenant-share", "1" if share is None else str(share / 10_000),
    ]  # fmt: skip


class ReplayMismatch(AssertionError):
    """The live network answered or ended otherwise than the simulator."""


@dataclass
class Replayer:
    """Sends a log's commands to the server at ``client``'s base URL (see the module).

    ``before_send(seq)`` is called before each command is sent: a test kills the server
    there; the command is then sent again (same key) once ``reconnect`` says the server is
    back."""

    client: httpx.Client
    operator: dict[str, str]  # the operator's Authorization header
    reconnect: Callable[[], httpx.Client] | None = None
    ids: dict[str, dict[int, int]] = field(default_factory=lambda: {k: {} for k in KINDS})
    headers: dict[str, dict[int, dict[str, str]]] = field(
        default_factory=lambda: {"tenant": {}, "provider": {}}
    )
    height: int = -1
    sent: int = 0
    retried: int = 0
    # who owns what, in the log's ids (see :meth:`learn`)
    owners: dict[int, int] = field(default_factory=dict)  # deployment -> tenant
    order_deployment: dict[int, int] = field(default_factory=dict)
    bid_order: dict[int, int] = field(default_factory=dict)
    bid_provider: dict[int, int] = field(default_factory=dict)
    lease_provider: dict[int, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ sending

    def _send(self, seq: int, method: str, path: str, who: Mapping[str, str],
              body: Any = None, expect: Iterable[int] = (200, 201),
              key: str = "") -> httpx.Response:  # fmt: skip
        headers = {**who, "Idempotency-Key": f"replay-{seq}{key}"}
        for _ in range(20):
            try:
                reply = self.client.request(method, path, headers=headers, json=body)
            except httpx.TransportError:  # killed with the command in flight: send it again
                self.retried += 1
                if self.reconnect is None:
                    raise
                self.client = self.reconnect()
                continue
            if reply.status_code == 503:
                self.retried += 1
                continue
            self.sent += 1
            if reply.status_code not in set(expect):
                raise ReplayMismatch(
                    f"seq {seq}: {method} {path} answered {reply.status_code}: {reply.text[:300]}"
                )
            return reply
        raise ReplayMismatch(f"seq {seq}: {method} {path}: no answer after 20 tries")

    def _account(self, seq: int, role: str, name: str) -> tuple[int, dict[str, str]]:
        # registration is not journaled (its answer holds the token): an account made by a
        # request whose answer was lost is simply never used
        for _ in range(20):
            try:
                reply = self.client.post("/v1/accounts", json={"role": role, "name": name[:100]})
            except httpx.TransportError:
                self.retried += 1
                if self.reconnect is None:
                    raise
                self.client = self.reconnect()
                continue
            if reply.status_code != 201:
                raise ReplayMismatch(f"seq {seq}: registering a {role}: {reply.text[:300]}")
            made = reply.json()
            self.sent += 1
            return int(made["id"]), {"Authorization": f"Bearer {made['token']}"}
        raise ReplayMismatch(f"seq {seq}: registering a {role}: no answer after 20 tries")

    def _at(self, seq: int, height: int) -> None:
        if height > self.height:
            self._send(seq, "POST", "/v1/clock", self.operator, {"height": height}, key="-clock")
            self.height = height

    # ------------------------------------------------------------------ commands

    def replay(self, commands: Iterable[Mapping[str, Any]],
               before_send: Callable[[int], None] | None = None) -> None:  # fmt: skip
        """Send every command, in order."""
        commands = list(commands)
        self.learn(commands)
        for command in commands:
            seq = int(command["seq"])
            if before_send is not None:
                before_send(seq)
            self.one(command)

    def one(self, c: Mapping[str, Any]) -> None:
        """Send one command of the log (see the module)."""
        seq, name, ids = int(c["seq"]), c["command"], self.ids
        if name == "tick":
            self._at(seq, int(c["height"]))
            return
        if name in ("add_tenant", "add_provider"):
            role = name.removeprefix("add_")
            live, who = self._account(seq, role, c.get("name") or role)
            ids[role][int(c[f"{role}_id"])] = live
            self.headers[role][int(c[f"{role}_id"])] = who
            if role == "provider":
                if c.get("auditors"):
                    raise ReplayMismatch(f"seq {seq}: auditors are not replayed (yet)")
                beat = {"capacity": c["capacity"], "attributes": c.get("attributes", {}),
                        "gpu_models": c.get("gpu_models", [])}  # fmt: skip
                self._send(seq, "POST", "/v1/providers/heartbeat", who, beat)
            return
        self._at(seq, int(c["height"]))
        refused = c.get("error") is not None
        expect = range(400, 500) if refused else (200, 201)
        if name == "credit":
            tenant = ids["tenant"][c["tenant_id"]]
            self._send(seq, "POST", f"/v1/accounts/{tenant}/credit", self.operator,
                       {"amount": c["amount"]}, expect)  # fmt: skip
        elif name == "create_deployment":
            who = self.headers["tenant"][c["tenant_id"]]
            body = {"manifest": c["manifest"], "deposit": c["deposit"]}
            reply = self._send(seq, "POST", "/v1/deployments", who, body, expect)
            if not refused:
                made = reply.json()
                ids["deployment"][c["deployment_id"]] = made["id"]
                live_orders = [o["id"] for o in made["orders"]]
                if len(live_orders) != len(c["order_ids"]):
                    raise ReplayMismatch(f"seq {seq}: {len(live_orders)} orders, the simulator "
                                         f"made {len(c['order_ids'])}")  # fmt: skip
                ids["order"].update(zip(c["order_ids"], live_orders, strict=True))
        elif name == "deposit":
            dep = ids["deployment"][c["deployment_id"]]
            self._send(seq, "POST", f"/v1/deployments/{dep}/deposit", self._tenant_of(c),
                       {"amount": c["amount"]}, expect)  # fmt: skip
        elif name == "place_bid":
            order = ids["order"][c["order_id"]]
            who = self.headers["provider"][c["provider_id"]]
            reply = self._send(seq, "POST", f"/v1/orders/{order}/bids", who,
                               {"price": c["price"]}, expect)  # fmt: skip
            if not refused:
                ids["bid"][c["bid_id"]] = reply.json()["id"]
        elif name == "withdraw_bid":
            bid = ids["bid"][c["bid_id"]]
            self._send(seq, "DELETE", f"/v1/bids/{bid}", self._bidder(c), None, expect)
        elif name == "accept_bid":
            bid = ids["bid"][c["bid_id"]]
            reply = self._send(seq, "POST", f"/v1/bids/{bid}/accept", self._bid_tenant(c), None,
                               expect)  # fmt: skip
            if not refused:
                ids["lease"][c["lease_id"]] = reply.json()["id"]
        elif name == "expire_order":
            order = ids["order"][c["order_id"]]
            self._send(seq, "POST", f"/v1/orders/{order}/expire", self._order_tenant(c), None,
                       expect)  # fmt: skip
        elif name == "close_deployment":
            dep = ids["deployment"][c["deployment_id"]]
            self._send(seq, "POST", f"/v1/deployments/{dep}/close", self._tenant_of(c), None,
                       expect)  # fmt: skip
        elif name in ("finish_job", "fail_lease"):
            lease = ids["lease"][c["lease_id"]]
            if name == "finish_job":
                body = {"state": "finished", "exit_code": 0 if c["succeeded"] else 1}
            else:
                body = {"state": "failed", "message": "replayed"}
            self._send(seq, "POST", f"/v1/leases/{lease}/status", self._leaseholder(c), body,
                       expect)  # fmt: skip
        elif name in ("fail_provider", "recover_provider"):
            provider = ids["provider"][c["provider_id"]]
            verb = name.removesuffix("_provider")
            self._send(seq, "POST", f"/v1/providers/{provider}/{verb}", self.operator, None,
                       expect)  # fmt: skip
        else:
            raise ReplayMismatch(f"seq {seq}: no live command for {name!r}")

    # who gave a command, from what the log said before it
    def _tenant_of(self, c: Mapping[str, Any]) -> dict[str, str]:
        return self.headers["tenant"][self.owners[c["deployment_id"]]]

    def _order_tenant(self, c: Mapping[str, Any]) -> dict[str, str]:
        return self.headers["tenant"][self.owners[self.order_deployment[c["order_id"]]]]

    def _bid_tenant(self, c: Mapping[str, Any]) -> dict[str, str]:
        return self._order_tenant({"order_id": self.bid_order[c["bid_id"]]})

    def _bidder(self, c: Mapping[str, Any]) -> dict[str, str]:
        return self.headers["provider"][self.bid_provider[c["bid_id"]]]

    def _leaseholder(self, c: Mapping[str, Any]) -> dict[str, str]:
        return self.headers["provider"][self.lease_provider[c["lease_id"]]]

    def learn(self, commands: Iterable[Mapping[str, Any]]) -> None:
        """Note who owns what in the log (a tenant its deployments, a provider its bids and
        leases), so each command goes out with its party's token."""
        for c in commands:
            if c.get("error") is not None:
                continue
            if c["command"] == "create_deployment":
                self.owners[c["deployment_id"]] = c["tenant_id"]
                for order in c["order_ids"]:
                    self.order_deployment[order] = c["deployment_id"]
            elif c["command"] == "place_bid":
                self.bid_order[c["bid_id"]] = c["order_id"]
                self.bid_provider[c["bid_id"]] = c["provider_id"]
            elif c["command"] == "accept_bid":
                self.lease_provider[c["lease_id"]] = self.bid_provider[c["bid_id"]]


# --------------------------------------------------------------------------- comparing


def _account_namer(ids: Mapping[str, Mapping[int, int]]) -> Callable[[str], str]:
    """Live ledger account names in the simulator's ids."""
    back = {kind: {live: logged for logged, live in ids[kind].items()} for kind in ids}
    kinds = {"tenant": "tenant", "provider": "provider", "escrow": "deployment"}

    def name(account: str) -> str:
        kind, _, raw = account.partition(":")
        if kind not in kinds:
            return account
        return f"{kind}:{back[kinds[kind]].get(int(raw), f'live-{raw}')}"

    return name


def compare(
    database_url: str, market: Market, ids: Mapping[str, Mapping[int, int]]
) -> dict[str, int]:
    """Check the server's database against ``market`` (the simulator's log replayed in the
    core); raise :class:`ReplayMismatch` at the first difference. Returns what was compared."""
    name = _account_namer(ids)
    lease_back = {live: logged for logged, live in ids["lease"].items()}
    engine = sync_engine(database_url)
    try:
        with engine.connect() as connection:
            moved = connection.execute(select(transfers).order_by(transfers.c.id)).all()
            lease_rows = connection.execute(select(leases)).all()
            held = dict(connection.execute(select(balances.c.account, balances.c.amount)).all())
            dep_ids = connection.execute(select(deployments.c.id)).scalars().all()
    finally:
        engine.dispose()

    def key(height: int, source: str, destination: str, amount: int, reason: str,
            lease: int | None, start: int | None, end: int | None) -> tuple[Any, ...]:  # fmt: skip
        return (height, source, destination, amount, reason, lease, start, end)

    live = Counter(
        key(t.height, name(t.source), name(t.destination), t.amount, t.reason,
            None if t.lease_id is None else lease_back.get(t.lease_id, -t.lease_id),
            t.start_block, t.end_block)
        for t in moved
    )  # fmt: skip
    simulated = Counter(
        key(t.height, t.source, t.destination, t.amount, t.reason, t.lease_id, t.start, t.end)
        for t in market.ledger
    )
    if live != simulated:
        only_live = sorted((live - simulated).elements(), key=str)[:5]
        only_sim = sorted((simulated - live).elements(), key=str)[:5]
        raise ReplayMismatch(
            f"ledgers differ ({sum(live.values())} live, {sum(simulated.values())} simulated "
            f"transfers); only live: {only_live}; only simulated: {only_sim}"
        )
    by_lease = {lease_back.get(r.id): r for r in lease_rows}
    if set(by_lease) != set(market.leases):
        raise ReplayMismatch(f"leases differ: live {sorted(map(str, by_lease))[:10]}, "
                             f"simulated {sorted(market.leases)[:10]}")  # fmt: skip
    for lease_id, lease in market.leases.items():
        row = by_lease[lease_id]
        want = (lease.state.value, lease.price, lease.blocks_paid, lease.total_paid, lease.debt,
                None if lease.close_reason is None else lease.close_reason.value)  # fmt: skip
        got = (row.state, row.price, row.blocks_paid, row.total_paid, row.debt, row.close_reason)
        if got != want:
            raise ReplayMismatch(f"lease {lease_id}: live {got}, simulated {want} (state, price, "
                                 "blocks paid, total paid, debt, close reason)")  # fmt: skip
    dep_back = {live: logged for logged, live in ids["deployment"].items()}
    for live_id in dep_ids:
        logged = dep_back.get(live_id)
        if logged is None:
            raise ReplayMismatch(f"live deployment {live_id} has no simulated twin")
        got, want = held.get(f"escrow:{live_id}", 0), market.escrow(logged)
        if got != want:
            raise ReplayMismatch(f"deployment {logged}'s escrow: live {got}, simulated {want}")
    return {"transfers": sum(live.values()), "leases": len(by_lease), "deployments": len(dep_ids),
            "balances": len(held)}  # fmt: skip
