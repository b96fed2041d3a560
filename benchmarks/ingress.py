#!/usr/bin/env python3
"""The ingress's throughput and added latency, with wrk. Prints a table; asserts nothing.

    .venv/bin/python benchmarks/ingress.py [--seconds 10] [--connections 64] [--threads 2]

Needs Docker (``scripts/services``), and Debian's ``wrk`` and ``nginx`` (``apt-get install wrk
nginx``). The lease's container is ``kova/nginx:1``, which this script builds when it is missing
(no registry is reachable here): this machine's nginx binary and the libraries it links, serving
a 5-byte page on port 8080 in one worker, with keep-alive. (Busybox's ``kova/httpd:1``, which
the tests use, forks per connection and closes each one: it answers ~3,000 requests/s alone, so
it would measure itself.) The script starts that container, ``kova-live serve`` with its
ingress on an embedded SQLite database and a lease whose endpoint is that container, and
Debian's nginx as a reference reverse proxy to the same container (reached at its address on
Docker's bridge, not through a published port, so that Docker's userland proxy is in no
way's path). Then wrk sends the same
request (``GET /``, 5 bytes) for ``--seconds`` each, three ways:

1. straight to the container;
2. through the ingress (``Host: web-<id>.deployments.localhost``);
3. through nginx;

first with ``--connections`` at once (throughput: each way answers as fast as it can), then
over one connection, a request at a time (latency: what each proxy adds to a request). With
64 requests always waiting, a p50 is mostly queueing (about 64 / requests per second), so the
added latency is measured one request at a time.

Everything runs on this machine's cores, wrk included, so the figures are what the machine
does with all of it at once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import io  # noqa: E402
import tarfile  # noqa: E402

import docker  # noqa: E402
import httpx  # noqa: E402

MANIFEST = """
version: "2.0"
services:
  web:
    image: kova/nginx:1
    expose:
      - port: 8080
        to:
          - global: true
profiles:
  compute:
    web:
      resources: {cpu: {units: 1}, memory: {size: 128Mi}, storage: {size: 512Mi}}
  placement:
    dc:
      pricing:
        web: {denom: ukova, amount: 5000}
deployment:
  web:
    dc: {profile: web, count: 1}
"""


IMAGE = "kova/nginx:1"
UPSTREAM_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path /tmp; proxy_temp_path /tmp;
    fastcgi_temp_path /tmp; uwsgi_temp_path /tmp; scgi_temp_path /tmp;
    keepalive_requests 1000000;
    server {
        listen 8080;
        root /www;
    }
}
"""


def build_image(client: docker.DockerClient) -> None:
    """``kova/nginx:1`` from this machine's nginx and the shared libraries ``ldd`` lists."""
    try:
        client.images.get(IMAGE)
        return
    except docker.errors.ImageNotFound:
        pass
    nginx = shutil.which("nginx")
    assert nginx is not None
    libraries = re.findall(r"(/\S+) \(0x", subprocess.run(["ldd", nginx], capture_output=True,
                                                          text=True, check=True).stdout)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def add_bytes(path: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        def add_dir(path: str) -> None:
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(info)

        for path in ("tmp", "www", "etc", "var", "var/log", "var/log/nginx", "var/lib",
                     "var/lib/nginx"):  # fmt: skip
            add_dir(path)
        tar.add(os.path.realpath(nginx), arcname="nginx")
        for library in libraries:
            tar.add(os.path.realpath(library), arcname=library.lstrip("/"))
        add_bytes("www/index.html", b"kova\n")
        add_bytes("nginx.conf", UPSTREAM_CONF.encode())
        add_bytes("etc/passwd", b"root:x:0:0:root:/:/nginx\nnobody:x:65534:65534::/:/nginx\n")
        add_bytes("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    client.api.import_image_from_data(
        buffer.getvalue(), repository="kova/nginx", tag="1",
        changes=["EXPOSE 8080", 'CMD ["/nginx", "-c", "/nginx.conf", "-p", "/tmp/"]'],
    )  # fmt: skip
    print(f"built image {IMAGE} from {nginx}", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit("timed out waiting for a service to start")


def wrk(url: str, seconds: float, connections: int, threads: int, host: str | None) -> dict:
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s", "--latency"]
    if host:
        args += ["-H", f"Host: {host}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms("50%"), "p99": ms("99%"),
        "errors": int(errors.group(1)) if errors else 0,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ingress-workers", type=int, default=os.cpu_count() or 1,
                        help="kova-live serve --ingress-workers (default: one per core)")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install wrk nginx")
    client = docker.from_env()
    folder = Path(tempfile.mkdtemp(prefix="kova-ingress-bench-"))
    api, ingress, proxy = free_port(), free_port(), free_port()
    container = server = nginx = None
    try:
        build_image(client)
        container = client.containers.run(IMAGE, detach=True, nano_cpus=10**9)
        container.reload()
        # the container's own address on Docker's bridge: a published port on 127.0.0.1 would
        # put Docker's userland proxy (docker-proxy) in every request's way, all three ways
        address = container.attrs["NetworkSettings"]["IPAddress"]
        endpoint = f"{address}:8080"
        made = subprocess.run(
            [sys.executable, "-m", "kova_live", "admin", "operator", "bench",
             "--data-dir", str(folder / "data")], capture_output=True, text=True, check=True,
        )  # fmt: skip
        ops = made.stdout.strip().splitlines()[-1]
        server = subprocess.Popen(
            [sys.executable, "-m", "kova_live", "serve", "--data-dir", str(folder / "data"),
             "--port", str(api), "--ingress-port", str(ingress), "--block-seconds", "1",
             "--ingress-workers", str(args.ingress_workers),
             # the container's address on Docker's bridge, a private one: allowed explicitly
             "--endpoint-networks", f"{address}/32",
             # open registration and no rate limits: it measures the ingress, not the limits
             "--registration", "open", "--rate-limit-accounts", "0", "--rate-limit-writes", "0",
             "--rate-limit-reads", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{api}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200)
        tenant = httpx.post(f"{base}/v1/accounts", json={"role": "tenant", "name": "t"}).json()
        provider = httpx.post(f"{base}/v1/accounts", json={"role": "provider", "name": "p"}).json()
        credit = subprocess.run(
            [sys.executable, "-m", "kova_live", "admin", "credit", tenant["account"], "1000",
             "--orchestrator", base, "--token", ops], capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "credited" in credit.stdout
        t = {"Authorization": f"Bearer {tenant['token']}"}
        p = {"Authorization": f"Bearer {provider['token']}"}
        httpx.post(f"{base}/v1/providers/heartbeat", headers=p, json={
            "capacity": {"cpu": 4000, "memory": 2**33, "storage": 2**34, "gpu": 0},
            "endpoints": {"addresses": [address], "ports": [8080, 8080]},
        }).raise_for_status()  # fmt: skip
        dep = httpx.post(f"{base}/v1/deployments", headers=t,
                         json={"manifest": MANIFEST, "deposit": 500_000_000}).json()  # fmt: skip
        bid = httpx.post(f"{base}/v1/orders/{dep['orders'][0]['id']}/bids", headers=p,
                         json={"price": 1000}).json()  # fmt: skip
        lease = httpx.post(f"{base}/v1/bids/{bid['id']}/accept", headers=t).json()
        httpx.post(f"{base}/v1/leases/{lease['id']}/status", headers=p,
                   json={"state": "running", "endpoint": endpoint}).raise_for_status()  # fmt: skip
        host = dep["urls"][0]["hostname"]
        via = f"http://127.0.0.1:{ingress}/"
        wait_until(lambda: httpx.get(via, headers={"Host": host}).status_code == 200)
        (folder / "nginx.conf").write_text(f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}; proxy_temp_path {folder};
    fastcgi_temp_path {folder}; uwsgi_temp_path {folder}; scgi_temp_path {folder};
    upstream container {{ server {endpoint}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{proxy};
        location / {{
            proxy_pass http://container;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
""")
        nginx = subprocess.Popen(["nginx", "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{proxy}/").status_code == 200)
        routes = [
            ("straight to the container", f"http://{endpoint}/", None),
            ("through the ingress", via, host),
            ("through nginx (1 worker)", f"http://127.0.0.1:{proxy}/", None),
        ]
        loaded = [(name, wrk(url, args.seconds, args.connections, args.threads, name_))
                  for name, url, name_ in routes]  # fmt: skip
        light = [(name, wrk(url, args.seconds, 1, 1, name_)) for name, url, name_ in routes]
    finally:
        for process in (nginx, server):
            if process is not None:
                process.terminate()
                process.wait()
        if container is not None:
            container.remove(force=True)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"GET / (5 bytes), {args.seconds:g} s each, {os.cpu_count()} cores shared by all "
          "(wrk, the container, the ingress, nginx)")  # fmt: skip
    table(f"Throughput: wrk -t{args.threads} -c{args.connections}, as fast as each answers", loaded)
    table("Latency: wrk -t1 -c1, one request at a time (what a proxy adds to each)", light)
    ingress_rps, nginx_rps = loaded[1][1]["rps"], loaded[2][1]["rps"]
    added = light[1][1]["p50"] - light[0][1]["p50"]
    print(f"\ningress: {ingress_rps:,.0f} requests/s (target >= 5,000), "
          f"{ingress_rps / nginx_rps:.2f} of nginx's; adds {added:.2f} ms to p50 one at a time "
          "(target <= 1 ms)")  # fmt: skip


def table(title: str, rows: list[tuple[str, dict]]) -> None:
    """Each route's figures, and what it adds to the p50 and p99 of going straight."""
    direct = rows[0][1]
    print(f"\n{title}")
    print(f"{'':28}{'requests/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'+p99 ms':>9}"
          f"{'non-2xx':>9}")  # fmt: skip
    for name, r in rows:
        print(f"{name:28}{r['rps']:>12,.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
              f"{r['p50'] - direct['p50']:>9.2f}{r['p99'] - direct['p99']:>9.2f}{r['errors']:>9}")

if __name__ == "__main__":
    main()
