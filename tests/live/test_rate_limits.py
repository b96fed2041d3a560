"""Rate limits (:mod:`kova_live.limits`): the token buckets on a clock the test moves, their
memory bound, the flags; then real servers (SQLite: the limits do not touch the database) whose
small buckets answer 429 with Retry-After, per account and per client address, where
X-Forwarded-For counts only from a trusted proxy."""

from __future__ import annotations

import time

import httpx
import pytest

from kova_live.limits import Buckets, Rate, parse_proxies, parse_rate

from .conftest import Server, kova_live, register


class Clock:
    """Seconds that pass only when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_gives_its_burst_then_refills_at_its_rate():
    clock = Clock()
    buckets = Buckets(Rate(2, 3), clock=clock)
    assert [buckets.take(["a"]) for _ in range(3)] == [0, 0, 0]
    assert buckets.take(["a"]) == pytest.approx(0.5)  # one token comes in half a second
    assert buckets.take(["b"]) == 0  # another key has its own bucket
    clock.now += 0.25
    assert buckets.take(["a"]) == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take(["a"]) == 0 and buckets.take(["a"]) == pytest.approx(0.5)
    clock.now += 3600  # a long wait fills the bucket to its burst, no more
    assert buckets.wait(["a"]) == 0  # and asking takes nothing
    assert [buckets.take(["a"]) for _ in range(4)][-2:] == [0, pytest.approx(0.5)]
    assert buckets.wait(["a", "b"]) == pytest.approx(0.5)


def test_several_keys_pay_together_or_not_at_all():
    clock = Clock()
    buckets = Buckets(Rate(1, 2), clock=clock)
    assert buckets.take(["address", "account"]) == 0
    assert buckets.take(["account"]) == 0  # the account's bucket is empty now
    assert buckets.take(["address", "account"]) == pytest.approx(1.0)
    clock.now += 1
    # the refused request took nothing from the address: it has 2 - 1 + 1 = 2 (its burst)
    assert buckets.take(["address", "account"]) == 0
    assert buckets.take(["address"]) == 0 and buckets.take(["address"]) == pytest.approx(1.0)


def test_the_buckets_are_bounded_and_the_least_recently_used_go_first():
    clock = Clock()
    buckets = Buckets(Rate(0.001, 1), max_buckets=3, clock=clock)
    for key in ("a", "b", "c"):
        assert buckets.take([key]) == 0
    assert buckets.take(["a"]) > 0  # a is used: b is now the least recent
    for n in range(10_000):  # a flood of new addresses
        buckets.take([f"flood-{n}"])
        assert len(buckets) <= 3
    buckets = Buckets(Rate(0.001, 1), max_buckets=3, clock=clock)
    for key in ("a", "b", "c"):
        buckets.take([key])
    buckets.take(["a"])
    buckets.take(["d"])  # forgets b, the least recently used; a and c stay empty
    assert buckets.take(["a"]) > 0 and buckets.take(["c"]) > 0
    assert buckets.take(["b"]) == 0  # forgotten: full again


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20,200", Rate(20, 200)), ("0.1,20", Rate(0.1, 20)), (" 5,1 ", Rate(5, 1)),
     ("0", None), ("off", None), ("0,0", None)],
)  # fmt: skip
def test_a_rate_is_rate_comma_burst_or_off(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["20", "20,", ",5", "x,1", "-1,5", "5,0", "5,1.5", "nan,5",
                                  "inf,5", "5,2000000"])  # fmt: skip
def test_a_bad_rate_is_refused(text):
    with pytest.raises(ValueError, match="RATE"):
        parse_rate(text)


def test_serve_refuses_bad_limit_flags_in_one_line(tmp_path):
    for flags, says in ((["--rate-limit-writes", "fast"], "--rate-limit-writes: expected RATE,BURST"),
                        (["--rate-limit-reads", "1,0"], "--rate-limit-reads: RATE must be"),
                        (["--trusted-proxy", "10.0.0.0/8,nope"], "--trusted-proxy: 'nope' is not a network")):  # fmt: skip
        refused = kova_live("serve", "--data-dir", str(tmp_path), "--port", "0", *flags)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert [str(n) for n in parse_proxies(" 127.0.0.1/32, ::1/128 ,")] == [
        "127.0.0.1/32",
        "::1/128",
    ]


# --------------------------------------------------------------------------- real servers


@pytest.fixture
def start(tmp_path):
    """Start servers on fresh SQLite databases with the given flags; stopped afterwards."""
    started: list[Server] = []

    def run(*flags: str) -> Server:
        folder = tmp_path / f"s{len(started)}"
        folder.mkdir()
        server = Server(f"sqlite:///{folder / 'kova.sqlite3'}", folder / "data", 0.05, *flags)
        started.append(server)
        return server

    yield run
    for server in started:
        server.stop()


def assert_limited(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert response.json()["error"]["field"] is None
    seconds = response.headers["Retry-After"]
    assert seconds.isdigit() and int(seconds) >= 1
    return int(seconds)


def test_writes_beyond_the_burst_get_429_with_retry_after_then_pass_again(start):
    server = start("--rate-limit-writes", "2,3")
    tenant = register(server, "tenant", "t")  # registrations have their own (off) bucket
    for _ in range(3):  # refused requests are requests too: they pay
        assert (
            server.client.post("/v1/deployments", headers=tenant["headers"], json={}).status_code
            == 400
        )
    refused = server.client.post("/v1/deployments", headers=tenant["headers"], json={})
    assert assert_limited(refused) == 1  # half a second, rounded up
    assert (
        server.client.get("/v1/accounts/me", headers=tenant["headers"]).status_code == 200
    )  # reads: off
    assert server.client.get("/healthz").status_code == 200
    time.sleep(1)
    assert (
        server.client.post("/v1/deployments", headers=tenant["headers"], json={}).status_code == 400
    )


def test_registrations_and_reads_have_buckets_of_their_own(start):
    server = start("--rate-limit-accounts", "0.01,2", "--rate-limit-reads", "0.01,3")
    made = [
        server.client.post("/v1/accounts", json={"role": "tenant", "name": "n"}) for _ in range(2)
    ]
    assert [m.status_code for m in made] == [201, 201]
    seconds = assert_limited(
        server.client.post("/v1/accounts", json={"role": "tenant", "name": "n"})
    )
    assert 99 <= seconds <= 100  # one registration per 100 s
    assert server.client.get("/v1/status").json()["tenants"] == 2  # the refused made nothing
    for _ in range(2):
        assert server.client.get("/v1/status").status_code == 200
    assert_limited(server.client.get("/v1/providers"))
    for _ in range(5):  # never limited
        assert server.client.get("/healthz").status_code == 200
        assert server.client.get("/metrics").status_code == 200


def forwarded(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def test_a_trusted_proxy_names_the_client_and_each_address_and_account_has_its_bucket(start):
    server = start("--trusted-proxy", "127.0.0.1/32", "--rate-limit-accounts", "0.001,1",
                   "--rate-limit-writes", "0.001,2")  # fmt: skip
    post = server.client.post
    body = {"role": "tenant", "name": "n"}
    assert post("/v1/accounts", json=body, headers=forwarded("10.0.0.1")).status_code == 201
    assert_limited(post("/v1/accounts", json=body, headers=forwarded("10.0.0.1")))
    # what the client wrote left of what the proxy added does not count
    assert_limited(post("/v1/accounts", json=body, headers=forwarded("10.9.9.9, 10.0.0.1")))
    assert post("/v1/accounts", json=body, headers=forwarded("10.0.0.2")).status_code == 201
    # the proxy's own address, or nonsense, in the header: the peer's address counts
    assert post("/v1/accounts", json=body, headers=forwarded("127.0.0.1")).status_code == 201
    assert_limited(post("/v1/accounts", json=body, headers=forwarded("not-an-address")))
    # IPv6 addresses count by their /64
    assert post("/v1/accounts", json=body, headers=forwarded("2001:db8::1")).status_code == 201
    assert_limited(post("/v1/accounts", json=body, headers=forwarded("2001:db8::ffff")))
    assert post("/v1/accounts", json=body, headers=forwarded("2001:db8:0:1::1")).status_code == 201
    # writes: an account pays wherever it writes from, an address whoever writes from it
    alice, bob = (post("/v1/accounts", json=body, headers=forwarded(f"10.1.0.{n}")).json()
                  for n in (1, 2))  # fmt: skip
    write = {"json": {}, "headers": {}}
    for n in (1, 2):  # alice's two writes, from two addresses
        write["headers"] = {**forwarded(f"10.2.0.{n}"), "Authorization": f"Bearer {alice['token']}"}
        assert post("/v1/deployments", **write).status_code == 400
    write["headers"] = {**forwarded("10.2.0.3"), "Authorization": f"Bearer {alice['token']}"}
    limited = post("/v1/deployments", **write)  # alice's bucket is empty, the address's is not
    assert_limited(limited)
    assert "account or address" in limited.json()["error"]["message"]
    write["headers"] = {**forwarded("10.2.0.3"), "Authorization": f"Bearer {bob['token']}"}
    assert post("/v1/deployments", **write).status_code == 400  # bob, from a fresh address
    write["headers"] = {**forwarded("10.2.0.1"), "Authorization": f"Bearer {bob['token']}"}
    assert post("/v1/deployments", **write).status_code == 400  # 10.2.0.1 has one token left
    assert_limited(post("/v1/deployments", **write))  # and none now


def test_a_provider_agent_over_its_limit_tries_again_next_poll_and_does_not_stop():
    from kova_live.agent import AgentError, Busy, _check

    request = httpx.Request("POST", "http://orchestrator/v1/providers/heartbeat")
    for status in (429, 503):  # the poll loop logs Busy and polls again; AgentError stops it
        with pytest.raises(Busy, match="retry after 3 s"):
            _check(httpx.Response(status, headers={"Retry-After": "3"}, request=request))
    with pytest.raises(AgentError, match="refused this agent's token"):  # suspended: stop
        _check(httpx.Response(403, json={"error": {"code": "account_suspended"}}, request=request))
    assert not issubclass(Busy, AgentError)


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(start):
    server = start("--rate-limit-accounts", "0.001,1")
    body = {"role": "tenant", "name": "n"}
    assert (
        server.client.post("/v1/accounts", json=body, headers=forwarded("10.0.0.1")).status_code
        == 201
    )
    # a client cannot choose its bucket: every request comes from the peer, 127.0.0.1
    assert_limited(server.client.post("/v1/accounts", json=body, headers=forwarded("10.0.0.2")))
    assert_limited(server.client.post("/v1/accounts", json=body))
