"""``GET /v1/openapi.json``: the API's OpenAPI 3.1 document.

Request bodies come from the same pydantic models the handlers validate with, so the two cannot
disagree; what :func:`kova_live.app.read_body` refuses besides the model (NUL characters and
unpaired surrogates in text) is added to their strings by :class:`StatedLimits`. Response bodies
are written here next to the views that produce them. Each operation is built by
:func:`operation` from what it takes (a role's token, a path id, query parameters, a body, an
``Idempotency-Key``), which decides the error responses it documents; a schemathesis run in the
test suite checks every response against this document, and that the server refuses what the
document refuses.

To document a new route: add ``"/v1/...": {"post": operation(...)}`` to the paths of
:func:`openapi_document`, with its ``role``, its ``body`` model (``command=True`` if it goes
through the journal) and its ``conflicts`` (409) or ``errors`` (such as 429), and the route to
the role's tag; integers in parameters are :func:`integer` ranges.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from kova_core import MAX_AMOUNT

__all__ = [
    "ERRORS",
    "INT64_MAX",
    "TEXT_PATTERN",
    "StatedLimits",
    "error_response",
    "integer",
    "openapi_document",
    "operation",
    "serve_openapi",
]

INT64_MAX = 2**63 - 1  # money, blocks and ids are stored in 64-bit columns
TEXT_PATTERN = "^[^\\u0000]*$"
"""Text the server stores: no NUL character (``read_body`` refuses it in any string of a request
body, keys included, and an unpaired surrogate, which is no Unicode character: JSON text is
Unicode)."""


def integer(low: int = 0, high: int = INT64_MAX) -> dict[str, Any]:
    """An integer from ``low`` to ``high``: every integer the API takes or gives is a range."""
    return {"type": "integer", "minimum": low, "maximum": high}


INT = integer()
MONEY = integer(0, MAX_AMOUNT)
HEIGHT = integer()
NULL_INT = {"type": ["integer", "null"], "minimum": 0, "maximum": INT64_MAX}
EXIT_CODE = {"type": ["integer", "null"], "minimum": -(2**31), "maximum": 2**31 - 1}
NULL_STR = {"type": ["string", "null"]}
STR = {"type": "string"}
PAGE = integer(1, 1000)


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
        "endpoint": NULL_STR, "exit_code": EXIT_CODE, "status_message": NULL_STR,
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
            "exit_code": EXIT_CODE, "output": NULL_STR, "runtime_blocks": NULL_INT,
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
PROBLEM = _object({"field": STR, "message": STR})
PROBLEMS = {"type": "array", "items": PROBLEM}
CREATED = {
    **DEPLOYMENT,
    "properties": {**DEPLOYMENT["properties"], "warnings": PROBLEMS},
    "required": sorted([*DEPLOYMENT["required"], "warnings"]),
}
AMOUNT_OR_NULL = {"type": ["integer", "null"], "minimum": 0}  # sums: may pass 64 bits
CHECK = _object(
    {
        "valid": {"type": "boolean"}, "errors": PROBLEMS, "warnings": PROBLEMS,
        "kind": {"enum": ["deployment", "job"]},
        "orders": {"type": "array", "items": _object(
            {"service": STR, "replica": INT, "resources": RESOURCES, "max_price": MONEY,
             "denom": STR})},
        "max_price_per_block": AMOUNT_OR_NULL, "min_deposit": AMOUNT_OR_NULL,
        "deposit_for_hours": _object({"hours": integer(1, 8760), "amount": AMOUNT_OR_NULL}),
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


class StatedLimits(GenerateJsonSchema):
    """pydantic's JSON schema of a request body, with what ``read_body`` refuses before the
    model sees it: every string (every object key too) is :data:`TEXT_PATTERN` text."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        out = super().str_schema(schema)
        out.setdefault("pattern", TEXT_PATTERN)  # a pattern of the model's own excludes NUL
        return out

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        # pydantic states a key pattern as patternProperties, which lets any other key through
        patterns = out.pop("patternProperties", None)
        if patterns:
            ((pattern, values),) = patterns.items()
            out["additionalProperties"] = values
            out["propertyNames"] = {**out.get("propertyNames", {}), "pattern": pattern}
        return out


def _model(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(
        ref_template="#/components/schemas/{model}", schema_generator=StatedLimits
    )


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = _model(model)
    schema.pop("$defs", None)  # in components
    return {"required": True, "content": {"application/json": {"schema": schema}}}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "required": True, "schema": integer(1, 86_400)}}  # fmt: skip
ERRORS: dict[int, str] = {
    400: "malformed: not JSON, nested deeper than 64, a field missing, unknown, of the wrong "
         "type or out of range, a bad query parameter or Idempotency-Key (`field` names it)",
    401: "no valid bearer token",
    403: "the token's role may not do this",
    404: "no such thing, or not yours",
    409: "the market's state does not allow it (`code` says why)",
    413: "the body is larger than 1 MiB",
    422: "the Idempotency-Key was used for another request",
    429: "too many requests: wait Retry-After seconds",
    503: "unavailable or busy: nothing was changed; try again after Retry-After seconds",
}  # fmt: skip
"""The error responses an operation may document, each the JSON error (``Error``)."""


def error_response(status: int) -> dict[str, Any]:
    """The response of an error status: the JSON error, and ``Retry-After`` on 429 and 503."""
    out: dict[str, Any] = {"description": ERRORS[status], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}  # fmt: skip
    if status in (429, 503):
        out["headers"] = RETRY_AFTER
    return out


def _responses(ok: int, schema: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        str(ok): {"description": "done", "content": {"application/json": {"schema": schema}}}
    }
    for status in sorted({*errors, 503}):
        out[str(status)] = error_response(status)
    return out


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "applies the command once: a retry with the same key gets the original "
                   "answer (without one, the server makes a key)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128,
               "pattern": "^[!-~]([ -~]*[!-~])?$"},
}  # fmt: skip


def path_id(name: str = "id") -> dict[str, Any]:
    """A path's id: 404 for anything but a decimal integer in range (or for another's)."""
    return {"name": name, "in": "path", "required": True, "schema": integer(1)}


def query(name: str, schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """An optional query parameter (400 naming it when it is out of its schema)."""
    out = {"name": name, "in": "query", "required": False, "schema": schema}
    return out if description is None else {**out, "description": description}


def operation(
    summary: str,
    ok: int,
    schema: dict[str, Any],
    *,
    role: str | None = None,
    secured: bool = False,
    body: type[BaseModel] | None = None,
    parameters: tuple[dict[str, Any], ...] = (),
    command: bool = False,
    conflicts: bool = False,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    """One operation, and the errors what it takes may cause: a ``role``'s token (or any
    account's: ``secured``) 401, and 403 for another role's; a path parameter 404; query
    parameters 400; a ``body`` (a request model) 400 and 413; a journaled ``command``
    (``Idempotency-Key``) 400 and 422; ``conflicts`` with the market's state 409; and
    ``errors``, any others. Every operation may answer 503 (with Retry-After). Tagged with the
    role (``public`` or ``account`` without one)."""
    found = set(errors)
    out: dict[str, Any] = {"summary": summary,
                           "tags": [role or ("account" if secured else "public")]}  # fmt: skip
    if role is not None or secured:
        out["security"] = [{"bearer": []}]
        found |= {401} | ({403} if role is not None else set())
    params = list(parameters)
    if any(p["in"] == "path" for p in params):
        found.add(404)
    if any(p["in"] == "query" for p in params):
        found.add(400)
    if command:
        params.append(IDEMPOTENCY_KEY)
        found |= {400, 422}
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = _body(body)
        found |= {400, 413}
    if conflicts:
        found.add(409)
    out["responses"] = _responses(ok, schema, *found)
    return out


ID = (path_id(),)
ROLE = {"enum": ["leader", "standby"]}
TOKEN = {"type": "string", "pattern": "^kova_[A-Za-z0-9_-]{43}$"}
ACCOUNT_NAME = {"type": "string", "pattern": "^(tenant|provider|auditor|operator):[0-9]+$"}
STANDING = _object(
    {
        "id": INT, "account": ACCOUNT_NAME, "suspended": {"type": "boolean"},
        "suspended_by": {"type": ["string", "null"], "pattern": "^operator:[0-9]+$"},
        "suspended_height": NULL_INT,
    }
)  # fmt: skip
SHA256 = {"name": "sha256", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}  # fmt: skip
BINARY = {"type": "string", "format": "binary"}


def openapi_document(page_size: int = 1000, max_manifest_bytes: int = 64 * 1024) -> dict[str, Any]:
    """The document (built on each call: it is small), for a server whose ``GET /v1/leases``
    answers at most ``page_size`` leases at once and whose ``POST /v1/deployments`` takes
    manifests of at most ``max_manifest_bytes`` (stated as the text's ``maxLength``: a longer
    text is longer in bytes too; a shorter one may still be refused, with 400, when its UTF-8
    is longer)."""
    from .app import NewAccount
    from .audits import NewAudit
    from .deployments import (
        DeploymentCheck,
        Deposit,
        Heartbeat,
        LeaseStatus,
        NewBid,
        NewDeployment,
        ShippedLogs,
    )
    from .operators import ClockMove, Credit, NewInvites

    tenant: dict[str, Any] = {"role": "tenant"}
    provider: dict[str, Any] = {"role": "provider"}
    operator: dict[str, Any] = {"role": "operator", "conflicts": True}
    auditor: dict[str, Any] = {"role": "auditor"}
    deployment: dict[str, Any] = {**tenant, "parameters": ID}
    upload = operation(
        "Upload a file (at most 64 MiB); named by its SHA-256",
        201,
        _object({"sha256": STR, "size": INT}),
        **tenant,
        errors=(413,),
    )
    upload["requestBody"] = {
        "required": False, "description": "the file's bytes (none: an empty file)",
        "content": {"application/octet-stream": {"schema": BINARY}},
    }  # fmt: skip
    download = operation(
        "A file: for its uploader, or the provider of a lease that places it", 200, {},
        secured=True, parameters=(SHA256,),
    )  # fmt: skip
    download["responses"]["200"] = {
        "description": "the bytes",
        "content": {"application/octet-stream": {"schema": BINARY}},
    }
    invites = operation(
        "Issue invite codes, each good for one registration (operators)", 201, _object({
            "codes": {"type": "array", "items": {"type": "string",
                                                 "pattern": "^kinv_[A-Za-z0-9_-]{43}$"}},
            "issued_by": {"type": "string", "pattern": "^operator:[0-9]+$"},
            "height": HEIGHT}), role="operator", body=NewInvites)  # fmt: skip
    invites["requestBody"] = {**invites["requestBody"], "required": False}  # none: one code
    paths: dict[str, Any] = {
        "/healthz": {"get": operation("Liveness", 200, _object({"status": STR, "height": HEIGHT}))},
        "/v1/status": {"get": operation("The network at a glance, and this process's role", 200,
            _object({"height": HEIGHT, "block_seconds": {"type": "number"}, "tenants": INT,
                     "providers": INT, "role": ROLE, "leader": NULL_STR,
                     "registration": {"enum": ["open", "invite", "closed"]}}))},
        "/v1/leader/step-down": {"post": operation(
            "Hand the leadership to a standby (operators; 409 from a standby)", 200,
            _object({"stepped_down": {"const": True}, "epoch": INT}), **operator)},
        "/v1/leader": {"get": operation(
            "200 from the leader (it runs market commands), 503 from a standby: a balancer's "
            "health check", 200, _object({"role": {"const": "leader"}, "leader": NULL_STR,
                                           "epoch": NULL_INT}))},
        "/v1/accounts": {"post": {**operation(
            "Register a tenant, provider or auditor (auditor:<id>); the token is shown once",
            201, _object({"id": INT, "role": STR, "name": STR, "account": ACCOUNT_NAME,
                          "token": TOKEN}),
            body=NewAccount, errors=(403,)),
            "description": "As kova-live serve --registration says: open (anyone), invite (the "
                           "default: with an operator's unused invite code; 403 invite_required "
                           "or invalid_invite naming the invite field), closed (403 "
                           "registration_closed)."}},
        "/v1/accounts/me/token": {"post": operation(
            "Replace your token: the new one is shown once, the old one stops working", 200,
            _object({"id": INT, "account": ACCOUNT_NAME, "token": TOKEN}), secured=True,
            errors=(403,))},
        "/v1/invites": {"post": invites},
        "/v1/accounts/{id}/suspend": {"post": operation(
            "Suspend an account: its token is refused from now on (operators)", 200, STANDING,
            **operator, parameters=ID)},
        "/v1/accounts/{id}/resume": {"post": operation(
            "Lift a suspension; the account gets a new token, shown once (operators)", 200,
            _object({"id": INT, "account": ACCOUNT_NAME, "suspended": {"const": False},
                     "token": TOKEN}), **operator, parameters=ID)},
        "/v1/accounts/me": {"get": operation("Your account and balance", 200, _object(
            {"id": INT, "role": STR, "name": STR, "account": STR, "balance": MONEY,
             "balance_units": STR}), secured=True)},
        "/v1/accounts/me/transactions": {"get": operation(
            "Your transfers, newest first", 200, _object(
                {"transactions": {"type": "array", "items": TRANSFER}, "next_before": NULL_INT}),
            secured=True, parameters=(query("limit", PAGE), query("before", integer(1))))},
        "/v1/deployments": {
            "post": operation("Create a deployment or job (with the manifest's warnings)", 201,
                              CREATED, **tenant, body=NewDeployment, command=True,
                              conflicts=True),
            "get": operation("Your deployments", 200, _list("deployments", _object(
                {"id": INT, "kind": STR, "state": STR, "created_at": HEIGHT,
                 "escrow": MONEY})), **tenant)},
        "/v1/deployments/check": {"post": {**operation(
            "Check a deployment without creating it: problems, warnings, orders, prices, "
            "deposits", 200, CHECK, **tenant, body=DeploymentCheck),
            "description": "A dry run that changes nothing: 200 for any manifest (valid or "
                           "not, errors listing every problem); 400 only for a bad body."}},
        "/v1/deployments/{id}": {"get": operation("One deployment", 200, DEPLOYMENT,
                                                  **deployment)},
        "/v1/deployments/{id}/deposit": {"post": operation(
            "Fund the escrow", 200, DEPLOYMENT, **deployment, body=Deposit, command=True,
            conflicts=True)},
        "/v1/deployments/{id}/close": {"post": operation(
            "Close, settle and refund", 200, DEPLOYMENT, **deployment, command=True,
            conflicts=True)},
        "/v1/deployments/{id}/bids": {"get": operation(
            "Open bids on its orders", 200, _list("bids", OFFER), **deployment)},
        "/v1/bids/{id}/accept": {"post": operation(
            "Accept a bid: the lease starts", 201, LEASE, **deployment, command=True,
            conflicts=True)},
        "/v1/bids/{id}": {"delete": operation(
            "Withdraw your open bid", 200, BID, **provider, parameters=ID, command=True,
            conflicts=True)},
        "/v1/providers/heartbeat": {"post": operation(
            "Your machine's capacity", 200, _object(
                {"provider_id": INT, "state": STR, "height": HEIGHT,
                 "auditors": {"type": "array", "items": STR}}),
            **provider, body=Heartbeat)},
        "/v1/orders": {"get": operation(
            "Orders open for bids, every tenant's first, then every tenant's second..., a page "
            "at a time (after: the next of the page before)", 200, _object(
                {"orders": {"type": "array", "items": ORDER}, "next": NULL_STR}),
            **provider, parameters=(
                query("state", {"enum": ["open"]}), query("limit", integer(1, page_size)),
                query("after", {"type": "string", "pattern": "^[0-9]{1,19}\\.[0-9]{1,19}$"},
                      "the next of the page before"),
            ))},
        "/v1/orders/{id}/bids": {"post": operation(
            "Bid on an order", 201, BID, **provider, parameters=ID, body=NewBid, command=True,
            conflicts=True)},
        "/v1/orders/{id}/expire": {"post": operation(
            "Give up on your open order", 200, ORDER, **deployment, command=True,
            conflicts=True)},
        "/v1/orders/{id}/candidates": {"get": operation(
            "Who could serve it, and why not", 200, _object({
                "order_id": INT, "providers": INT, "can_serve": INT,
                "candidates": {"type": "array", "items": INT},
                "cannot_serve": {"type": "array", "items": _object(
                    {"provider_id": INT, "reasons": {"type": "array", "items": STR}})},
            }), **deployment, conflicts=True)},
        "/v1/leases": {"get": operation(
            "Your leases (providers), newest first, a page at a time; or those of ids=, "
            "whatever their state", 200, _object(
                {"leases": {"type": "array", "items": PROVIDER_LEASE},
                 "next_before": NULL_INT}),
            **provider, parameters=(
                query("state", {"enum": ["active", "insufficient_funds", "closed", "live"]}),
                query("limit", integer(1, page_size)), query("before", integer(1)),
                query("ids", {"type": "string", "pattern": "^[0-9]+(,[0-9]+)*$"},
                      f"at most {max(page_size, 100)} lease ids, each from 1 to {INT64_MAX}"),
            ))},
        "/v1/leases/{id}/status": {"post": operation(
            "Report your lease: running, a job finished, or failed", 200, LEASE, **provider,
            parameters=ID, body=LeaseStatus, command=True, conflicts=True)},
        "/v1/deployments/{id}/result": {"get": operation(
            "A job's outcome and output", 200, RESULT, **deployment, conflicts=True)},
        "/v1/leases/{id}/logs": {"post": operation(
            "Ship lines of your lease's output (kept 24 hours)", 201,
            _object({"lease_id": INT, "accepted": INT}), **provider, parameters=ID,
            body=ShippedLogs)},
        "/v1/deployments/{id}/logs": {"get": operation(
            "Its leases' log lines, oldest first", 200, _object({
                "lines": {"type": "array", "items": _object({
                    "id": INT, "lease_id": INT, "service": STR, "replica": INT,
                    "height": HEIGHT, "stream": {"enum": ["stdout", "stderr"]}, "text": STR})},
                "next_after": INT}),
            role="tenant", parameters=(*ID, query("after", integer(0)), query("limit", PAGE)))},
        "/v1/deployments/{id}/escrow": {"get": operation(
            "Its escrow's history, oldest first: a point at each change but a round's "
            "routine payment", 200, _object({
                "deployment_id": INT, "height": HEIGHT,
                "points": {"type": "array", "items": _object(
                    {"id": INT, "height": HEIGHT, "escrow": MONEY, "burn_rate": MONEY})},
                "next_before": NULL_INT}),
            **tenant, parameters=(*ID, query("limit", PAGE), query("before", integer(1))))},
        "/v1/bids": {"get": operation(
            "Your bids (providers), newest first, with their orders", 200, _object({
                "bids": {"type": "array", "items": _object({
                    "id": INT, "order_id": INT, "price": MONEY, "height": HEIGHT,
                    "response_time": INT,
                    "state": {"enum": ["open", "accepted", "lost", "withdrawn"]},
                    "service": STR, "max_price": MONEY, "denom": STR, "order_state": STR,
                    "resources": RESOURCES})},
                "next_before": NULL_INT}),
            **provider, parameters=(
                query("state", {"enum": ["open", "accepted", "lost", "withdrawn"]}),
                query("limit", PAGE), query("before", integer(1))))},
        "/v1/files": {"post": upload},
        "/v1/files/{sha256}": {"get": download},
        "/v1/accounts/{id}/credit": {"post": operation(
            "Credit a tenant (operators)", 200, _object(
                {"account": STR, "amount": MONEY, "height": HEIGHT, "balance": MONEY}),
            **operator, parameters=ID, body=Credit, command=True)},
        "/v1/providers/{id}/fail": {"post": operation(
            "Take a provider down (operators)", 200, _object(
                {"provider_id": INT, "state": STR, "height": HEIGHT,
                 "reopened_orders": {"type": "array", "items": INT}}),
            **operator, parameters=ID, command=True)},
        "/v1/providers/{id}/recover": {"post": operation(
            "Bring a provider back (operators)", 200, _object(
                {"provider_id": INT, "state": STR, "height": HEIGHT}),
            **operator, parameters=ID, command=True)},
        "/v1/clock": {"post": operation(
            "Move a manual clock forward (operators)", 200, _object({"height": HEIGHT}),
            **operator, body=ClockMove, command=True)},
        "/v1/providers": {"get": operation(
            "Providers, publicly", 200, _list("providers", PROVIDER))},
        "/v1/providers/{id}/audits": {
            "post": operation(
                "Audit a provider (auditors): vouch for attributes its last heartbeat "
                "registered (default: all); replaces your earlier audit", 201, AUDIT,
                **auditor, parameters=ID, body=NewAudit, command=True, conflicts=True),
            "delete": operation(
                "Revoke your audit of a provider (auditors)", 200, _object(
                    {"provider_id": INT, "auditor": STR, "revoked": {"type": "boolean"}}),
                **auditor, parameters=ID, command=True),
            "get": operation(
                "A provider's audits, and the auditors whose audits stand", 200, _object({
                    "provider_id": INT, "auditors": {"type": "array", "items": STR},
                    "audits": {"type": "array", "items": AUDIT}}),
                secured=True, parameters=ID)},
    }  # fmt: skip
    # an audit's body may be left out: every attribute the provider registers
    paths["/v1/providers/{id}/audits"]["post"]["requestBody"]["required"] = False
    schemas: dict[str, Any] = {"Error": ERROR}
    for path in ("/v1/deployments", "/v1/deployments/check"):
        taken = paths[path]["post"]["requestBody"]["content"]["application/json"]
        taken["schema"]["properties"]["manifest"]["anyOf"][0]["maxLength"] = max_manifest_bytes
    for path, item in paths.items():  # every route of the API may be rate-limited
        if path.startswith("/v1/"):
            for op in item.values():
                op["responses"]["429"] = error_response(429)
    for model in (
        NewInvites,
        NewAccount,
        NewDeployment,
        DeploymentCheck,
        Deposit,
        Heartbeat,
        NewBid,
        LeaseStatus,
        ShippedLogs,
        NewAudit,
    ):
        schemas.update(_model(model).pop("$defs", {}))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kova orchestrator",
            "version": "1",
            "description": "Money is integer micro-units (1 unit = 1,000,000); heights are "
            f"blocks (1 block = 1 s by default); every integer is at most {INT64_MAX}. "
            "Errors, every one (404 for an unknown route, 405 with Allow for a method it does "
            "not take, included): {error: {code, message, field}}. A request body is at most "
            "1 MiB (413) of JSON nested at most 64 deep, without NaN or Infinity, whose text "
            "holds no NUL character or unpaired surrogate (400). A market command applies "
            "once per Idempotency-Key header (a retry gets the original answer; the key used "
            "for another request: 422).",
        },
        "tags": [
            {"name": name}
            for name in ("public", "account", "tenant", "provider", "operator", "auditor")
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def serve_openapi(request: web.Request) -> web.Response:
    """The document, as JSON."""
    from .app import API

    api = request.app[API]
    return web.json_response(openapi_document(api.page_size, api.max_manifest_bytes))
