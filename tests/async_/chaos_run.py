"""The chaos run for the async runner: thousands of operations from concurrent asyncio tasks.

The same workload, faults and audit as ``tests/chaos/chaos_run.py`` (whose code this one
uses): each operation reads a few catalog rows, inserts one uniquely keyed entry and
increments a shared counter, while the fault proxy cuts connections at random, before a
COMMIT reaches the server, after the server committed but before the client heard, in the
middle of a result set and at any command, each with FIN or RST. Here the operations are
``async def`` and run by an ``AsyncRunner`` on an AsyncEngine (asyncmy or aiomysql), from
many tasks of one event loop. At the end the database is read through the server's admin
socket and compared with what every call returned or raised.

Run it on its own (a throwaway MariaDB is started and removed)::

    python -m tests.async_.chaos_run --operations 10000 --tasks 50 --driver both --mode both
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import (
    AsyncSqlAlchemyUnitOfWork,
    create_async_engine,
    create_commit_marker_table,
    create_engine,
)
from servers.mysql_proxy import FaultProxy
from tests.chaos.chaos_run import (
    BUMP_COUNTER,
    CHAOS_FAULTS,
    GENEROUS_POLICY,
    INSERT_ENTRY,
    READ_CATALOG,
    RUN_LIMIT,
    ChaosReport,
    OperationOutcome,
    _audit,
    _counting_resolutions,
    _RetryCounter,
    check_catalog,
    create_schema,
    outcome_of,
    throwaway_server,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from servers.mariadb import MariaDBServer
    from servers.mysql_proxy import Fault
    from uow import AsyncRunner, RetryPolicy

DRIVERS = ("asyncmy", "aiomysql")


async def place_entry(uow: Any, key: str) -> tuple[str, int]:
    """The operation, awaited: read the catalog, insert the entry, increment the counter."""
    session = uow.session
    check_catalog((await session.execute(READ_CATALOG)).all())
    number = uow.attempt.number
    await session.execute(INSERT_ENTRY, {"key": key, "attempt": number})
    await session.execute(BUMP_COUNTER)
    return key, number


async def _call(runner: AsyncRunner[Any], key: str) -> OperationOutcome:
    started = time.monotonic()
    try:
        result = await runner.run(place_entry, key)
    except Exception as error:  # every failure is audited afterwards
        return outcome_of(key, started, error=error)
    return outcome_of(key, started, result)


async def _work(runner: AsyncRunner[Any], keys: Iterator[str], out: list[OperationOutcome]) -> None:
    # One iterator shared by the tasks: each key is run once, by whichever task is free.
    out.extend([await _call(runner, key) for key in keys])


async def run_chaos_async(
    server: MariaDBServer,
    database: str,
    *,
    driver: str = "asyncmy",
    operations: int = 2000,
    tasks: int = 50,
    markers: bool = True,
    probability: float = 0.04,
    seed: int = 20240611,
    policy: RetryPolicy = GENEROUS_POLICY,
    faults: Sequence[Fault] = CHAOS_FAULTS,
) -> ChaosReport:
    """Run ``operations`` async operations from ``tasks`` tasks through a chaotic proxy.

    The database must be empty; the tables are created here. ``markers`` turns commit
    markers on; without them nothing resolves a lost COMMIT (CommitOutcomeUnknown).
    """
    create_schema(server, database)
    mode = "markers" if markers else "default"
    prefix = f"{mode[0]}{uuid.uuid4().hex[:6]}"
    keys = iter([f"{prefix}-{index:06d}" for index in range(operations)])
    outcomes: list[OperationOutcome] = []
    retry_counter = _RetryCounter()
    if markers:
        schema = create_engine(server.url(database), poolclass=NullPool)
        try:
            create_commit_marker_table(schema)
        finally:
            schema.dispose()
    with FaultProxy(server.host, server.port) as proxy, _counting_resolutions() as resolutions:
        url = make_url(server.url(database, host=proxy.host, port=proxy.port))
        engine = create_async_engine(url.set(drivername=f"mysql+{driver}"), pool_size=tasks)
        try:
            runner = AsyncSqlAlchemyUnitOfWork.factory(
                engine, policy=policy, hooks=[retry_counter], commit_markers=markers
            )
            # One operation before the chaos: the dialect reads the server's settings and
            # the markers' first prune runs, so every COMMIT cut below is an operation's.
            await runner.run(place_entry, f"{prefix}-warmup")
            proxy.set_chaos(seed, probability, faults)
            started = time.monotonic()
            try:
                async with asyncio.timeout(RUN_LIMIT), asyncio.TaskGroup() as group:
                    for _ in range(tasks):
                        group.create_task(_work(runner, keys, outcomes))
            except TimeoutError:
                raise RuntimeError(f"operations still running after {RUN_LIMIT:.0f} s") from None
            elapsed = time.monotonic() - started
            proxy.set_chaos(None)
        finally:
            await engine.dispose()
        stats = proxy.stats()
    return _audit(
        server,
        database,
        mode=mode,
        workers=tasks,
        outcomes=outcomes,
        warmup=f"{prefix}-warmup",
        cuts={f"{kind.value}/{cut_mode.value}": n for (kind, cut_mode), n in stats.cuts.items()},
        chaos_draws=stats.chaos_triggered,
        retries=retry_counter.retries,
        resolved=dict(resolutions.outcomes),
        elapsed=elapsed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run async chaos runs on a throwaway server, print their figures; exit 1 if one is off."""
    parser = argparse.ArgumentParser(prog="python -m tests.async_.chaos_run", description=__doc__)
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--probability", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--driver", choices=[*DRIVERS, "both"], default="asyncmy")
    parser.add_argument("--mode", choices=["markers", "default", "both"], default="markers")
    args = parser.parse_args(argv)
    # The pool logs an ERROR with a traceback whenever the chaos cuts the ROLLBACK it sends
    # at check-in; expected here, and it would bury the figures.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    modes = ["markers", "default"] if args.mode == "both" else [args.mode]
    drivers = list(DRIVERS) if args.driver == "both" else [args.driver]
    ok = True
    with throwaway_server() as server:
        for driver in drivers:
            for mode in modes:
                database = server.create_database(f"achaos_{mode}_{uuid.uuid4().hex[:8]}")
                try:
                    report = asyncio.run(
                        run_chaos_async(
                            server,
                            database,
                            driver=driver,
                            operations=args.operations,
                            tasks=args.tasks,
                            markers=mode == "markers",
                            probability=args.probability,
                            seed=args.seed,
                        )
                    )
                finally:
                    server.drop_database(database)
                print(f"{driver}: {report.format()}")  # noqa: T201 -- the figures are the output
                ok = ok and report.consistent
    print("consistent" if ok else "INCONSISTENT")  # noqa: T201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
