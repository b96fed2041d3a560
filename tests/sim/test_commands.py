"""Command logs (``kova-sim run --record-commands``): what the exact engine issues to the core,
replayed into a fresh market, must end in the same ledger, leases and escrows.

Every shipped scenario is run shortened (a few simulated hours; 5 minutes of ``bench-large``)
with its commands recorded, read back, and replayed into a fresh ``Market`` built from the
log's header; the replayed market must equal the recorded run's market, transfer by transfer
and lease by lease.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from kova_core import InvalidAmount, Market, Resources, UnknownEntity
from kova_sim.commands import (
    CommandLog,
    CommandsError,
    RecordingMarket,
    ReplayError,
    dumps,
    market_for,
    read_commands,
    replay_into,
)
from kova_sim.engine import make_simulation
from kova_sim.run import RunResult, run_scenario
from kova_sim.scenario import Scenario, parse_scenario

from .conftest import SMALL

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(p.stem for p in SCENARIOS.glob("*.yaml"))


def shortened(name: str, duration: str) -> Scenario:
    data = yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())
    data["duration"] = duration  # shortened: the exact engine is the slow one
    return parse_scenario(data)


def recorded_run(scenario: Scenario, path: Path) -> RunResult:
    return run_scenario(scenario, None, engine="exact", commands=path)


def assert_same_market(replayed: Market, recorded: Market) -> None:
    """Every transfer, every lease's outcome and every deployment's escrow are the same."""
    assert len(replayed.ledger) == len(recorded.ledger)
    for i, (mine, theirs) in enumerate(zip(replayed.ledger, recorded.ledger, strict=True)):
        assert mine == theirs, f"transfer {i}: replayed {mine}, recorded {theirs}"
    assert replayed.leases.keys() == recorded.leases.keys()
    for lease_id, theirs in recorded.leases.items():
        mine = replayed.leases[lease_id]
        for field in ("state", "price", "blocks_paid", "total_paid", "debt", "close_reason",
                      "written_off", "closed_at"):  # fmt: skip
            assert getattr(mine, field) == getattr(theirs, field), (lease_id, field)
    assert replayed.deployments.keys() == recorded.deployments.keys()
    for dep_id, dep in recorded.deployments.items():
        assert replayed.escrow(dep_id) == recorded.escrow(dep_id), dep_id
        assert replayed.deployments[dep_id].state == dep.state, dep_id
    assert dict(replayed.balances) == dict(recorded.balances)
    assert replayed.height == recorded.height
    assert replayed.money_drift() == 0


# --------------------------------------------------------------------------- shipped scenarios

CASES = [(name, "5m" if name.startswith("bench-") else "3h") for name in SHIPPED]


@pytest.mark.parametrize(("name", "duration"), CASES, ids=[c[0] for c in CASES])
def test_shipped_scenarios_replay_to_the_same_market(tmp_path, name, duration):
    path = tmp_path / "commands.jsonl"
    scenario = shortened(name, duration)
    result = recorded_run(scenario, path)
    recorded = result.simulation.market.market  # the market behind the recording one
    header, commands = read_commands(path)
    assert header == {
        "format": "kova-commands", "version": 1, "accepted_denoms": None,
        "settlement_interval": scenario.settlement_interval, "fee_bps": scenario.fee_bps,
        "duration": scenario.duration, "seed": scenario.seed,
        "limits": dataclasses.asdict(scenario.limits.core()),
    }  # fmt: skip
    market = market_for(header)
    ids = replay_into(market, header, commands)
    for kind, mapping in ids.items():  # a fresh market assigns the same ids, in the same order
        assert all(a == b for a, b in mapping.items()), kind
    assert_same_market(market, recorded)

    kinds = Counter(c["command"] for c in commands)
    assert kinds["create_deployment"] == len(recorded.deployments)
    assert kinds["accept_bid"] == len(recorded.leases)
    assert kinds["place_bid"] == max(c.get("bid_id", 0) for c in commands)  # every bid, once
    assert commands[-1] == {"seq": len(commands), "height": header["duration"], "command": "tick"}
    assert "error" not in Counter(k for c in commands for k in c)  # the engine is never refused
    # what the shortened scenarios exercise, between them
    if name == "mixed-strategies":
        assert kinds["fail_provider"] and kinds["recover_provider"]
    if name == "jobs-batch":
        assert kinds["finish_job"]
    if name == "budget-exhaustion":
        assert kinds["deposit"]
    if name == "scarcity":
        assert kinds["expire_order"]


def test_commands_are_in_the_order_issued_each_once(tmp_path):
    path = tmp_path / "commands.jsonl"
    result = recorded_run(parse_scenario({**SMALL, "duration": "2h"}), path)
    market = result.simulation.market.market
    _, commands = read_commands(path)
    heights = [c["height"] for c in commands]
    assert heights == sorted(heights)
    created = {c["deployment_id"]: c for c in commands if c["command"] == "create_deployment"}
    assert sorted(created) == sorted(market.deployments)
    for dep_id, line in created.items():
        # the tenant is credited the deposit just before (money enters by credit)
        credit = commands[line["seq"] - 2]
        assert credit["command"] == "credit" and credit["amount"] == line["deposit"]
        assert line["order_ids"] == market.deployments[dep_id].order_ids
    opened = {o: c["seq"] for c in created.values() for o in c["order_ids"]}
    bids = [c for c in commands if c["command"] == "place_bid"]
    assert [c["bid_id"] for c in bids] == list(range(1, len(bids) + 1))
    assert all(opened[c["order_id"]] < c["seq"] for c in bids)  # after the order opened
    accepted = [c for c in commands if c["command"] == "accept_bid"]
    assert [c["lease_id"] for c in accepted] == sorted(market.leases)


def test_the_same_scenario_and_seed_give_the_same_bytes_through_the_cli(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({**SMALL, "duration": "1h"}))
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        done = kova_sim("run", scenario, "--record-commands", "--out", out, "-q", "--no-plots")
        assert done.returncode == 0, done.stderr
        assert json.loads((out / "summary.json").read_text())["engine"] == "exact"  # auto: exact
        assert sorted(p.name for p in out.iterdir() if "commands" in p.name) == ["commands.jsonl"]
        outs.append((out / "commands.jsonl").read_bytes())
    assert outs[0] == outs[1]
    first, *rest = outs[0].decode().splitlines()
    assert first == (
        '{"accepted_denoms":null,"duration":3600,"fee_bps":0,"format":"kova-commands",'
        '"limits":{"largest_provider":false,"max_open_orders":null,"max_replicas":null,'
        '"min_deposit_blocks":0,"order_lifetime":null,"tenant_share_bps":null},'
        '"seed":1,"settlement_interval":60,"version":1}'
    )
    assert all(line == dumps(json.loads(line)) for line in rest)  # sorted keys, compact
    # and the file is what the same run in-process writes
    recorded_run(parse_scenario({**SMALL, "duration": "1h"}), tmp_path / "c.jsonl")
    assert (tmp_path / "c.jsonl").read_bytes() == outs[0]


def kova_sim(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kova_sim", *map(str, args)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_fast_engine_cannot_record(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump({**SMALL, "duration": "1h"}))
    out = tmp_path / "out"
    done = kova_sim("run", scenario, "--engine", "fast", "--record-commands", "--out", out)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--record-commands" in lines[0] and "fast" in lines[0], lines
    assert not out.exists()
    small = parse_scenario({**SMALL, "duration": "1h"})
    with pytest.raises(ValueError, match="fast engine's commands cannot be recorded"):
        run_scenario(small, None, engine="fast", commands=tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="cannot be recorded"):
        make_simulation(small, "fast", commands=CommandLog(io.StringIO()))


def test_a_run_without_the_flag_leaves_no_log_of_an_earlier_run(tmp_path):
    small = parse_scenario({**SMALL, "duration": "30m"})
    run_scenario(small, tmp_path, engine="exact", plots=False, commands=tmp_path / "commands.jsonl")
    assert (tmp_path / "commands.jsonl").is_file()
    run_scenario(small, tmp_path, engine="exact", plots=False)
    assert not (tmp_path / "commands.jsonl").exists()


# --------------------------------------------------------------------------- refusals


def recording_market() -> tuple[RecordingMarket, io.StringIO]:
    buffer = io.StringIO()
    market = CommandLog(buffer).record(Market(fee_bps=100), duration=100, seed=7)
    assert isinstance(market, RecordingMarket)
    return market, buffer


def test_refused_commands_are_recorded_and_refused_again_in_the_replay(tmp_path):
    market, buffer = recording_market()
    tenant = market.add_tenant("t")
    provider = market.add_provider(capacity=Resources(cpu=1000), name="p")
    with pytest.raises(InvalidAmount):
        market.credit(tenant, 0, 5)
    with pytest.raises(UnknownEntity):
        market.accept_bid(42, 6)
    market.credit(tenant, 10, 7)
    market.fail_provider(provider, 8)
    market.tick(100)
    path = tmp_path / "commands.jsonl"
    path.write_text(buffer.getvalue())
    header, commands = read_commands(path)
    assert header["fee_bps"] == 100 and header["seed"] == 7
    assert commands[2] == {
        "seq": 3,
        "height": 5,
        "command": "credit",
        "tenant_id": 1,
        "amount": 0,
        "error": "InvalidAmount",
    }
    assert commands[3] == {
        "seq": 4,
        "height": 6,
        "command": "accept_bid",
        "bid_id": 42,
        "error": "UnknownEntity",
    }
    replayed = market_for(header)
    replay_into(replayed, header, commands)
    assert replayed.balance("tenant:1") == 10 and replayed.height == 100

    # a log that says a refused command was accepted, or refused otherwise, does not replay
    accepted = [dict(c) for c in commands]
    del accepted[2]["error"]
    with pytest.raises(
        ReplayError,
        match=r"^seq 3 \(credit at 5\): the market refused it: "
        r"InvalidAmount",
    ):
        replay_into(market_for(header), header, accepted)
    other = [dict(c) for c in commands]
    other[3]["error"] = "IllegalTransition"
    with pytest.raises(
        ReplayError,
        match=r"seq 4 .*refused with IllegalTransition, the market "
        r"raised UnknownEntity",
    ):
        replay_into(market_for(header), header, other)


def test_a_replay_that_goes_another_way_names_the_command(tmp_path):
    path = tmp_path / "commands.jsonl"
    recorded_run(parse_scenario({**SMALL, "duration": "1h"}), path)
    header, commands = read_commands(path)

    credit = next(i for i, c in enumerate(commands) if c["command"] == "credit")
    without = commands[:credit] + commands[credit + 1 :]  # the tenant never brought the money
    seq = commands[credit + 1]["seq"]
    with pytest.raises(
        ReplayError,
        match=rf"^seq {seq} \(create_deployment at \d+\): the market "
        "refused it: InsufficientBalance",
    ):
        replay_into(market_for(header), header, without)

    accepted = [i for i, c in enumerate(commands) if c["command"] == "accept_bid"]
    twice = [dict(c) for c in commands]
    twice[accepted[1]]["lease_id"] = twice[accepted[0]]["lease_id"]
    seq = commands[accepted[1]]["seq"]
    with pytest.raises(ReplayError, match=rf"^seq {seq} .*lease 1 was introduced by an earlier"):
        replay_into(market_for(header), header, twice)

    unknown = [dict(c) for c in commands]
    bid = next(i for i, c in enumerate(commands) if c["command"] == "place_bid")
    unknown[bid]["order_id"] = 999
    seq = commands[bid]["seq"]
    with pytest.raises(ReplayError, match=rf"^seq {seq} .*names order 999, which no earlier"):
        replay_into(market_for(header), header, unknown)

    with pytest.raises(ValueError, match="fee_bps is 5, the log's 0"):
        replay_into(Market(fee_bps=5), header, commands)


def test_commands_the_format_has_no_line_for_are_refused():
    market, _ = recording_market()
    with pytest.raises(NotImplementedError, match="poll_late cannot be recorded"):
        market.poll_late(1, [])
    with pytest.raises(NotImplementedError, match="withdraw"):
        market.withdraw("tenant:1", 1, 1)


# --------------------------------------------------------------------------- malformed files

HEADER = (
    '{"accepted_denoms":null,"duration":100,"fee_bps":0,"format":"kova-commands",'
    '"seed":1,"settlement_interval":60,"version":1}'
)
TENANT = '{"command":"add_tenant","height":0,"name":"t","seq":1,"tenant_id":1}'
TICK = '{"command":"tick","height":100,"seq":2}'

MALFORMED = [
    ("not JSON", [HEADER, TENANT, "{oops"], 3, "not JSON"),
    ("not an object", [HEADER, "[1, 2]"], 2, "not a JSON object"),
    ("not a log", ['{"format":"csv"}'], 1, "not a command log"),
    ("another version", [HEADER.replace('"version":1', '"version":2')], 1, "version 2"),
    ("header lacks a field", [HEADER.replace('"seed":1,', "")], 1, "the header lacks seed"),
    ("seq out of order", [HEADER, TICK], 2, "seq must be 1"),
    (
        "unknown command",
        [HEADER, TENANT, TICK.replace("tick", "warp")],
        3,
        "unknown command 'warp'",
    ),
    ("missing argument", [HEADER, TENANT.replace('"name":"t",', "")], 2, "add_tenant lacks name"),
    ("missing result", [HEADER, TENANT.replace(',"tenant_id":1', "")], 2, "lacks tenant_id"),
    (
        "mistyped field",
        [HEADER, TENANT.replace('"tenant_id":1', '"tenant_id":"1"')],
        2,
        "tenant_id must be an integer",
    ),
    (
        "unknown field",
        [HEADER, TICK.replace('"seq":2', '"seq":1,"speed":3')],
        2,
        "unknown fields: speed",
    ),
    (
        "negative height",
        [HEADER, TICK.replace("100", "-1").replace('"seq":2', '"seq":1')],
        2,
        "height must be a non-negative integer",
    ),
    ("blank line", [HEADER, TENANT, ""], 3, "not JSON"),
]


@pytest.mark.parametrize(
    ("case", "lines", "line", "message"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_line_is_an_error_naming_it(tmp_path, case, lines, line, message):
    path = tmp_path / "commands.jsonl"
    path.write_text("".join(f"{text}\n" for text in lines))
    with pytest.raises(CommandsError, match=rf"commands\.jsonl, line {line}: .*{message}"):
        read_commands(path)


def test_a_well_formed_file_reads(tmp_path):
    path = tmp_path / "commands.jsonl"
    path.write_text(f"{HEADER}\n{TENANT}\n{TICK}\n")
    header, commands = read_commands(path)
    assert header["duration"] == 100 and [c["command"] for c in commands] == ["add_tenant", "tick"]
    path.write_text("")
    with pytest.raises(CommandsError, match="empty"):
        read_commands(path)
