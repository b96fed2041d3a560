"""Providers and the orchestrator's own outages (SQLite and PostgreSQL): time the orchestrator
was down does not count against providers, a provider that really stays away is still lost
after its grace, and a sweep that finds many providers silent at once holds their loss back
for another grace (``kova_providers_held``)."""

import contextlib
import threading
import time

import httpx
import pytest

from .conftest import Server, credit, fresh_database, register, wait_for
from .test_lifecycle import MANIFEST

BOX = {"cpu": 4000, "memory": 2**34, "storage": 2**36, "gpu": 0}
BLOCK = 0.05  # seconds
GRACE = 20  # blocks: 1 s of silence
FLAGS = ("--heartbeat-grace", str(GRACE))


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


class Agents:
    """Providers' agents, as far as the orchestrator sees them: a heartbeat from each one that
    is ``alive`` every 0.2 s, to whichever server ``self.server`` is now."""

    def __init__(self, server: Server, providers: list[dict]) -> None:
        self.server, self.providers = server, providers
        self.alive = {p["id"] for p in providers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(0.2):
            for p in self.providers:
                if p["id"] in self.alive:
                    # while the server is down the agent just tries again
                    with contextlib.suppress(httpx.TransportError):
                        httpx.post(f"{self.server.url}/v1/providers/heartbeat", timeout=5,
                                   headers=p["headers"], json={"capacity": BOX})  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _network(s: Server, url: str, providers: int) -> tuple[dict, list[dict], list[dict]]:
    """A tenant and ``providers`` providers, one lease on each: (tenant, providers, leases)."""
    tenant = register(s, "tenant", "t")
    credit(url, tenant["account"], 10**12)
    made = [register(s, "provider", f"p{i}") for i in range(providers)]
    leased = []
    for p in made:
        s.client.post("/v1/providers/heartbeat", headers=p["headers"], json={"capacity": BOX})
        dep = s.client.post("/v1/deployments", headers=tenant["headers"],
                            json={"manifest": MANIFEST, "deposit": 10**9}).json()  # fmt: skip
        bid = s.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids", headers=p["headers"],
                            json={"price": 1_000}).json()  # fmt: skip
        lease = s.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"])
        assert lease.status_code == 201, lease.text
        leased.append(lease.json())
    return tenant, made, leased


def _states(s: Server, provider: dict) -> dict[int, str]:
    """The provider's leases' states, by id."""
    listed = s.client.get("/v1/leases", headers=provider["headers"]).json()["leases"]
    return {x["id"]: x["state"] for x in listed}


def _record(s: Server) -> dict[int, tuple[str, int]]:
    """Each provider's state and failed leases, by id."""
    listed = s.client.get("/v1/providers").json()["providers"]
    return {p["provider_id"]: (p["state"], p["failed"]) for p in listed}


def test_an_outage_longer_than_the_grace_loses_no_provider_but_one_that_stays_away_is_lost(
    backend, tmp_path
):
    with fresh_database(backend, tmp_path) as url:
        # no hold (--hold-share 1): the outage alone must lose nobody
        s = Server(url, tmp_path / "one", BLOCK, *FLAGS, "--hold-share", "1")
        agents = None
        try:
            _, providers, leases = _network(s, url, 6)
            agents = Agents(s, providers)
            s.stop()  # the orchestrator is down for three graces; the agents keep trying
            time.sleep(3 * GRACE * BLOCK)
            s = agents.server = Server(url, tmp_path / "two", BLOCK, *FLAGS, "--hold-share", "1")
            time.sleep(3 * GRACE * BLOCK)  # sweeps run (every 15 blocks) for three graces more
            assert _record(s) == {p["id"]: ("online", 0) for p in providers}
            for p, lease in zip(providers, leases, strict=True):
                assert _states(s, p)[lease["id"]] == "active"
            # one agent really stays away, and is lost after its grace
            gone = providers[0]
            agents.alive.discard(gone["id"])
            wait_for(lambda: _record(s)[gone["id"]] == ("lost", 1))
            assert _states(s, gone)[leases[0]["id"]] == "closed"
            assert all(_record(s)[p["id"]] == ("online", 0) for p in providers[1:])
        finally:
            if agents is not None:
                agents.stop()
            s.stop()


def test_many_providers_silent_at_once_are_held_back_for_another_grace_then_lost(
    backend, tmp_path
):
    with fresh_database(backend, tmp_path) as url:
        s = Server(url, tmp_path / "data", BLOCK, *FLAGS)
        agents = None
        try:
            _, providers, leases = _network(s, url, 4)
            agents = Agents(s, providers)
            time.sleep(2 * GRACE * BLOCK)  # a whole grace heard since the start
            silent = providers[:2]  # half of them at once: more than the 20% hold share
            started = time.monotonic()
            for p in silent:
                agents.alive.discard(p["id"])

            def held() -> float:
                lines = s.client.get("/metrics").text.splitlines()
                return float(next(x for x in lines if x.startswith("kova_providers_held ")).split()[1])

            wait_for(lambda: held() == 2)
            assert all(_record(s)[p["id"]] == ("online", 0) for p in silent)  # held, not lost
            wait_for(lambda: all(_record(s)[p["id"]] == ("lost", 1) for p in silent))
            assert time.monotonic() - started >= 2 * GRACE * BLOCK  # two graces of silence
            for p, lease in zip(silent, leases, strict=False):
                assert _states(s, p)[lease["id"]] == "closed"
            assert all(_record(s)[p["id"]] == ("online", 0) for p in providers[2:])
            wait_for(lambda: held() == 0)
        finally:
            if agents is not None:
                agents.stop()
            s.stop()
