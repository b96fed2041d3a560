"""One ledger, two drivers: every shipped scenario, shortened, runs in the exact simulator with
its commands recorded (``kova-sim run --record-commands``); the commands are replayed over HTTP
against a real server on a manual clock, killed with SIGKILL at random points with a command in
flight and restarted on the same database (the unanswered command is sent again under its
Idempotency-Key); then the server's ledger, leases and escrows must equal the simulator's.

Settings the servers run with: ``--clock manual``, the network limits of the log's header (none:
``kova_live.replay.serve_flags``; orders expire only when the simulated tenants give up on
them), ``--heartbeat-grace`` 10^8 blocks (the
test servers' default: providers are taken down only by the operator's replayed failures),
settlement every 60 blocks, no fee.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from kova_live.failover import Failover
from kova_live.replay import Replayer, compare, serve_flags
from kova_sim.commands import market_for, replay_into

from .conftest import Server, fresh_database
from .test_operators import operator_token
from .test_state import recorded

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SERVE = ("--clock", "manual")
# (scenario, simulated length, one provider kept of every ..., database, kills): between them
# the shortened scenarios have provider failures and repairs (mixed-strategies), deposits that
# resume paused deployments (budget-exhaustion) and orders given up on (scarcity); jobs
# (jobs-batch) are replayed below, their leader killed five times (a take-over restores the
# market as a restart does). Each replays 600 to 1,500 commands; ``benchmarks/replay.py`` runs
# them whole.
CASES = [
    ("baseline", "20m", 5, "postgresql", 5),
    ("budget-exhaustion", "45m", 5, "postgresql", 0),
    ("mixed-strategies", "3h", 4, "postgresql", 5),
    ("price-war", "20m", 5, "postgresql", 0),
    ("scarcity", "40m", 5, "postgresql", 0),
    ("baseline", "20m", 5, "sqlite", 2),
]


@pytest.mark.parametrize(("name", "duration", "divisor", "backend", "kills"), CASES,
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])  # fmt: skip
def test_the_live_network_ends_where_the_simulator_does(
    name, duration, divisor, backend, kills, tmp_path
):
    header, commands = recorded(name, duration, divisor, tmp_path)
    assert (header["settlement_interval"], header["fee_bps"]) == (60, 0)  # the server's
    reference = market_for(header)
    replay_into(reference, header, commands)
    rng = random.Random(f"{name}-{backend}")
    at = set(rng.sample(range(2, len(commands)), kills))
    with fresh_database(backend, tmp_path) as url:
        ops = operator_token(url)
        flags = (*SERVE, *serve_flags(header))  # the log's limits: none
        servers = [Server(url, tmp_path / "data", 1.0, *flags)]
        killed: list[int] = []

        def kill_soon(seq: int) -> None:
            """SIGKILL the server a moment after the command is sent: in flight, or just
            answered, or not yet read; whichever, it is sent again and applies once."""
            if seq not in at:
                return
            process = servers[-1].process
            delay = rng.uniform(0.0, 0.004)
            threading.Timer(delay, process.send_signal, (signal.SIGKILL,)).start()
            killed.append(seq)

        def restart():
            old = servers[-1]
            old.process.wait()
            old.stop()
            servers.append(Server(url, tmp_path / "data", 1.0, *flags))
            return servers[-1].client

        replayer = Replayer(servers[0].client, ops, reconnect=restart)
        try:
            replayer.replay(commands, before_send=kill_soon)
            figures = compare(url, reference, replayer.ids)
        finally:
            servers[-1].stop()
    assert len(killed) == kills
    assert figures["transfers"] == len(reference.ledger) > 0
    assert figures["leases"] == len(reference.leases)


# (scenario, simulated length, one provider kept of every ..., kills of the leader): jobs (whose
# deadlines the leader runs) and orders given up on; the other scenarios' features are replayed
# across restarts above (a take-over restores the market as a restart does)
TAKE_OVERS = [("jobs-batch", "20m", 5, 5)]


@pytest.mark.parametrize(("name", "duration", "divisor", "kills"), TAKE_OVERS,
                         ids=[c[0] for c in TAKE_OVERS])  # fmt: skip
def test_take_overs_leave_the_ledger_the_core_gives(name, duration, divisor, kills, tmp_path):
    """Three servers on one PostgreSQL database, a leader and two standbys (``--clock manual``
    each). The log's commands go to whichever leads, as the ``kova`` CLI sends them (the
    failover transport: a 503 or a refused connection, the next server; a lost answer, the same
    command again with its key); the leader is killed with SIGKILL at random commands and comes
    back as a standby. The ledger, the leases and the escrows must be the core's for the same
    commands in the same order: no round run twice or skipped across a take-over."""
    header, commands = recorded(name, duration, divisor, tmp_path)
    reference = market_for(header)
    replay_into(reference, header, commands)
    rng = random.Random(f"{name}-take-overs")
    at = set(rng.sample(range(2, len(commands)), kills))
    with fresh_database("postgresql", tmp_path) as url:
        ops = operator_token(url)
        flags = (*SERVE, *serve_flags(header))

        def start(i: int) -> Server:
            return Server(url, tmp_path / f"data-{i}", 1.0, *flags)

        servers = [start(i) for i in range(3)]
        killed: list[int] = []
        took_over: list[int] = []  # the epochs of the leaders killed

        def client() -> httpx.Client:
            urls = [s.url for s in servers]
            return httpx.Client(base_url=urls[0], timeout=10,
                                transport=Failover(urls, patience=30))  # fmt: skip

        def revive() -> httpx.Client:
            """Bring back every killed server as a standby; a client over them all."""
            for i, server in enumerate(servers):
                if server.process.poll() is not None:
                    server.stop()
                    servers[i] = start(i)
            return client()

        def leader() -> Server:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for server in servers:
                    with contextlib.suppress(httpx.TransportError):
                        reply = server.client.get("/v1/leader")
                        if reply.status_code == 200:
                            took_over.append(reply.json()["epoch"])
                            return server
                time.sleep(0.05)
            raise AssertionError("no server took over within 30 s")

        replayer = Replayer(client(), ops, reconnect=revive)

        def kill_soon(seq: int) -> None:
            if any(s.process.poll() is not None for s in servers):
                replayer.client.close()
                replayer.client = revive()
            if seq not in at:
                return
            process = leader().process
            delay = rng.uniform(0.0, 0.004)
            threading.Timer(delay, process.send_signal, (signal.SIGKILL,)).start()
            killed.append(seq)

        try:
            replayer.replay(commands, before_send=kill_soon)
            leader()
            figures = compare(url, reference, replayer.ids)
        finally:
            replayer.client.close()
            for server in servers:
                server.stop()
    assert len(killed) == kills
    assert len(set(took_over)) == kills + 1  # every kill, a new leader's term
    assert figures["transfers"] == len(reference.ledger) > 0
    assert figures["leases"] == len(reference.leases)
