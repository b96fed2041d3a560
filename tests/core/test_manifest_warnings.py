"""What a file from Akash brings: unknown fields ignored with a warning (errors with ``strict``),
features Kova does not honour named in warnings, and what Akash's own parser refuses refused."""

from __future__ import annotations

from typing import Any

import pytest

from kova_core import Manifest, ManifestError, ManifestProblem, parse_manifest

from .test_manifest import BASE, SDL, edit, problems_of


def warnings_of(source: Any, **kwargs: Any) -> list[tuple[str, str]]:
    return [(w.path, w.message) for w in parse_manifest(source, **kwargs).warnings]


def test_the_shipped_base_has_no_warnings() -> None:
    assert parse_manifest(BASE).warnings == ()


def test_an_unknown_field_is_a_warning_naming_the_field_and_the_likely_one() -> None:
    source = edit(("    depends_on:\n      - db\n", "    depends-on:\n      - db\n"))
    manifest = parse_manifest(source)
    assert warnings_of(source) == [
        ("services.web.depends-on", "unknown field, ignored (did you mean 'depends_on'?)")
    ]
    assert manifest.services["web"].depends_on == ()  # ignored: not read as depends_on
    assert str(manifest.warnings[0]) == (
        "services.web.depends-on: unknown field, ignored (did you mean 'depends_on'?)"
    )


def test_strict_makes_unknown_fields_problems() -> None:
    source = edit(("    depends_on:\n      - db\n", "    depends-on:\n      - db\n"))
    with pytest.raises(ManifestError) as raised:
        parse_manifest(source, strict=True)
    assert raised.value.problems == (
        ManifestProblem("services.web.depends-on", "unknown field (did you mean 'depends_on'?)"),
    )


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        (("version: \"2.0\"\n", "version: \"2.0\"\nx-notes: hello\n"), "x-notes",
         "expected one of: version"),
        (("      count: 3", "      count: 3\n      replicas: 3"), "deployment.web.anywhere.replicas",
         "unknown field, ignored"),
        (("          units: 0.5", "          units: 0.5\n          cores: 1"),
         "profiles.compute.web.resources.cpu.cores", "unknown field, ignored"),
        (("              class: beta2", "              class: beta2\n              iops: high"),
         "profiles.compute.db.resources.storage.1.attributes.iops", "expected one of: persistent"),
        (("        as: 80\n", "        as: 80\n        protocol: tcp\n"),
         "services.web.expose.0.protocol", "did you mean 'proto'?"),
    ],
)  # fmt: skip
def test_unknown_fields_anywhere_are_warnings(change: tuple[str, str], path: str, says: str) -> None:
    ((found, message),) = warnings_of(edit(change))
    assert found == path and says in message
    with pytest.raises(ManifestError) as raised:
        parse_manifest(edit(change), strict=True)
    assert [p.path for p in raised.value.problems] == [path]


def test_a_misspelled_required_field_is_still_an_error_with_its_warning() -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(edit(("count: 3", "cout: 3")))
    assert [p.path for p in raised.value.problems] == ["deployment.web.anywhere.count"]
    assert [(w.path, w.message) for w in raised.value.warnings] == [
        ("deployment.web.anywhere.cout", "unknown field, ignored (did you mean 'count'?)")
    ]


def test_warnings_take_no_part_in_equality() -> None:
    noisy = parse_manifest(BASE + "x-comment: made by hand\n")
    assert noisy.warnings and noisy == parse_manifest(BASE)
    assert isinstance(noisy, Manifest) and noisy.order_specs() == parse_manifest(BASE).order_specs()


def test_an_env_entry_without_equals_is_the_empty_string_as_on_akash() -> None:
    manifest = parse_manifest(edit(("- MODE=production", "- MODE")))
    assert dict(manifest.services["web"].env) == {"MODE": ""}
    assert manifest.warnings == ()


# ---- what Kova does not honour -----------------------------------------------------------------


def test_the_game_server_says_what_kova_does_not_honour() -> None:
    found = warnings_of((SDL / "game-server.yaml").read_text())
    assert [path for path, _ in found] == ["endpoints.game-ip", "services.minecraft.credentials"]
    assert "does not lease IP addresses" in found[0][1]
    assert "do not log in to registries" in found[1][1]


def test_http_options_permissions_attributes_and_akash_auditors_are_warned() -> None:
    source = edit(
        ("        to:\n          - global: true\n",
         "        to:\n          - global: true\n        http_options:\n"
         "          max_body_size: 1048576\n          next_cases: [error, timeout]\n"),
        ("      storage:\n        data:", "      permissions:\n        read: [deployment, logs]\n"
         "      storage:\n        data:"),
        ("          units: 0.5\n", "          units: 0.5\n          attributes:\n"
         "            arch: amd64\n"),
        ("    anywhere:\n      pricing:", "    anywhere:\n      signedBy:\n        anyOf:\n"
         "          - akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63\n          - auditor:4\n"
         "      pricing:"),
    )  # fmt: skip
    found = dict(warnings_of(source))
    assert "does not apply http_options" in found["services.web.expose.0.http_options"]
    assert "no lease permissions" in found["services.db.params.permissions"]
    assert "cpu attributes" in found["profiles.compute.web.resources.cpu.attributes"]
    assert "Akash account address" in found["profiles.placement.anywhere.signedBy.anyOf.0"]
    assert len(found) == 4  # auditor:4 is a Kova auditor's identity: no warning


# ---- what Akash's parser refuses is refused ---------------------------------------------------

IP = """
endpoints:
  front-ip:
    kind: ip
"""


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param(
            [("  web:\n    anywhere:\n      profile: web\n      count: 3\n", "")],
            [("services.web", "not deployed")], id="service not deployed"),
        pytest.param(
            [("    params:\n      storage:\n        data:\n          mount: /var/lib/postgresql/data\n",
              "")],
            [("services.db.params.storage.data", "persistent volume 'data', which needs a mount")],
            id="persistent volume without a mount"),
        pytest.param(
            [("          size: 1Gi\n", "          size: 1Gi\n        gpu:\n          units: 0\n"
              "          attributes:\n            vendor:\n              nvidia:\n")],
            [("profiles.compute.web.resources.gpu.attributes", "ask for no GPU")],
            id="gpu attributes without units"),
        pytest.param(
            [("    image: nginx:1.25\n", "    image: nginx:1.25\n    credentials:\n"
              "      host: ghcr.io\n      username: me\n      password: ''\n")],
            [("services.web.credentials.password", "must not be empty")],
            id="empty registry password"),
        pytest.param(
            [("          - global: true\n", "          - global: true\n            ip: front-ip\n")],
            [("services.web.expose.0.to.0.ip", "no endpoint named 'front-ip'")],
            id="ip without its endpoint"),
        pytest.param(
            [("deployment:\n", IP.lstrip() + "deployment:\n")],
            [("endpoints.front-ip", "declared but never used")], id="endpoint never used"),
        pytest.param(
            [("deployment:\n", IP.lstrip().replace("kind: ip", "kind: dns") + "deployment:\n"),
             ("          - global: true\n", "          - global: true\n            ip: front-ip\n")],
            [("endpoints.front-ip.kind", "unknown endpoint kind 'dns'")], id="endpoint kind"),
        pytest.param(
            [("deployment:\n", IP.lstrip() + "deployment:\n"),
             ("          - service: web\n", "          - service: web\n            ip: front-ip\n")],
            [("services.db.expose.0.to.0.global", "add global: true")], id="ip not global"),
    ],
)  # fmt: skip
def test_what_akash_refuses_is_refused(changes: list[tuple[str, str]], expected) -> None:
    problems = problems_of(edit(*changes))
    assert [p.path for p in problems] == [path for path, _ in expected]
    for problem, (_, says) in zip(problems, expected, strict=True):
        assert says in problem.message


def test_an_ip_endpoint_used_globally_is_accepted_with_a_warning() -> None:
    source = edit(
        ("deployment:\n", IP.lstrip() + "deployment:\n"),
        ("          - global: true\n", "          - global: true\n            ip: front-ip\n"),
    )
    assert warnings_of(source) == [
        ("endpoints.front-ip", "Kova does not lease IP addresses: ignored (a port sent to this "
         "endpoint is published at its provider's address, at a port the provider picks)"),
    ]  # fmt: skip
