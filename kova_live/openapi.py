"""``GET /v1/openapi.json``: the API's OpenAPI 3.1 document.

Request bodies come from the same pydantic models the handlers validate with, so the two cannot
disagree; response bodies are written here next to the views that produce them, and a
schemathesis run in the test suite checks every response against this document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from kova_core import MAX_AMOUNT

__all__ = ["openapi_document", "serve_openapi"]

INT = {"type": "integer"}
MONEY = {"type": "integer", "minimum": 0, "maximum": MAX_AMOUNT}
HEIGHT = {"type": "integer", "minimum": 0}
NULL_INT = {"type": ["integer", "null"]}
NULL_STR = {"type": ["string", "null"]}
STR = {"type": "string"}
PAGE = {"type": "integer", "minimum": 1, "maximum": 1000}


def _object(properties: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = sorted(properties)
    return schema


def _list(name: str, item: dict[str, Any]) -> dict[str, Any]:
    return _object({name: {"type": "array", "items": item}})


RESOURCES = _object({"cpu": INT, "memory": INT, "storage": INT, "gpu": INT})
ERROR = _object(
    {
        "error": _object(
            {"code": STR, "message": STR, "field": NULL_STR},
        )
    }
)
ORDER = _object(
    {
        "id": INT, "deployment_id": INT, "service": STR, "replica": INT, "resources": RESOURCES,
        "max_price": MONEY, "denom": STR, "state": {"enum": ["open", "matched", "closed"]},
        "created_at": HEIGHT, "closed_at": NULL_INT, "close_reason": NULL_STR,
    }
)  # fmt: skip
LEASE = _object(
    {
        "id": INT, "deployment_id": INT, "order_id": INT, "provider_id": INT, "bid_id": INT,
        "price": MONEY, "resources": RESOURCES,
        "state": {"enum": ["active", "insufficient_funds", "closed"]}, "created_at": HEIGHT,
        "last_settled": HEIGHT, "blocks_paid": INT, "total_paid": MONEY, "debt": MONEY,
        "written_off": MONEY, "closed_at": NULL_INT, "close_reason": NULL_STR,
        "status": {"enum": ["pending", "running", "finished", "failed"]},
        "endpoint": NULL_STR, "exit_code": NULL_INT, "status_message": NULL_STR,
        "reported_at": NULL_INT,
    }
)  # fmt: skip
CONTAINER = _object(
    {
        "service": STR, "image": STR, "command": {"type": "array", "items": STR},
        "args": {"type": "array", "items": STR},
        "env": {"type": "object", "additionalProperties": STR},
        "expose": {"type": "array", "items": _object(
            {"port": INT, "as": INT, "proto": STR, "global": {"type": "boolean"}})},
        "files": {"type": "array", "items": _object({"sha256": STR, "path": STR})},
        "storage": {"type": "array", "items": _object(
            {"name": STR, "size": INT, "mount": NULL_STR, "read_only": {"type": "boolean"},
             "class": NULL_STR})},
        "read_only_root": {"type": "boolean"},
    }
)  # fmt: skip
PROVIDER_LEASE = {
    **LEASE,
    "properties": {**LEASE["properties"], "container": CONTAINER,
                   "kind": {"enum": ["deployment", "job"]}, "max_runtime": NULL_INT},
    "required": sorted([*LEASE["required"], "container", "kind", "max_runtime"]),
}  # fmt: skip
RESULT = _object(
    {
        "deployment_id": INT, "state": {"enum": ["active", "insufficient_funds", "closed"]},
        "done": {"type": "boolean"}, "close_reason": NULL_STR,
        "results": {"type": "array", "items": _object({
            "lease_id": INT, "order_id": INT, "service": STR, "replica": INT,
            "provider_id": INT, "state": {"enum": ["active", "insufficient_funds", "closed"]},
            "status": {"enum": ["pending", "running", "finished", "failed"]},
            "exit_code": NULL_INT, "output": NULL_STR, "runtime_blocks": NULL_INT,
            "close_reason": NULL_STR, "blocks_paid": INT, "total_paid": MONEY,
        })},
    }
)  # fmt: skip
BID = _object(
    {
        "id": INT, "order_id": INT, "provider_id": INT, "price": MONEY, "height": HEIGHT,
        "response_time": INT, "state": {"enum": ["open", "accepted", "lost", "withdrawn"]},
    }
)  # fmt: skip
DEPLOYMENT = _object(
    {
        "id": INT, "kind": {"enum": ["deployment", "job"]},
        "state": {"enum": ["active", "insufficient_funds", "closed"]}, "created_at": HEIGHT,
        "closed_at": NULL_INT, "close_reason": NULL_STR, "max_runtime": NULL_INT,
        "escrow": MONEY, "escrow_units": STR, "burn_rate": MONEY, "pauses_at": NULL_INT,
        "deadline": NULL_INT, "auto_accept": {"type": ["object", "null"]},
        "debt": MONEY, "written_off": MONEY, "blocks_paid": INT, "total_paid": MONEY,
        "orders": {"type": "array", "items": ORDER}, "leases": {"type": "array", "items": LEASE},
        "urls": {"type": "array", "items": _object(
            {"service": STR, "hostname": STR, "url": STR, "custom": {"type": "boolean"}})},
    }
)  # fmt: skip
TRANSFER = _object(
    {
        "id": INT, "height": HEIGHT, "source": STR, "destination": STR, "amount": MONEY,
        "reason": STR, "lease_id": NULL_INT, "start": NULL_INT, "end": NULL_INT,
    }
)  # fmt: skip
OFFER = _object(
    {
        "id": INT, "order_id": INT, "provider_id": INT, "price": MONEY, "height": HEIGHT,
        "response_time": INT, "completed": INT, "failed": INT, "reputation": {"type": "number"},
    }
)  # fmt: skip
PROVIDER = _object(
    {
        "provider_id": INT, "state": {"enum": ["online", "lost"]}, "last_seen": HEIGHT,
        "capacity": RESOURCES, "attributes": {"type": "object"},
        "gpu_models": {"type": "array", "items": STR}, "completed": INT, "failed": INT,
        "reputation": {"type": "number"}, "pricing": {"type": ["object", "null"]},
        "auditors": {"type": "array", "items": STR},
    }
)  # fmt: skip
AUDIT = _object(
    {
        "provider_id": INT, "auditor": STR, "auditor_id": INT,
        "attributes": {"type": "object", "additionalProperties": STR}, "height": HEIGHT,
        "valid": {"type": "boolean"}, "voided_by": {"type": "array", "items": STR},
    }
)  # fmt: skip


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: int, schema: dict[str, Any], *errors: int) -> dict[str, Any]:
    error = {"description": "refused: nothing changed", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}  # fmt: skip
    out: dict[str, Any] = {
        str(ok): {"description": "done", "content": {"application/json": {"schema": schema}}}
    }
    for status in sorted({*errors, 503}):
        out[str(status)] = error
    retry = {"required": True, "schema": {"type": "integer", "minimum": 1}}
    out["429"] = {**error, "description": "rate-limited (code rate_limited): nothing changed; "
                  "try again after Retry-After seconds", "headers": {"Retry-After": retry}}
    return out


TOKEN = {"type": "string", "pattern": "^kova_[A-Za-z0-9_-]{43}$"}
ACCOUNT_NAME = {"type": "string", "pattern": "^(tenant|provider|auditor|operator):[0-9]+$"}
STANDING = _object(
    {
        "id": INT, "account": ACCOUNT_NAME, "suspended": {"type": "boolean"},
        "suspended_by": {"type": ["string", "null"], "pattern": "^operator:[0-9]+$"},
        "suspended_height": NULL_INT,
    }
)  # fmt: skip


ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def openapi_document(page_size: int = 1000) -> dict[str, Any]:
    """The document (built on each call: it is small), for a server whose ``GET /v1/leases``
    answers at most ``page_size`` leases at once."""
    from .app import NewAccount
    from .audits import NewAudit
    from .deployments import (
        Deposit,
        Heartbeat,
        LeaseStatus,
        NewBid,
        NewDeployment,
        ShippedLogs,
    )
    from .operators import ClockMove, Credit, NewInvites

    secured = [{"bearer": []}]
    tenant = (400, 401, 403, 404, 409)
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "responses": _responses(
            200, _object({"status": STR, "height": HEIGHT}))}},
        "/v1/status": {"get": {"summary": "The network at a glance", "responses": _responses(
            200, _object({"height": HEIGHT, "block_seconds": {"type": "number"},
                          "tenants": INT, "providers": INT}))}},
        "/v1/accounts": {"post": {
            "summary": "Register a tenant, provider or auditor (auditor:<id>); the token is "
                       "shown once",
            "description": "As kova-live serve --registration says: open (anyone), invite (the "
                           "default: with an operator's unused invite code; 403 invite_required "
                           "or invalid_invite naming the invite field), closed (403 "
                           "registration_closed).",
            "requestBody": _body(NewAccount),
            "responses": _responses(201, _object({"id": INT, "role": STR, "name": STR,
                                                  "account": ACCOUNT_NAME, "token": TOKEN}),
                                    400, 403, 413)}},
        "/v1/accounts/me/token": {"post": {
            "summary": "Replace your token: the new one is shown once, the old one stops working",
            "security": secured,
            "responses": _responses(200, _object({"id": INT, "account": ACCOUNT_NAME,
                                                  "token": TOKEN}), 401, 403)}},
        "/v1/invites": {"post": {
            "summary": "Issue invite codes, each good for one registration (operators)",
            "security": secured, "requestBody": {**_body(NewInvites), "required": False},
            "responses": _responses(201, _object({
                "codes": {"type": "array", "items": {"type": "string",
                                                     "pattern": "^kinv_[A-Za-z0-9_-]{43}$"}},
                "issued_by": {"type": "string", "pattern": "^operator:[0-9]+$"},
                "height": HEIGHT}), 400, 401, 403, 413)}},
        "/v1/accounts/{id}/suspend": {"post": {
            "summary": "Suspend an account: its token is refused from now on (operators)",
            "security": secured, "parameters": ID,
            "responses": _responses(200, STANDING, 401, 403, 404, 409)}},
        "/v1/accounts/{id}/resume": {"post": {
            "summary": "Lift a suspension; the account gets a new token, shown once (operators)",
            "security": secured, "parameters": ID,
            "responses": _responses(200, _object({"id": INT, "account": ACCOUNT_NAME,
                                                  "suspended": {"const": False}, "token": TOKEN}),
                                    401, 403, 404, 409)}},
        "/v1/accounts/me": {"get": {"summary": "Your account and balance", "security": secured,
            "responses": _responses(200, _object({"id": INT, "role": STR, "name": STR,
                "account": STR, "balance": MONEY, "balance_units": STR}), 401)}},
        "/v1/accounts/me/transactions": {"get": {
            "summary": "Your transfers, newest first", "security": secured,
            "parameters": [
                {"name": "limit", "in": "query", "schema": PAGE},
                {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            ],
            "responses": _responses(200, _object({
                "transactions": {"type": "array", "items": TRANSFER}, "next_before": NULL_INT,
            }), 400, 401)}},
        "/v1/deployments": {
            "post": {"summary": "Create a deployment or job", "security": secured,
                     "requestBody": _body(NewDeployment),
                     "responses": _responses(201, DEPLOYMENT, 400, 401, 403, 409, 413)},
            "get": {"summary": "Your deployments", "security": secured,
                    "responses": _responses(200, _list("deployments", _object(
                        {"id": INT, "kind": STR, "state": STR, "created_at": HEIGHT,
                         "escrow": MONEY})), 401, 403)}},
        "/v1/deployments/{id}": {"get": {"summary": "One deployment", "security": secured,
            "parameters": ID, "responses": _responses(200, DEPLOYMENT, 401, 403, 404)}},
        "/v1/deployments/{id}/deposit": {"post": {"summary": "Fund the escrow",
            "security": secured, "parameters": ID, "requestBody": _body(Deposit),
            "responses": _responses(200, DEPLOYMENT, *tenant, 413)}},
        "/v1/deployments/{id}/close": {"post": {"summary": "Close, settle and refund",
            "security": secured, "parameters": ID,
            "responses": _responses(200, DEPLOYMENT, *tenant)}},
        "/v1/deployments/{id}/bids": {"get": {"summary": "Open bids on its orders",
            "security": secured, "parameters": ID,
            "responses": _responses(200, _list("bids", OFFER), 401, 403, 404)}},
        "/v1/bids/{id}/accept": {"post": {"summary": "Accept a bid: the lease starts",
            "security": secured, "parameters": ID,
            "responses": _responses(201, LEASE, *tenant)}},
        "/v1/bids/{id}": {"delete": {"summary": "Withdraw your open bid", "security": secured,
            "parameters": ID, "responses": _responses(200, BID, *tenant)}},
        "/v1/providers/heartbeat": {"post": {"summary": "Your machine's capacity",
            "security": secured, "requestBody": _body(Heartbeat),
            "responses": _responses(200, _object({"provider_id": INT, "state": STR,
                "height": HEIGHT, "auditors": {"type": "array", "items": STR}}),
                400, 401, 403, 413)}},
        "/v1/orders": {"get": {"summary": "Orders open for bids", "security": secured,
            "parameters": [{"name": "state", "in": "query", "schema": {"type": "string"}}],
            "responses": _responses(200, _list("orders", ORDER), 400, 401, 403)}},
        "/v1/orders/{id}/bids": {"post": {"summary": "Bid on an order", "security": secured,
            "parameters": ID, "requestBody": _body(NewBid),
            "responses": _responses(201, BID, *tenant, 413)}},
        "/v1/orders/{id}/expire": {"post": {"summary": "Give up on your open order",
            "security": secured, "parameters": ID,
            "responses": _responses(200, ORDER, *tenant, 422)}},
        "/v1/orders/{id}/candidates": {"get": {"summary": "Who could serve it, and why not",
            "security": secured, "parameters": ID,
            "responses": _responses(200, _object({
                "order_id": INT, "providers": INT, "can_serve": INT,
                "candidates": {"type": "array", "items": INT},
                "cannot_serve": {"type": "array", "items": _object(
                    {"provider_id": INT, "reasons": {"type": "array", "items": STR}})},
            }), 401, 403, 404)}},
        "/v1/leases": {"get": {
            "summary": "Your leases (providers), newest first, a page at a time; or those of "
                       "ids=, whatever their state",
            "security": secured,
            "parameters": [
                {"name": "state", "in": "query",
                 "schema": {"enum": ["active", "insufficient_funds", "closed", "live"]}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": page_size}},
                {"name": "before", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
                {"name": "ids", "in": "query",
                 "description": f"at most {max(page_size, 100)} lease ids",
                 "schema": {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"}},
            ],
            "responses": _responses(200, _object({
                "leases": {"type": "array", "items": PROVIDER_LEASE}, "next_before": NULL_INT,
            }), 400, 401, 403)}},
        "/v1/leases/{id}/status": {"post": {
            "summary": "Report your lease: running, a job finished, or failed",
            "security": secured, "parameters": ID, "requestBody": _body(LeaseStatus),
            "responses": _responses(200, LEASE, *tenant, 413)}},
        "/v1/deployments/{id}/result": {"get": {"summary": "A job's outcome and output",
            "security": secured, "parameters": ID,
            "responses": _responses(200, RESULT, 401, 403, 404, 409)}},
        "/v1/leases/{id}/logs": {"post": {
            "summary": "Ship lines of your lease's output (kept 24 hours)",
            "security": secured, "parameters": ID, "requestBody": _body(ShippedLogs),
            "responses": _responses(201, _object({"lease_id": INT, "accepted": INT}),
                                    *tenant, 413)}},
        "/v1/deployments/{id}/logs": {"get": {"summary": "Its leases' log lines, oldest first",
            "security": secured, "parameters": [*ID,
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": PAGE}],
            "responses": _responses(200, _object({
                "lines": {"type": "array", "items": _object({
                    "id": INT, "lease_id": INT, "service": STR, "replica": INT,
                    "height": HEIGHT, "stream": {"enum": ["stdout", "stderr"]}, "text": STR})},
                "next_after": INT}), 400, 401, 403, 404)}},
        "/v1/files": {"post": {"summary": "Upload a file (at most 64 MiB); named by its SHA-256",
            "security": secured, "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": _responses(201, _object({"sha256": STR, "size": INT}), 401, 403, 413)}},
        "/v1/files/{sha256}": {"get": {
            "summary": "A file: for its uploader, or the provider of a lease that places it",
            "security": secured, "parameters": [{"name": "sha256", "in": "path", "required": True,
                                                 "schema": {"type": "string"}}],
            "responses": {**_responses(200, {}, 401, 404), "200": {"description": "the bytes",
                "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}}}}},
        "/v1/accounts/{id}/credit": {"post": {"summary": "Credit a tenant (operators)",
            "security": secured, "parameters": ID, "requestBody": _body(Credit),
            "responses": _responses(200, _object({"account": STR, "amount": MONEY,
                                                  "height": HEIGHT, "balance": MONEY}),
                                    *tenant, 413, 422)}},
        "/v1/providers/{id}/fail": {"post": {"summary": "Take a provider down (operators)",
            "security": secured, "parameters": ID,
            "responses": _responses(200, _object({"provider_id": INT, "state": STR,
                                                  "height": HEIGHT,
                                                  "reopened_orders": {"type": "array",
                                                                      "items": INT}}),
                                    *tenant, 422)}},
        "/v1/providers/{id}/recover": {"post": {"summary": "Bring a provider back (operators)",
            "security": secured, "parameters": ID,
            "responses": _responses(200, _object({"provider_id": INT, "state": STR,
                                                  "height": HEIGHT}), *tenant, 422)}},
        "/v1/clock": {"post": {"summary": "Move a manual clock forward (operators)",
            "security": secured, "requestBody": _body(ClockMove),
            "responses": _responses(200, _object({"height": HEIGHT}), *tenant, 413, 422)}},
        "/v1/providers": {"get": {"summary": "Providers, publicly",
            "responses": _responses(200, _list("providers", PROVIDER))}},
        "/v1/providers/{id}/audits": {
            "post": {"summary": "Audit a provider (auditors): vouch for attributes its last "
                                "heartbeat registered (default: all); replaces your earlier audit",
                     "security": secured, "parameters": ID,
                     "requestBody": {**_body(NewAudit), "required": False},
                     "responses": _responses(201, AUDIT, *tenant, 413)},
            "delete": {"summary": "Revoke your audit of a provider (auditors)",
                       "security": secured, "parameters": ID,
                       "responses": _responses(200, _object({
                           "provider_id": INT, "auditor": STR, "revoked": {"type": "boolean"}}),
                           401, 403, 404)},
            "get": {"summary": "A provider's audits, and the auditors whose audits stand",
                    "security": secured, "parameters": ID,
                    "responses": _responses(200, _object({
                        "provider_id": INT, "auditors": {"type": "array", "items": STR},
                        "audits": {"type": "array", "items": AUDIT}}), 401, 404)}},
    }  # fmt: skip
    schemas: dict[str, Any] = {"Error": ERROR}
    for model in (NewAccount, NewDeployment, Deposit, Heartbeat, NewBid, LeaseStatus, ShippedLogs,
                  NewAudit, NewInvites):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kova orchestrator",
            "version": "1",
            "description": "Money is integer micro-units (1 unit = 1,000,000); heights are "
            "blocks (1 block = 1 s by default). Errors: {error: {code, message, field}}. "
            "A market command applies once per Idempotency-Key header (a retry gets the "
            "original answer; the key used for another request: 422). Requests are "
            "rate-limited per account and per client address (429 rate_limited, with "
            "Retry-After).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def serve_openapi(request: web.Request) -> web.Response:
    """The document, as JSON."""
    from .app import API

    return web.json_response(openapi_document(request.app[API].page_size))
