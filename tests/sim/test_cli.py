"""The kova-sim command, run as a user runs it: a real process, its exit status and its output."""

import json
import subprocess
import sys

import pytest
import yaml

SMALL = {
    "name": "small",
    "seed": 2,
    "duration": "2h",
    "providers": [{"count": 2, "capacity": {"cpu": 4, "memory": "16Gi", "storage": "100Gi"}}],
    "demand": [
        {
            "arrivals": {"process": "poisson", "rate": "20/h"},
            "resources": {"cpu": 1, "memory": "1Gi", "storage": "1Gi"},
            "max_price": 2,
            "lifetime": {"distribution": "exponential", "mean": "30m"},
        }
    ],
}


def kova_sim(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "kova_sim", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def with_(path_and_value):
    """SMALL with one field replaced (``a.b[0].c`` paths)."""
    data = json.loads(json.dumps(SMALL))
    for path, value in path_and_value.items():
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return data


BAD = [
    ("unknown key", with_({"colour": "red"}), "colour: unknown field"),
    ("unknown nested key", with_({"providers.0.speed": 3}), "providers[0].speed: unknown field"),
    ("wrong type", with_({"providers.0.count": "many"}), "providers[0].count"),
    ("negative rate", with_({"demand.0.arrivals.rate": -2}), "demand[0].arrivals.rate"),
    (
        "unknown strategy",
        with_({"providers.0.pricing": {"strategy": "psychic"}}),
        "unknown pricing strategy 'psychic'",
    ),
    (
        "bad strategy parameter",
        with_({"providers.0.pricing": {"strategy": "undercut", "flor": 1}}),
        "providers[0].pricing.flor",
    ),
    ("unknown policy", with_({"demand.0.selection": {"policy": "vibes"}}), "demand[0].selection"),
    ("missing field", with_({"duration": ...}), "duration: required field is missing"),
    ("bad duration", with_({"duration": "soon"}), "duration: not a duration"),
    ("negative money", with_({"demand.0.max_price": -1}), "demand[0].max_price"),
    ("money finer than a micro-unit", with_({"demand.0.max_price": "0.0000001"}), "max_price"),
    ("job without runtime", with_({"demand.0.kind": "job"}), "needs a runtime distribution"),
    ("phase beyond the interval", with_({"providers.0.poll_phase": 15}), "poll_phase"),
    ("unknown limit", with_({"limits": {"max_orders": 3}}), "limits.max_orders: unknown field"),
    ("limit out of range", with_({"limits": {"tenant_share_bps": 20_000}}),
     "limits.tenant_share_bps"),
    ("zero replicas", with_({"limits": {"max_replicas": 0}}), "limits.max_replicas"),
    ("not a mapping", "- just\n- a list\n", "expected a mapping"),
    ("bad YAML", "name: [unclosed\n", "invalid YAML"),
]


@pytest.mark.parametrize(("case", "data", "message"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_scenarios_name_the_field_and_change_nothing(tmp_path, case, data, message, command):
    scenario = write(tmp_path / "bad.yaml", data)
    out = tmp_path / "out"
    args = [command, scenario] + (["--out", out] if command == "run" else [])
    result = kova_sim(*args)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()


def test_missing_scenario_file(tmp_path):
    result = kova_sim("run", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "cannot read" in result.stderr


def test_validate_a_good_scenario(tmp_path):
    result = kova_sim("validate", write(tmp_path / "s.yaml", SMALL))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "2 provider(s)" in result.stdout


def test_run_writes_the_run_folder_and_prints_a_summary(tmp_path):
    scenario = write(tmp_path / "s.yaml", SMALL)
    result = kova_sim("run", scenario, "--seed", 9, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "small-9"  # the default: runs/<name>-<seed>
    for name in ["orders", "bids", "leases", "ledger", "providers", "timeseries"]:
        assert (out / f"{name}.parquet").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 9 and summary["money_drift"] == 0
    assert yaml.safe_load((out / "scenario.yaml").read_text())["seed"] == 9
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "escrow_paused.png",
        "price.png",
        "revenue_lorenz.png",
        "time_to_lease.png",
        "utilisation.png",
    ]
    assert "fill rate" in result.stdout and "money drift" in result.stdout


def test_quiet_run_prints_nothing(tmp_path):
    result = kova_sim("run", write(tmp_path / "s.yaml", SMALL), "--out", tmp_path / "o", "-q",
                      "--no-plots")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert not (tmp_path / "o" / "plots").exists()


def test_only_built_engines_are_accepted(tmp_path):
    result = kova_sim("run", write(tmp_path / "s.yaml", SMALL), "--engine", "warp",
                      "--out", tmp_path / "o")
    assert result.returncode == 2
    assert "Invalid value for '--engine'" in result.stderr and "'warp'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_the_fast_engine_refuses_limits_that_polls_read(tmp_path):
    data = with_({"limits": {"order_lifetime": "1h"}})
    result = kova_sim("run", write(tmp_path / "s.yaml", data), "--engine", "fast",
                      "--out", tmp_path / "o")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--engine fast: limits.order_lifetime: the fast engine defers polls" in " ".join(
        result.stderr.split()
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("engine", ["exact", "fast", "auto"])
def test_the_engine_used_is_in_the_summary(tmp_path, engine):
    result = kova_sim("run", write(tmp_path / "s.yaml", SMALL), "--engine", engine,
                      "--out", tmp_path / "o", "--no-plots")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["engine"] == ("fast" if engine == "auto" else engine)
    assert f"{summary['engine']} engine" in result.stdout


def test_compare_runs_side_by_side(tmp_path):
    scenario = write(tmp_path / "s.yaml", SMALL)
    for seed in (1, 2):
        assert kova_sim("run", scenario, "--seed", seed, "--out", tmp_path / f"r{seed}", "-q",
                        "--no-plots").returncode == 0
    result = kova_sim("compare", tmp_path / "r1", tmp_path / "r2")
    assert result.returncode == 0, result.stderr
    assert "seed 1" in result.stdout and "seed 2" in result.stdout
    assert "fill rate" in result.stdout


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = kova_sim("compare", tmp_path)
    assert result.returncode == 2
    assert "no summary.json" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("micro", "shown"),
    [(None, "-"), (0, "$0"), (1, "$0.000001"), (1_500_000, "$1.5"),
     (20_868_185_000_000, "$20,868,185"), (-1_500_000, "-$1.5")],
)
def test_money_is_shown_exactly_with_thousands_separators(micro, shown):
    from kova_sim.cli import _money

    assert _money(micro) == shown
