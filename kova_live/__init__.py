"""kova_live: the Kova core in real time, as the real orchestrator (``kova-live serve``).

Built so far: the database (SQLAlchemy, Alembic migrations; PostgreSQL or an embedded SQLite
file), the block clock, accounts with bearer tokens, the ledger and operator credits, and the
first API routes. Deployments, bids, leases, settlement, the provider agent, the tenant CLI and
the ingress are the subject of the live orchestrator's issues and are not built yet.
``kova_core`` imports nothing from here.
"""
