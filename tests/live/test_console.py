"""The console in a real browser (Debian's Chromium through Selenium), against a real server on
PostgreSQL and real provider agents running leases in Docker; and the console's defences,
over HTTP.

Settings: the ``network`` fixture's server (``--registration open``, no rate limits, no minimum
deposit, 0.05 s blocks: a settlement round every 3 s), two agents with fixed prices.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from .agents import HTTPD, PRICE, fixed_agent
from .browser import screenshot, until
from .conftest import Server, credit, fresh_database, register

# busybox's httpd in the background, and a line of output every half second (the logs to follow)
TICKING = HTTPD.replace(
    "    expose:",
    "    command: [sh, -c]\n"
    "    args: ['httpd -p 8080 -h /www; i=0; while true; do i=$((i+1)); echo tick $i; "
    "sleep 0.5; done']\n"
    "    expose:",
)
JOB = (HTTPD.replace("kova/httpd:1", "kova/job:1")
       .replace("    expose:\n      - port: 8080\n        as: 80\n        to:\n          - global: true\n",
                "    command: [sh, -c]\n    args: ['echo the answer is 42']\n")
       + "kind: job\nmax_runtime: 1h\n")  # fmt: skip


def _again(read):
    """``read()``, read again if the page swapped the element meanwhile (a live update)."""
    for _ in range(50):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.1)
    return read()


def _text(driver, css: str) -> str:
    return _again(lambda: driver.find_element(By.CSS_SELECTOR, css).text)


def _submit(driver, css: str) -> None:
    _again(lambda: driver.find_element(By.CSS_SELECTOR, css).click())


def _paste(driver, css: str, text: str) -> None:
    """Put ``text`` in a field as a paste does (typing YAML would be re-indented by nothing,
    but it is slow)."""
    field = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].value = arguments[1];", field, text)


def _sign_in(driver, server: Server, token: str) -> None:
    driver.get(f"{server.url}/console/signin")
    driver.find_element(By.ID, "token").send_keys(token)
    _submit(driver, "form.card button[type=submit]")
    until(lambda: driver.current_url.rstrip("/").endswith("/console"), what="the home page")


def _rows(driver, css: str) -> list[str]:
    return _again(lambda: [row.text for row in driver.find_elements(By.CSS_SELECTOR, css)])


def _mark(driver) -> None:
    """A mark in the page's window: it is gone if the page reloads."""
    driver.execute_script("window.kovaMark = 'still the same page';")


def _same_page(driver) -> bool:
    return driver.execute_script("return window.kovaMark") == "still the same page"


def test_a_tenant_deploys_follows_and_closes_in_the_browser_and_a_provider_sees_it(
    network, browser, tmp_path
):
    driver, server = browser, network["server"]
    cheap, _ = fixed_agent(network, "cheap")
    network["agent"]("pricey", "--strategy", "fixed",
                              "--strategy-param", f"price_per_block={PRICE * 3 // 2}")  # fmt: skip
    shots = tmp_path / "shots"

    # sign up as a tenant in the browser: the token is shown once, and the console is signed in
    driver.get(f"{server.url}/console/signup")
    driver.find_element(By.ID, "name").send_keys("Ada's <b>lab</b>")
    _submit(driver, "form.card button[type=submit]")
    token = until(lambda: driver.find_element(By.ID, "new-token").get_attribute("value"))
    assert token.startswith("kova_")
    account = re.search(r"tenant:\d+", _text(driver, "main")).group(0)
    credit(server.database_url, account, 50_000_000)
    driver.find_element(By.LINK_TEXT, "Continue to the console").click()
    until(lambda: "50.000000" in _text(driver, "#balance"), what="the credit")
    assert "Ada's <b>lab</b>" in _text(driver, "header")  # the name as text, not markup
    screenshot(driver, "tenant-home", shots)

    # deploy by pasting SDL: first the check (the orders and the deposit they need), then deploy
    driver.get(f"{server.url}/console/deploy")
    _paste(driver, "#sdl", TICKING.replace("  web:\n    image", "  web:\n    depends-on: []\n    image"))
    driver.find_element(By.ID, "hours").clear()
    driver.find_element(By.ID, "hours").send_keys("1")
    _submit(driver, "button[value=check]")
    preview = until(lambda: _text(driver, ".preview"), what="the preview")
    assert "web" in preview and "0.005000" in preview  # the order's max price a block
    assert "depends-on" in _text(driver, "ul.warnings")  # Akash ignores it; Kova says so
    screenshot(driver, "deploy-preview", shots)
    deposit = driver.find_element(By.ID, "deposit")
    deposit.clear()
    deposit.send_keys("0.25")  # four rounds at the cheaper price, and a part: then it pauses
    _submit(driver, "button[value=deploy]")
    until(lambda: "/console/deployments/" in driver.current_url, what="the deployment page")
    dep_id = int(driver.current_url.split("/console/deployments/")[1].split("?")[0])
    _mark(driver)

    # both agents' bids arrive without a reload; sort by price, both ways
    until(lambda: len(_rows(driver, "#bids tbody tr")) == 2, 60, "two bids")
    assert _same_page(driver)
    # ascending already: a click makes it descending
    _again(lambda: driver.find_element(By.PARTIAL_LINK_TEXT, "Price a block").click())
    until(lambda: driver.find_element(By.CSS_SELECTOR, "#bids th[aria-sort]")
          .get_attribute("aria-sort") == "descending", what="sorted descending")  # fmt: skip
    prices = _rows(driver, "#bids td.price")
    assert prices == ["0.001500", "0.001000"], prices
    assert _same_page(driver)
    screenshot(driver, "deployment-bids", shots)

    # accept the cheaper one (keyboard: focus its button, press Enter)
    _again(lambda: next(r for r in driver.find_elements(By.CSS_SELECTOR, "#bids tbody tr")
                        if "0.001000" in r.text).find_element(By.CSS_SELECTOR, "button")
           .send_keys("\n"))  # fmt: skip
    until(lambda: "accepted bid" in _text(driver, "p.note"), what="the acceptance")
    until(lambda: "active" in _text(driver, "#leases-h + table tbody"), 30, "the lease")
    _mark(driver)

    # the URL answers, in the browser (Chromium resolves *.localhost to this machine)
    url = until(lambda: driver.find_element(By.CSS_SELECTOR, "#urls-h + ul a").get_attribute("href"),
                what="the URL")  # fmt: skip
    assert f"web-{dep_id}.deployments.localhost" in url
    until(lambda: httpx.get(url.replace(f"web-{dep_id}.deployments.localhost", "127.0.0.1"),
                            headers={"Host": f"web-{dep_id}.deployments.localhost"}).status_code == 200,
          60, "the service behind its URL")  # fmt: skip
    page = driver.current_window_handle
    driver.switch_to.new_window("tab")
    driver.get(url)
    assert "kova" in driver.page_source
    driver.close()
    driver.switch_to.window(page)
    assert _same_page(driver)

    # the escrow chart and the forecast pause; logs follow as they come
    until(lambda: driver.find_element(By.CSS_SELECTOR, "svg.chart polyline.forecast"),
          what="the forecast line")  # fmt: skip
    forecast = until(lambda: (t := _text(driver, "#pause")).startswith("block ") and t,
                     what="the forecast pause")  # fmt: skip
    assert "UTC" in forecast, forecast
    until(lambda: "tick" in _text(driver, "#logs"), 60, "log lines")
    screenshot(driver, "deployment", shots)
    first = len(_rows(driver, "#logs .line"))
    until(lambda: len(_rows(driver, "#logs .line")) > first, 30, "more log lines")

    # the escrow runs out at a round: the page shows the pause without a reload
    until(lambda: "insufficient_funds" in _text(driver, "h1"), 60, "the pause")
    until(lambda: "paused now" in _text(driver, "#pause"), what="the pause said")
    assert _same_page(driver)
    screenshot(driver, "deployment-paused", shots)

    # deposit from the page: it resumes
    driver.find_element(By.ID, "amount").send_keys("5")
    _submit(driver, "form[action$='/deposit'] button")
    until(lambda: "deposited 5.000000" in _text(driver, "p.note"), what="the deposit")
    until(lambda: "active" in _text(driver, "h1"), 30, "the resumption")

    # a job, run to its result
    driver.get(f"{server.url}/console/deploy")
    _paste(driver, "#sdl", JOB)
    driver.find_element(By.ID, "deposit").send_keys("1")
    _submit(driver, "button[value=deploy]")
    until(lambda: "Job " in _text(driver, "h1"), what="the job's page")
    job_id = int(driver.current_url.split("/console/deployments/")[1].split("?")[0])
    until(lambda: _rows(driver, "#bids tbody tr"), 60, "a bid on the job")
    _submit(driver, "#bids tbody tr button")
    until(lambda: "the answer is 42" in _text(driver, "#result-h ~ pre"), 60, "the job's output")
    until(lambda: "closed" in _text(driver, "h1"), what="the job closed")
    screenshot(driver, "job", shots)

    # the list, filtered; then close the deployment from its page
    driver.get(f"{server.url}/console/?kind=job")
    listed = _text(driver, "#deployments")
    assert f"job {job_id}" in listed and f"deployment {dep_id}" not in listed
    driver.get(f"{server.url}/console/deployments/{dep_id}")
    _submit(driver, "form[action$='/close'] button")
    until(lambda: "closed" in _text(driver, "h1"), what="the close")
    until(lambda: httpx.get(url.replace(f"web-{dep_id}.deployments.localhost", "127.0.0.1"),
                            headers={"Host": f"web-{dep_id}.deployments.localhost"}).status_code == 404,
          30, "the URL gone")  # fmt: skip

    # the cheaper provider signs in: its lease and what it earned
    _submit(driver, "form[action='/console/signout'] button")
    _sign_in(driver, server, cheap["token"])
    leases = until(lambda: _text(driver, "#leases-h + table"), what="the provider's leases")
    assert str(dep_id) in leases and "closed" in leases
    assert "earned:" in _text(driver, "#revenue-h + svg")
    assert "Last heartbeat" in _text(driver, "dl.facts")
    screenshot(driver, "provider", shots)


# --------------------------------------------------------------------------- defences


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A server on SQLite, nothing else."""
    folder = tmp_path_factory.mktemp("console")
    with fresh_database("sqlite", folder) as url:
        server = Server(url, folder / "data")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def sessions(plain):
    """``session(token)``: an HTTP client signed in to the console with that token (its
    ``csrf``: the token its forms carry)."""
    made = []

    def session(token: str) -> httpx.Client:
        client = httpx.Client(base_url=plain.url, follow_redirects=False)
        made.append(client)
        client.cookies.set("kova_session", token, path="/console")
        page = client.get("/console/")
        client.csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        return client

    yield session
    for client in made:
        client.close()


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(plain, sessions):
    tenant = register(plain, "tenant", "t")
    credit(plain.database_url, tenant["account"], 10_000_000)
    client = sessions(tenant["token"])
    before = plain.client.get("/v1/deployments", headers=tenant["headers"]).json()
    form = {"sdl": HTTPD, "deposit": "1", "hours": "1", "action": "deploy"}
    for sent in (form, {**form, "csrf": "forged-forged-forged-forged"}):
        refused = client.post("/console/deploy", data=sent)
        assert refused.status_code == 403 and "CSRF" in refused.text
    # nor from another site, whatever the token
    crossed = client.post("/console/deploy", data={**form, "csrf": client.csrf},
                          headers={"Origin": "https://evil.example"})  # fmt: skip
    assert crossed.status_code == 403
    assert plain.client.get("/v1/deployments", headers=tenant["headers"]).json() == before
    signed_out = client.post("/console/signout", data={})
    assert signed_out.status_code == 403  # even signing out takes the token


def test_one_tenants_session_gets_404_on_anothers_deployment(plain, sessions):
    owner, other = register(plain, "tenant", "a"), register(plain, "tenant", "b")
    credit(plain.database_url, owner["account"], 10_000_000)
    dep = plain.client.post("/v1/deployments", headers=owner["headers"],
                            json={"manifest": HTTPD, "deposit": 1_000_000}).json()  # fmt: skip
    mine = sessions(owner["token"])
    theirs = sessions(other["token"])
    assert mine.get(f"/console/deployments/{dep['id']}").status_code == 200
    for path in ("", "/events", "/logs"):
        assert theirs.get(f"/console/deployments/{dep['id']}{path}").status_code == 404
    for action in ("deposit", "close"):
        refused = theirs.post(f"/console/deployments/{dep['id']}/{action}",
                              data={"csrf": theirs.csrf, "amount": "1"})  # fmt: skip
        assert refused.status_code == 404
    assert plain.client.get(f"/v1/deployments/{dep['id']}",
                            headers=owner["headers"]).json()["state"] == "active"  # fmt: skip
    # a provider's session sees no tenant's deployment either
    provider = register(plain, "provider", "p")
    assert sessions(provider["token"]).get(
        f"/console/deployments/{dep['id']}").status_code == 404  # fmt: skip


def test_html_in_a_name_a_log_line_and_an_sdl_field_is_shown_as_text(plain, browser):
    driver = browser
    evil = "<img src=x onerror=\"window.kovaPwned=1\"><script>window.kovaPwned=2</script>"
    tenant = plain.client.post("/v1/accounts", json={"role": "tenant", "name": evil}).json()
    tenant["headers"] = {"Authorization": f"Bearer {tenant['token']}"}
    credit(plain.database_url, tenant["account"], 10_000_000)
    provider = register(plain, "provider", "p")
    beat = plain.client.post("/v1/providers/heartbeat", headers=provider["headers"], json={
        "capacity": {"cpu": 4000, "memory": 4 << 30, "storage": 8 << 30, "gpu": 0}})  # fmt: skip
    assert beat.status_code == 200, beat.text
    dep = plain.client.post("/v1/deployments", headers=tenant["headers"],
                            json={"manifest": HTTPD, "deposit": 1_000_000}).json()  # fmt: skip
    order = dep["orders"][0]["id"]
    bid = plain.client.post(f"/v1/orders/{order}/bids", headers=provider["headers"],
                            json={"price": 1_000}).json()  # fmt: skip
    lease = plain.client.post(f"/v1/bids/{bid['id']}/accept", headers=tenant["headers"]).json()
    shipped = plain.client.post(f"/v1/leases/{lease['id']}/logs", headers=provider["headers"],
                                json={"lines": [{"stream": "stdout", "text": evil}]})  # fmt: skip
    assert shipped.status_code == 201, shipped.text

    _sign_in(driver, plain, tenant["token"])
    assert evil in _text(driver, "header")  # the name, as text
    driver.get(f"{plain.url}/console/deployments/{dep['id']}")
    until(lambda: evil in _text(driver, "#logs"), 30, "the log line")
    driver.get(f"{plain.url}/console/deploy")
    _paste(driver, "#sdl", HTTPD.replace("  web:\n    image", f"  web:\n    '{evil}': 1\n    image"))
    _submit(driver, "button[value=check]")
    until(lambda: _text(driver, ".preview"), what="the check")
    assert evil in _text(driver, ".preview")  # the unknown field's name, as text
    time.sleep(0.5)
    assert driver.execute_script("return window.kovaPwned") is None
    assert not driver.find_elements(By.CSS_SELECTOR, "main img, main script")


def test_without_the_console_there_are_no_pages(tmp_path):
    with fresh_database("sqlite", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--no-console")
        try:
            reply = server.client.get("/console/signin")
            assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
            assert server.client.get("/v1/status").status_code == 200
        finally:
            server.stop()


def test_only_the_console_itself_can_name_a_browsers_address_to_the_rate_limits(tmp_path):
    """The console's calls name the browser's address with this process's secret; a client
    that sends the header itself, without the secret, is counted by its own address."""
    with fresh_database("sqlite", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--rate-limit-reads", "0.01,3")
        try:
            forged = [{"X-Kova-Console-Client": f"guessed 10.0.0.{i}"} for i in range(5)]
            statuses = [server.client.get("/v1/status", headers=h).status_code for h in forged]
            assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        finally:
            server.stop()


def test_no_input_makes_a_console_page_fail(plain, sessions):
    """Odd paths, queries and forms, signed in or not: pages and refusals, never a 500."""
    tenant = register(plain, "tenant", "t")
    client = sessions(tenant["token"])
    anonymous = httpx.Client(base_url=plain.url, follow_redirects=False)
    odd = ["", "0", "-1", "99999999999999999999999", "%00", "<script>", "ü" * 300, "1e9", " 1"]
    try:
        for who in (client, anonymous):
            for value in odd:
                for path in (f"/console/deployments/{value}", f"/console/?state={value}&kind={value}",
                             f"/console/deployments/1?sort={value}&dir={value}",
                             f"/console/deployments/{value}/events?seen={value}",
                             f"/console/{value}", "/console/static/nothing.js"):  # fmt: skip
                    assert who.get(path).status_code < 500, path
                forms = [{"csrf": getattr(who, "csrf", ""), "sdl": value, "hours": value,
                          "deposit": value, "amount": value, "bid": value, "token": value,
                          "role": value, "name": value, "wait": value, "policy": value,
                          "action": "deploy"}]  # fmt: skip
                for path in ("/console/deploy", "/console/signin", "/console/signup",
                             "/console/deployments/1/deposit", "/console/deployments/1/accept",
                             f"/console/deployments/1/{value}", "/console/token"):  # fmt: skip
                    for form in forms:
                        assert who.post(path, data=form).status_code < 500, (path, form)
                    raw = who.post(path, content=b"\xff\xfe" * 50,
                                   headers={"Content-Type": "multipart/form-data; boundary=x"})
                    assert raw.status_code < 500, path
    finally:
        anonymous.close()


def test_signing_up_by_invitation_and_rotating_the_token(tmp_path):
    """``--registration invite``: the form asks for a code and says what is wrong with one; a
    good one registers and signs in. A new token replaces the old at once."""
    from .conftest import operator_headers

    with fresh_database("sqlite", tmp_path) as url:
        server = Server(url, tmp_path / "data", 0.05, "--registration", "invite")
        client = httpx.Client(base_url=server.url, follow_redirects=False)
        try:
            form = client.get("/console/signup")
            assert 'name="invite"' in form.text
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            wrong = client.post("/console/signup", data={"csrf": csrf, "role": "provider",
                                                         "name": "p", "invite": "kinv_nope"})
            assert wrong.status_code == 403 and "invite" in wrong.text
            assert 'aria-invalid="true"' in wrong.text
            code = server.client.post("/v1/invites", headers=operator_headers(url),
                                      json={"count": 1}).json()["codes"][0]  # fmt: skip
            made = client.post("/console/signup", data={"csrf": csrf, "role": "provider",
                                                        "name": "p", "invite": code})  # fmt: skip
            assert made.status_code == 200
            token = re.search(r'id="new-token" class="token" readonly value="([^"]+)"',
                              made.text).group(1)  # fmt: skip
            assert client.cookies.get("kova_session") == token  # signed in
            home = client.get("/console/")
            assert home.status_code == 200 and "Provider p" in home.text

            rotated = client.post("/console/token", data={"csrf": csrf})
            fresh = re.search(r'id="new-token" class="token" readonly value="([^"]+)"',
                              rotated.text).group(1)  # fmt: skip
            assert fresh != token and client.cookies.get("kova_session") == fresh
            old = server.client.get("/v1/accounts/me", headers={"Authorization": f"Bearer {token}"})
            assert old.status_code == 401
            assert client.get("/console/").status_code == 200  # the new one works

            out = client.post("/console/signout", data={"csrf": csrf})
            assert out.status_code == 303 and not client.cookies.get("kova_session")
            assert client.get("/console/").headers["Location"] == "/console/signin"
        finally:
            client.close()
            server.stop()
