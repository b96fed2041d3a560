"""Make ``upgrade-ec78abb.json.gz``: a network written by the orchestrator of commit ec78abb
(its market commands still ran as SQL, before it ran the core's ``Market``), for the upgrade
test in ``tests/live/test_state.py``. Not run by the suite: the orchestrator it needs is gone.

    git worktree add /tmp/old ec78abb
    cp tests/live/data/make_upgrade_fixture.py /tmp/old/
    cd /tmp/old && PYTHONPATH=/tmp/old /path/to/kova/.venv/bin/python make_upgrade_fixture.py OUT

It records the simulator's ``budget-exhaustion`` scenario (40 simulated minutes, a fifth of its
providers), replays the first two thirds of its commands over HTTP into that orchestrator on a
fresh PostgreSQL database (``kova-live serve --clock manual``), and writes every table's rows,
the schema's Alembic revision, and the replayer's map from the log's ids to the server's, as
gzipped JSON.
"""

import asyncio
import gzip
import json
import sys
from pathlib import Path

from sqlalchemy import select, text

import kova_live
from kova_live import schema
from kova_live.db import async_engine
from kova_live.replay import Replayer
from tests.live.conftest import Server, fresh_database
from tests.live.test_operators import operator_token
from tests.live.test_state import recorded

out = Path(sys.argv[1])
here = Path.cwd() / "upgrade-work"
here.mkdir(exist_ok=True)
print("orchestrator:", kova_live.__file__)
header, commands = recorded("budget-exhaustion", "40m", 5, here)
prefix = commands[: len(commands) * 2 // 3]
with fresh_database("postgresql", here) as url:
    server = Server(url, here / "data", 1.0, "--clock", "manual", "--order-expiry", "1000000000")
    try:
        replayer = Replayer(server.client, operator_token(url))
        replayer.replay(prefix)
    finally:
        server.stop()

    async def dump() -> tuple[dict, str]:
        engine = async_engine(url)
        tables = {}
        async with engine.connect() as c:
            for table in schema.metadata.sorted_tables:
                query = select(table).order_by(*table.primary_key.columns)
                tables[table.name] = [dict(r) for r in (await c.execute(query)).mappings()]
            version = await c.scalar(text("SELECT version_num FROM alembic_version"))
        await engine.dispose()
        return tables, version

    tables, version = asyncio.run(dump())
with gzip.open(out, "wt") as f:
    json.dump({"commit": "ec78abb", "alembic": version, "scenario": "budget-exhaustion",
               "duration": "40m", "divisor": 5, "commands": len(prefix), "ids": replayer.ids,
               "tables": tables}, f, sort_keys=True, default=str)  # fmt: skip
