"""Fixtures for the orchestrator's tests: a database of each kind, and a real server process.

Every test that takes ``database_url`` runs twice: on the embedded SQLite file and on
PostgreSQL (127.0.0.1:5432; a fresh database per test, dropped afterwards). Without
PostgreSQL the PostgreSQL half is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from .browser import browser  # noqa: F401  (a fixture: the console's tests drive Chromium)

BACKENDS = ["sqlite", "postgresql"]
PG_ADMIN = os.environ.get("KOVA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database of ``kind``: a SQLite file in ``folder``, or a new PostgreSQL
    database, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'kova.sqlite3'}"
        return
    problem = _pg_available()
    if problem is not None:
        message = f"PostgreSQL is not reachable at {PG_ADMIN}: {problem}"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(message)  # CI must fail
    name = f"kova_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database, for each backend."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


HANDED_OUT: set[int] = set()
"""Ports this process has handed out: the system may offer one again until it is bound (a
server's API and ingress ports once came out the same)."""


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def kova_live(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``kova-live`` as a user does; its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "kova_live", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


class Server:
    """A ``kova-live serve`` process on a loopback port."""

    def __init__(
        self, database_url: str, data_dir: Path, block_seconds: float = 0.05, *extra: str
    ) -> None:
        """``extra`` flags go to ``kova-live serve``; unless they say otherwise, providers are
        never lost for missed heartbeats (tests that want that pass ``--heartbeat-grace``),
        leases' endpoints may be on loopback (``--endpoint-networks 127.0.0.0/8``: every
        test runs on 127.0.0.1), anyone registers (``--registration open``; the default is
        ``invite``), nothing is rate-limited (``--rate-limit-accounts 0`` and the same for
        writes and reads: every test's requests come from 127.0.0.1), and of the network's
        limits, no minimum deposit, no size check and no tenant share (``--min-deposit-blocks
        0 --order-size any --tenant-share 1``: tests of other things neither fund nor size
        their deployments for them; ``test_abuse.py`` runs with them); the others (replicas,
        open orders per tenant, the order lifetime) are at their defaults."""
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "kova_live", "serve",
                "--database-url", database_url, "--data-dir", str(data_dir),
                "--port", str(self.port), "--block-seconds", str(block_seconds),
                *extra,
                *(() if "--heartbeat-grace" in extra else ("--heartbeat-grace", "100000000")),
                *(() if "--endpoint-networks" in extra else ("--endpoint-networks", "127.0.0.0/8")),
                *(() if "--registration" in extra else ("--registration", "open")),
                # the network's limits that would make every test fund and size its deployments
                *(() if "--min-deposit-blocks" in extra else ("--min-deposit-blocks", "0")),
                *(() if "--order-size" in extra else ("--order-size", "any")),
                *(() if "--tenant-share" in extra else ("--tenant-share", "1")),
                *(arg for kind in ("accounts", "writes", "reads")
                  if f"--rate-limit-{kind}" not in extra for arg in (f"--rate-limit-{kind}", "0")),
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {self.log.read_text()}")
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=10)
        self.ops: dict[str, str] | None = None  # an operator's headers, made when first needed
        RUNNING[database_url] = self

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running server, one per backend for a whole test module: tests share its database, so
    they compare counts before and after rather than expect an empty network."""
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    with fresh_database(request.param, folder) as url:
        started = Server(url, folder / "data")
        try:
            yield started
        finally:
            started.stop()


RUNNING: dict[str, Server] = {}
"""The server running on each database (the latest started), for :func:`credit`."""


def operator_headers(database_url: str) -> dict[str, str]:
    """The headers of a new operator account on the database: what ``kova-live admin operator``
    makes (that command has its own tests; this saves a process start per server)."""
    import secrets

    from sqlalchemy import insert

    from kova_live.app import hash_token
    from kova_live.db import sync_engine
    from kova_live.schema import accounts

    token = "kova_" + secrets.token_urlsafe(32)
    engine = sync_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(insert(accounts).values(
                role="operator", name="tests", token_hash=hash_token(token), created_height=0))
    finally:
        engine.dispose()
    return {"Authorization": f"Bearer {token}"}


def credit(database_url: str, account: str, micro: int) -> None:
    """Credit a tenant as an operator does, over the API of the server running on the
    database (``POST /v1/accounts/{id}/credit``, as ``kova-live admin credit`` sends it)."""
    server = RUNNING[database_url]
    if server.ops is None:
        server.ops = operator_headers(database_url)
    tenant_id = int(account.removeprefix("tenant:"))
    reply = server.client.post(f"/v1/accounts/{tenant_id}/credit", headers=server.ops,
                               json={"amount": micro})  # fmt: skip
    assert reply.status_code == 200, reply.text


LOOPBACK = {"addresses": ["127.0.0.1"], "ports": [1, 65535]}
"""A heartbeat's ``endpoints`` for a provider whose leases answer anywhere on 127.0.0.1."""


def register(server: Server, role: str, name: str) -> dict:
    """A new account on ``server``, with the ``headers`` that carry its token."""
    account = server.client.post("/v1/accounts", json={"role": role, "name": name}).json()
    account["headers"] = {"Authorization": f"Bearer {account['token']}"}
    return account


APACHE_MODULES = ("mpm_event", "authz_core", "ssl", "socache_shmcb", "proxy", "proxy_http",
                  "proxy_wstunnel", "headers", "proxy_balancer", "lbmethod_byrequests",
                  "proxy_hcheck", "slotmem_shm")  # fmt: skip


@contextlib.contextmanager
def apache_in_front(
    ingress: str, folder: Path, conf: str = "kova-ingress.conf", env: dict[str, str] | None = None
) -> Iterator[tuple[int, ssl.SSLContext]]:
    """Debian's apache2 with ``deploy/apache/<conf>`` (``kova-ingress.conf``; ``env``: what else
    the file reads from the environment) and a self-signed certificate for
    ``*.deployments.localhost``, terminating TLS in front of ``ingress`` (its URL); yields its
    HTTPS port, once it answers, and an SSL context that trusts the certificate."""
    if shutil.which("apache2") is None:
        message = "Debian's apache2 is not installed (scripts/services installs it)"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(message)
    folder.mkdir(parents=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=*.deployments.localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    modules = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in APACHE_MODULES)
    config = folder / "httpd.conf"
    config.write_text(f"""ServerRoot {folder}
ServerName localhost
PidFile {folder}/httpd.pid
ErrorLog {folder}/error.log
DefaultRuntimeDir {folder}
Mutex file:{folder} default
{modules}
User www-data
Group www-data
Include {Path(__file__).resolve().parents[2] / "deploy" / "apache" / conf}
""")
    https = free_port()
    environment = {**os.environ, "KOVA_DOMAIN": "deployments.localhost",
                   "KOVA_HTTPS_LISTEN": str(https), "KOVA_INGRESS": ingress.removeprefix("http://"),
                   "KOVA_TLS_CERT": str(cert), "KOVA_TLS_KEY": str(key), **(env or {})}  # fmt: skip
    apache = subprocess.Popen(["apache2", "-f", str(config), "-DFOREGROUND"], env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the tests dial 127.0.0.1

        def answers() -> bool:
            try:
                with httpx.Client(verify=context, timeout=5) as client:
                    return client.get(f"https://127.0.0.1:{https}/").status_code > 0
            except httpx.TransportError:
                return False  # still starting

        wait_for(answers)
        yield https, context
    finally:
        apache.terminate()
        apache.wait(timeout=20)


def wait_for(predicate, timeout: float = 20.0):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


# --------------------------------------------------------------------------- provider agents


@pytest.fixture(scope="module")
def docker_client() -> Iterator[object]:
    """The Docker daemon ``scripts/services`` starts, with the images of ``scripts/images``.
    Without it the test is skipped, except under ``CI=true``, where it fails."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.images.get("kova/httpd:1")
        client.images.get("kova/job:1")
    except Exception as exc:  # no daemon, or no images: scripts/services makes both
        message = f"no Docker daemon with the local images (run scripts/services): {exc}"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(message)
    yield client
    client.close()


@pytest.fixture
def network(request, docker_client, tmp_path) -> Iterator[dict]:
    """An orchestrator on PostgreSQL with 0.05 s blocks (and the ``kova-live serve`` flags of an
    indirect parameter, if any); agents are started by the test and stopped here, and every
    container, volume and network of the test's providers removed."""
    from .agents import AgentProcess, remove_providers_things

    agents: list[AgentProcess] = []
    ingress = free_port()
    with fresh_database("postgresql", tmp_path) as url:
        server = Server(url, tmp_path / "server", 0.05, *getattr(request, "param", ()),
                        "--ingress-port", str(ingress))  # fmt: skip
        providers: list[int] = []

        def agent(name: str, *extra: str) -> tuple[dict, AgentProcess]:
            account = register(server, "provider", name)
            providers.append(account["id"])
            started = AgentProcess(server, account["token"], tmp_path / name, *extra)
            agents.append(started)
            return account, started

        try:
            yield {"server": server, "agent": agent, "docker": docker_client,
                   "ingress": f"http://127.0.0.1:{ingress}"}  # fmt: skip
        finally:
            for started in agents:
                started.stop()
            server.stop()
            remove_providers_things(docker_client, providers)
