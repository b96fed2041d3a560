"""Background work from the durable queue (SQLite and PostgreSQL): orders nobody bid on expire,
silent providers are lost (their leases fail, their orders reopen), and work enqueued before a
kill -9 is still done after the restart."""

import asyncio
import signal
import time

import pytest
from sqlalchemy import insert, select

from kova_live.db import async_engine
from kova_live.schema import work_queue

from .conftest import Server, credit, fresh_database, register, wait_for
from .test_lifecycle import MANIFEST

BOX = {"cpu": 4000, "memory": 2**34, "storage": 2**36, "gpu": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


def test_an_order_still_open_after_its_lifetime_closes_bid_on_or_not(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:  # 100 blocks of 0.02 s: 2 s to place the bid
        s = Server(url, tmp_path / "data", 0.02, "--order-expiry", "100",
                   "--heartbeat-grace", "100000000")  # fmt: skip
        try:
            tenant, provider = register(s, "tenant", "t"), register(s, "provider", "p")
            credit(url, tenant["account"], 10_000_000)
            s.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
            lonely = s.client.post("/v1/deployments", headers=tenant["headers"],
                                   json={"manifest": MANIFEST, "deposit": 1_000}).json()  # fmt: skip
            wanted = s.client.post("/v1/deployments", headers=tenant["headers"],
                                   json={"manifest": MANIFEST, "deposit": 1_000}).json()  # fmt: skip
            bid = s.client.post(f"/v1/orders/{wanted['orders'][0]['id']}/bids",
                                headers=provider["headers"], json={"price": 1_000}).json()  # fmt: skip

            def order(dep):
                return s.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()["orders"][0]

            for dep in (lonely, wanted):  # closed in the very block its lifetime ends
                closed = wait_for(lambda dep=dep: (o := order(dep))["state"] == "closed" and o)
                assert closed["close_reason"] == "expired"
                assert closed["closed_at"] == dep["created_at"] + 100
            assert bid["state"] == "open"
            bids = s.client.get(f"/v1/deployments/{wanted['id']}/bids",
                                headers=tenant["headers"]).json()["bids"]  # fmt: skip
            assert bids == []  # its bid is lost with it: no open bid left
        finally:
            s.stop()


def test_a_silent_provider_is_lost_and_its_orders_reopen(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        s = Server(url, tmp_path / "data", 0.02, "--heartbeat-grace", "40")  # 0.8 s of silence
        try:
            tenant, provider = register(s, "tenant", "t"), register(s, "provider", "p")
            credit(url, tenant["account"], 10_000_000)
            s.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
            dep = s.client.post("/v1/deployments", headers=tenant["headers"],
                                json={"manifest": MANIFEST, "deposit": 1_000_000}).json()  # fmt: skip
            s.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
            bid = s.client.post(f"/v1/orders/{dep['orders'][0]['id']}/bids",
                                headers=provider["headers"], json={"price": 1_000}).json()  # fmt: skip
            s.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
            assert s.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).status_code == 201

            def view():
                return s.client.get(f"/v1/deployments/{dep['id']}", headers=tenant["headers"]).json()

            after = wait_for(lambda: (v := view())["leases"][0]["state"] == "closed" and v)
            assert after["leases"][0]["close_reason"] == "provider_lost"
            assert after["orders"][0]["state"] == "open"  # open for bids again
            listed = {p["provider_id"]: p for p in s.client.get("/v1/providers").json()["providers"]}
            assert listed[provider["id"]]["state"] == "lost" and listed[provider["id"]]["failed"] == 1
            s.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={"capacity": BOX})
            listed = {p["provider_id"]: p for p in s.client.get("/v1/providers").json()["providers"]}
            assert listed[provider["id"]]["state"] == "online"
        finally:
            s.stop()


def test_an_order_whose_lifetime_ended_while_the_server_was_down_closes_at_its_block(
    backend, tmp_path
):
    with fresh_database(backend, tmp_path) as url:
        flags = ("--order-expiry", "60", "--heartbeat-grace", "100000000")
        s = Server(url, tmp_path / "data", 0.05, *flags)  # the order expires 3 s after it opens
        tenant = register(s, "tenant", "t")
        credit(url, tenant["account"], 10_000_000)
        dep = s.client.post("/v1/deployments", headers=tenant["headers"],
                            json={"manifest": MANIFEST, "deposit": 0}).json()  # fmt: skip
        s.process.send_signal(signal.SIGKILL)
        s.process.wait()
        s.stop()
        time.sleep(4)  # the lifetime ends while no server runs

        async def pending():  # an earlier server's expiry, left in its queue
            engine = async_engine(url)
            try:
                async with engine.begin() as c:
                    await c.execute(insert(work_queue).values(
                        kind="expire_order", subject_id=dep["orders"][0]["id"], run_at=0,
                        state="pending", attempts=0, created_at=0))  # fmt: skip
            finally:
                await engine.dispose()

        asyncio.run(pending())
        s = Server(url, tmp_path / "data", 0.05, *flags)
        try:
            def order():
                return s.client.get(f"/v1/deployments/{dep['id']}",
                                    headers=tenant["headers"]).json()["orders"][0]  # fmt: skip

            closed = wait_for(lambda: (o := order())["state"] == "closed" and o)
            assert closed["closed_at"] == dep["created_at"] + 60  # caught up, at its block

            async def left():
                engine = async_engine(url)
                try:
                    async with engine.connect() as c:
                        return (await c.execute(select(work_queue.c.kind).where(
                            work_queue.c.state == "pending",
                            work_queue.c.kind == "expire_order"))).all()  # fmt: skip
                finally:
                    await engine.dispose()

            wait_for(lambda: asyncio.run(left()) == [])  # the old kind is done, as a no-op
        finally:
            s.stop()


def test_a_sweep_loses_no_provider_whose_heartbeat_the_writer_applied_after_the_read(backend,
                                                                                     tmp_path):  # fmt: skip
    # the sweep reads who is silent, then asks the writer to lose them; a heartbeat the writer
    # applies in between (it may be busy with a round for a second or two) is not silence

    from kova_core import Resources
    from kova_live.db import migrate
    from kova_live.market import Settings
    from kova_live.schema import accounts
    from kova_live.work import _lose
    from kova_live.writer import Command, Writer

    box = Resources(cpu=1000, memory=2**30, storage=2**30)

    def heartbeat(provider_id):
        def apply(market, height, batch):
            if provider_id not in market.providers:
                market.add_provider(capacity=box, provider_id=provider_id)
            batch.touched_providers.add(provider_id)
            batch.heard.add(provider_id)
            return [], None

        return Command(apply)

    async def run(url):
        engine = async_engine(url)
        async with engine.begin() as c:
            await c.execute(insert(accounts), [
                {"id": i, "role": "provider", "name": f"p{i}", "token_hash": str(i) * 64,
                 "created_height": 0} for i in (1, 2)])  # fmt: skip
        writer = Writer(engine, lambda: 10, Settings())
        await writer.start()
        try:
            await writer.submit(heartbeat(1))
            await writer.submit(heartbeat(2))
            read_after = writer.batches  # the sweep's read: both silent, say
            await writer.submit(heartbeat(1))  # then provider 1 speaks
            await writer.submit(_lose(writer, [1, 2], 0, read_after))
            return {p: writer.market.providers[p].state.value for p in (1, 2)}
        finally:
            await writer.close()
            await engine.dispose()

    with fresh_database(backend, tmp_path) as url:
        migrate(url)
        assert asyncio.run(run(url)) == {1: "online", 2: "lost"}
