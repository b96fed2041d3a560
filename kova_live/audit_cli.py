"""``kova-live audit``: an auditor's command line (see :mod:`kova_live.audits`).

``sign`` vouches for a provider's attributes, ``revoke`` takes that back, ``list`` shows a
provider's audits. The orchestrator and the token come from ``--orchestrator``/``--token`` or
``KOVA_ORCHESTRATOR``/``KOVA_TOKEN``. A refusal from the server is one line naming the field,
with exit status 1; usage errors exit 2.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click
import httpx

__all__ = ["audit", "call_api"]


def _refused(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


def call_api(orchestrator: str | None, token: str | None, method: str, path: str,
          body: Any = None) -> Any:  # fmt: skip
    """The server's JSON answer; one line and exit status 1 if it refuses or cannot be
    reached."""
    if not orchestrator:
        raise click.UsageError("no orchestrator: pass --orchestrator or set KOVA_ORCHESTRATOR")
    if not token:
        raise click.UsageError("no token: pass --token or set KOVA_TOKEN (an auditor's token)")
    url = orchestrator.rstrip("/") + path
    try:
        response = httpx.request(
            method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # a URL it cannot use
        _refused(f"cannot reach {orchestrator}: {exc}")
    try:
        data = response.json()
    except ValueError:
        _refused(f"the server answered {response.status_code} without JSON")
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        error = error if isinstance(error, dict) else {}
        field = f" ({error['field']})" if error.get("field") else ""
        _refused(f"{error.get('message', response.reason_phrase)}{field}")
    return data


def _attributes(values: tuple[str, ...]) -> dict[str, str]:
    """``--attribute k=v`` items (each one pair: a value may hold commas and ``=``)."""
    found: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--attribute")
        if found.get(key, value) != value:
            raise click.BadParameter(
                f"{key} is given twice, as {found[key]!r} and {value!r}", param_hint="--attribute"
            )
        found[key] = value
    return found


def _pairs(attributes: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(attributes.items())) or "no attributes"


orchestrator_option = click.option(
    "--orchestrator", envvar="KOVA_ORCHESTRATOR", help="The orchestrator's URL."
)
token_option = click.option("--token", envvar="KOVA_TOKEN", help="Your auditor's bearer token.")
provider_argument = click.argument("provider_id", metavar="PROVIDER_ID", type=click.IntRange(1))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def audit() -> None:
    """Audit providers, as an auditor (an account registered with role auditor).

    Your identity is auditor:<your account id>: a manifest whose placement says signedBy:
    {anyOf: [auditor:<id>]} gets bids only from providers you audited. An audit vouches for
    attributes the provider registers; a heartbeat that changes one of them voids it until you
    sign again.
    """


@audit.command()
@provider_argument
@click.option("--attribute", "attributes", multiple=True, metavar="KEY=VALUE",
              help="An attribute you vouch for (repeat for more) [default: every attribute the "
                   "provider registers now].")  # fmt: skip
@orchestrator_option
@token_option
def sign(provider_id: int, attributes: tuple[str, ...], orchestrator: str | None,
         token: str | None) -> None:  # fmt: skip
    """Audit PROVIDER_ID: vouch for its attributes (each must be what its last heartbeat
    registered). Replaces your earlier audit of it."""
    chosen = _attributes(attributes)
    body = {"attributes": chosen} if attributes else {}
    made = call_api(orchestrator, token, "POST", f"/v1/providers/{provider_id}/audits", body)
    click.echo(
        f"{made['auditor']} audited provider {provider_id} at block {made['height']}:"
        f" {_pairs(made['attributes'])}"
    )


@audit.command()
@provider_argument
@orchestrator_option
@token_option
def revoke(provider_id: int, orchestrator: str | None, token: str | None) -> None:
    """Take back your audit of PROVIDER_ID."""
    done = call_api(orchestrator, token, "DELETE", f"/v1/providers/{provider_id}/audits")
    click.echo(f"{done['auditor']} revoked its audit of provider {provider_id}")


@audit.command("list")
@provider_argument
@orchestrator_option
@token_option
def list_command(provider_id: int, orchestrator: str | None, token: str | None) -> None:
    """PROVIDER_ID's audits (any account's token will do): who signed what, and whether each
    still stands."""
    found = call_api(orchestrator, token, "GET", f"/v1/providers/{provider_id}/audits")
    standing = ", ".join(found["auditors"]) or "nobody"
    click.echo(f"provider {provider_id}: audited by {standing}")
    for a in found["audits"]:
        state = "stands" if a["valid"] else (
            "void: the provider no longer registers " + ", ".join(a["voided_by"])
        )  # fmt: skip
        click.echo(f"  {a['auditor']} at block {a['height']}: {_pairs(a['attributes'])} ({state})")
