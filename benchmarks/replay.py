#!/usr/bin/env python3
"""Whole scenarios replayed against the live orchestrator: one ledger, two drivers. Prints
figures; exits non-zero if a replay does not end where the simulator did.

    .venv/bin/python benchmarks/replay.py [--scenario NAME ...] [--duration 2h] [--divisor 1]
        [--database postgresql|sqlite] [--kills 5] [--seed 0] [--progress 1000]

For each scenario (default: every ``scenarios/*.yaml`` but ``bench-large``), cut to
``--duration`` of simulated time and, with ``--divisor N``, one provider of every N kept in each
group (at least one):

1. the exact engine runs it with its commands recorded
   (``kova_sim.run.run_scenario(..., engine="exact", commands=path)``, as
   ``kova-sim run --record-commands`` does); the log is replayed into a fresh core market
   (``kova_sim.commands.replay_into``), the reference;
2. a fresh database is made (a new PostgreSQL database on ``--pg``, or an SQLite file), an
   operator account in it (``kova-live admin operator``), and ``kova-live serve --clock manual``
   started on a free loopback port; ``kova_live.replay.Replayer`` sends the log's commands over
   HTTP, moving the clock to each command's height;
3. at ``--kills`` points drawn at random (seeded by ``--seed`` and the scenario's name) the
   server is sent SIGKILL 0-4 ms after a command is handed to the replayer, so that a request is
   in flight, not yet read or just answered; it is restarted on the same database and the
   replayer sends the unanswered command again under its Idempotency-Key;
4. ``kova_live.replay.compare`` checks the server's ledger (transfer for transfer), leases and
   escrows against the reference.

The servers run with the settings ``tests/live/test_replay.py`` uses: orders expire only when
the simulated tenants give up on them (``--order-expiry`` 10^9 blocks), providers are lost only
by the operator's replayed failures (``--heartbeat-grace`` 10^8), 1-second blocks, endpoints on
loopback. Every server process and database is removed at the end, also after a failure or
Ctrl-C. Progress goes to stderr, figures to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402

from kova_live.replay import Replayer, ReplayMismatch, compare, serve_flags  # noqa: E402
from kova_sim.commands import ReplayError, market_for, read_commands, replay_into  # noqa: E402
from kova_sim.run import run_scenario  # noqa: E402
from kova_sim.scenario import parse_scenario  # noqa: E402

SCENARIOS = ROOT / "scenarios"
SKIPPED = {"bench-large"}  # the exact engine cannot run it in reasonable time
PG_ADMIN = os.environ.get("KOVA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# the replayer registers the simulation's parties over the API (open registration) and sends
# its commands as fast as the server takes them (no rate limits)
# and the network limits of the log's header (none: kova_live.replay.serve_flags)
SERVE = ("--clock", "manual", "--heartbeat-grace", "100000000",
         "--block-seconds", "1", "--endpoint-networks", "127.0.0.0/8", "--registration", "open",
         "--rate-limit-accounts", "0", "--rate-limit-writes", "0",
         "--rate-limit-reads", "0")  # fmt: skip
SERVER_SETTINGS = (60, 0)  # what the server settles with: every 60 blocks, no fee


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- servers, databases


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``kova-live serve`` process on a free loopback port, in a session of its own (a Ctrl-C
    reaches this script, which stops it, and not the server directly)."""

    def __init__(self, database_url: str, data_dir: Path, log: Path, limits: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = log.open("w")
        self.client: httpx.Client | None = None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kova_live", "serve", "--database-url", database_url,
             "--data-dir", str(data_dir), "--port", str(self.port), *SERVE, *limits],
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            self._wait_until_up()
        except BaseException:  # not started, or Ctrl-C while starting: no process left behind
            self.stop()
            raise
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log_file.closed:
            self._log_file.close()


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path, admin_url: str) -> Iterator[str]:
    """An empty database: an SQLite file in ``folder``, or a new PostgreSQL database on
    ``admin_url``'s server, dropped afterwards (``WITH (FORCE)``: a killed server's connections
    may linger)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'kova.sqlite3'}"
        return
    name = f"kova_bench_replay_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def operator_headers(database_url: str, data_dir: Path) -> dict[str, str]:
    """Make the operator account (``kova-live admin operator``) and return its headers."""
    made = subprocess.run(
        [sys.executable, "-m", "kova_live", "admin", "operator", "replay-ops",
         "--database-url", database_url, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"kova-live admin operator failed: {made.stderr.strip()}")
    return {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}


# --------------------------------------------------------------------------- one scenario


@dataclass
class Figures:
    scenario: str
    providers: int = 0
    commands: int = 0
    sent: int = 0
    retried: int = 0
    kills: int = 0
    restarts: int = 0
    transfers: int = 0
    leases: int = 0
    deployments: int = 0
    record_s: float = 0.0
    core_s: float = 0.0
    replay_s: float = 0.0
    restart_s: float = 0.0
    compare_s: float = 0.0
    mismatch: str | None = None
    killed_at: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.commands / self.replay_s if self.replay_s else 0.0


def record(name: str, duration: str, divisor: int, path: Path) -> float:
    """Run the scenario in the exact engine with its commands recorded; the wall time."""
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    data["duration"] = duration
    for group in data["providers"]:
        group["count"] = max(1, group["count"] // divisor)
    scenario = parse_scenario(data)
    started = time.perf_counter()
    run_scenario(scenario, None, engine="exact", commands=path)
    return time.perf_counter() - started


def run_one(name: str, args: argparse.Namespace, folder: Path) -> Figures:
    figures = Figures(name)
    path = folder / "commands.jsonl"
    say(f"{name}: recording {args.duration} in the exact engine ...")
    figures.record_s = record(name, args.duration, args.divisor, path)
    header, commands = read_commands(path)
    figures.commands = len(commands)
    figures.providers = sum(1 for c in commands if c["command"] == "add_provider")
    settings = (header["settlement_interval"], header["fee_bps"])
    if settings != SERVER_SETTINGS:
        raise SystemExit(
            f"{name}: settlement every {settings[0]} blocks with fee {settings[1]} bps; the "
            f"server settles every {SERVER_SETTINGS[0]} with no fee"
        )
    started = time.perf_counter()
    reference = market_for(header)
    limits = serve_flags(header)
    replay_into(reference, header, commands)
    figures.core_s = time.perf_counter() - started
    say(f"{name}: {len(commands):,} commands recorded in {figures.record_s:.1f} s "
        f"({figures.providers} providers), replayed in the core in "
        f"{figures.core_s:.1f} s")  # fmt: skip

    rng = random.Random(f"{args.seed}-{name}")
    points = range(2, len(commands))  # a command follows each kill: it finds the server dead
    at = set(rng.sample(points, min(args.kills, len(points))))
    with fresh_database(args.database, folder, args.pg) as url:
        ops = operator_headers(url, folder / "data")
        servers: list[Server] = []
        try:
            servers.append(Server(url, folder / "data", folder / "server-0.log", limits))
            timers: list[threading.Timer] = []
            clock = {"start": time.perf_counter(), "last": time.perf_counter()}

            def before_send(seq: int) -> None:
                if args.progress and seq % args.progress == 0:
                    now = time.perf_counter()
                    rate = args.progress / (now - clock["last"])
                    clock["last"] = now
                    say(f"{name}: {seq:,}/{len(commands):,} commands, {now - clock['start']:.0f} s,"
                        f" {rate:.0f}/s lately, {len(figures.killed_at)} kills")  # fmt: skip
                if seq not in at:
                    return
                process = servers[-1].process
                delay = rng.uniform(0.0, 0.004)  # in flight, just answered, or not yet read
                timer = threading.Timer(delay, process.send_signal, (signal.SIGKILL,))
                timer.start()
                timers.append(timer)
                figures.killed_at.append(seq)

            def restart() -> httpx.Client:
                begun = time.perf_counter()
                old = servers[-1]
                try:
                    old.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    raise RuntimeError(
                        f"{name}: a request failed while the server was running (not a kill): "
                        f"see {old.log}"
                    ) from None
                old.stop()
                servers.append(Server(url, folder / "data", folder / f"server-{len(servers)}.log",
                                      limits))
                figures.restarts += 1
                figures.restart_s += time.perf_counter() - begun
                say(f"{name}: server killed, restarted ({figures.restarts})")
                client = servers[-1].client
                assert client is not None
                return client

            assert servers[0].client is not None
            replayer = Replayer(servers[0].client, ops, reconnect=restart)
            started = time.perf_counter()
            try:
                replayer.replay(commands, before_send=before_send)
            except (ReplayMismatch, ReplayError) as exc:
                figures.mismatch = f"while replaying: {exc}"
            figures.replay_s = time.perf_counter() - started
            for timer in timers:
                timer.join()
            figures.sent, figures.retried = replayer.sent, replayer.retried
            figures.kills = len(figures.killed_at)
            if figures.mismatch is None:
                started = time.perf_counter()
                try:
                    compared = compare(url, reference, replayer.ids)
                except ReplayMismatch as exc:
                    figures.mismatch = str(exc)
                else:
                    figures.transfers = compared["transfers"]
                    figures.leases = compared["leases"]
                    figures.deployments = compared["deployments"]
                figures.compare_s = time.perf_counter() - started
            if figures.mismatch is not None:
                say(f"{name}: MISMATCH: {figures.mismatch}\n--- the last server's log (tail):\n"
                    + servers[-1].log.read_text()[-3000:])  # fmt: skip
        finally:
            for server in servers:
                server.stop()
    return figures


# --------------------------------------------------------------------------- the table

COLUMNS = [
    ("scenario", "{0.scenario}", "<"),
    ("providers", "{0.providers:,}", ">"),
    ("commands", "{0.commands:,}", ">"),
    ("sent", "{0.sent:,}", ">"),
    ("retried", "{0.retried:,}", ">"),
    ("kills", "{0.kills}", ">"),
    ("transfers", "{0.transfers:,}", ">"),
    ("leases", "{0.leases:,}", ">"),
    ("deployments", "{0.deployments:,}", ">"),
    ("record s", "{0.record_s:.1f}", ">"),
    ("core s", "{0.core_s:.1f}", ">"),
    ("replay s", "{0.replay_s:.1f}", ">"),
    ("restarts s", "{0.restart_s:.1f}", ">"),
    ("commands/s", "{0.per_second:.0f}", ">"),
    ("matches", "{1}", "<"),
]


def table(rows: list[Figures]) -> str:
    cells = [[h for h, _, _ in COLUMNS]]
    for row in rows:
        ok = "yes" if row.mismatch is None else "NO"
        cells.append([fmt.format(row, ok) for _, fmt, _ in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]

    def line(r: list[str]) -> str:
        parts = zip(r, COLUMNS, widths, strict=True)
        return "  ".join(f"{v:{a}{w}}" for v, (_, _, a), w in parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    default = sorted(p.stem for p in SCENARIOS.glob("*.yaml") if p.stem not in SKIPPED)
    parser.add_argument(
        "--scenario", action="append", choices=default + sorted(SKIPPED),
        help=f"a shipped scenario, repeatable (default: {', '.join(default)})",
    )  # fmt: skip
    parser.add_argument("--duration", default="2h", help="simulated length (default: 2h)")
    parser.add_argument(
        "--divisor", type=int, default=1,
        help="keep one provider of every N in each group (default: 1, all)",
    )  # fmt: skip
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--pg", default=PG_ADMIN,
        help=f"PostgreSQL server to make the databases on (default: {PG_ADMIN})",
    )  # fmt: skip
    parser.add_argument("--kills", type=int, default=5,
                        help="SIGKILLs of the server per scenario (default: 5)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill points (default: 0)")
    parser.add_argument("--progress", type=int, default=1000,
                        help="report progress on stderr every N commands (0: never)")  # fmt: skip
    args = parser.parse_args()
    if args.divisor < 1 or args.kills < 0:
        parser.error("--divisor must be at least 1 and --kills at least 0")

    # SIGTERM cleans up as Ctrl-C does (the finally clauses stop servers, drop databases)
    signal.signal(signal.SIGTERM, interrupted)
    names = args.scenario or default
    print(f"scenarios {', '.join(names)}; {args.duration} each, providers / {args.divisor}, "
          f"{args.database}, {args.kills} kills each (seed {args.seed})", flush=True)  # fmt: skip
    rows: list[Figures] = []
    try:
        for name in names:
            with tempfile.TemporaryDirectory(prefix=f"kova-replay-{name}-") as tmp:
                figures = run_one(name, args, Path(tmp))
            rows.append(figures)
            verdict = "matches" if figures.mismatch is None else "DOES NOT MATCH"
            say(f"{name}: {verdict}; replayed in {figures.replay_s:.1f} s "
                f"({figures.per_second:.0f} commands/s)")  # fmt: skip
    except KeyboardInterrupt:
        say("interrupted; servers stopped and databases dropped")
        if rows:
            print(table(rows))
        return 130
    print(table(rows))
    failed = [r for r in rows if r.mismatch is not None]
    for row in rows:
        print(f"{row.scenario}: killed before commands {sorted(row.killed_at)}; "
              f"{row.restarts} restarts; compared in {row.compare_s:.1f} s")  # fmt: skip
    for row in failed:
        print(f"MISMATCH in {row.scenario}: {row.mismatch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
