"""Kova's manifest parser judged against Akash's own: the SDL files in ``files/`` go through
akashjs's SDL class (``akash-parse.js``, under Node, with the akashjs version pinned by
``package-lock.json``) and through :func:`kova_core.parse_manifest`, and both must accept the
same files and read the same services, resources, counts and prices from them.

- ``bad-*.yaml`` files are refused by both (each by Kova at the field named in :data:`REFUSED`).
- ``diff-*.yaml`` files are where the two legitimately differ, each listed in
  :data:`DIFFERENCES` with the reason; the test checks that they still differ exactly so.
- every other file is accepted by both, and compared: per placement, each compute resource's
  CPU, memory, storage volumes, GPUs (units and models), count and price (Akash groups the
  replicas of a profile in a placement as one resource with a count; Kova makes one order per
  replica: the orders are grouped alike to compare), the placement's attributes and signedBy;
  and per service (from akashjs's manifest, what providers are sent) the image, command, args,
  environment, count, exposed ports, hostnames, storage mounts and registry credentials.

Akash mainnet takes prices in uakt and in USDC (its IBC denomination), so Kova parses with
those as the accepted denominations. The Node packages are installed by ``scripts/setup``
(``npm ci`` in this folder). Without Node or the packages the test is skipped, saying why;
with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kova_core import ManifestError, deployment_denom, parse_manifest

HERE = Path(__file__).parent
FILES = sorted((HERE / "files").glob("*.yaml"))
USDC = "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1"
AKASH_DENOMS = ("uakt", USDC)

REFUSED = {
    "bad-credentials-no-password.yaml": "services.api.credentials.password",
    "bad-denom.yaml": "profiles.placement.akash.pricing.web.denom",
    "bad-duplicate-mount.yaml": "services.app.params.storage.two.mount",
    "bad-endpoint-unused.yaml": "endpoints.spare-ip",
    "bad-gpu-attributes-no-units.yaml": "profiles.compute.infer.resources.gpu.attributes",
    "bad-gpu-without-vendor.yaml": "profiles.compute.infer.resources.gpu.attributes",
    "bad-memory-size.yaml": "profiles.compute.web.resources.memory.size",
    "bad-missing-placement.yaml": "deployment.web.somewhere",
    "bad-missing-pricing.yaml": "profiles.placement.akash.pricing.web",  # (priced: api)
    "bad-missing-profile.yaml": "deployment.web.akash.profile",
    "bad-mount-unknown-volume.yaml": "services.app.params.storage.data",
    "bad-persistent-without-mount.yaml": "services.db.params.storage.data",
    "bad-proto.yaml": "services.web.expose.0.proto",
    "bad-ram-persistent.yaml": "profiles.compute.app.resources.storage.1.attributes.persistent",
    "bad-relative-mount.yaml": "services.app.params.storage.data.mount",
    "bad-service-not-deployed.yaml": "services.worker",
    "bad-unknown-endpoint.yaml": "services.dns.expose.0.to.0.ip",
}
"""Files both refuse, and the field of Kova's problem that is Akash's reason."""

DIFFERENCES = {
    "diff-fractional-price.yaml": (
        True, "profiles.placement.akash.pricing.web.amount",
        "Akash prices are decimal coins; Kova counts money in whole micro-units and refuses a "
        "fraction of one (it cannot bill it exactly)",
    ),
    "diff-mixed-denoms.yaml": (
        True, "profiles.placement",
        "a Kova deployment has one escrow, so its prices share one denomination; Akash takes "
        "one denomination per group",
    ),
    "diff-numeric-size.yaml": (
        False, None,
        "akashjs fails on a size written as a number (it calls a string method on it); Akash's "
        "Go parser and Kova read it as bytes",
    ),
    "diff-no-expose.yaml": (
        False, None,
        "akashjs fails on a service without expose (a worker with no ports); Akash's Go parser "
        "and Kova take it",
    ),
    "diff-gpu-interface-case.yaml": (
        False, None,
        "Kova matches GPU vendors, models and interfaces in lower case (PCIe is pcie); akashjs "
        "takes only the exact interfaces pcie and sxm",
    ),
}  # fmt: skip
"""Files where the two differ: (whether akashjs accepts it, the field Kova refuses it at, or
None where Kova accepts it, why)."""


def _node_results() -> dict[str, dict[str, Any]]:
    ci = os.environ.get("CI", "").lower() == "true"
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (HERE / "node_modules" / "@akashnetwork" / "akashjs").is_dir():
        missing = "akashjs is not installed (scripts/setup runs npm ci in tests/sdl)"
    if missing is not None:  # under CI=true a missing Node or akashjs fails, never skips
        (pytest.fail if ci else pytest.skip)(f"the Akash comparison cannot run: {missing}")
    ran = subprocess.run(
        [node, str(HERE / "akash-parse.js"), *map(str, FILES)],
        capture_output=True, text=True, timeout=300, cwd=HERE, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    results = [json.loads(line) for line in ran.stdout.splitlines()]
    return {r["file"]: r for r in results}


@pytest.fixture(scope="module")
def akash() -> dict[str, dict[str, Any]]:
    return _node_results()


def kova(path: Path) -> tuple[Any, ManifestError | None]:
    """Kova's manifest (None if refused) and its refusal, as a network taking Akash's
    denominations refuses it (the parser, then the market's one-denomination rule)."""
    try:
        manifest = parse_manifest(path.read_text(), accepted_denoms=AKASH_DENOMS)
        deployment_denom(manifest.order_specs(), AKASH_DENOMS)
    except ManifestError as error:
        return None, error
    return manifest, None


# ---- one shape for both ------------------------------------------------------------------------


def _number(text: Any) -> int:
    return round(Decimal(str(text)))


def _akash_storage(volumes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (v["name"], _number(v["size"]), v["attributes"].get("persistent") == "true",
         v["attributes"].get("class"))
        for v in volumes
    )  # fmt: skip


def _akash_resources(r: dict[str, Any]) -> tuple[Any, ...]:
    gpu = (_number(r["gpu"]["units"]), tuple(r["gpu"]["attributes"]))
    return (_number(r["cpu"]), _number(r["memory"]), _akash_storage(r["storage"]), gpu)


def _kova_resources(profile: Any) -> tuple[Any, ...]:
    r = profile.resources
    storage = sorted((v.name, v.size, v.persistent, v.storage_class) for v in profile.storage)
    models = []
    for m in profile.gpu_models:
        key = f"vendor/{m.vendor}/model/{m.model or '*'}"
        key += f"/ram/{m.ram}" if m.ram else ""
        key += f"/interface/{m.interface}" if m.interface else ""
        models.append(key)
    return (r.cpu, r.memory, storage, (r.gpu, tuple(sorted(models))))


def _counted(resources: list[tuple[Any, int, str, Decimal]]) -> list[tuple[Any, ...]]:
    """Resources of one shape and price counted together. (Akash's Go parser makes one
    resource of a profile in a placement; akashjs makes a second one for the profile of its
    group's first resource, so the count is what is compared.)"""
    counts: dict[str, tuple[Any, ...]] = {}
    for shape, count, denom, amount in resources:
        key = repr((shape, denom, amount))
        _, before, _, _ = counts.get(key, (shape, 0, denom, amount))
        counts[key] = (shape, before + count, denom, amount)
    return sorted(counts.values())


def akash_groups(result: dict[str, Any]) -> dict[str, Any]:
    return {
        g["name"]: (
            g["attributes"], g["signedBy"],
            _counted([(_akash_resources(r), r["count"], r["price"]["denom"],
                       Decimal(r["price"]["amount"])) for r in g["resources"]]),
        )
        for g in result["groups"]
    }  # fmt: skip


def kova_groups(manifest: Any) -> dict[str, Any]:
    """Kova's orders as Akash groups them: per placement, one resource per compute profile
    with the replicas of every service using it there as its count."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for spec in manifest.order_specs():
        counts[(spec.placement, spec.profile)] += 1
    groups: dict[str, Any] = {}
    for (placement_name, profile_name), count in counts.items():
        placement = manifest.placements[placement_name]
        price = placement.pricing[profile_name]
        _, _, resources = groups.setdefault(placement_name, (
            dict(placement.attributes),
            {"allOf": list(placement.signed_by_all_of), "anyOf": list(placement.signed_by_any_of)},
            [],
        ))  # fmt: skip
        resources.append((_kova_resources(manifest.compute_profiles[profile_name]), count,
                          price.denom, Decimal(price.amount)))  # fmt: skip
    return {name: (a, s, _counted(r)) for name, (a, s, r) in groups.items()}


def akash_services(result: dict[str, Any]) -> dict[tuple[str, str], Any]:
    out = {}
    for s in result["services"]:
        env = dict(item.partition("=")[::2] for item in s["env"] or [])
        exposed = sorted({(e["port"], e["as"] or e["port"], e["proto"].lower())
                          for e in s["expose"] if e["global"]})  # fmt: skip
        internal = sorted({(e["port"], e["service"]) for e in s["expose"] if e["service"]})
        hosts = sorted({h for e in s["expose"] if e["global"] for h in e["hosts"] or []})
        mounts = sorted((m["name"], m["mount"], m["readOnly"]) for m in s["storage"])
        creds = s["credentials"] and (s["credentials"]["host"], s["credentials"]["username"])
        out[(s["placement"], s["name"])] = (
            s["image"], list(s["command"] or []), [str(a) for a in s["args"] or []], env,
            s["count"], _akash_resources(s["resources"]), exposed, internal, hosts, mounts,
            creds,
        )
    return out


def kova_services(manifest: Any) -> dict[tuple[str, str], Any]:
    out = {}
    for group in manifest.groups:
        s = manifest.services[group.service]
        exposed = sorted({(e.port, e.as_port, e.proto) for e in s.expose if e.global_})
        internal = sorted({(e.port, other) for e in s.expose for other in e.to_services})
        hosts = sorted({h for e in s.expose if e.global_ for h in e.accept})
        mounts = sorted((m.volume, m.mount, m.read_only) for m in s.storage_mounts)
        creds = s.credentials and (s.credentials.host, s.credentials.username)
        out[(group.placement, group.service)] = (
            s.image, list(s.command), list(s.args), dict(s.env), group.count,
            _kova_resources(manifest.compute_profiles[group.profile]), exposed, internal,
            hosts, mounts, creds,
        )  # fmt: skip
    return out


# ---- the comparison ------------------------------------------------------------------------------


def test_the_corpus_is_large_and_varied() -> None:
    names = [f.name for f in FILES]
    accepted = [n for n in names if not n.startswith(("bad-", "diff-"))]
    assert len(names) >= 40 and len(accepted) >= 30
    assert set(REFUSED) == {n for n in names if n.startswith("bad-")}
    assert set(DIFFERENCES) == {n for n in names if n.startswith("diff-")}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_kova_and_akash_agree(path: Path, akash: dict[str, dict[str, Any]]) -> None:
    theirs = akash[path.name]
    manifest, refusal = kova(path)
    if path.name in DIFFERENCES:
        akash_accepts, field, _ = DIFFERENCES[path.name]
        assert theirs["ok"] is akash_accepts, theirs["error"]
        if field is None:
            assert refusal is None, refusal
        else:
            assert refusal is not None and refusal.problems[0].path == field
        return
    if path.name in REFUSED:
        assert not theirs["ok"], "akashjs accepts it"
        assert refusal is not None, "Kova accepts it"
        assert REFUSED[path.name] in [p.path for p in refusal.problems], refusal.problems
        return
    assert theirs["ok"], f"akashjs refuses it: {theirs['error']}"
    assert refusal is None, f"Kova refuses it: {refusal}"
    assert kova_groups(manifest) == akash_groups(theirs)
    if theirs["services"] is not None:
        assert kova_services(manifest) == akash_services(theirs)


def test_akash_makes_the_manifest_of_nearly_every_file_it_accepts(akash) -> None:
    """What the service comparison covers: akashjs fails to make the providers' manifest for
    some files whose groups it makes (a placement whose services outnumber those of the
    placement its index lands on, when placements are not in alphabetical order)."""
    accepted = [r for r in akash.values() if r["ok"] and not r["file"].startswith("diff-")]
    compared = [r for r in accepted if r["services"] is not None]
    assert len(compared) == len(accepted), [r["file"] for r in accepted if not r["services"]]


def test_the_corpus_uses_only_fields_kova_knows() -> None:
    """Every accepted file but the one written with unknown fields parses with strict=True."""
    for path in FILES:
        if path.name.startswith(("bad-", "diff-")) or path.name == "unknown-fields.yaml":
            continue
        parse_manifest(path.read_text(), strict=True)


def test_unknown_fields_are_ignored_with_warnings() -> None:
    manifest = parse_manifest((HERE / "files" / "unknown-fields.yaml").read_text())
    assert [(w.path, w.message) for w in manifest.warnings] == [
        ("x-note", "unknown field, ignored (expected one of: version, kind, max_runtime, "
                   "services, profiles, deployment, endpoints)"),
        ("services.web.restart", "unknown field, ignored (expected one of: image, command, "
         "args, env, expose, params, depends_on, credentials, files, readOnlyRootFilesystem)"),
        ("services.web.depends-on", "unknown field, ignored (did you mean 'depends_on'?)"),
        ("services.cache.labels", "unknown field, ignored (expected one of: image, command, "
         "args, env, expose, params, depends_on, credentials, files, readOnlyRootFilesystem)"),
    ]  # fmt: skip
    with pytest.raises(ManifestError) as raised:
        parse_manifest((HERE / "files" / "unknown-fields.yaml").read_text(), strict=True)
    assert len(raised.value.problems) == 4


def test_what_kova_cannot_honour_is_a_warning() -> None:
    def warned(name: str) -> set[str]:
        return {w.path for w in parse_manifest((HERE / "files" / name).read_text()).warnings}

    assert warned("ip-lease.yaml") == {"endpoints.mail-ip"}
    assert warned("sdl21-permissions.yaml") == {"services.web.params.permissions"}
    assert warned("private-registry-ghcr.yaml") == {"services.api.credentials"}
    assert warned("web-http-options-all.yaml") == {"services.api.expose.0.http_options"}
    assert warned("audited-signed-by.yaml") == {
        "profiles.placement.audited.signedBy.anyOf.0",
        "profiles.placement.audited.signedBy.anyOf.1",
        "profiles.placement.audited.signedBy.allOf.0",
    }
    assert warned("cpu-memory-attributes.yaml") == {
        "profiles.compute.build.resources.cpu.attributes",
        "profiles.compute.build.resources.memory.attributes",
    }
    assert warned("web-nginx-hello.yaml") == set()
