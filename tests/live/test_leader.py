"""A leader and standbys on one PostgreSQL database (``kova_live.leader``), as real processes:
the first server leads, a second stands by (it answers reads, and market commands with 503),
takes over when the leader is killed, and a leader whose epoch has moved on writes nothing.

Settings: 0.05 s blocks, the test servers' defaults (``conftest.Server``)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
import time

import httpx
import psycopg

from kova_core import MICRO

from .conftest import (
    PG_ADMIN,
    RUNNING,
    Server,
    credit,
    fresh_database,
    kova_live,
    register,
    wait_for,
)
from .test_lifecycle import MANIFEST


def deploy(server: Server, tenant: dict):
    return server.client.post("/v1/deployments", headers=tenant["headers"],
                              json={"manifest": MANIFEST, "deposit": 1_000_000})  # fmt: skip


def test_a_standby_answers_reads_refuses_commands_and_takes_over_from_a_killed_leader(tmp_path):
    with fresh_database("postgresql", tmp_path) as url:
        first = Server(url, tmp_path / "first", 0.05)
        second = Server(url, tmp_path / "second", 0.05)
        servers = [first, second]
        try:
            assert first.client.get("/v1/status").json()["role"] == "leader"
            status = wait_for(lambda: (s := second.client.get("/v1/status").json())["leader"] and s)
            assert status["role"] == "standby" and status["leader"] == first.url
            assert first.client.get("/v1/leader").status_code == 200
            refused = second.client.get("/v1/leader")
            assert refused.status_code == 503 and first.url in refused.json()["error"]["message"]

            tenant = register(second, "tenant", "t")  # not a market command: either process
            RUNNING[url] = first  # credit() goes through it: the leader
            credit(url, tenant["account"], 10 * MICRO)
            no = deploy(second, tenant)
            assert no.status_code == 503 and no.headers["Retry-After"] == "1"
            assert "standby" in no.json()["error"]["message"]
            made = deploy(first, tenant)
            assert made.status_code == 201, made.text
            dep = made.json()
            seen = second.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"])
            assert seen.status_code == 200 and seen.json()["escrow"] == 1_000_000  # reads: the DB
            # a file uploaded to one orchestrator is served by the other: it is in the database
            sha256 = second.client.post("/v1/files", headers=tenant["headers"],
                                        content=b"on any machine").json()["sha256"]  # fmt: skip
            assert first.client.get(f"/v1/files/{sha256}",
                                    headers=tenant["headers"]).content == b"on any machine"
            # why (not) a provider: the core's diagnosis, on the standby's copy of the market
            small = register(first, "provider", "small")
            for who, cpu in ((register(first, "provider", "big"), 4000), (small, 10)):
                beat = {"capacity": {"cpu": cpu, "memory": 2**34, "storage": 2**36, "gpu": 0}}
                assert first.client.post("/v1/providers/heartbeat", headers=who["headers"],
                                         json=beat).status_code == 200  # fmt: skip
            path = f"/v1/orders/{dep['orders'][0]['id']}/candidates"
            want = first.client.get(path, headers=tenant["headers"]).json()
            got = second.client.get(path, headers=tenant["headers"])
            assert got.status_code == 200 and got.json() == want
            assert want["can_serve"] == 1 and want["cannot_serve"][0]["provider_id"] == small["id"]
            # every GET of the API, answered by the standby as by the leader
            gets = [(path, tenant) for path in (
                "/healthz", "/v1/openapi.json", "/v1/status", "/v1/accounts/me",
                "/v1/accounts/me/transactions", f"/v1/providers/{small['id']}/audits",
                "/v1/deployments", f"/v1/deployments/{dep['id']}",
                f"/v1/deployments/{dep['id']}/bids", f"/v1/deployments/{dep['id']}/logs",
                f"/v1/deployments/{dep['id']}/result", "/v1/providers",
            )] + [(path, small) for path in ("/v1/orders", "/v1/leases")]  # fmt: skip
            for path, who in gets:
                mine = second.client.get(path, headers=who["headers"])
                theirs = first.client.get(path, headers=who["headers"])
                assert mine.status_code == theirs.status_code < 500, (path, mine.text)
            assert second.client.get("/metrics").status_code == 200

            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
            killed = time.monotonic()
            # the first command the standby takes as the new leader (sent again, as clients do)
            again = wait_for(lambda: (r := deploy(second, tenant)).status_code == 201 and r, 30)
            took = time.monotonic() - killed
            assert again.json()["id"] == dep["id"] + 1
            print(f"take-over: {took:.2f} s from the kill to the first command taken")
            assert second.client.get("/v1/status").json()["role"] == "leader"
            me = second.client.get("/v1/accounts/me", headers=tenant["headers"]).json()
            assert me["balance"] == 10 * MICRO - 2 * 1_000_000  # money conserved

            first.stop()
            restarted = Server(url, tmp_path / "restarted", 0.05)  # comes back as a standby
            servers.append(restarted)
            assert wait_for(lambda: (s := restarted.client.get("/v1/status").json())["leader"]
                            and s)["role"] == "standby"  # fmt: skip
            assert deploy(restarted, tenant).status_code == 503
        finally:
            for server in servers:
                if server.process.poll() is None:
                    server.stop()


def test_a_leader_whose_epoch_moved_on_writes_nothing_and_leads_again_only_with_the_lock(tmp_path):
    """Fencing: the epoch in the database is moved on behind the leader's back (as a new leader
    does when it takes over): the leader's next batch fails, nothing of it lands, and the process
    steps down; the lock being free again, it takes over in a new epoch and takes commands."""
    with fresh_database("postgresql", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05)
        try:
            tenant = register(server, "tenant", "t")
            credit(url, tenant["account"], 10 * MICRO)
            assert deploy(server, tenant).status_code == 201
            name = url.rsplit("/", 1)[1]
            admin = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
            with psycopg.connect(admin, autocommit=True) as db:
                before = db.execute("SELECT leader_epoch FROM network").fetchone()[0]
                db.execute("UPDATE network SET leader_epoch = leader_epoch + 1")
                fenced = deploy(server, tenant)
                assert fenced.status_code == 503, fenced.text
                assert db.execute("SELECT count(*) FROM deployments").fetchone()[0] == 1
                again = wait_for(lambda: (r := deploy(server, tenant)).status_code == 201 and r, 30)
                assert again.status_code == 201
                now = db.execute("SELECT leader_epoch FROM network").fetchone()[0]
                assert now == before + 2  # the bump behind its back, then its own new term
                assert db.execute("SELECT count(*) FROM deployments").fetchone()[0] == 2
        finally:
            server.stop()


def test_a_planned_step_down_hands_the_leadership_to_a_standby(tmp_path):
    with fresh_database("postgresql", tmp_path) as url:
        first = Server(url, tmp_path / "first", 0.05)
        second = Server(url, tmp_path / "second", 0.05)
        try:
            RUNNING[url] = first
            tenant = register(first, "tenant", "t")
            credit(url, tenant["account"], 10 * MICRO)
            assert deploy(first, tenant).status_code == 201
            ops = first.ops
            assert second.client.post("/v1/leader/step-down", headers=ops).status_code == 409
            result = kova_live("admin", "step-down", "--orchestrator", first.url,
                               "--token", ops["Authorization"].split()[1])  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert "stepped down" in result.stdout
            wait_for(lambda: second.client.get("/v1/status").json()["role"] == "leader", 30)
            assert first.client.get("/v1/status").json()["role"] == "standby"
            assert wait_for(lambda: deploy(second, tenant).status_code == 201, 30)
            assert deploy(first, tenant).status_code == 503
        finally:
            first.stop()
            second.stop()


class Proxy:
    """A TCP proxy of the test's own, between a server and PostgreSQL, that can stop forwarding
    without closing anything (a network that drops packets: keepalives to it are answered by the
    proxy's kernel, so only the database's idle timeouts and the leader's pings notice)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self.forwarding.wait()
                data = source.recv(65536)
                if not data:
                    break
                self.forwarding.wait()  # what arrives while cut off is held, not lost
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.forwarding.set()
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_a_leader_cut_off_from_the_database_steps_down_and_none_of_its_writes_land(tmp_path):
    with fresh_database("postgresql", tmp_path) as url:
        proxy = Proxy(5432)
        through = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        first = Server(through, tmp_path / "first", 0.05)  # its database traffic: the proxy
        second = Server(url, tmp_path / "second", 0.05)
        RUNNING[url] = RUNNING[through] = first
        stop = threading.Event()
        try:
            tenant = register(first, "tenant", "t")
            provider = register(first, "provider", "p")
            credit(through, tenant["account"], 10 * MICRO)
            beat = {"capacity": {"cpu": 4000, "memory": 2**34, "storage": 2**36, "gpu": 0}}

            def heartbeats():  # the agent, to whichever leads
                while not stop.is_set():
                    for s in (first, second):
                        with contextlib.suppress(httpx.HTTPError):
                            s.client.post("/v1/providers/heartbeat", headers=provider["headers"],
                                          json=beat, timeout=1)  # fmt: skip
                    time.sleep(0.3)

            threading.Thread(target=heartbeats, daemon=True).start()
            dep = deploy(first, tenant).json()
            proxy.forwarding.clear()  # cut off
            cut = time.monotonic()
            stale: dict = {}

            def stale_deposit():  # sent to the cut-off leader: it must never land
                with contextlib.suppress(httpx.HTTPError):
                    stale["reply"] = first.client.post(
                        f"/v1/deployments/{dep['id']}/deposit", headers=tenant["headers"],
                        json={"amount": 7_777}, timeout=60)  # fmt: skip

            pending = threading.Thread(target=stale_deposit)
            pending.start()
            wait_for(lambda: second.client.get("/v1/leader").status_code == 200, 30)
            took = time.monotonic() - cut
            print(f"\ntake-over after the cut: {took:.1f} s")
            assert first.client.get("/v1/leader", timeout=5).status_code == 503  # it stepped down
            done = second.client.post(f"/v1/deployments/{dep['id']}/deposit",
                                      headers=tenant["headers"], json={"amount": 5_555})  # fmt: skip
            assert done.status_code == 200, done.text
            proxy.forwarding.set()  # the connection comes back
            pending.join(60)
            assert "reply" not in stale or stale["reply"].status_code == 503
            status = wait_for(lambda: (s := first.client.get("/v1/status").json())["leader"]
                              == second.url and s, 30)  # fmt: skip
            assert status["role"] == "standby"
            admin = PG_ADMIN.rsplit("/", 1)[0] + "/" + url.rsplit("/", 1)[1]
            with psycopg.connect(admin) as db:
                amounts = [r[0] for r in db.execute(
                    "SELECT amount FROM transfers WHERE reason = 'deposit'").fetchall()]  # fmt: skip
                nodes = db.execute("SELECT state, failed FROM provider_nodes").fetchall()
            assert 5_555 in amounts and 7_777 not in amounts  # the stale leader's: not landed
            assert nodes == [("online", 0)]  # the time without a leader counted against nobody
        finally:
            stop.set()
            proxy.close()
            first.stop()
            second.stop()


def test_clients_given_several_orchestrators_follow_the_leader(tmp_path):
    """``kova --server STANDBY,LEADER`` deploys (the standby's 503 sends it on, with its key),
    and a provider agent given both bids."""
    from .agents import HTTPD, AgentProcess
    from .test_tenant_cli import kova

    with fresh_database("postgresql", tmp_path) as url:
        first = Server(url, tmp_path / "first", 0.05)
        second = Server(url, tmp_path / "second", 0.05)
        agent = None
        try:
            RUNNING[url] = first
            both = f"{second.url},{first.url}"  # the standby first
            config = tmp_path / "config.json"
            logged = kova(config, "login", "--server", both, "--name", "carol")
            assert logged.returncode == 0, logged.stderr
            token = json.loads(config.read_text())["token"]
            me = first.client.get("/v1/accounts/me", headers={"Authorization": f"Bearer {token}"})
            credit(url, me.json()["account"], 10 * MICRO)
            manifest = tmp_path / "web.yaml"
            manifest.write_text(HTTPD)
            deployed = kova(config, "deploy", manifest, "--deposit", "1")
            assert deployed.returncode == 0, deployed.stderr
            provider = register(first, "provider", "p")
            agent = AgentProcess(second, provider["token"], tmp_path / "agent",
                                 "--orchestrator", both, "--strategy", "fixed",
                                 "--strategy-param", "price_per_block=1000")  # fmt: skip
            dep_id = deployed.stdout.split()[1]
            headers = {"Authorization": f"Bearer {token}"}
            wait_for(lambda: first.client.get(f"/v1/deployments/{dep_id}/bids",
                                              headers=headers).json()["bids"], 30)  # fmt: skip
            listed = kova(config, "bids", dep_id)  # a read: the standby answers it
            assert listed.returncode == 0, listed.stderr
        finally:
            if agent is not None:
                agent.stop()
            first.stop()
            second.stop()


def test_apache_sends_the_api_to_whichever_leads(tmp_path):
    """``deploy/apache/kova-api-balancer.conf`` in front of two orchestrators: the API reaches the
    leader (its health check is GET /v1/leader), and after the leader is killed, the standby that
    took over; commands sent through Apache, again with their key after a 503, are taken."""
    from .conftest import apache_in_front, free_port

    with fresh_database("postgresql", tmp_path) as url:
        ingresses = [free_port(), free_port()]
        first = Server(url, tmp_path / "first", 0.05, "--ingress-port", str(ingresses[0]))
        second = Server(url, tmp_path / "second", 0.05, "--ingress-port", str(ingresses[1]))
        RUNNING[url] = first
        env = {"KOVA_API_HOST": "api.localhost",
               "KOVA_API_A": first.url.removeprefix("http://"),
               "KOVA_API_B": second.url.removeprefix("http://"),
               "KOVA_INGRESS_A": f"127.0.0.1:{ingresses[0]}",
               "KOVA_INGRESS_B": f"127.0.0.1:{ingresses[1]}"}  # fmt: skip
        try:
            tenant = register(first, "tenant", "t")
            credit(url, tenant["account"], 10 * MICRO)
            with apache_in_front("http://unused", tmp_path / "apache", "kova-api-balancer.conf",
                                 env) as (https, context), \
                    httpx.Client(verify=context, timeout=10) as client:  # fmt: skip
                api = f"https://127.0.0.1:{https}"
                host = {"Host": "api.localhost", **tenant["headers"]}

                def through_apache(method, path, key=None, body=None):
                    headers = {**host, **({"Idempotency-Key": key} if key else {})}
                    return client.request(method, api + path, headers=headers, json=body)

                # once the health checks have run (members count as healthy before their first),
                # every request goes to the leader
                wait_for(lambda: all(through_apache("GET", "/v1/status").json()["role"] == "leader"
                                     for _ in range(6)), 30)  # fmt: skip
                assert through_apache("GET", "/v1/status").json()["leader"] == first.url
                made = through_apache("POST", "/v1/deployments", "one",
                                      {"manifest": MANIFEST, "deposit": 1_000_000})  # fmt: skip
                assert made.status_code == 201, made.text
                first.process.send_signal(signal.SIGKILL)
                first.process.wait()
                again = wait_for(lambda: (r := through_apache(
                    "POST", "/v1/deployments", "two", {"manifest": MANIFEST, "deposit": 1_000_000}))
                    .status_code == 201 and r, 30)  # fmt: skip
                assert again.json()["id"] == made.json()["id"] + 1
                status = through_apache("GET", "/v1/status").json()
                assert (status["role"], status["leader"]) == ("leader", second.url)
        finally:
            first.stop()
            second.stop()


def test_a_standby_with_redirect_answers_commands_307_to_the_leader(tmp_path):
    """``serve --redirect``: for clients that reach the orchestrators directly, a standby
    answers a market command 307 to the leader's --advertise-url, which keeps its method and
    body; ``kova`` given only the standby follows it."""
    from .test_tenant_cli import kova

    with fresh_database("postgresql", tmp_path) as url:
        first = Server(url, tmp_path / "first", 0.05)
        second = Server(url, tmp_path / "second", 0.05, "--redirect")
        try:
            RUNNING[url] = first
            wait_for(lambda: second.client.get("/v1/status").json()["leader"] == first.url)
            tenant = register(second, "tenant", "t")
            credit(url, tenant["account"], 10 * MICRO)
            moved = deploy(second, tenant)
            assert moved.status_code == 307, moved.text
            assert moved.headers["Location"] == f"{first.url}/v1/deployments"
            config = tmp_path / "config.json"
            config.write_text(json.dumps({"server": second.url, "token": tenant["token"]}))
            manifest = tmp_path / "web.yaml"
            manifest.write_text(MANIFEST)
            deployed = kova(config, "deploy", manifest, "--deposit", "1")
            assert deployed.returncode == 0, deployed.stderr
            assert deployed.stdout.startswith("deployment ")
        finally:
            first.stop()
            second.stop()
