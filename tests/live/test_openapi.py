"""``/v1/openapi.json`` describes what the server really does (SQLite and PostgreSQL): every
route is documented and every documented route exists, and schemathesis, with a bounded number
of examples per operation, finds no 5xx and no response that breaks the document, as a tenant
and as a provider."""

import subprocess
import sys
from pathlib import Path

from kova_live.app import create_app
from kova_live.clock import BlockClock
from kova_live.db import async_engine
from kova_live.market import Settings
from kova_live.openapi import openapi_document

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_the_document_lists_exactly_the_routes_the_server_has(tmp_path):
    app = create_app(async_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}"), BlockClock(0, 1000), Settings())
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method, path) for path, item in openapi_document()["paths"].items() for method in item
    }
    assert documented == served - {("get", "/metrics"), ("get", "/v1/openapi.json")}


def run_schemathesis(server, token, folder):
    return subprocess.run(
        [str(SCHEMATHESIS), "run", f"{server.url}/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}", "--checks", CHECKS,
         "--max-examples", "12", "--phases", "coverage,fuzzing", "--seed", "1", "--workers", "1"],
        capture_output=True, text=True, timeout=600, cwd=folder,  # it writes .schemathesis/ there
    )  # fmt: skip


def test_schemathesis_finds_no_server_error_and_no_broken_promise(server, tmp_path):
    tenant = server.client.post("/v1/accounts", json={"role": "tenant", "name": "st"}).json()
    provider = server.client.post("/v1/accounts", json={"role": "provider", "name": "sp"}).json()
    server.client.post("/v1/providers/heartbeat", headers={"Authorization": f"Bearer {provider['token']}"},
                       json={"capacity": {"cpu": 1000, "memory": 2**30, "storage": 2**30, "gpu": 0}})
    for token in (tenant["token"], provider["token"]):
        result = run_schemathesis(server, token, tmp_path)
        assert result.returncode == 0, result.stdout[-4000:]
        assert " passed" in result.stdout and "failed" not in result.stdout.split("Test cases:")[-1]
