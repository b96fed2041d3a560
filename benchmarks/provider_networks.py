#!/usr/bin/env python3
"""How many deployment networks one provider machine holds. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/provider_networks.py [--networks 1000]
        [--pool 10.213.0.0/16] [--prefix 27] [--containers 20]

It makes ``--networks`` deployment networks exactly as the agent does (``kova_live.runner``:
one Docker bridge each, on a subnet of the pool, its Linux bridge named ``kova<n>``), under a
provider id no real provider has, timing each creation; then starts a container on each of
``--containers`` networks spread over them, checks that two containers of one network reach
each other by name and that one of another network cannot reach them, and removes everything.
Needs root and the Docker daemon that ``scripts/services`` starts, with its images.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from kova_live.runner import Docker, Policy  # noqa: E402
from kova_live.volumes import Volumes  # noqa: E402

PROVIDER = 2**31 - 7  # no real provider's id
# an HTTP GET with nc (busybox's static wget cannot look names up)
FETCH = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080 | grep -q kova"


def lease(lease_id: int, deployment: int, service: str) -> dict:
    return {
        "id": lease_id, "deployment_id": deployment, "order_id": lease_id, "kind": "deployment",
        "resources": {"cpu": 100, "memory": 32 * 2**20, "storage": 0, "gpu": 0},
        "container": {"service": service, "image": "kova/httpd:1", "command": [], "args": [],
                      "env": {}, "expose": [], "files": [], "storage": []},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--pool", default="10.213.0.0/16")
    parser.add_argument("--prefix", type=int, default=27)
    parser.add_argument("--containers", type=int, default=20)
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    policy = Policy(network_pool=ipaddress.IPv4Network(args.pool), network_prefix=args.prefix)
    runner = Docker(client, PROVIDER, Volumes(client, PROVIDER, Path("/nonexistent"), False),
                    policy)  # fmt: skip
    print(f"pool {args.pool}, /{args.prefix} each: room for {policy.networks():,} networks; "
          f"Docker {client.version()['Version']}")  # fmt: skip
    took: list[float] = []
    started = time.monotonic()
    try:
        for deployment in range(1, args.networks + 1):
            t = time.monotonic()
            runner.network(deployment)
            took.append(time.monotonic() - t)
            if deployment % 100 == 0:
                recent = [s * 1000 for s in took[-100:]]
                print(f"  {deployment:5d} networks: the last 100 took {statistics.mean(recent):.0f}"
                      f" ms each (max {max(recent):.0f} ms)", flush=True)  # fmt: skip
        total = time.monotonic() - started
        ms = [s * 1000 for s in took]
        print(f"made {len(took):,} networks in {total:.1f} s: mean {statistics.mean(ms):.0f} ms, "
              f"p50 {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms")  # fmt: skip
        step = max(1, args.networks // max(1, args.containers))
        chosen = list(range(1, args.networks + 1, step))[: args.containers]
        containers = []
        t = time.monotonic()
        for i, deployment in enumerate(chosen):
            containers.append(runner.start(lease(10_000 + i, deployment, f"svc{i}"), {}))
        print(f"started {len(containers)} containers on networks {chosen[0]}..{chosen[-1]} in "
              f"{time.monotonic() - t:.1f} s")  # fmt: skip
        last = chosen[-1]
        sibling = runner.start(lease(20_000, last, "sibling"), {})
        code, _ = sibling.exec_run(["sh", "-c", FETCH.format(host=f"svc{len(chosen) - 1}")])
        print(f"a container reaches its deployment's other by name on network {last}: "
              f"{'yes' if code == 0 else 'NO'}")  # fmt: skip
        containers[-1].reload()
        (address,) = containers[-1].attrs["NetworkSettings"]["Networks"].values()
        code, _ = containers[0].exec_run(["sh", "-c", FETCH.format(host=address["IPAddress"])])
        print(f"a container of network {chosen[0]} reaches one of network {last}: "
              f"{'YES' if code == 0 else 'no'}")  # fmt: skip
        containers.append(sibling)
    finally:
        mine = {"label": f"kova.provider={PROVIDER}"}
        for container in client.containers.list(all=True, filters=mine):
            container.remove(force=True)
        t = time.monotonic()
        gone = runner.prune_networks(())
        print(f"removed {len(gone):,} networks in {time.monotonic() - t:.1f} s")


if __name__ == "__main__":
    main()
