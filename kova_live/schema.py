"""The orchestrator's tables (SQLAlchemy Core). Migrations in ``migrations/versions`` create
them; a test checks that the migrated database matches this metadata exactly.

Money columns are BIGINT micro-units with CHECK constraints: a balance can never go negative
and a transfer always moves a positive amount. ``transfers`` is append-only (the ledger).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = [
    "HOLDER_WHERE",
    "accounts",
    "audits",
    "balances",
    "bids",
    "commands",
    "deployment_files",
    "deployments",
    "escrow_points",
    "file_chunks",
    "files",
    "invites",
    "leases",
    "logs",
    "metadata",
    "network",
    "orders",
    "provider_nodes",
    "routes",
    "settlement_rounds",
    "transfers",
    "work_queue",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

network = Table(
    "network",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("genesis_ms", BigInteger, nullable=False),  # Unix time of height 0, milliseconds
    Column("block_ms", Integer, nullable=False),  # length of one block, milliseconds
    Column("settlement_interval", Integer, nullable=False),
    Column("fee_bps", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("block_ms > 0", name="block_positive"),
    CheckConstraint("settlement_interval > 0", name="interval_positive"),
    CheckConstraint("fee_bps >= 0 AND fee_bps <= 10000", name="fee_range"),
    # ``serve --clock manual``: the height an operator last advanced the clock to (NULL: the
    # network has never run on a manual clock)
    Column("manual_height", BigInteger, nullable=True),
    # the leader (migration 0018): its epoch, which each new leader increments and every
    # transaction of the leader's writer checks (fencing), its --advertise-url, and since when
    Column("leader_epoch", BigInteger, nullable=False, server_default="0"),
    Column("leader_url", Text, nullable=True),
    Column("leader_since_ms", BigInteger, nullable=True),
)
"""The one row that says when height 0 was and how long a block lasts, and who leads."""

accounts = Table(
    "accounts",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("created_height", BigInteger, nullable=False),
    CheckConstraint("role IN ('tenant', 'provider', 'auditor', 'operator')", name="role_known"),
    # suspended by an operator (migration 0016): by whom, at what height and wall-clock time;
    # NULL while the account is in good standing
    Column("suspended_by", BigInteger, nullable=True),
    Column("suspended_height", BigInteger, nullable=True),
    Column("suspended_ms", BigInteger, nullable=True),
)
"""Tenants, providers, auditors and operators. The bearer token itself is never stored, only
its SHA-256; a rotation replaces it."""

invites = Table(
    "invites",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("code_hash", String(64), nullable=False, unique=True),  # sha256 hex of the code
    Column("issued_by", BigInteger, ForeignKey("accounts.id"), nullable=False),  # an operator
    Column("issued_height", BigInteger, nullable=False),
    Column("issued_ms", BigInteger, nullable=False),
    Column("used_by", BigInteger, ForeignKey("accounts.id"), nullable=True),  # the new account
    Column("used_height", BigInteger, nullable=True),
    Column("used_ms", BigInteger, nullable=True),
)
"""Invite codes (``serve --registration invite``, migration 0016): each registers one account;
only the code's SHA-256 is kept, with who issued it and when, and which account used it."""

balances = Table(
    "balances",
    metadata,
    Column("account", String(64), primary_key=True),  # tenant:<id>, provider:<id>, escrow:<id>
    Column("amount", BigInteger, nullable=False),
    CheckConstraint("amount >= 0", name="not_negative"),
)
"""What each ledger account holds now: the sum of its transfers, kept in step with them."""

HOLDER_WHERE = "({0} LIKE 'tenant:%' OR {0} LIKE 'provider:%')"
"""The condition on a ledger account column (``.format(column)``) that the ledger's account
indexes cover: a tenant's or a provider's own account. A query that lists an account's
transfers repeats it word for word, so that both databases use the partial index."""

transfers = Table(
    "transfers",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("height", BigInteger, nullable=False),
    Column("source", String(64), nullable=False),
    Column("destination", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("lease_id", BigInteger, nullable=True),
    Column("start_block", BigInteger, nullable=True),
    Column("end_block", BigInteger, nullable=True),
    CheckConstraint("amount > 0", name="positive"),
    # partial: only the transfers of accounts someone lists (``GET /v1/accounts/me/
    # transactions``), not the payments out of escrows and the fees into the network's account
    # that every round appends, two per lease (a round over 100,000 leases writes 270,000 fewer
    # index entries)
    Index("ix_transfers_source_id", "source", "id",
          postgresql_where=text(HOLDER_WHERE.format("source")),
          sqlite_where=text(HOLDER_WHERE.format("source"))),
    Index("ix_transfers_destination_id", "destination", "id",
          postgresql_where=text(HOLDER_WHERE.format("destination")),
          sqlite_where=text(HOLDER_WHERE.format("destination"))),
)  # fmt: skip
"""The ledger: every movement of money, append-only (DESIGN: from, to, amount, block, reason)."""

deployments = Table(
    "deployments",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("tenant_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("manifest", Text, nullable=False),  # as submitted; orders are its order_specs()
    Column("max_runtime", BigInteger, nullable=True),  # jobs: blocks a lease may run
    Column("created_at", BigInteger, nullable=False),
    Column("state", String(24), nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("close_reason", String(24), nullable=True),
    Column("written_off", BigInteger, nullable=False),
    # jobs: the next block at which the market stops it or some of its leases (escrow run out,
    # max runtime reached), the core's ``Market.job_deadline``; NULL when nothing runs
    Column("deadline", BigInteger, nullable=True),
    # the orchestrator accepts for the tenant: {"policy", "params", "wait"} as JSON, or NULL
    Column("auto_accept", Text, nullable=True),
    CheckConstraint("kind IN ('deployment', 'job')", name="kind_known"),
    CheckConstraint("state IN ('active', 'insufficient_funds', 'closed')", name="state_known"),
    CheckConstraint("written_off >= 0", name="written_off_not_negative"),
    Index(None, "tenant_id", "id"),
    Index(None, "deadline"),
)
"""Deployments and jobs; the escrow is the ledger account ``escrow:<id>``."""

orders = Table(
    "orders",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=False),
    Column("spec_index", Integer, nullable=False),  # position in the manifest's order_specs()
    Column("service", String(64), nullable=False),
    Column("replica", Integer, nullable=False),
    Column("cpu", BigInteger, nullable=False),  # millicores
    Column("memory", BigInteger, nullable=False),  # bytes
    Column("storage", BigInteger, nullable=False),  # bytes
    Column("gpu", Integer, nullable=False),
    Column("max_price", BigInteger, nullable=False),  # micro-units per block
    Column("denom", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("close_reason", String(24), nullable=True),
    # how many orders its tenant had made before it (migration 0017): providers' listing of
    # open orders goes by (tenant_seq, id), every tenant's first order, then every second…
    Column("tenant_seq", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("state IN ('open', 'matched', 'closed')", name="state_known"),
    CheckConstraint("max_price > 0", name="max_price_positive"),
    Index(None, "state", "id"),
    Index(None, "deployment_id"),
    Index(None, "state", "tenant_seq", "id"),
)
"""One per service replica, with the resources and price ceiling copied out for queries."""

provider_nodes = Table(
    "provider_nodes",
    metadata,
    Column("provider_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("cpu", BigInteger, nullable=False),  # capacity: millicores
    Column("memory", BigInteger, nullable=False),  # bytes
    Column("storage", BigInteger, nullable=False),  # bytes
    Column("gpu", Integer, nullable=False),
    Column("attributes", Text, nullable=False),  # JSON object of placement attributes
    Column("gpu_models", Text, nullable=False),  # JSON list of "vendor/model"
    # the agent's pricing strategy, {"strategy", "params"} as JSON (NULL: not said)
    Column("pricing", Text, nullable=True),
    Column("state", String(16), nullable=False),
    Column("last_seen", BigInteger, nullable=False),  # height of the last heartbeat
    # where its leases are reached, as its last heartbeat registered them (NULL: nothing
    # registered): a JSON list of IP addresses, and the inclusive range of ports they publish
    # on; a lease's reported endpoint must be among them (kova_live.endpoints)
    Column("endpoint_addresses", Text, nullable=True),
    Column("endpoint_port_low", Integer, nullable=True),
    Column("endpoint_port_high", Integer, nullable=True),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    CheckConstraint("state IN ('online', 'lost')", name="state_known"),
    CheckConstraint("cpu >= 0 AND memory >= 0 AND storage >= 0 AND gpu >= 0", name="capacity"),
)
"""What a provider's agent last said about its machine, and its record (reputation)."""

bids = Table(
    "bids",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("order_id", BigInteger, ForeignKey("orders.id"), nullable=False),
    Column("provider_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("height", BigInteger, nullable=False),
    Column("response_time", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    CheckConstraint("price > 0", name="price_positive"),
    CheckConstraint("state IN ('open', 'accepted', 'lost', 'withdrawn')", name="state_known"),
    Index(None, "order_id", "state"),
    Index(None, "provider_id", "state"),
    Index(
        "uq_bids_open_per_provider",
        "order_id",
        "provider_id",
        unique=True,
        sqlite_where=text("state = 'open'"),
        postgresql_where=text("state = 'open'"),
    ),
)
"""Providers' offers; at most one open bid per provider and order."""

leases = Table(
    "leases",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=False),
    Column("order_id", BigInteger, ForeignKey("orders.id"), nullable=False),
    Column("provider_id", BigInteger, ForeignKey("accounts.id"), nullable=False),
    Column("bid_id", BigInteger, ForeignKey("bids.id"), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("cpu", BigInteger, nullable=False),
    Column("memory", BigInteger, nullable=False),
    Column("storage", BigInteger, nullable=False),
    Column("gpu", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_settled", BigInteger, nullable=False),
    Column("state", String(24), nullable=False),
    Column("debt", BigInteger, nullable=False),
    Column("debt_start", BigInteger, nullable=False),
    Column("debt_end", BigInteger, nullable=False),
    Column("blocks_paid", BigInteger, nullable=False),
    Column("total_paid", BigInteger, nullable=False),
    Column("written_off", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("close_reason", String(24), nullable=True),
    # what the provider's agent last reported of the lease's container (POST .../status)
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("endpoint", Text, nullable=True),  # running: where the service answers
    Column("exit_code", Integer, nullable=True),  # finished jobs
    Column("output", Text, nullable=True),  # finished jobs: the result (the end of stdout)
    Column("status_message", Text, nullable=True),  # failed: what went wrong
    Column("reported_at", BigInteger, nullable=True),  # height of the last report
    Column("runtime_blocks", BigInteger, nullable=True),  # a finished job's, as its agent saw
    CheckConstraint(
        "state IN ('active', 'insufficient_funds', 'closed')", name="state_known"
    ),
    CheckConstraint(
        "status IN ('pending', 'running', 'finished', 'failed')", name="status_known"
    ),
    CheckConstraint("debt >= 0 AND total_paid >= 0 AND written_off >= 0", name="money"),
    Index(None, "state", "deployment_id"),
    Index(None, "deployment_id"),
    Index(None, "provider_id", "state"),
    Index(None, "provider_id", "id"),  # a provider's leases newest first (GET /v1/leases)
)
"""Contracts made by accepting bids; the core's Lease, row for row. On PostgreSQL its pages are
filled to 70% (migration 0008), so that each round's rewrite of a lease stays in its page."""

settlement_rounds = Table(
    "settlement_rounds",
    metadata,
    Column("height", BigInteger, primary_key=True, autoincrement=False),
    Column("deployments_paid", Integer, nullable=False),
    Column("deployments_paused", Integer, nullable=False),
    Column("amount_paid", BigInteger, nullable=False),
)
"""One row per settlement round run; the height is the key, so no round runs twice."""

escrow_points = Table(
    "escrow_points",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=False),
    Column("height", BigInteger, nullable=False),
    Column("escrow", BigInteger, nullable=False),
    Column("burn_rate", BigInteger, nullable=False),  # micro-units a block, from this height
    Index(None, "deployment_id", "id"),
)
"""A deployment's escrow history: a point at each batch that moved its escrow other than by a
round's routine payments (created, deposits, pauses, refunds) or changed its burn rate (leases
started, paused, resumed, closed). Rounds add none (a round over 100,000 leases would add
100,000 rows): between two points the escrow falls at the first one's burn rate, a step at
each round (``GET /v1/deployments/{id}/escrow``)."""

work_queue = Table(
    "work_queue",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subject_id", BigInteger, nullable=True),  # the order, provider ... it is about
    Column("run_at", BigInteger, nullable=False),  # height at which it is due
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    CheckConstraint("state IN ('pending', 'done')", name="state_known"),
    Index(None, "state", "run_at"),
)
"""Background work, enqueued in the same transaction as the change that asks for it."""

logs = Table(
    "logs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("lease_id", BigInteger, ForeignKey("leases.id"), nullable=False),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=False),
    Column("height", BigInteger, nullable=False),  # when the orchestrator received it
    Column("created_ms", BigInteger, nullable=False),  # wall clock, Unix ms: for retention
    Column("stream", String(8), nullable=False),
    Column("line", Text, nullable=False),
    CheckConstraint("stream IN ('stdout', 'stderr')", name="stream_known"),
    Index(None, "deployment_id", "id"),
    Index(None, "created_ms"),
)
"""Lines of output the providers' agents ship from leased containers; kept 24 hours (a
background task deletes older ones)."""

files = Table(
    "files",
    metadata,
    Column("sha256", String(64), primary_key=True),  # of the content: its name in the folder
    Column("tenant_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_height", BigInteger, nullable=False),
    CheckConstraint("size >= 0", name="size_not_negative"),
)
"""Files tenants uploaded (``POST /v1/files``): a row says which tenant uploaded which content
(by its SHA-256); the content lives once, in :data:`file_chunks`."""

file_chunks = Table(
    "file_chunks",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True),  # 0, 1, ...: the chunks in order
    Column("data", LargeBinary, nullable=False),  # kova_live.files.CHUNK bytes (the last: fewer)
)
"""The content of uploaded files, in chunks, once per SHA-256: in the database, so every
orchestrator of a network (a leader and its standbys) serves every file, and the loss of a
machine loses none."""

deployment_files = Table(
    "deployment_files",
    metadata,
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Index(None, "sha256"),
)
"""Which uploaded files a deployment's manifest places in its containers: a provider holding one
of its leases may fetch them."""

routes = Table(
    "routes",
    metadata,
    Column("hostname", String(253), primary_key=True),
    Column("deployment_id", BigInteger, ForeignKey("deployments.id"), nullable=False),
    Column("service", String(63), nullable=False),
    Column("custom", Integer, nullable=False),  # 1: a name of the tenant's (SDL accept)
    Index(None, "deployment_id"),
)
"""The ingress's routes: a hostname to a deployment's service (whose running leases' endpoints
serve it). Each service that exposes a port globally gets ``<service>-<id>.<domain>``, and
each name in its ``accept`` list."""

commands = Table(
    "commands",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("account_id", BigInteger, nullable=False),  # who sent it (0: no account)
    Column("idem_key", String(128), nullable=False),  # its Idempotency-Key
    Column("method", String(8), nullable=False),
    Column("path", String(256), nullable=False),
    Column("request_sha256", String(64), nullable=False),  # of method, path and body
    Column("height", BigInteger, nullable=False),
    Column("status", Integer, nullable=False),
    Column("response", Text, nullable=False),  # the answer's JSON body
    Column("created_ms", BigInteger, nullable=False),
    Index("uq_commands_account_id_idem_key", "account_id", "idem_key", unique=True),
)
"""The command journal (:mod:`kova_live.journal`): each command the API applied, in commit
order, with the answer a retry under the same key gets back."""

audits = Table(
    "audits",
    metadata,
    Column("provider_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("auditor_id", BigInteger, ForeignKey("accounts.id"), primary_key=True),
    Column("attributes", Text, nullable=False),  # JSON object: what the auditor vouches for
    Column("height", BigInteger, nullable=False),  # when it was signed
)
"""Auditors' audits of providers (``POST /v1/providers/{id}/audits``, migration 0014): one per
auditor and provider, a new one replacing the old. A provider counts as audited by
``auditor:<auditor_id>`` while every attribute the audit signed still equals what its last
heartbeat registered (:mod:`kova_live.audits`)."""
