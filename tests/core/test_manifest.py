"""Manifests: Akash SDL 2.0 files parsed into orders, and every problem reported at its path."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kova_core._errors import ManifestError, ManifestProblem
from kova_core._manifest import FileMount, Manifest, Price, StorageMount, parse_manifest
from kova_core._resources import Resources
from kova_core._specs import GpuModel, OrderSpec, StorageVolume

SDL = Path(__file__).parent / "sdl"
Mi, Gi = 1024**2, 1024**3

# A valid manifest that the malformed cases below each break in one place (or a few).
BASE = """\
version: "2.0"
services:
  web:
    image: nginx:1.25
    env:
      - MODE=production
    expose:
      - port: 80
        as: 80
        accept:
          - www.example.com
        to:
          - global: true
    depends_on:
      - db
  db:
    image: postgres:16
    params:
      storage:
        data:
          mount: /var/lib/postgresql/data
    expose:
      - port: 5432
        to:
          - service: web
profiles:
  compute:
    web:
      resources:
        cpu:
          units: 0.5
        memory:
          size: 512Mi
        storage:
          size: 1Gi
    db:
      resources:
        cpu:
          units: 1
        memory:
          size: 2Gi
        storage:
          - size: 5Gi
          - name: data
            size: 10Gi
            attributes:
              persistent: true
              class: beta2
  placement:
    anywhere:
      pricing:
        web:
          denom: uakt
          amount: 1000
        db:
          denom: uakt
          amount: 2000
deployment:
  web:
    anywhere:
      profile: web
      count: 3
  db:
    anywhere:
      profile: db
      count: 1
"""

DEPLOYMENT = BASE[BASE.index("deployment:") :]


def edit(*changes: tuple[str, str], base: str = BASE) -> str:
    """``base`` with each ``old`` (which must occur exactly once) replaced by ``new``."""
    for old, new in changes:
        assert base.count(old) == 1, f"{old!r} occurs {base.count(old)} times"
        base = base.replace(old, new)
    return base


def problems_of(source: Any, **kwargs: Any) -> tuple[ManifestProblem, ...]:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(source, **kwargs)
    return raised.value.problems


def test_base_is_valid() -> None:
    manifest = parse_manifest(BASE)
    assert [(g.service, g.placement, g.profile, g.count) for g in manifest.groups] == [
        ("web", "anywhere", "web", 3),
        ("db", "anywhere", "db", 1),
    ]
    assert len(manifest.order_specs()) == 4


# (id, manifest text, parse keyword arguments, [(path, words the message contains)])
MALFORMED: list[tuple[str, str, dict[str, Any], list[tuple[str, str]]]] = [
    (
        "cpu units 0",
        edit(("units: 0.5", "units: 0")),
        {},
        [("profiles.compute.web.resources.cpu.units", "must be greater than 0")],
    ),
    (
        "cpu units abc",
        edit(("units: 0.5", 'units: "abc"')),
        {},
        [("profiles.compute.web.resources.cpu.units", "not a CPU amount: 'abc'")],
    ),
    (
        "cpu finer than a millicore",
        edit(("units: 0.5", "units: 0.0005")),
        {},
        [("profiles.compute.web.resources.cpu.units", "finer than one millicore")],
    ),
    (
        "memory 12Qi",
        edit(("size: 512Mi", "size: 12Qi")),
        {},
        [("profiles.compute.web.resources.memory.size", "not a size: '12Qi'")],
    ),
    (
        "storage size 0",
        edit(("size: 10Gi", "size: 0")),
        {},
        [("profiles.compute.db.resources.storage.1.size", "must be greater than 0")],
    ),
    (
        "cpu section missing",
        edit(("        cpu:\n          units: 0.5\n", "")),
        {},
        [("profiles.compute.web.resources.cpu", "missing")],
    ),
    (
        "count 0",
        edit(("count: 3", "count: 0")),
        {},
        [("deployment.web.anywhere.count", "must be at least 1")],
    ),
    (
        "count three",
        edit(("count: 3", "count: three")),
        {},
        [("deployment.web.anywhere.count", "must be a whole number, got 'three'")],
    ),
    (
        "missing image",
        edit(("    image: nginx:1.25\n", "")),
        {},
        [("services.web.image", "missing")],
    ),
    (
        "unknown service in deployment",
        edit(("deployment:\n  web:", "deployment:\n  webb:")),
        {},
        [("deployment.webb", "no service named 'webb'"), ("services.web", "not deployed")],
    ),
    (
        "unknown placement",
        edit(("    anywhere:\n      profile: web", "    somewhere:\n      profile: web")),
        {},
        [("deployment.web.somewhere", "no placement named 'somewhere'")],
    ),
    (
        "unknown profile",
        edit(("profile: web", "profile: webx")),
        {},
        [("deployment.web.anywhere.profile", "no compute profile named 'webx'")],
    ),
    (
        "missing pricing for a profile",
        edit(("        web:\n          denom: uakt\n          amount: 1000\n", "")),
        {},
        [("profiles.placement.anywhere.pricing.web", "missing")],
    ),
    (
        "pricing for an unknown profile",
        edit(
            (
                "          amount: 2000\n",
                "          amount: 2000\n        cache:\n"
                "          denom: uakt\n          amount: 5\n",
            )
        ),
        {},
        [("profiles.placement.anywhere.pricing.cache", "no compute profile named 'cache'")],
    ),
    (
        "denom not accepted",
        edit(("denom: uakt\n          amount: 1000", "denom: uusd\n          amount: 1000")),
        {"accepted_denoms": ("uakt", "uusdc")},
        [
            (
                "profiles.placement.anywhere.pricing.web.denom",
                "'uusd' is not accepted (accepted: uakt, uusdc)",
            )
        ],
    ),
    (
        "amount 0",
        edit(("amount: 1000", "amount: 0")),
        {},
        [("profiles.placement.anywhere.pricing.web.amount", "must be greater than 0")],
    ),
    (
        "amount with a fraction of a micro-unit",
        edit(("amount: 1000", "amount: 1.5")),
        {},
        [("profiles.placement.anywhere.pricing.web.amount", "fraction of a micro-unit")],
    ),
    (
        "amount not a number",
        edit(("amount: 1000", "amount: cheap")),
        {},
        [("profiles.placement.anywhere.pricing.web.amount", "not a number")],
    ),
    (
        "env entry without a name",
        edit(("- MODE=production", "- =production")),
        {},
        [("services.web.env.0", "must be KEY=value, got '=production'")],
    ),
    (
        "port 70000",
        edit(("- port: 80\n", "- port: 70000\n")),
        {},
        [("services.web.expose.0.port", "must be from 1 to 65535, got 70000")],
    ),
    (
        "proto http",
        edit(("        as: 80\n", "        as: 80\n        proto: http\n")),
        {},
        [("services.web.expose.0.proto", "must be tcp or udp")],
    ),
    (
        "accept an invalid hostname",
        edit(("www.example.com", "www..example.com")),
        {},
        [("services.web.expose.0.accept.0", "not a hostname")],
    ),
    (
        "expose to an unknown service",
        edit(("- service: web", "- service: app")),
        {},
        [("services.db.expose.0.to.0.service", "no service named 'app'")],
    ),
    (
        "duplicate storage volume names",
        edit(("          - size: 5Gi\n", "          - name: data\n            size: 5Gi\n")),
        {},
        [("profiles.compute.db.resources.storage.1.name", "duplicate storage volume name 'data'")],
    ),
    (
        "persistent ram storage",
        edit(("class: beta2", "class: ram")),
        {},
        [("profiles.compute.db.resources.storage.1.attributes.persistent", "cannot be persistent")],
    ),
    (
        "unknown storage class",
        edit(("class: beta2", "class: beta9")),
        {},
        [("profiles.compute.db.resources.storage.1.attributes.class", "unknown storage class")],
    ),
    (
        "params.storage names an unknown volume",
        edit(("        data:\n          mount", "        logs:\n          mount")),
        {},
        [
            ("services.db.params.storage.data", "persistent volume 'data', which needs a mount"),
            ("services.db.params.storage.logs", "compute profile 'db' has no storage volume 'logs'"),
        ],
    ),
    (
        "relative mount path",
        edit(("mount: /var/lib/postgresql/data", "mount: data")),
        {},
        [("services.db.params.storage.data.mount", "must be an absolute path")],
    ),
    (
        "depends_on an unknown service",
        edit(("      - db\n", "      - cache\n")),
        {},
        [("services.web.depends_on.0", "no service named 'cache'")],
    ),
    (
        "kind batch",
        "kind: batch\n" + BASE,
        {},
        [("kind", "must be deployment or job, got 'batch'")],
    ),
    (
        "job without max_runtime",
        "kind: job\n" + BASE,
        {},
        [("max_runtime", "missing")],
    ),
    (
        "job with a bad max_runtime",
        "kind: job\nmax_runtime: soon\n" + BASE,
        {},
        [("max_runtime", "not a duration: 'soon'")],
    ),
    (
        "max_runtime on a deployment",
        "max_runtime: 2h\n" + BASE,
        {},
        [("max_runtime", "only a job has a max_runtime")],
    ),
    (
        "unsupported version",
        edit(('version: "2.0"', 'version: "3.0"')),
        {},
        [("version", "unsupported version '3.0'")],
    ),
    (
        "missing version",
        edit(('version: "2.0"\n', "")),
        {},
        [("version", "missing")],
    ),
    (
        "unknown top-level key, strict",
        BASE + "extra: 1\n",
        {"strict": True},
        [("extra", "unknown field")],
    ),
    (
        "misspelled count, strict",
        edit(("count: 3", "cout: 3")),
        {"strict": True},
        [
            ("deployment.web.anywhere.cout", "unknown field (did you mean 'count'?)"),
            ("deployment.web.anywhere.count", "missing"),
        ],
    ),
    (
        "misspelled service field, strict",
        edit(("    image: postgres:16\n", "    image: postgres:16\n    enviroment: []\n")),
        {"strict": True},
        [("services.db.enviroment", "unknown field")],
    ),
    (
        "YAML syntax error",
        edit(("image: nginx:1.25", "image: [nginx")),
        {},
        [("", "invalid YAML at line")],
    ),
    (
        "YAML duplicate key",
        edit(("  db:\n    image: postgres:16", "  web:\n    image: postgres:16")),
        {},
        [("", "found duplicate key 'web'")],
    ),
    (
        "top-level list",
        "- web\n- db\n",
        {},
        [("", "a manifest must be a mapping")],
    ),
    (
        "empty document",
        "",
        {},
        [("", "got an empty document")],
    ),
    (
        "gpu units without vendor",
        edit(("          size: 1Gi\n", "          size: 1Gi\n        gpu:\n          units: 1\n")),
        {},
        [("profiles.compute.web.resources.gpu.attributes", "a GPU needs a vendor")],
    ),
    (
        "empty deployment",
        BASE.replace(DEPLOYMENT, "deployment: {}\n"),
        {},
        [("deployment", "deploys nothing")],
    ),
    (
        "missing deployment",
        BASE.replace(DEPLOYMENT, ""),
        {},
        [("deployment", "missing")],
    ),
    (
        "service name not a DNS label",
        edit(
            ("  db:\n    image", "  DB_1:\n    image"),
            ("      - db\n", "      - DB_1\n"),
            ("  db:\n    anywhere", "  DB_1:\n    anywhere"),
        ),
        {},
        [("services.DB_1", "lowercase letters, digits and '-'")],
    ),
]


@pytest.mark.parametrize(
    ("source", "kwargs", "expected"),
    [
        pytest.param(source, kwargs, expected, id=name)
        for name, source, kwargs, expected in MALFORMED
    ],
)
def test_malformed_manifest(
    source: str, kwargs: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    problems = problems_of(source, **kwargs)
    assert [p.path for p in problems] == [path for path, _ in expected]
    for problem, (_, words) in zip(problems, expected, strict=True):
        assert words in problem.message
        assert "Traceback" not in problem.message


def test_malformed_table_is_large_enough() -> None:
    assert len(MALFORMED) >= 25


def test_every_problem_is_reported_at_once() -> None:
    source = (
        edit(
            ("units: 0.5", "units: 0"),
            ("    image: nginx:1.25\n", ""),
            ("count: 3", "count: 0"),
            ("- port: 80\n", "- port: 70000\n"),
            ("size: 512Mi", "size: 12Qi"),
            ("amount: 2000", "amount: 0.5"),
            ("      - db\n", "      - cache\n"),
            ("  db:\n    anywhere:\n      profile: db", "  db:\n    anywhere:\n      profile: dbx"),
        )
        + "kind: batch\n"
    )
    problems = problems_of(source)
    assert {(p.path, p.message.split(":")[0].split(",")[0]) for p in problems} == {
        ("kind", "must be deployment or job"),
        ("services.web.image", "missing"),
        ("services.web.expose.0.port", "must be from 1 to 65535"),
        ("services.web.depends_on.0", "no service named 'cache' in services"),
        ("profiles.compute.web.resources.cpu.units", "must be greater than 0"),
        ("profiles.compute.web.resources.memory.size", "not a size"),
        ("profiles.placement.anywhere.pricing.db.amount", "0.5 is a fraction of a micro-unit"),
        ("deployment.web.anywhere.count", "must be at least 1"),
        ("deployment.db.anywhere.profile", "no compute profile named 'dbx' in profiles.compute"),
    }
    assert len(problems) == 9
    text = str(ManifestError(problems))
    assert text.startswith("invalid manifest (9 problems):")


def test_a_yaml_error_gives_line_and_column_without_traceback() -> None:
    (problem,) = problems_of("version: '2.0'\nservices:\n  web: [\n")
    assert problem.path == ""
    assert problem.message.startswith("invalid YAML at line 4, column 1:")
    assert "Traceback" not in problem.message and "File" not in problem.message


# ---- the seed's example ------------------------------------------------------------------------

SEED = """\
version: "2.0"
services:
  web:
    image: nginx
    expose:
      - port: 80
        to:
          - global: true
profiles:
  compute:
    web:
      resources:
        cpu:
          units: 0.5
        memory:
          size: 512Mi
        storage:
          size: 1Gi
  placement:
    anywhere:
      pricing:
        web:
          denom: uakt
          amount: 1000000
deployment:
  web:
    anywhere:
      profile: web
      count: {count}
"""


@pytest.mark.parametrize("count", [1, 3])
def test_seed_example_makes_one_order_per_replica(count: int) -> None:
    specs = parse_manifest(SEED.format(count=count)).order_specs()
    volume = StorageVolume(name="default", size=Gi)
    assert specs == tuple(
        OrderSpec(
            service="web",
            placement="anywhere",
            profile="web",
            replica=replica,
            resources=Resources(cpu=500, memory=512 * Mi, storage=Gi),
            max_price=1_000_000,
            denom="uakt",
            storage=(volume,),
        )
        for replica in range(count)
    )


def test_text_bytes_json_and_mappings_parse_alike() -> None:
    loaded = yaml.safe_load(BASE)
    expected = parse_manifest(BASE)
    assert parse_manifest(BASE.encode()) == expected
    assert parse_manifest(json.dumps(loaded)) == expected
    assert parse_manifest(loaded) == expected


def test_the_model_is_immutable() -> None:
    manifest = parse_manifest(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.kind = "job"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.services["x"] = manifest.services["web"]  # type: ignore[index]
    with pytest.raises(TypeError):
        manifest.services["web"].env["MODE"] = "dev"  # type: ignore[index]


def test_denominations_are_open_unless_restricted() -> None:
    assert parse_manifest(BASE).placements["anywhere"].pricing["web"] == Price(
        denom="uakt", amount=1000
    )
    assert parse_manifest(BASE, accepted_denoms=["uakt"]).order_specs()[0].denom == "uakt"


def test_tolerated_forms() -> None:
    source = edit(
        ("    env:\n      - MODE=production\n", "    env:\n      MODE: production\n      N: 3\n"),
        ("    image: postgres:16\n", "    image: postgres:16\n    command: postgres\n"),
        ("units: 0.5", 'units: "500m"'),
        ("size: 512Mi", "size: 512mi"),
        ("amount: 1000", 'amount: "1000"'),
        ('version: "2.0"', "version: 2.1"),
        (
            "          size: 1Gi\n",
            "          size: 1Gi\n        gpu:\n          units: 1\n          attributes:\n"
            "            vendor:\n              NVIDIA:\n                - model: A100\n"
            "                  interface: PCIe\n",
        ),
    )
    manifest = parse_manifest(source)
    assert manifest.version == "2.1"
    assert dict(manifest.services["web"].env) == {"MODE": "production", "N": "3"}
    assert manifest.services["db"].command == ("postgres",)
    web = manifest.compute_profiles["web"].resources
    assert (web.cpu, web.memory) == (500, 512 * Mi)
    assert manifest.placements["anywhere"].pricing["web"].amount == 1000
    assert manifest.compute_profiles["web"].gpu_models == (
        GpuModel(vendor="nvidia", model="a100", interface="pcie"),
    )
    assert manifest.compute_profiles["web"].resources.gpu == 1


def test_a_job() -> None:
    manifest = parse_manifest("kind: job\nmax_runtime: 1h30m\n" + BASE)
    assert manifest.is_job and manifest.max_runtime == 5400
    assert not parse_manifest(BASE).is_job
    assert parse_manifest(BASE).max_runtime is None


HASH = "0123456789abcdef" * 4


def with_files(files: str) -> str:
    return edit(("    image: nginx:1.25\n", f"    image: nginx:1.25\n    files:\n{files}"))


def test_uploaded_files_are_placed_at_their_paths() -> None:
    manifest = parse_manifest(with_files(
        f"      - {{sha256: {HASH}, path: /srv/input.csv}}\n"
        f"      - {{sha256: {'f' * 64}, path: /etc/app.toml}}\n"
    ))  # fmt: skip
    assert manifest.services["web"].files == (
        FileMount(sha256=HASH, path="/srv/input.csv"),
        FileMount(sha256="f" * 64, path="/etc/app.toml"),
    )
    assert parse_manifest(BASE).services["web"].files == ()


@pytest.mark.parametrize(
    ("files", "path", "says"),
    [
        ("      - {sha256: abc, path: /x}\n", "services.web.files.0.sha256", "64 lowercase"),
        (f"      - {{sha256: {HASH.upper()}, path: /x}}\n", "services.web.files.0.sha256", "64"),
        (f"      - {{sha256: {HASH}, path: x.csv}}\n", "services.web.files.0.path", "absolute"),
        (f"      - {{sha256: {HASH}, path: /data/}}\n", "services.web.files.0.path", "file path"),
        (f"      - {{sha256: {HASH}}}\n", "services.web.files.0.path", "absolute"),
        (f"      - {{sha256: {HASH}, path: /x, mode: 644}}\n", "services.web.files.0.mode", ""),
        (f"      - {{sha256: {HASH}, path: /x}}\n      - {{sha256: {HASH}, path: /x}}\n",
         "services.web.files.1.path", "already used"),
        ("      {sha256: 1}\n", "services.web.files", "must be a list"),
    ],
)
def test_bad_files_are_named(files: str, path: str, says: str) -> None:
    found = problems_of(with_files(files), strict=True)  # strict: the unknown "mode" too
    assert [p.path for p in found] == [path]
    assert says in found[0].message


def test_a_file_cannot_take_a_volumes_mount() -> None:
    source = edit(("    image: postgres:16\n",
                   f"    image: postgres:16\n    files:\n"
                   f"      - {{sha256: {HASH}, path: /var/lib/postgresql/data}}\n"))  # fmt: skip
    (problem,) = problems_of(source)
    assert problem.path == "services.db.files.0.path" and "already used" in problem.message


def test_a_read_only_root_filesystem_is_asked_for_per_service() -> None:
    manifest = parse_manifest(edit(("    image: postgres:16\n",
                                    "    image: postgres:16\n    readOnlyRootFilesystem: true\n")))  # fmt: skip
    assert manifest.services["db"].read_only_root is True
    assert manifest.services["web"].read_only_root is False  # the default: Docker's
    (problem,) = problems_of(edit(("    image: postgres:16\n",
                                   "    image: postgres:16\n    readOnlyRootFilesystem: maybe\n")))  # fmt: skip
    assert problem.path == "services.db.readOnlyRootFilesystem" and "true or false" in problem.message


def test_under_a_read_only_root_files_go_onto_a_writable_volume() -> None:
    """Files are copied in before the container starts, and a read-only root refuses them."""
    placed = ("    image: postgres:16\n",
              "    image: postgres:16\n    readOnlyRootFilesystem: true\n    files:\n"
              f"      - {{sha256: {HASH}, path: /var/lib/postgresql/data/seed.sql}}\n"
              f"      - {{sha256: {HASH}, path: /etc/seed.conf}}\n")  # fmt: skip
    (problem,) = problems_of(edit(placed))
    assert problem.path == "services.db.files.1.path"
    assert "writable storage mount" in problem.message and "/var/lib/postgresql/data/" in problem.message
    read_only_volume = edit(placed, ("          mount: /var/lib/postgresql/data\n",
                                     "          mount: /var/lib/postgresql/data\n          readOnly: true\n"))  # fmt: skip
    assert [p.path for p in problems_of(read_only_volume)] == ["services.db.files.0.path", "services.db.files.1.path"]


# ---- real-world SDL files ----------------------------------------------------------------------


def load_sdl(name: str, **kwargs: Any) -> Manifest:
    return parse_manifest((SDL / name).read_text(), **kwargs)


def summary(spec: OrderSpec) -> tuple[Any, ...]:
    r = spec.resources
    return (
        spec.service,
        spec.placement,
        spec.replica,
        (r.cpu, r.memory, r.storage, r.gpu),
        spec.max_price,
        spec.denom,
        dict(spec.attributes),
    )


def test_sdl_files_all_parse() -> None:
    names = sorted(p.name for p in SDL.glob("*.yaml"))
    assert len(names) >= 5
    for name in names:
        assert load_sdl(name).order_specs()


def test_sdl_web_nginx() -> None:
    manifest = load_sdl("web-nginx.yaml", accepted_denoms=["uakt"])
    (web,) = manifest.services["web"].expose
    assert (web.port, web.as_port, web.proto, web.global_) == (80, 80, "tcp", True)
    assert web.accept == ("www.example.com", "example.com")
    (spec,) = manifest.order_specs()
    assert summary(spec) == (
        "web",
        "dcloud",
        0,
        (500, 512 * Mi, 512 * Mi, 0),
        1000,
        "uakt",
        {"host": "akash"},
    )
    assert spec.storage == (StorageVolume(name="default", size=512 * Mi),)


def test_sdl_postgres_with_persistent_storage() -> None:
    manifest = load_sdl("postgres.yaml")
    service = manifest.services["postgres"]
    assert service.env["PGDATA"] == "/var/lib/postgresql/data/pgdata"
    assert service.storage_mounts == (
        StorageMount(volume="data", mount="/var/lib/postgresql/data", read_only=False),
    )
    (spec,) = manifest.order_specs()
    assert summary(spec) == (
        "postgres",
        "akash",
        0,
        (1000, 2 * Gi, 21 * Gi, 0),
        10_000,
        "uakt",
        {"host": "akash", "tier": "community"},
    )
    assert spec.storage == (
        StorageVolume(name="default", size=Gi),
        StorageVolume(
            name="data",
            size=20 * Gi,
            persistent=True,
            storage_class="beta2",
            mount="/var/lib/postgresql/data",
        ),
    )


def test_sdl_gpu_inference() -> None:
    manifest = load_sdl("gpu-inference.yaml")
    service = manifest.services["vllm"]
    assert service.command == ("bash", "-c")
    assert service.args[0].startswith("python3 -m vllm.entrypoints.openai.api_server --model")
    assert dict(service.env) == {"HF_TOKEN": "", "NCCL_DEBUG": "INFO"}
    (expose,) = service.expose
    assert (expose.port, expose.as_port, expose.global_) == (8000, 80, True)
    (spec,) = manifest.order_specs()
    assert summary(spec) == (
        "vllm",
        "dcloud",
        0,
        (8000, 64 * Gi, 116 * Gi, 1),
        100_000,
        "uakt",
        {},
    )
    assert spec.gpu_models == (
        GpuModel(vendor="nvidia", model="a100", ram="80Gi", interface="sxm"),
        GpuModel(vendor="nvidia", model="h100"),
    )
    assert spec.storage == (
        StorageVolume(name="default", size=100 * Gi),
        StorageVolume(name="shm", size=16 * Gi, storage_class="ram", mount="/dev/shm"),
    )


def test_sdl_multi_service() -> None:
    manifest = load_sdl("multi-service.yaml")
    assert manifest.services["web"].depends_on == ("api",)
    assert manifest.services["api"].depends_on == ("db",)
    assert manifest.services["api"].expose[0].to_services == ("web",)
    assert manifest.services["api"].expose[0].global_ is False
    assert manifest.services["db"].expose[0].as_port == 5432
    us, eu = {"region": "us-west"}, {"region": "eu-central"}
    web = (250, 256 * Mi, 512 * Mi, 0)
    api = (1500, Gi, Gi, 0)
    db = (2000, 4 * Gi, 51 * Gi, 0)
    assert [summary(s) for s in manifest.order_specs()] == [
        ("web", "us-west", 0, web, 500, "uakt", us),
        ("web", "us-west", 1, web, 500, "uakt", us),
        ("web", "eu-central", 0, web, 750, "uakt", eu),
        ("api", "us-west", 0, api, 2000, "uakt", us),
        ("api", "us-west", 1, api, 2000, "uakt", us),
        ("db", "us-west", 0, db, 8000, "uakt", us),
    ]
    db_spec = manifest.order_specs()[-1]
    assert db_spec.storage[1] == StorageVolume(
        name="pgdata",
        size=50 * Gi,
        persistent=True,
        storage_class="beta3",
        mount="/var/lib/postgresql/data",
    )


def test_sdl_job() -> None:
    usdc = "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1"
    manifest = load_sdl("video-encode-job.yaml", accepted_denoms=["uakt", usdc])
    assert manifest.is_job and manifest.kind == "job"
    assert manifest.max_runtime == 7200
    service = manifest.services["encode"]
    assert service.command == ("ffmpeg",)
    assert service.args[-3:] == ("-crf", "23", "/output/out.mp4")
    (spec,) = manifest.order_specs()
    assert summary(spec) == ("encode", "anywhere", 0, (4000, 8 * Gi, 60 * Gi, 0), 250, usdc, {})
    assert spec.storage == (
        StorageVolume(name="default", size=10 * Gi),
        StorageVolume(name="output", size=50 * Gi, mount="/output"),
    )
    problems = problems_of((SDL / "video-encode-job.yaml").read_text(), accepted_denoms=["uakt"])
    assert [p.path for p in problems] == ["profiles.placement.anywhere.pricing.encode.denom"]


def test_sdl_signed_by() -> None:
    manifest = load_sdl("audited.yaml")
    specs = manifest.order_specs()
    assert [summary(s) for s in specs] == [
        (
            "app",
            "audited",
            r,
            (1000, Gi, 5 * Gi, 0),
            5000,
            "uakt",
            {"host": "akash", "organization": "example"},
        )
        for r in range(2)
    ]
    for spec in specs:
        assert spec.signed_by_any_of == (
            "akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63",
            "akash18qa2a2ltfyvkyj0ggj3hkvuj6twzyumuaru9s4",
        )
        assert spec.signed_by_all_of == ("akash1ccktptfkvdc67msasmesuy5m7gpc76z75kukpz",)


def test_sdl_game_server_with_endpoints_udp_and_credentials() -> None:
    manifest = load_sdl("game-server.yaml")
    service = manifest.services["minecraft"]
    assert [(e.port, e.proto, e.global_) for e in service.expose] == [
        (25565, "tcp", True),
        (19132, "udp", True),
    ]
    assert service.credentials is not None
    assert service.credentials.host == "registry.example.com"
    assert "s3cret" not in repr(service.credentials)
    (spec,) = manifest.order_specs()
    assert summary(spec) == (
        "minecraft",
        "westcoast",
        0,
        (2000, 4 * Gi, 12 * Gi, 0),
        3000,
        "uakt",
        {
            "region": "us-west",
            "capabilities/storage/1/class": "beta3",
            "capabilities/storage/1/persistent": "true",
        },
    )
    assert spec.storage[1].mount == "/data" and spec.storage[1].persistent


# ---- properties ----------------------------------------------------------------------------------

UNITS = [("", 1), ("Ki", 1024), ("Mi", Mi), ("Gi", Gi), ("k", 1000), ("M", 10**6), ("G", 10**9)]


@given(
    millicores=st.integers(min_value=1, max_value=256_000),
    cpu_form=st.sampled_from(["cores", "millicores", "float"]),
    memory=st.integers(min_value=1, max_value=4096),
    unit=st.sampled_from(UNITS),
    count=st.integers(min_value=1, max_value=20),
    price=st.integers(min_value=1, max_value=10**12),
)
def test_any_valid_resources_make_count_orders(
    millicores: int, cpu_form: str, memory: int, unit: tuple[str, int], count: int, price: int
) -> None:
    cpu = {
        "cores": f'"{Decimal(millicores) / 1000}"',
        "millicores": f'"{millicores}m"',
        "float": repr(millicores / 1000),
    }[cpu_form]
    suffix, multiplier = unit
    source = (
        SEED.format(count=count)
        .replace("units: 0.5", f"units: {cpu}")
        .replace("size: 512Mi", f"size: {memory}{suffix}")
        .replace("amount: 1000000", f"amount: {price}")
    )
    specs = parse_manifest(source).order_specs()
    assert len(specs) == count
    assert [s.replica for s in specs] == list(range(count))
    for spec in specs:
        assert spec.resources == Resources(cpu=millicores, memory=memory * multiplier, storage=Gi)
        assert spec.max_price == price


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and list indices) into a loaded manifest."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths_of(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths_of(item, (*prefix, index))
    return found


BASE_PATHS = paths_of(yaml.safe_load(BASE))
JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["0", "1Gi", "web", "db", "anywhere", "2h", "=", "tcp", "/data"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["size", "units", "name", "x", "web", "global"]), inner)
    ),
    max_leaves=6,
)


@given(st.lists(st.tuples(st.sampled_from(BASE_PATHS), JUNK | st.just(...)), max_size=4))
def test_any_damage_gives_a_manifest_error_never_a_crash(
    damage: list[tuple[tuple[Any, ...], Any]],
) -> None:
    data = yaml.safe_load(BASE)
    for path, junk in damage:
        parent = data
        try:
            for step in path[:-1]:
                parent = parent[step]
            if junk is ...:
                del parent[path[-1]]
            else:
                parent[path[-1]] = junk
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed this path
    try:
        manifest = parse_manifest(data)
    except ManifestError as error:
        assert error.problems
        assert all(p.message for p in error.problems)
    else:
        assert manifest.order_specs()


@pytest.mark.parametrize(
    ("change", "path"),
    [
        pytest.param(("size: 512Mi", "size: 1e30Ei"), "profiles.compute.web.resources.memory.size",
                     id="memory"),
        pytest.param(("amount: 1000\n", f"amount: {2**70}\n"),
                     "profiles.placement.anywhere.pricing.web.amount", id="price"),
        pytest.param(("count: 3", f"count: {2**63}"), "deployment.web.anywhere.count", id="count"),
        pytest.param((("- size: 5Gi", "- size: 5Ei"), ("size: 10Gi", "size: 4Ei")),
                     "profiles.compute.db.resources.storage", id="volumes-together"),
    ],
)  # fmt: skip
def test_numbers_beyond_64_bits_are_refused_naming_the_field(change, path) -> None:
    # every number of a manifest is stored in 64 bits: one beyond them is the manifest's fault
    changes = change if isinstance(change[0], tuple) else (change,)
    (problem,) = problems_of(edit(*changes))
    assert problem.path == path
    assert str(2**63 - 1) in problem.message


def test_a_job_longer_than_64_bits_of_blocks_is_refused() -> None:
    job = "kind: job\nmax_runtime: " + str(2**64) + "\n" + BASE
    (problem,) = problems_of(job)
    assert problem.path == "max_runtime"
