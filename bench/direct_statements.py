"""What SQLAlchemy's execution layer costs per statement, and what ``federation.direct`` saves of it.

One unit of work of five single-row SELECTs by primary key and three conditional UPDATEs (the shape of a
checkout's reads and writes) on a scratch table, run in a loop three ways in the same run:

1. ``session.execute`` of the Core statements (the way most of the code runs them);
2. ``federation.direct.Statement.run`` of the same statements;
3. the bare driver: asyncpg's ``fetchrow``/``execute`` in an asyncpg transaction on a connection of its own, the
   floor under both.

Prints CPU and wall time per unit of work and per statement. PostgreSQL only, for the bare driver's floor;
``bench/circulation.py`` measures what the direct statements give on both engines.

    .venv/bin/python bench/direct_statements.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/tc_bench
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select, text, update  # noqa: E402

from federation.db import Database  # noqa: E402
from federation.direct import Statement  # noqa: E402

TABLE = Table(
    "bench_direct", MetaData(), Column("id", String, primary_key=True), Column("status", String), Column("n", Integer)
)
READ = select(TABLE.c.id, TABLE.c.status, TABLE.c.n).where(TABLE.c.id == bindparam("p_id"))
WRITE = (
    update(TABLE)
    .where(TABLE.c.id == bindparam("p_id"), TABLE.c.status == bindparam("p_status"))
    .values(n=TABLE.c.n + 1)
)
READS, WRITES = 5, 3


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database", required=True, help="a PostgreSQL URL (postgresql+asyncpg://...)")
    ap.add_argument("-n", type=int, default=3000, help="units of work per way, per round")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if "asyncpg" not in args.database:
        sys.exit("PostgreSQL only: the floor measured here is asyncpg's")
    db = Database(args.database)
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS bench_direct"))
        await conn.execute(text("CREATE TABLE bench_direct (id text PRIMARY KEY, status text, n int)"))
        await conn.execute(text("INSERT INTO bench_direct SELECT 'k' || g, 'a', 0 FROM generate_series(1, 100) g"))
    read, write = Statement(READ), Statement(WRITE)
    raw = await asyncpg.connect(args.database.replace("postgresql+asyncpg", "postgresql"))

    async def through_session() -> None:
        async with db.uow() as uow:
            for i in range(READS):
                (await uow.session.execute(READ, {"p_id": f"k{i + 1}"})).first()
            for i in range(WRITES):
                await uow.session.execute(WRITE, {"p_id": f"k{i + 1}", "p_status": "a"})
            await uow.commit()

    async def direct() -> None:
        async with db.uow() as uow:
            for i in range(READS):
                (await read.run(uow.session, {"p_id": f"k{i + 1}"})).first()
            for i in range(WRITES):
                await write.run(uow.session, {"p_id": f"k{i + 1}", "p_status": "a"})
            await uow.commit()

    async def bare() -> None:
        async with raw.transaction():
            for i in range(READS):
                await raw.fetchrow("SELECT id, status, n FROM bench_direct WHERE id = $1", f"k{i + 1}")
            for i in range(WRITES):
                await raw.execute("UPDATE bench_direct SET n = n + 1 WHERE id = $1 AND status = $2", f"k{i + 1}", "a")

    ways = (("session.execute", through_session), ("direct.Statement", direct), ("bare asyncpg", bare))
    print(f"units of work of {READS} SELECTs and {WRITES} UPDATEs, {args.n} per way and round; CPU of this process")
    for r in range(args.rounds):
        for name, way in ways:
            for _ in range(200):  # warm: pool, prepared statements, plans
                await way()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(args.n):
                await way()
            cpu_ms = (time.process_time() - cpu) / args.n * 1e3
            wall_ms = (time.perf_counter() - wall) / args.n * 1e3
            per = cpu_ms / (READS + WRITES) * 1e3
            print(f"round {r + 1}  {name:17s} {cpu_ms:6.3f} ms CPU ({per:5.0f} µs a statement)  wall {wall_ms:6.3f} ms")
    await raw.close()
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE bench_direct"))
    await db.dispose()


if __name__ == "__main__":
    asyncio.run(main())
