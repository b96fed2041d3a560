"""kova_live: the Kova core in real time, as the real orchestrator (``kova-live serve``).

Built so far: the database (SQLAlchemy, Alembic migrations; PostgreSQL or an embedded SQLite
file), the block clock, accounts with bearer tokens, the ledger and operator credits,
deployments with their escrow and orders, provider heartbeats, bids, leases, settlement rounds,
pause, resume and close, decided by the core's own settlement and lifecycle functions. Not built
yet (see ``docs/live.md``): leases on jobs, the background queue, logs, files, candidates,
metrics, the OpenAPI document, the tenant CLI, the provider agent and the ingress.
``kova_core`` imports nothing from here.
"""
