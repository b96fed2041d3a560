"""The ingress over real HTTP (SQLite and PostgreSQL): a server with ``--ingress-port``, and a
real HTTP and WebSocket server on loopback standing in for a lease's container (its provider
reports it as the lease's endpoint, as the agent does). Docker runs in ``test_agent.py``."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import psycopg
import pytest
from aiohttp import WSMsgType, web
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    LOOPBACK,
    Server,
    apache_in_front,
    credit,
    free_port,
    fresh_database,
    register,
    wait_for,
)  # fmt: skip
from .test_agent import HTTPD

# test_agent's HTTP server, with a hostname of the tenant's own (SDL accept)
MANIFEST = HTTPD.replace("        as: 80\n", "        as: 80\n        accept: [ACCEPT]\n")
PRICE = 1_000


class Upstream:
    """A stand-in container on a loopback port: ``/`` echoes what it was sent (method, path,
    headers, the body's length and SHA-256), ``/ws`` echoes WebSocket messages, and
    ``/login?user=U`` sets a cookie, ``/broken`` cuts its streamed answer off."""

    def __init__(self, name: str) -> None:
        self.name, self.port = name, free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def echo(request: web.Request) -> web.StreamResponse:
            if request.path == "/ws":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for message in ws:
                    if message.type == WSMsgType.TEXT:
                        await ws.send_str(f"{self.name}: {message.data}")
                return ws
            body = await request.read()
            if request.path == "/broken":  # a streamed answer cut off: the container died
                response = web.StreamResponse()
                response.enable_chunked_encoding()
                await response.prepare(request)
                await response.write(b"half of it")
                await asyncio.sleep(0.1)
                request.transport.abort()
                return response
            if request.path == "/login":  # the container sets a cookie for its own user
                response = web.Response(text="welcome")
                response.set_cookie("session", request.query["user"])
                return response
            return web.json_response({
                "upstream": self.name, "method": request.method, "path": request.path_qs,
                "headers": dict(request.headers), "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            })  # fmt: skip

        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{path:.*}", echo)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        ready.set()
        self.loop.run_forever()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        async def shut() -> None:
            await self.runner.cleanup()
            await asyncio.sleep(0.2)  # let the closed connections' transports go

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def network(request, tmp_path) -> Iterator[dict]:
    ingress = free_port()
    with fresh_database(request.param, tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--heartbeat-grace", "100000000",
                        "--ingress-port", str(ingress))  # fmt: skip
        upstream = Upstream("a")
        try:
            yield {"server": server, "ingress": f"http://127.0.0.1:{ingress}", "upstream": upstream}
        finally:
            upstream.stop()
            server.stop()


def _ws_echo(url, host, text, context=None):
    """Send ``text`` over a WebSocket to ``url`` (Host: ``host``); what comes back."""

    async def echo() -> str:
        async with aiohttp.ClientSession() as session, session.ws_connect(
            url, headers={"Host": host}, ssl=context if context is not None else True
        ) as ws:
            await ws.send_str(text)
            said = (await ws.receive(timeout=10)).data
        await asyncio.sleep(0.1)  # the closed connection's transport goes before the loop
        return said

    return asyncio.run(echo())


def _parties(server):
    """A tenant with money, and a provider whose agent said what its machine has and that its
    leases answer on 127.0.0.1."""
    tenant, provider = register(server, "tenant", "t"), register(server, "provider", "p")
    credit(server.database_url, tenant["account"], 10_000_000)
    beat = server.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={
        "capacity": {"cpu": 4000, "memory": 2**33, "storage": 2**34, "gpu": 0},
        "endpoints": LOOPBACK})  # fmt: skip
    assert beat.status_code == 200, beat.text
    return tenant, provider


def _deploy(server, tenant, deposit, accept="app.example.com"):
    return server.client.post("/v1/deployments", headers=tenant["headers"], json={
        "manifest": MANIFEST.replace("ACCEPT", accept), "deposit": deposit})  # fmt: skip


def _lease(server, tenant, provider, dep, endpoint):
    """The provider bids, the tenant accepts, the provider reports the lease running."""
    order_id = dep["orders"][0]["id"]
    bid = server.client.post(f"/v1/orders/{order_id}/bids", headers=provider["headers"],
                             json={"price": PRICE}).json()  # fmt: skip
    lease = server.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).json()
    reply = server.client.post(f"/v1/leases/{lease['id']}/status", headers=provider["headers"],
                               json={"state": "running", "endpoint": endpoint})  # fmt: skip
    assert reply.status_code == 200, reply.text
    return lease


def _served(server, endpoint):
    """A tenant's deployment whose one lease runs at ``endpoint``: (tenant, deployment, its
    generated hostname)."""
    tenant, provider = _parties(server)
    dep = _deploy(server, tenant, 1_000_000).json()
    _lease(server, tenant, provider, dep, endpoint)
    return tenant, dep, f"web-{dep['id']}.deployments.localhost"


def _connect(url):
    """A socket of its own to ``url`` (``http://host:port``)."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_the_ingress_routes_a_deployments_hostnames_to_its_running_lease(network):
    server, ingress, upstream = network["server"], network["ingress"], network["upstream"]
    tenant, provider = _parties(server)
    # about a round and a half: the second round pauses it
    dep = _deploy(server, tenant, 90 * PRICE).json()
    host = f"web-{dep['id']}.deployments.localhost"
    port = ingress.rsplit(":", 1)[1]
    assert dep["urls"] == [
        {"service": "web", "hostname": host, "url": f"http://{host}:{port}/", "custom": False},
        {"service": "web", "hostname": "app.example.com", "url": f"http://app.example.com:{port}/", "custom": True},
    ]  # fmt: skip
    client = httpx.Client(base_url=ingress, timeout=10)
    get = lambda name, path="/": client.get(path, headers={"Host": name})  # noqa: E731
    assert get(host).status_code == 502 and "No replica" in get(host).text  # nothing runs yet
    assert get("nobody.deployments.localhost").status_code == 404
    _lease(server, tenant, provider, dep, upstream.endpoint)
    answer = wait_for(lambda: (r := get(host, "/some/path?q=1")).status_code == 200 and r).json()
    assert answer["upstream"] == "a" and answer["path"] == "/some/path?q=1"
    sent = answer["headers"]
    assert sent["Host"] == host and sent["X-Forwarded-Host"] == host
    assert sent["X-Forwarded-Proto"] == "http" and sent["X-Forwarded-For"] == "127.0.0.1"
    assert get("app.example.com").json()["upstream"] == "a"  # the name the manifest accepts
    body = bytes(range(256)) * 8192  # 2 MiB, streamed through
    posted = client.post("/upload", content=iter([body[:2**20], body[2**20:]]), headers={"Host": host}).json()
    assert posted["length"] == len(body) and posted["sha256"] == hashlib.sha256(body).hexdigest()
    sized = client.post("/upload", content=body[:1000], headers={"Host": host}).json()  # Content-Length
    assert sized["length"] == 1000 and sized["headers"]["Content-Length"] == "1000"
    assert _ws_echo(f"{ingress}/ws", host, "hello") == "a: hello"  # a WebSocket through it
    # the escrow runs out: 503 while paused, back after a deposit
    paused = wait_for(lambda: (r := get(host)).status_code == 503 and r, 30)
    assert "paused" in paused.text
    server.client.post(f"/v1/deployments/{dep['id']}/deposit", headers=tenant["headers"], json={"amount": 1_000_000})
    assert wait_for(lambda: get(host).status_code == 200)
    server.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"])
    assert wait_for(lambda: get(host).status_code == 404)
    assert get("app.example.com").status_code == 404
    client.close()
    # the server's /metrics counts what its ingress workers answered, and who answered
    answered = _ingress_answers(server)
    assert answered[("ingress", 502)] >= 2 and answered[("ingress", 503)] >= 1
    assert answered[("ingress", 404)] >= 3 and answered[("container", 101)] == 1
    assert answered[("container", 200)] >= 5


def test_a_visitor_that_expects_100_continue_is_told_to_go_on(network):
    server, ingress, upstream = network["server"], network["ingress"], network["upstream"]
    _, _, host = _served(server, upstream.endpoint)
    wait_for(lambda: httpx.get(ingress, headers={"Host": host}).status_code == 200)
    with _connect(ingress) as s:
        s.sendall(f"POST /up HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n"
                  "Expect: 100-continue\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # before the body is sent
        s.sendall(b"abc")
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    echoed = json.loads(body)
    assert echoed["length"] == 3 and "Expect" not in echoed["headers"]


def test_an_answer_cut_off_upstream_is_cut_off_downstream_not_completed(network):
    # a streamed answer the container stopped sending must not reach the visitor as a whole
    # one: the ingress closes the connection instead of ending the answer
    server, ingress, upstream = network["server"], network["ingress"], network["upstream"]
    _, _, host = _served(server, upstream.endpoint)
    wait_for(lambda: httpx.get(ingress, headers={"Host": host}).status_code == 200)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{ingress}/broken", headers={"Host": host}, timeout=10)
    head, body = _raw_get(ingress, host, "/broken")  # what the visitor got, byte for byte
    assert head.startswith("HTTP/1.1 200") and b"half of it" in body
    assert not body.endswith(b"0\r\n\r\n") and b"Bad gateway" not in body, body
    assert httpx.get(ingress, headers={"Host": host}).status_code == 200  # and it goes on


def _ingress_answers(server) -> dict[tuple[str, int], float]:
    """``kova_ingress_requests_total`` from the server's /metrics: (source, status) -> count."""
    families = text_string_to_metric_families(server.client.get("/metrics").text)
    family = next(f for f in families if f.name == "kova_ingress_requests")
    return collections.defaultdict(float, {
        (s.labels["source"], int(s.labels["status"])): s.value
        for s in family.samples if s.name == "kova_ingress_requests_total"
    })  # fmt: skip


def test_hostnames_are_one_deployments_and_never_reach_anothers_container(network):
    server, ingress = network["server"], network["ingress"]
    other = Upstream("b")
    try:
        tenant, provider = _parties(server)
        first = _deploy(server, tenant, 1_000_000, "shop.example.com").json()
        taken = _deploy(server, tenant, 1_000_000, "Shop.Example.com")
        assert taken.status_code == 409
        assert taken.json()["error"]["field"] == "manifest.services.web.expose.0.accept.0"
        ours = _deploy(server, tenant, 1_000_000, "x.deployments.localhost")
        assert ours.status_code == 409 and "Kova's own domain" in ours.json()["error"]["message"]
        second = _deploy(server, tenant, 1_000_000, "blog.example.com").json()
        _lease(server, tenant, provider, first, network["upstream"].endpoint)
        _lease(server, tenant, provider, second, other.endpoint)
        get = lambda name: httpx.get(ingress, headers={"Host": name}, timeout=10)  # noqa: E731
        wait_for(lambda: get("blog.example.com").status_code == 200)
        for _ in range(5):
            assert get(f"web-{first['id']}.deployments.localhost").json()["upstream"] == "a"
            assert get("shop.example.com").json()["upstream"] == "a"
            assert get(f"web-{second['id']}.deployments.localhost").json()["upstream"] == "b"
        # once the first is closed, its name is free for another deployment
        server.client.post(f"/v1/deployments/{first['id']}/close", headers=tenant["headers"])
        assert _deploy(server, tenant, 1_000_000, "shop.example.com").status_code == 201
    finally:
        other.stop()


def _raw_get(ingress, host, path="/", method="GET", body=b""):
    """A request with no header but Host (and Content-Length with a body), on a socket of its
    own: the answer's head and body."""
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    request = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{length}Connection: close\r\n\r\n"
    with _connect(ingress) as s:
        s.sendall(request.encode() + body)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode(), body


def test_the_ingress_adds_no_headers_and_keeps_no_cookies(network):
    # a proxy shared by every visitor must not add headers of its own, nor keep one visitor's
    # cookies and send them with another's requests
    server, ingress, upstream = network["server"], network["ingress"], network["upstream"]
    _, _, host = _served(server, upstream.endpoint)
    wait_for(lambda: _raw_get(ingress, host)[0].startswith("HTTP/1.1 200"))
    # HEAD: the container's head, its Content-Length included, and no body
    head, body = _raw_get(ingress, host, "/login?user=bob", "HEAD")
    assert "Content-Length: 7" in head and body == b"", head  # "welcome"
    head, _ = _raw_get(ingress, host, "/login?user=alice")
    assert "Set-Cookie: session=alice" in head  # alice's browser gets her cookie
    _, body = _raw_get(ingress, host)  # then somebody else's request
    sent = json.loads(body)["headers"]
    ours = {"Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}
    assert set(sent) == ours, sent
    _, body = _raw_get(ingress, host, "/form", "POST", b"a=1")
    assert set(json.loads(body)["headers"]) == ours | {"Content-Length"}


def _workers(pid: int) -> set[int]:
    """The ingress workers of the server ``pid`` (children started by multiprocessing's spawn,
    beside its resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(c) for c in children
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}  # fmt: skip


def test_ingress_workers_follow_changes_at_once_and_one_killed_is_started_again(tmp_path):
    # blocks of an hour: the workers cannot be reading their routes again at a new block, so
    # what they serve follows the API's changes through the pipes the server tells them by
    ingress = free_port()
    with fresh_database("sqlite", tmp_path) as url:
        server = Server(url, tmp_path / "data", 3600, "--heartbeat-grace", "100000000",
                        "--ingress-port", str(ingress), "--ingress-workers", "2")  # fmt: skip
        upstream = Upstream("a")
        try:
            workers = _workers(server.process.pid)
            assert len(workers) == 2
            tenant, provider = _parties(server)

            def answers(host: str) -> set[int]:  # a connection each: both workers answer
                return {httpx.get(f"http://127.0.0.1:{ingress}", headers={"Host": host}).status_code
                        for _ in range(8)}  # fmt: skip

            dep = _deploy(server, tenant, 1_000_000).json()
            host = f"web-{dep['id']}.deployments.localhost"
            assert answers(host) == {502}
            _lease(server, tenant, provider, dep, upstream.endpoint)
            assert wait_for(lambda: answers(host) == {200}, 5)
            before = sum(_ingress_answers(server).values())
            assert before >= 16  # the 502s and the 200s: both workers' counts
            os.kill(min(workers), signal.SIGKILL)
            again = wait_for(lambda: len(now := _workers(server.process.pid)) == 2 and now != workers and now, 30)
            assert min(workers) not in again and max(workers) in again
            assert answers(host) == {200}  # the new worker read the routes as it started
            assert sum(_ingress_answers(server).values()) >= before + 8  # counts kept
            server.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"])
            assert wait_for(lambda: answers(host) == {404}, 5)
            assert "starting it again" in server.log.read_text()
        finally:
            upstream.stop()
            server.stop()
        assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in again), 10)


def test_when_the_database_cannot_be_read_the_last_routes_read_go_on_serving(tmp_path):
    ingress = free_port()
    with fresh_database("postgresql", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--heartbeat-grace", "100000000",
                        "--ingress-port", str(ingress))  # fmt: skip
        upstream = Upstream("a")
        try:
            tenant, dep, host = _served(server, upstream.endpoint)
            get = lambda: httpx.get(f"http://127.0.0.1:{ingress}", headers={"Host": host})  # noqa: E731
            assert wait_for(lambda: get().status_code == 200)
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as db:
                db.execute("ALTER TABLE routes RENAME TO routes_away")  # every read fails
                try:
                    # a request at a new block reads them again: it fails, and is answered
                    assert wait_for(lambda: get().status_code == 200 and "cannot read the "
                                    "routes (serving the last read)" in server.log.read_text())  # fmt: skip
                    for _ in range(20):  # over many blocks: still served
                        assert get().status_code == 200
                finally:
                    db.execute("ALTER TABLE routes_away RENAME TO routes")
            server.client.post(f"/v1/deployments/{dep['id']}/close", headers=tenant["headers"])
            assert wait_for(lambda: get().status_code == 404)  # read again, as it comes back
        finally:
            upstream.stop()
            server.stop()


def test_an_unreachable_provider_is_a_502(network):
    server, ingress = network["server"], network["ingress"]
    tenant, provider = _parties(server)
    dep = _deploy(server, tenant, 1_000_000).json()
    _lease(server, tenant, provider, dep, f"127.0.0.1:{free_port()}")  # nothing listens there
    host = f"web-{dep['id']}.deployments.localhost"
    reply = wait_for(lambda: (r := httpx.get(ingress, headers={"Host": host})).status_code != 404 and r)
    assert reply.status_code == 502 and "cannot be reached" in reply.text


def test_the_ingress_terminates_tls_itself(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=*.deployments.localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    ingress, upstream = free_port(), Upstream("tls")
    with fresh_database("sqlite", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--heartbeat-grace", "100000000",
                        "--ingress-port", str(ingress), "--tls-cert", str(cert),
                        "--tls-key", str(key))  # fmt: skip
        try:
            tenant, provider = _parties(server)
            dep = _deploy(server, tenant, 1_000_000).json()
            host = f"web-{dep['id']}.deployments.localhost"
            assert dep["urls"][0]["url"] == f"https://{host}:{ingress}/"
            _lease(server, tenant, provider, dep, upstream.endpoint)
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False  # the certificate names the wildcard, we dial 127.0.0.1
            with httpx.Client(verify=context, timeout=10) as client:
                answer = wait_for(lambda: (r := client.get(f"https://127.0.0.1:{ingress}/", headers={"Host": host})).status_code == 200 and r)
                assert answer.json()["headers"]["X-Forwarded-Proto"] == "https"
        finally:
            upstream.stop()
            server.stop()
    refused = subprocess.run(
        [sys.executable, "-m", "kova_live", "serve", "--data-dir", str(tmp_path / "other"),
         "--tls-cert", str(cert)], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "--tls-cert and --tls-key go together" in refused.stderr


def test_a_port_already_taken_is_one_clear_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        for flags, says in ((["--port", port], f"--host/--port: cannot listen on 127.0.0.1:{port}"),
                            (["--port", str(free_port()), "--ingress-port", port],
                             f"--ingress-port: cannot listen on 127.0.0.1:{port}")):  # fmt: skip
            refused = subprocess.run(
                [sys.executable, "-m", "kova_live", "serve", "--data-dir", str(tmp_path), *flags],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert refused.returncode == 2, refused.stderr
            assert says in refused.stderr and "Traceback" not in refused.stderr


def test_apache_terminates_tls_in_front_of_the_ingress(network, tmp_path):
    """``deploy/apache/kova-ingress.conf`` in Debian's apache2 with a self-signed certificate:
    a page and a WebSocket through HTTPS, then Apache, then the ingress."""
    server, upstream = network["server"], network["upstream"]
    with apache_in_front(network["ingress"], tmp_path / "apache") as (https, context):
        tenant, provider = _parties(server)
        dep = _deploy(server, tenant, 1_000_000).json()
        host = f"web-{dep['id']}.deployments.localhost"
        _lease(server, tenant, provider, dep, upstream.endpoint)
        with httpx.Client(verify=context, timeout=10) as client:
            get = lambda: client.get(f"https://127.0.0.1:{https}/through", headers={"Host": host})  # noqa: E731
            answer = wait_for(lambda: (r := get()).status_code == 200 and r).json()
        assert answer["upstream"] == "a" and answer["path"] == "/through"
        sent = answer["headers"]
        assert sent["Host"] == host and sent["X-Forwarded-Proto"] == "https"
        assert sent["X-Forwarded-For"].startswith("127.0.0.1")

        assert _ws_echo(f"wss://127.0.0.1:{https}/ws", host, "over tls", context) == "a: over tls"
