"""A provider's machine is safe to share: the agent against a real orchestrator and real Docker.

Leases' containers keep running however many leases the agent holds, sit on networks of their
deployment's own that the host's rules wall off, run with least privilege, and write no more
than the storage they pay for. Every address these tests dial is on this machine: containers'
bridge addresses, the host's bridge gateways, and a network namespace the test makes.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from .agents import (
    HTTPD,
    PRICE,
    accept_first_bid,
    container_of,
    fixed_agent,
    lease_of,
    tenant_with_money,
)
from .conftest import wait_for


def _sleeper(script: str = "sleep 3600", storage: str = "64Mi", extra: str = "") -> str:
    """A deployment of kova/job:1 running ``script`` (no port), with one ``storage`` volume."""
    return (HTTPD.replace("kova/httpd:1", "kova/job:1" + extra)
            .replace("    expose:\n      - port: 8080\n        as: 80\n        to:\n          - global: true\n",
                     f"    command: [sh, -c]\n    args: [{json.dumps(script)}]\n")
            .replace("storage: {size: 512Mi}", f"storage: {{size: {storage}}}"))  # fmt: skip


def _deploy(server, tenant, manifest: str, deposit: int = 5_000_000) -> dict:
    reply = server.client.post("/v1/deployments", headers=tenant["headers"],
                               json={"manifest": manifest, "deposit": deposit})  # fmt: skip
    assert reply.status_code == 201, reply.text
    return reply.json()


def _running(server, provider, lease_id) -> dict:
    return wait_for(lambda: (x := lease_of(server, provider, lease_id))["status"] == "running" and x, 30)


def _sh(container, script: str) -> tuple[int, str]:
    code, output = container.exec_run(["sh", "-c", script])
    return code, output.decode(errors="replace")


def _gc(server, provider, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kova_live", "provider", "--orchestrator", server.url,
         "--token", provider["token"], "gc-volumes", *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _volumes(client, lease_id) -> list[str]:
    return sorted(v.name for v in client.volumes.list(filters={"label": f"kova.lease={lease_id}"}))


# ---------------------------------------------------------------------------------- leases


@pytest.mark.parametrize("network", [("--page-size", "2")], indirect=True)
def test_an_agent_holding_more_leases_than_a_page_keeps_every_live_container_and_volume(network):
    """The first lease is not on the first page of GET /v1/leases: restarted, the agent still
    adopts it (an agent that took a missing lease for closed removed it, and gc-volumes its
    data). It removes a container only when its very lease is reported closed, and nothing
    while the orchestrator cannot be reached."""
    server, client = network["server"], network["docker"]
    tenant = tenant_with_money(server)
    provider, agent = fixed_agent(network, "p")
    deps = [_deploy(server, tenant, _sleeper(), 2_000_000) for _ in range(4)]
    leases = [accept_first_bid(server, tenant, dep) for dep in deps]
    for lease in leases:
        _running(server, provider, lease["id"])
    first_page = server.client.get("/v1/leases?state=live", headers=provider["headers"]).json()
    assert leases[0]["id"] not in [x["id"] for x in first_page["leases"]]
    ids = {lease["id"]: container_of(client, lease["id"]).id for lease in leases}
    volumes = {lease["id"]: _volumes(client, lease["id"]) for lease in leases}
    assert all(len(v) == 1 for v in volumes.values())
    agent.kill()
    agent.start()
    time.sleep(2)  # six of the agent's polls
    assert {lease_id: container_of(client, lease_id).id for lease_id in ids} == ids
    assert all(container_of(client, lease_id).status == "running" for lease_id in ids)
    assert _gc(server, provider).returncode == 2  # how long a lease must have been closed: said
    gc = _gc(server, provider, "--closed-for", "0")
    assert gc.returncode == 0 and "removed 0 volume(s)" in gc.stdout, gc.stderr
    assert {lease_id: _volumes(client, lease_id) for lease_id in ids} == volumes
    # the oldest lease closes: its container goes, and gc-volumes takes only its volume, and
    # only once it has been closed for as long as the operator asks
    server.client.post(f"/v1/deployments/{deps[0]['id']}/close", headers=tenant["headers"])
    wait_for(lambda: container_of(client, leases[0]["id"]) is None, 30)
    assert all(container_of(client, lease["id"]).id == ids[lease["id"]] for lease in leases[1:])
    assert "removed 0 volume(s)" in _gc(server, provider, "--closed-for", "1h").stdout
    gone = _gc(server, provider, "--closed-for", "0")
    assert gone.returncode == 0 and gone.stdout.split()[3:] == volumes[leases[0]["id"]], gone.stdout
    assert {lease["id"]: _volumes(client, lease["id"]) for lease in leases[1:]} == {
        lease["id"]: volumes[lease["id"]] for lease in leases[1:]}  # fmt: skip
    # the orchestrator goes away: the agent's polls fail, and it removes nothing
    server.process.kill()
    server.process.wait()
    time.sleep(1.5)
    assert all(container_of(client, lease["id"]).status == "running" for lease in leases[1:])
    assert "this poll failed" in agent.log.read_text()


# ---------------------------------------------------------------------------------- networks

TWO_SERVICES = """
version: "2.0"
services:
  web:
    image: kova/httpd:1
    expose:
      - port: 8080
        as: 80
        to:
          - global: true
  client:
    image: kova/job:1
    command: [sh, -c]
    args: ["sleep 3600"]
profiles:
  compute:
    small:
      resources:
        cpu: {units: 0.25}
        memory: {size: 64Mi}
        storage: {size: 16Mi}
  placement:
    dc:
      pricing:
        small: {denom: ukova, amount: 5000}
deployment:
  web:
    dc: {profile: small, count: 1}
  client:
    dc: {profile: small, count: 1}
"""

PROBE = """for target in {targets}; do
  host=${{target%:*}}; port=${{target#*:}}
  if nc -w 3 "$host" "$port" </dev/null >/dev/null 2>&1; then echo "reached $target"; else echo "refused $target"; fi
done"""


def _probe(targets: list[str]) -> str:
    """A shell script that tries a TCP connection to each ``host:port`` ("gateway" is the
    container's default gateway: this machine) and says which it reached."""
    script = PROBE.format(targets=" ".join(targets))
    return 'gateway=$(ip route | awk \'/^default/ {print $3}\')\n' + script.replace("gateway", "$gateway")


@pytest.fixture
def private_host():
    """A host on a private range (10.99.77.2, in a network namespace on this machine, routed
    through a veth pair) with a TCP listener on port 8080; yields its ``address:port``."""
    name = f"kt{uuid.uuid4().hex[:6]}"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}n"],
        ["ip", "link", "set", f"{name}n", "netns", name],
        ["ip", "addr", "add", "10.99.77.1/30", "dev", f"{name}h"],
        ["ip", "link", "set", f"{name}h", "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", "10.99.77.2/30", "dev", f"{name}n"],
        ["ip", "netns", "exec", name, "ip", "link", "set", f"{name}n", "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
        ["ip", "netns", "exec", name, "ip", "route", "add", "default", "via", "10.99.77.1"],
    ]
    listener = None
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=30)
        listener = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", (
            "import socket\ns = socket.create_server(('0.0.0.0', 8080))\n"
            "while True:\n    s.accept()[0].close()\n")])  # fmt: skip
        yield "10.99.77.2:8080"
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "link", "del", f"{name}h"], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.mark.parametrize("network", [("--host", "0.0.0.0")], indirect=True)
def test_a_deployments_containers_reach_each_other_by_name_and_nothing_else_of_this_machine(
    network, private_host
):
    """Tenant A's two services share a network and reach each other by service name. Tenant
    B's job cannot open a connection to A's container (by its bridge address), to this
    machine's own ports (the orchestrator's API, listening on every address, through B's
    bridge gateway), or to a private range; a container on Docker's default bridge, which the
    agent does not make, reaches the last two: the rules, not the targets, make the difference."""
    server, client = network["server"], network["docker"]
    first, second = tenant_with_money(server), tenant_with_money(server)
    provider, _ = fixed_agent(network, "p")
    dep = _deploy(server, first, TWO_SERVICES)
    bids = wait_for(lambda: len(b := server.client.get(f"/v1/deployments/{dep['id']}/bids",
                                                       headers=first["headers"]).json()["bids"]) == 2 and b)  # fmt: skip
    leases = [server.client.post(f"/v1/bids/{b['id']}/accept", headers=first["headers"]).json() for b in bids]
    for lease in leases:
        _running(server, provider, lease["id"])
    web, other = sorted((container_of(client, lease["id"]) for lease in leases),
                        key=lambda c: c.attrs["Config"]["Hostname"] != "web")  # fmt: skip
    # by service name, on their own network (busybox's static wget cannot look names up)
    code, page = _sh(other, "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 web 8080")
    assert code == 0 and page.strip().endswith("kova"), page
    (net,) = web.attrs["NetworkSettings"]["Networks"]
    assert net == f"kova-p{provider['id']}-d{dep['id']}"
    web_ip = web.attrs["NetworkSettings"]["Networks"][net]["IPAddress"]
    api = f"gateway:{server.port}"
    job = _deploy(server, second, _sleeper(_probe([f"{web_ip}:8080", api, private_host]))
                  + "kind: job\nmax_runtime: 1h\n", 1_000_000)  # fmt: skip
    accept_first_bid(server, second, job)
    result = wait_for(lambda: (r := server.client.get(f"/v1/deployments/{job['id']}/result",
                                                      headers=second["headers"]).json())["done"] and r, 60)  # fmt: skip
    api_seen = api.replace("gateway", "$gateway")
    said = result["results"][0]["output"]
    assert f"refused {web_ip}:8080" in said
    assert f"refused {private_host}" in said
    assert "refused " in said and "reached" not in said, said
    # Docker's default bridge, as a control: this machine's API and the private host answer
    control = client.containers.run("kova/job:1", ["sh", "-c", _probe([api, private_host])],
                                    detach=True)  # fmt: skip
    try:
        control.wait(timeout=60)
        seen = control.logs().decode()
    finally:
        control.remove(force=True)
    assert f"reached {private_host}" in seen and seen.count("reached") == 2, (seen, api_seen)


# ---------------------------------------------------------------------------------- privilege

CAP_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
            "SETUID": 7, "NET_BIND_SERVICE": 10}  # fmt: skip


def _pids_file(container) -> Path:
    """The container's pids cgroup file on this machine (cgroup v1 or v2)."""
    for pattern in (f"/sys/fs/cgroup/pids/**/*{container.id}*/pids.max",
                    f"/sys/fs/cgroup/**/*{container.id}*/pids.max"):  # fmt: skip
        found = glob.glob(pattern, recursive=True)
        if found:
            return Path(found[0]).parent
    raise AssertionError(f"no pids cgroup for {container.id}")


def test_a_lease_container_runs_with_least_privilege(network):
    server, client = network["server"], network["docker"]
    tenant = tenant_with_money(server)
    provider, _ = network["agent"]("p", "--strategy", "fixed", "--strategy-param", f"price_per_block={PRICE}",
                                   "--pids-limit", "64", "--log-max-size", "1Mi", "--log-max-files", "2")  # fmt: skip
    manifest = _sleeper().replace("    image: kova/job:1\n", "    image: kova/job:1\n    readOnlyRootFilesystem: true\n")
    plain = accept_first_bid(server, tenant, _deploy(server, tenant, _sleeper()))
    locked = accept_first_bid(server, tenant, _deploy(server, tenant, manifest))
    for lease in (plain, locked):
        _running(server, provider, lease["id"])
    container = container_of(client, locked["id"])
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == sorted(CAP_BITS)
    assert host["SecurityOpt"] == ["no-new-privileges"] and not host["Privileged"]
    assert host["PidsLimit"] == 64 and host["IpcMode"] == "private"
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": str(2**20), "max-file": "2"}}
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == {"/tmp": "size=134217728,mode=1777,nosuid,nodev"}
    assert container.labels["kova.agent"] == "2"
    # as the container itself sees it
    code, status = _sh(container, "grep -E 'CapEff|NoNewPrivs' /proc/self/status")
    fields = dict(line.split(":\t") for line in status.strip().splitlines())
    assert int(fields["CapEff"], 16) == sum(1 << bit for bit in CAP_BITS.values())
    assert fields["NoNewPrivs"] == "1"
    assert (_pids_file(container) / "pids.max").read_text().strip() == "64"
    code, said = _sh(container, "touch /etc/x; echo ok > /tmp/x && echo ok > /data/x && echo both")
    assert "Read-only file system" in said and "both" in said
    code, said = _sh(container, "mknod /tmp/d c 1 3")  # MKNOD is not given back
    assert code != 0
    # without readOnlyRootFilesystem, Docker's default: a writable root
    assert container_of(client, plain["id"]).attrs["HostConfig"]["ReadonlyRootfs"] is False
    assert _sh(container_of(client, plain["id"]), "touch /etc/x && echo yes")[1].strip() == "yes"


def test_a_fork_bomb_stops_at_its_limit_and_a_chatty_container_keeps_its_logs_under_the_cap(network):
    server, client = network["server"], network["docker"]
    tenant = tenant_with_money(server)
    provider, _ = network["agent"]("p", "--strategy", "fixed", "--strategy-param", f"price_per_block={PRICE}",
                                   "--pids-limit", "64", "--log-max-size", "1Mi", "--log-max-files", "2")  # fmt: skip
    # 20 MB of 1,000-character lines, as fast as it can, then quiet
    chatty = _sleeper('line=$(printf %1000s x); yes "$line" | head -c 20000000; sleep 3600')
    bomb = accept_first_bid(server, tenant, _deploy(server, tenant, _sleeper()))
    talk = accept_first_bid(server, tenant, _deploy(server, tenant, chatty))
    for lease in (bomb, talk):
        _running(server, provider, lease["id"])
    container = container_of(client, bomb["id"])
    container.exec_run(["sh", "-c", "f() { f | f & }; f"], detach=True)
    cgroup = _pids_file(container)
    # the bomb reaches the limit: forks are refused (its shells die as forks fail, so how many
    # live at any one moment goes up and down; the refusals are what the kernel counts)
    wait_for(lambda: int((cgroup / "pids.events").read_text().split()[-1]) > 0, 30)
    time.sleep(2)
    assert int((cgroup / "pids.current").read_text()) <= 64
    started = time.monotonic()  # the machine answers: the orchestrator, Docker, a new process
    assert server.client.get("/healthz").status_code == 200
    assert client.ping()
    assert subprocess.run(["true"], timeout=10).returncode == 0
    assert time.monotonic() - started < 10
    # the chatty one: its log files stay within 2 x 1 MiB (one line more at most)
    logs = Path(container_of(client, talk["id"]).attrs["LogPath"])
    wait_for(lambda: "sleep" in _sh(container_of(client, talk["id"]), "ps")[1] or None, 60)
    written = sum(os.path.getsize(p) for p in glob.glob(f"{logs}*"))
    assert 0 < written <= 2 * 2**20 + 2048, written
    # closing the bomb's deployment removes its container, bomb and all
    server.client.post(f"/v1/deployments/{bomb['deployment_id']}/close", headers=tenant["headers"])
    wait_for(lambda: container_of(client, bomb["id"]) is None, 60)


# ---------------------------------------------------------------------------------- storage


def test_a_volume_holds_what_its_lease_pays_for_and_keeps_it_across_restarts(network):
    """storage: 64Mi: writing 100 MiB ends in ENOSPC inside the container while another lease
    keeps writing; the data survives `docker restart` and the agent's restart."""
    server, client = network["server"], network["docker"]
    tenant = tenant_with_money(server)
    provider, agent = fixed_agent(network, "p")
    small = accept_first_bid(server, tenant, _deploy(server, tenant, _sleeper(storage="64Mi")))
    other = accept_first_bid(server, tenant, _deploy(server, tenant, _sleeper(storage="128Mi")))
    for lease in (small, other):
        _running(server, provider, lease["id"])
    container = container_of(client, small["id"])
    code, said = _sh(container, "dd if=/dev/zero of=/data/big bs=1M count=100")
    assert code != 0 and "No space left on device" in said
    copied = int(said.split("records out")[0].split()[-1].split("+")[0])
    assert 63 <= copied < 66  # what it pays for, and not much more (ext4's own rounding)
    code, said = _sh(container_of(client, other["id"]), "dd if=/dev/zero of=/data/big bs=1M count=100 && echo done")
    # the other lease's volume is its own (dd's report goes to stderr, "done" to stdout: the
    # two streams come back in either order)
    assert code == 0 and "done" in said.splitlines(), said
    _sh(container, "rm /data/big; echo kept > /data/marker")
    agent.kill()
    container.restart()
    agent.start()
    time.sleep(1.5)
    after = container_of(client, small["id"])
    assert after.id == container.id and after.status == "running"
    assert _sh(after, "cat /data/marker")[1].strip() == "kept"


def test_a_container_that_fills_its_writable_layer_fails_its_lease_with_that_reason(network):
    server, client = network["server"], network["docker"]
    tenant = tenant_with_money(server)
    provider, _ = network["agent"]("p", "--strategy", "fixed", "--strategy-param", f"price_per_block={PRICE}",
                                   "--writable-layer", "8Mi")  # fmt: skip
    lease = accept_first_bid(server, tenant, _deploy(server, tenant, _sleeper(
        "dd if=/dev/zero of=/junk bs=1M count=20; sleep 3600")))  # fmt: skip
    closed = wait_for(lambda: (x := lease_of(server, provider, lease["id"]))["state"] == "closed" and x, 60)
    assert closed["close_reason"] == "container_failed"
    assert "outside its storage volumes" in closed["status_message"]
    assert "8.0 MiB of writable layer" in closed["status_message"]
    wait_for(lambda: container_of(client, lease["id"]) is None, 30)


# ---------------------------------------------------------------------------------- upgrades


def test_an_earlier_agents_container_is_made_again_with_its_data(network):
    """A container as the agent before this one made it (root, all default capabilities,
    Docker's default bridge, an unsized volume kova-lease-<id>-<volume>) is made again with
    today's settings on the agent's first start, its volume's data carried over."""
    server, client = network["server"], network["docker"]
    tenant = tenant_with_money(server)
    provider, agent = fixed_agent(network, "p")
    dep = _deploy(server, tenant, _sleeper())
    lease = accept_first_bid(server, tenant, dep)
    _running(server, provider, lease["id"])
    agent.kill()
    from kova_live.volumes import Volumes  # the agent's own clean-up, as gc-volumes does it

    container_of(client, lease["id"]).remove(force=True)
    volumes = Volumes(client, provider["id"], Path("/nonexistent"), sized=True)
    for volume in volumes.mine():
        volumes.remove(volume)
    old = client.volumes.create(f"kova-lease-{lease['id']}-default",
                                labels={"kova.lease": str(lease["id"]), "kova.provider": str(provider["id"])})  # fmt: skip
    labels = {"kova.lease": str(lease["id"]), "kova.deployment": str(dep["id"]),
              "kova.order": str(lease["order_id"]), "kova.provider": str(provider["id"]),
              "kova.kind": "deployment"}  # fmt: skip
    before = client.containers.run("kova/job:1", ["sh", "-c", "echo from-before > /data/marker; sleep 3600"],
                                   name=f"kova-lease-{lease['id']}", labels=labels, detach=True,
                                   volumes={old.name: {"bind": "/data", "mode": "rw"}})  # fmt: skip
    wait_for(lambda: _sh(before, "cat /data/marker")[1].strip() == "from-before")
    agent.start()
    after = wait_for(lambda: (c := container_of(client, lease["id"])) and c.labels.get("kova.agent") == "2" and c, 30)
    assert after.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert list(after.attrs["NetworkSettings"]["Networks"]) == [f"kova-p{provider['id']}-d{dep['id']}"]
    wait_for(lambda: after.reload() or after.status == "running")
    assert _sh(after, "cat /data/marker")[1].strip() == "from-before"
    said = _sh(after, "df -k /data | tail -1")[1]
    assert int(said.split()[1]) < 80 * 1024  # the sized volume of 64Mi, not the host's disk
    assert old.name in _volumes(client, lease["id"])  # kept until gc-volumes


def test_an_agent_whose_address_the_orchestrator_refuses_stops_with_one_line(network):
    """The orchestrator accepts endpoints only in its --endpoint-networks (127.0.0.0/8 here)."""
    server = network["server"]
    provider = server.client.post("/v1/accounts", json={"role": "provider", "name": "far"}).json()
    result = subprocess.run(
        [sys.executable, "-m", "kova_live", "provider", "--orchestrator", server.url,
         "--token", provider["token"], "--public-address", "198.51.100.7", "--data-dir",
         str(Path(server.log).parent / "far")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--public-address" in result.stderr and "endpoint" in result.stderr, result.stderr

