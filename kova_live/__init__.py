"""kova_live: the Kova core in real time, as the real orchestrator (``kova-live serve``).

Built so far: the database (SQLAlchemy, Alembic migrations; PostgreSQL or an embedded SQLite
file), the block clock, accounts with bearer tokens, the ledger and operator credits, and
deployments with their escrow and orders (create, show, deposit, close). Bids, leases,
settlement, the provider agent, the tenant CLI and the ingress are not built yet: see
``docs/live.md``.
``kova_core`` imports nothing from here.
"""
