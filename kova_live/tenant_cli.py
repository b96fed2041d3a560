"""``kova``: the tenant's command line, a client of ``kova-live serve``'s API.

The server and the token come from ``--server``/``--token``, the ``KOVA_SERVER``/``KOVA_TOKEN``
environment variables, or the config file ``kova login`` writes (``$KOVA_CONFIG``, default
``~/.config/kova/config.json``). Amounts are written in units (``--deposit 150`` is 150 units)
and shown in units; the API itself counts micro-units. A refusal from the server is shown as one
line with the field it names, and exits with status 1; a usage error exits with 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from kova_core import InvalidAmount, format_micro, parse_amount

from .failover import Failover, orchestrators

__all__ = ["main"]

console = Console()


def config_path() -> Path:
    """Where ``kova login`` keeps the server and the token."""
    default = Path.home() / ".config" / "kova" / "config.json"
    return Path(os.environ.get("KOVA_CONFIG", default))


def _load_config() -> dict[str, str]:
    try:
        data = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Api:
    """The server, as the CLI talks to it."""

    def __init__(self, server: str | None, token: str | None) -> None:
        saved = _load_config()
        self.server = (server or saved.get("server") or "").rstrip("/")
        self.token = token or saved.get("token")
        if not self.server:
            raise click.UsageError("no server: pass --server, set KOVA_SERVER, or run kova login")
        try:  # several: a leader and standbys (kova_live.failover)
            self.servers = orchestrators(self.server)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--server") from None

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True,
             hints: dict[str, str] | None = None, attempts: int = 3) -> Any:  # fmt: skip
        """The server's answer; a refusal is one line (``hints``: what to say instead for
        some error codes). ``attempts``: sends after a lost connection (1 for commands whose
        answer cannot be had again)."""
        headers = {}
        if auth:
            if not self.token:
                raise click.UsageError("no token: pass --token, set KOVA_TOKEN, or run kova login")
            headers["Authorization"] = f"Bearer {self.token}"
        if method != "GET":  # a command: applied once, however often it is sent
            headers["Idempotency-Key"] = uuid.uuid4().hex
        # a standby or a network between leaders answers 503: the same command (its key)
        # goes round the servers for up to 20 s
        with httpx.Client(transport=Failover(self.servers, patience=20), follow_redirects=True,
                          timeout=30) as client:  # fmt: skip
            for attempt in range(attempts):
                try:
                    response = client.request(method, self.servers[0] + path, json=body,
                                              headers=headers)  # fmt: skip
                    break
                except httpx.TransportError as exc:
                    # the answer may be lost with the command applied: the same key again
                    if attempt == attempts - 1:
                        _refused(f"cannot reach {self.server}: {exc}")
        try:
            data = response.json()
        except ValueError:
            _refused(f"the server answered {response.status_code} without JSON")
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            if (hints or {}).get(error.get("code")):
                _refused((hints or {})[error["code"]])
            field = f" ({error['field']})" if error.get("field") else ""
            _refused(f"{error.get('message', response.reason_phrase)}{field}")
        return data


def _refused(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


def _units(micro: int | None) -> str:
    return "-" if micro is None else format_micro(micro).rstrip("0").rstrip(".")


def _amount(text: str, name: str) -> int:
    try:
        micro = parse_amount(text)
    except InvalidAmount as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None
    if micro <= 0:
        raise click.BadParameter("must be greater than 0", param_hint=name)
    return micro


server_option = click.option(
    "--server", envvar="KOVA_SERVER",
    help="The orchestrator's URL, or several (URL1,URL2: a leader and standbys).",
)  # fmt: skip
token_option = click.option("--token", envvar="KOVA_TOKEN", help="Your bearer token.")
strict_option = click.option(
    "--strict", is_flag=True,
    help="Refuse the manifest for an unknown field (by default ignored with a warning, as Akash "
    "ignores it).",
)  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kova")
def main() -> None:
    """Kova for tenants: deploy, choose bids, fund escrow, read logs and a job's result,
    close."""


@main.command()
@click.option("--server", envvar="KOVA_SERVER", required=True,
              help="The orchestrator's URL, or several (URL1,URL2: a leader and standbys).")
@click.option("--token", envvar="KOVA_TOKEN", help="An existing token (else a new account).")
@click.option("--name", default=lambda: os.environ.get("USER", "tenant"), show_default="$USER")
@click.option("--invite", envvar="KOVA_INVITE",
              help="An invite code from the server's operator to register with.")
def login(server: str, token: str | None, name: str, invite: str | None) -> None:
    """Save the server and a token; without a token, register a new tenant account (with
    --invite CODE where the server registers by invitation, as it does by default)."""
    api = Api(server, token)
    if token is None:
        body = {"role": "tenant", "name": name}
        if invite:
            body["invite"] = invite.strip()
        made = api.call("POST", "/v1/accounts", body, auth=False, hints={
            "invite_required": f"{api.server} registers accounts by invitation: pass --invite "
                               "CODE (or set KOVA_INVITE), a code from its operator",
            "invalid_invite": "that invite code is unknown or already used (--invite): each "
                              "registers one account; ask the operator for another",
            "registration_closed": f"{api.server} does not register accounts: ask its operator "
                                   "for one, then kova login --token TOKEN",
        }, attempts=1)  # fmt: skip
        api.token = made["token"]
    me = api.call("GET", "/v1/accounts/me")
    if me["role"] != "tenant":
        _refused(f"that token belongs to a {me['role']}, not a tenant")
    path = _save(api)
    click.echo(f"logged in to {api.server} as {me['account']} ({me['name']}); saved to {path}")


def _save(api: Api) -> Path:
    """Keep the server and the token in the config file (readable by its owner only)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"server": api.server, "token": api.token}) + "\n")
    path.chmod(0o600)
    return path


@main.command("rotate-token")
@server_option
@token_option
def rotate_token(server: str | None, token: str | None) -> None:
    """Replace your token with a new one (the old one stops working at once) and save it in
    the config file kova login wrote."""
    api = Api(server, token)
    # sent once: a retry would carry the token the first send may already have replaced
    made = api.call("POST", "/v1/accounts/me/token", attempts=1)
    api.token = made["token"]
    path = _save(api)
    click.echo(f"{made['account']}: a new token is saved to {path}; the old one no longer works")


@main.command()
@server_option
@token_option
def balance(server: str | None, token: str | None) -> None:
    """Your balance."""
    me = Api(server, token).call("GET", "/v1/accounts/me")
    click.echo(f"{me['account']} ({me['name']}): {_units(me['balance'])}")


@main.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--deposit", required=True, help="Units to put in escrow, e.g. 150 or 2.5.")
@click.option(
    "--auto-accept", "policy", metavar="POLICY",
    help="Let the orchestrator accept bids for you with this selection policy"
    " (cheapest, fastest, best-reputation, weighted).",
)  # fmt: skip
@click.option(
    "--wait", default=30, show_default=True, type=click.IntRange(0, 86_400),
    help="With --auto-accept: blocks to wait for bids after an order opens.",
)  # fmt: skip
@strict_option
@server_option
@token_option
def deploy(
    manifest: Path,
    deposit: str,
    policy: str | None,
    wait: int,
    strict: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Deploy MANIFEST (Akash SDL YAML) with DEPOSIT units of escrow. Fields the network
    ignores or features it does not honour are printed as warnings on stderr."""
    micro = _amount(deposit, "--deposit")
    text = manifest.read_text(encoding="utf-8", errors="replace")
    body: dict[str, Any] = {"manifest": text, "deposit": micro}
    if policy is not None:
        body["auto_accept"] = {"policy": policy, "wait": wait}
    if strict:
        body["strict"] = True
    dep = Api(server, token).call("POST", "/v1/deployments", body)
    _warn(dep.get("warnings", []))
    then = (
        f"the orchestrator accepts the {policy} bid after {wait} blocks"
        if policy is not None
        else f"see: kova bids {dep['id']}"
    )
    click.echo(
        f"{dep['kind']} {dep['id']} created with {_units(dep['escrow'])} in escrow;"
        f" {len(dep['orders'])} order(s) open for bids ({then})"
    )


def _field(problem: dict[str, str]) -> str:
    """A problem's field as the manifest names it (``services.web.image``, not
    ``manifest.services.web.image``), with its message."""
    field = problem["field"]
    field = field.removeprefix("manifest.") if field != "manifest" else ""
    return f"{field}: {problem['message']}" if field else problem["message"]


def _warn(warnings: list[dict[str, str]]) -> None:
    for warning in warnings:
        click.echo(f"warning: {_field(warning)}", err=True)


def _size(count: int) -> str:
    """Bytes as a person writes them (512Mi, 1.5Gi)."""
    for unit, power in (("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if count >= 1024**power:
            return f"{count / 1024**power:.4g}{unit}"
    return str(count)


@main.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--deposit", help="Units you mean to deposit: checked against the minimum and "
              "your balance.")  # fmt: skip
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 8760),
              help="Show the escrow that keeps it running this long at its maximum price.")
@strict_option
@server_option
@token_option
def check(
    manifest: Path,
    deposit: str | None,
    hours: int,
    strict: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Check MANIFEST without deploying it: every problem, the warnings, the orders it would
    open with their maximum prices, the network's minimum deposit and the escrow for --hours.
    Exits 1 if it would be refused."""
    text = manifest.read_text(encoding="utf-8", errors="replace")
    body: dict[str, Any] = {"manifest": text, "hours": hours}
    if deposit is not None:
        body["deposit"] = _amount(deposit, "--deposit")
    if strict:
        body["strict"] = True
    checked = Api(server, token).call("POST", "/v1/deployments/check", body)
    _warn(checked["warnings"])
    if checked["orders"]:
        table = Table(title=f"{checked['kind']} {manifest.name}: {len(checked['orders'])} order(s)")
        for column in ("service", "replica", "cpu", "memory", "storage", "gpu",
                       "max price / block", "denom"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("service", "denom") else "right")
        for order in checked["orders"]:
            r = order["resources"]
            table.add_row(order["service"], str(order["replica"]), f"{r['cpu'] / 1000:g}",
                          _size(r["memory"]), _size(r["storage"]), str(r["gpu"]),
                          _units(order["max_price"]), order["denom"])  # fmt: skip
        console.print(table)
        click.echo(f"max price: {_units(checked['max_price_per_block'])} per block")
        click.echo(f"minimum deposit: {_units(checked['min_deposit'])}")
        for_hours = checked["deposit_for_hours"]
        click.echo(f"deposit for {for_hours['hours']} hours at the max price: "
                   f"{_units(for_hours['amount'])}")  # fmt: skip
    for error in checked["errors"]:
        click.echo(f"error: {_field(error)}", err=True)
    if not checked["valid"]:
        raise SystemExit(1)
    click.echo(f"{manifest.name}: valid")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@server_option
@token_option
def upload(file: Path, server: str | None, token: str | None) -> None:
    """Upload FILE (at most 64 MiB) for your manifests to place in containers."""
    api = Api(server, token)
    if not api.token:
        raise click.UsageError("no token: pass --token, set KOVA_TOKEN, or run kova login")
    try:
        with file.open("rb") as handle:
            response = httpx.post(
                api.servers[0] + "/v1/files", content=handle, timeout=300,
                headers={"Authorization": f"Bearer {api.token}"},
            )  # fmt: skip
    except httpx.TransportError as exc:
        _refused(f"cannot reach {api.server}: {exc}")
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.reason_phrase
        _refused(message)
    made = response.json()
    click.echo(f"uploaded {file.name}: {made['size']} bytes, sha256 {made['sha256']}")
    click.echo("place it in a service of your manifest with:")
    click.echo(f"    files:\n      - {{sha256: {made['sha256']}, path: /data/{file.name}}}")


@main.command()
@click.argument("deployment", type=int)
@server_option
@token_option
def bids(deployment: int, server: str | None, token: str | None) -> None:
    """The open bids on DEPLOYMENT's orders."""
    offers = Api(server, token).call("GET", f"/v1/deployments/{deployment}/bids")["bids"]
    if not offers:
        click.echo(f"no open bids on deployment {deployment} yet")
        return
    table = Table(title=f"bids on deployment {deployment}")
    for column in ("bid", "order", "provider", "price / block", "reputation", "response"):
        table.add_column(column, justify="right")
    for b in sorted(offers, key=lambda b: (b["order_id"], b["price"], b["id"])):
        table.add_row(
            str(b["id"]), str(b["order_id"]), str(b["provider_id"]), _units(b["price"]),
            f"{b['reputation']:.2f} ({b['completed']} done, {b['failed']} failed)",
            f"{b['response_time']} blocks",
        )  # fmt: skip
    console.print(table)


@main.command()
@click.argument("bid", type=int)
@server_option
@token_option
def accept(bid: int, server: str | None, token: str | None) -> None:
    """Accept BID: its provider's lease starts now."""
    lease = Api(server, token).call("POST", f"/v1/bids/{bid}/accept")
    click.echo(
        f"lease {lease['id']} started at block {lease['created_at']}:"
        f" provider {lease['provider_id']} at {_units(lease['price'])} per block"
    )


@main.command()
@click.argument("deployment", type=int, required=False)
@server_option
@token_option
def status(deployment: int | None, server: str | None, token: str | None) -> None:
    """Your deployments, or one DEPLOYMENT in detail."""
    api = Api(server, token)
    if deployment is None:
        items = api.call("GET", "/v1/deployments")["deployments"]
        table = Table(title="your deployments")
        for column in ("id", "kind", "state", "created", "escrow"):
            table.add_column(column, justify="right")
        for d in items:
            table.add_row(
                str(d["id"]), d["kind"], d["state"], str(d["created_at"]), _units(d["escrow"])
            )
        console.print(table)
        return
    d = api.call("GET", f"/v1/deployments/{deployment}")
    pause = f", pauses at block {d['pauses_at']} unless topped up" if d["pauses_at"] else ""
    if d.get("deadline") is not None:
        pause = f", stops at block {d['deadline']} (escrow or max runtime) unless done first"
    click.echo(f"{d['kind']} {d['id']}: {d['state']}")
    click.echo(
        f"escrow {_units(d['escrow'])}, burning {_units(d['burn_rate'])} per block{pause};"
        f" paid {_units(d['total_paid'])} for {d['blocks_paid']} blocks; debt {_units(d['debt'])}"
    )
    for url in d.get("urls", []):
        click.echo(f"{url['service']}: {url['url']}")
    table = Table(title="orders and leases")
    for column in ("order", "service", "state", "lease", "provider", "price", "lease state"):
        table.add_column(column)
    leases = {lease["order_id"]: lease for lease in d["leases"]}
    for o in d["orders"]:
        lease = leases.get(o["id"])
        table.add_row(
            str(o["id"]), f"{o['service']}#{o['replica']}", o["state"],
            str(lease["id"]) if lease else "-", str(lease["provider_id"]) if lease else "-",
            _units(lease["price"]) if lease else "-", lease["state"] if lease else "-",
        )  # fmt: skip
    console.print(table)


@main.command("deposit")
@click.argument("deployment", type=int)
@click.argument("amount")
@server_option
@token_option
def deposit_command(deployment: int, amount: str, server: str | None, token: str | None) -> None:
    """Add AMOUNT units to DEPLOYMENT's escrow (a paused deployment resumes once its debt is
    covered)."""
    micro = _amount(amount, "AMOUNT")
    d = Api(server, token).call(
        "POST", f"/v1/deployments/{deployment}/deposit", {"amount": micro}
    )
    click.echo(f"deployment {d['id']}: {d['state']}, escrow {_units(d['escrow'])}")


@main.command()
@click.argument("deployment", type=int)
@server_option
@token_option
def close(deployment: int, server: str | None, token: str | None) -> None:
    """Close DEPLOYMENT: leases are settled to now and the rest of the escrow comes back."""
    d = Api(server, token).call("POST", f"/v1/deployments/{deployment}/close")
    click.echo(
        f"deployment {d['id']} closed at block {d['closed_at']}; paid {_units(d['total_paid'])}"
        f" in all, written off {_units(d['written_off'])}"
    )


@main.command()
@click.argument("deployment", type=int)
@click.option(
    "--follow", "-f", is_flag=True,
    help="Keep printing lines as they arrive, until the deployment closes (Ctrl-C stops).",
)  # fmt: skip
@server_option
@token_option
def logs(deployment: int, follow: bool, server: str | None, token: str | None) -> None:
    """DEPLOYMENT's log lines (the last 24 hours), oldest first, each marked with its service
    and replica; its containers' standard error goes to standard error."""
    api = Api(server, token)
    after = 0
    try:
        while True:
            # looked at before the lines are read: once it is closed, one last read prints what
            # its providers shipped up to then
            shown = api.call("GET", f"/v1/deployments/{deployment}") if follow else None
            closed = shown is not None and shown["state"] == "closed"
            page = api.call("GET", f"/v1/deployments/{deployment}/logs?after={after}&limit=1000")
            for line in page["lines"]:
                click.echo(
                    f"[{line['service']}#{line['replica']}] {line['text']}",
                    err=line["stream"] == "stderr",
                )
            after = page["next_after"]
            if len(page["lines"]) == 1000:
                continue  # more are waiting
            if not follow or closed:
                return
            time.sleep(1)
    except KeyboardInterrupt:
        return


@main.command()
@click.argument("deployment", type=int)
@server_option
@token_option
def result(deployment: int, server: str | None, token: str | None) -> None:
    """A job's outcome: each replica's exit code (on standard error) and output (on standard
    output, so ``kova result 7 > out.txt`` keeps it). Exits 1 if the job is not done yet."""
    r = Api(server, token).call("GET", f"/v1/deployments/{deployment}/result")
    finished = [x for x in r["results"] if x["exit_code"] is not None]
    if not r["done"]:
        click.echo(
            f"job {deployment} is still {r['state']}: {len(finished)} of {len(r['results'])}"
            " lease(s) reported a result so far",
            err=True,
        )
    else:
        click.echo(f"job {deployment}: {r['close_reason']}", err=True)
    for x in r["results"]:
        code = "no exit code" if x["exit_code"] is None else f"exit code {x['exit_code']}"
        why = f", {x['close_reason']}" if x["close_reason"] else ""
        click.echo(
            f"-- {x['service']}#{x['replica']} (lease {x['lease_id']}, provider"
            f" {x['provider_id']}): {code}{why}",
            err=True,
        )
        if x["output"]:
            click.echo(x["output"], nl=not x["output"].endswith("\n"))
    if not r["done"]:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
