"""Memory: resident set growth over many unit-of-work operations, after a warm-up.

SQLite in memory runs an operation that reads one row by primary key and changes it,
so the database itself does not grow; MariaDB runs one-row writes (the rows live
in the server, not in this process).
"""

from __future__ import annotations

import contextlib
import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_engine
from benchmarks import machine
from benchmarks.model import REPOSITORIES, bump_one, reset_schema, write_one
from benchmarks.server import NO_TLS, database, given_url, server_facts
from benchmarks.stats import markdown_table

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

GOAL_MB = 5.0
_SAMPLES = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ops",
        type=int,
        default=100_000,
        help="operations on SQLite in memory after the warm-up (100000)",
    )
    parser.add_argument(
        "--mariadb-ops",
        type=int,
        default=20_000,
        help="operations on MariaDB after the warm-up (20000; 0 skips)",
    )
    parser.add_argument("--warmup", type=int, default=1_000, help="warm-up operations (1000)")
    parser.add_argument(
        "--database-url", help="reuse this MariaDB/MySQL (default: $DATABASE_URL, else a throwaway)"
    )


def rss_kib() -> int:
    """Resident set size of this process, from /proc/self/status (VmRSS), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(op: Callable[[], Any], ops: int, warmup: int) -> list[tuple[int, float]]:
    """(operations done, RSS growth in MB since the warm-up) at regular points."""
    for _ in range(warmup):
        op()
    gc.collect()
    base = rss_kib()
    points = [(0, 0.0)]
    step = max(ops // _SAMPLES, 1)
    done = 0
    while done < ops:
        count = min(step, ops - done)
        for _ in range(count):
            op()
        done += count
        gc.collect()
        points.append((done, (rss_kib() - base) / 1024))
    return points


def sqlite_points(args: argparse.Namespace) -> list[tuple[int, float]]:
    engine = create_engine("sqlite://")
    try:
        reset_schema(engine)
        units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES)
        return measure(lambda: units.run(bump_one), args.ops, args.warmup)
    finally:
        engine.dispose()


def run(args: argparse.Namespace) -> int:
    results: dict[str, tuple[list[tuple[int, float]], float]] = {}
    facts: dict[str, str] = {}
    start = time.monotonic()
    points = sqlite_points(args)
    results["SQLite memory, read + update one row"] = (points, time.monotonic() - start)
    if args.mariadb_ops > 0:
        with database(given_url(args.database_url), durable=False) as db:
            facts = server_facts(db)
            engine = create_engine(db.url, connect_args=NO_TLS)
            with contextlib.ExitStack() as stack:
                stack.callback(engine.dispose)
                reset_schema(engine)
                units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES)
                start = time.monotonic()
                points = measure(lambda: units.run(write_one), args.mariadb_ops, args.warmup)
                results["MariaDB, one-row write"] = (points, time.monotonic() - start)
    print(machine.describe(facts))
    print(f"warm-up {args.warmup} ops, then RSS (VmRSS) growth after gc.collect()\n")
    header = ["run", "ops", "growth, MB (at 10% steps)", "final growth, MB", "goal", "s"]
    rows = []
    for name, (points, seconds) in results.items():
        final = points[-1][1]
        trail = " ".join(f"{growth:.1f}" for _, growth in points[1:])
        verdict = "met" if final <= GOAL_MB else "MISSED"
        rows.append(
            [
                name,
                str(points[-1][0]),
                trail,
                f"{final:.2f}",
                f"<= {GOAL_MB:g} MB {verdict}",
                f"{seconds:.0f}",
            ]
        )
    print(markdown_table(header, rows))
    return 0
