"""Async: the AsyncRunner's one-row write next to a hand-written AsyncSession, and throughput.

Every case runs on a throwaway MariaDB (the main table's server settings) through asyncmy,
on an AsyncEngine of its own from ``adapters.sqlalchemy.create_async_engine`` (the lean
reset on return, nothing else changed), each round in a shuffled order on one event loop;
the first round is a warm-up and is dropped. Ratios are paired per round, then their
median is taken; statements per operation come from the server's counters around each
case (as in the main table).

Cases: ``session_async`` ``async with AsyncSession(engine) as s: s.add(...); await
s.commit()`` (the equally configured hand-written write); ``uow_async`` the same write as
an ``async def`` operation of ``AsyncSqlAlchemyUnitOfWork.factory(engine)``; and, for
reference, ``session_async_plain`` on SQLAlchemy's own ``create_async_engine`` (the reset
ROLLBACK included). Then throughput: the same one-row writes from 100 concurrent async
operations, against the sync runner running them in a pool of 100 threads (PyMySQL),
both with 20 pooled connections, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine as sqlalchemy_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_create_async_engine

from adapters.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    SqlAlchemyUnitOfWork,
    create_async_engine,
    create_engine,
)
from benchmarks import machine
from benchmarks.counters import COUNTERS, ServerCounters
from benchmarks.model import REPOSITORIES, Item, drop_schema, reset_schema, write_one
from benchmarks.server import NO_TLS, database, given_url, server_facts
from benchmarks.stats import markdown_table, median, ratio_summary

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from benchmarks.server import Database

    AsyncOp = Callable[[], Awaitable[object]]

COMPARISONS: tuple[tuple[str, str, float | None, str], ...] = (
    ("uow_async", "session_async", 1.05, "one-row write vs an equally configured AsyncSession"),
    ("session_async", "session_async_plain", None, "lean engine vs SQLAlchemy's own"),
)
STATEMENT_GOALS = (("uow_async", 2.0),)
"""Most statements per operation: INSERT and COMMIT (no reset ROLLBACK, no ping)."""
SHORT = {
    "Questions": "stmts",
    "Com_insert": "INSERT",
    "Com_select": "SELECT",
    "Com_commit": "COMMIT",
    "Com_rollback": "ROLLBACK",
    "Com_admin_commands": "ping",
}
POOL = 20
"""Pooled connections of each engine of the throughput runs."""


class AsyncItemRepository(AsyncSqlAlchemyRepository[Item]):
    model = Item


ASYNC_REPOSITORIES = {"items": AsyncItemRepository}


async def write_one_async(uow: Any) -> None:
    uow.items.add(Item(name="one", qty=1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=21, help="rounds with the warm-up (21)")
    parser.add_argument("--ops", type=int, default=200, help="operations per case per round")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="concurrent operations (throughput, 100)"
    )
    parser.add_argument(
        "--throughput-ops", type=int, default=2000, help="operations per throughput round"
    )
    parser.add_argument(
        "--throughput-rounds", type=int, default=5, help="throughput rounds of each kind (5)"
    )
    parser.add_argument(
        "--database-url",
        help="reuse this MariaDB/MySQL (mysql+pymysql://...; default: $DATABASE_URL, else a "
        "throwaway server)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the shuffled order")


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Client CPU time per operation (this process only: no server, no waiting)."""
    counts: list[dict[str, float]] = field(default_factory=list)

    def median_us(self) -> float:
        return median(self.seconds) * 1e6

    def cpu_us(self) -> float:
        return median(self.cpu) * 1e6

    def statements(self, name: str) -> float:
        return median([counts[name] for counts in self.counts]) if self.counts else 0.0

    def round_trips(self) -> float:
        return self.statements("Questions") + self.statements("Com_admin_commands")


def hand_write(engine: AsyncEngine) -> AsyncOp:
    async def op() -> None:
        async with AsyncSession(engine) as session:
            session.add(Item(name="one", qty=1))
            await session.commit()

    return op


def uow_write(engine: AsyncEngine) -> AsyncOp:
    units = AsyncSqlAlchemyUnitOfWork.factory(engine, repositories=ASYNC_REPOSITORIES)

    async def op() -> None:
        await units.run(write_one_async)

    return op


async def _time(op: AsyncOp, count: int) -> tuple[float, float]:
    """Wall time and client CPU time per operation."""
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        await op()
    return (time.perf_counter() - start) / count, (time.process_time() - cpu) / count


async def measure(
    ops: dict[str, AsyncOp], counters: ServerCounters, args: argparse.Namespace
) -> dict[str, Result]:
    shuffle = random.Random(args.seed)
    results = {name: Result(name) for name in ops}
    for round_number in range(args.rounds):
        order = list(ops)
        shuffle.shuffle(order)
        for name in order:
            before = counters.read()
            seconds, cpu = await _time(ops[name], args.ops)
            counts = counters.delta(counters.read(), before)
            if round_number:  # the first round warms pools and caches
                results[name].seconds.append(seconds)
                results[name].cpu.append(cpu)
                results[name].counts.append({n: counts[n] / args.ops for n in COUNTERS})
    return results


@dataclass
class Throughput:
    """Operations per second of the concurrent runs, round by round."""

    async_rates: list[float] = field(default_factory=list)
    sync_rates: list[float] = field(default_factory=list)
    async_cpu: list[float] = field(default_factory=list)
    sync_cpu: list[float] = field(default_factory=list)
    """Client CPU time per operation."""


async def concurrent_async(
    engine: AsyncEngine, count: int, concurrency: int
) -> tuple[float, float]:
    """Operations per second and CPU per operation: ``count`` writes from ``concurrency`` tasks."""
    units = AsyncSqlAlchemyUnitOfWork.factory(engine, repositories=ASYNC_REPOSITORIES)
    remaining = iter(range(count))

    async def work() -> None:
        for _ in remaining:  # shared: each write is done once, by whichever task is free
            await units.run(write_one_async)

    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(work())
    elapsed = time.perf_counter() - start
    return count / elapsed, (time.process_time() - cpu) / count


def concurrent_sync(pool: ThreadPoolExecutor, units: Any, count: int) -> tuple[float, float]:
    """The same writes by the sync runner, submitted to a pool of threads."""
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for future in [pool.submit(units.run, write_one) for _ in range(count)]:
        future.result()
    elapsed = time.perf_counter() - start
    return count / elapsed, (time.process_time() - cpu) / count


async def throughput(db: Database, async_url: str, args: argparse.Namespace) -> Throughput:
    found = Throughput()
    async_engine = create_async_engine(async_url, pool_size=POOL, max_overflow=0)
    sync_engine = create_engine(db.url, pool_size=POOL, max_overflow=0, connect_args=NO_TLS)
    units = SqlAlchemyUnitOfWork.factory(sync_engine, repositories=REPOSITORIES)
    try:
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="sync-runner") as pool:
            # A warm-up of each: both pools full, caches compiled.
            await concurrent_async(async_engine, POOL * 5, args.concurrency)
            await asyncio.to_thread(concurrent_sync, pool, units, POOL * 5)
            for _ in range(args.throughput_rounds):
                rate, cpu = await concurrent_async(
                    async_engine, args.throughput_ops, args.concurrency
                )
                found.async_rates.append(rate)
                found.async_cpu.append(cpu)
                rate, cpu = await asyncio.to_thread(
                    concurrent_sync, pool, units, args.throughput_ops
                )
                found.sync_rates.append(rate)
                found.sync_cpu.append(cpu)
    finally:
        await async_engine.dispose()
        sync_engine.dispose()
    return found


def _ratios(
    results: dict[str, Result], case: str, baseline: str, *, cpu: bool = False
) -> list[float]:
    mine, theirs = results[case], results[baseline]
    pairs = (
        zip(mine.cpu, theirs.cpu, strict=True)
        if cpu
        else zip(mine.seconds, theirs.seconds, strict=True)
    )
    return [a / b for a, b in pairs]


def report(results: dict[str, Result]) -> str:
    header = [
        "case", "us/op", "cpu us/op", "vs", "ratio", "min-max", "IQR", "round trips",
        *(SHORT[name] for name in COUNTERS),
    ]  # fmt: skip
    rows = []
    for result in results.values():
        counts = [f"{result.round_trips():.2f}"]
        counts += [f"{result.statements(name):.2f}" for name in COUNTERS]
        times = [result.name, f"{result.median_us():.0f}", f"{result.cpu_us():.0f}"]
        comparisons = [c for c in COMPARISONS if c[0] == result.name]
        if not comparisons:
            rows.append([*times, "-", "-", "-", "-", *counts])
        for case, baseline, _goal, _label in comparisons:
            rows.append(
                [*times, baseline, *ratio_summary(_ratios(results, case, baseline)), *counts]
            )
    return markdown_table(header, rows)


def goals(results: dict[str, Result], found: Throughput, args: argparse.Namespace) -> str:
    lines = ["goals and costs:"]
    for case, baseline, goal, label in COMPARISONS:
        ratio = median(_ratios(results, case, baseline))
        cpu = median(_ratios(results, case, baseline, cpu=True))
        extra = results[case].median_us() - results[baseline].median_us()
        costs = f"{extra:+.0f} us per op, client CPU {cpu:.3f}x"
        if goal is None:
            lines.append(f"- {case} {label}: {ratio:.3f}x ({costs})")
        else:
            verdict = "met" if ratio <= goal else "MISSED"
            lines.append(f"- {case} {label}: {ratio:.3f}x (goal <= {goal:.2f}x) {verdict}; {costs}")
    for case, most in STATEMENT_GOALS:
        trips = results[case].round_trips()
        verdict = "met" if trips <= most else "MISSED"
        detail = (
            f"INSERT {results[case].statements('Com_insert'):.2f}, COMMIT "
            f"{results[case].statements('Com_commit'):.2f}, ROLLBACK "
            f"{results[case].statements('Com_rollback'):.2f}"
        )
        lines.append(
            f"- statements per op ({case}): {trips:.2f} ({detail}; goal <= {most:g}) {verdict}"
        )
    async_rate, sync_rate = median(found.async_rates), median(found.sync_rates)
    paired = [a / s for a, s in zip(found.async_rates, found.sync_rates, strict=True)]
    lines.append(
        f"- throughput, {args.concurrency} concurrent one-row writes, {POOL} pooled connections "
        f"each: async {async_rate:.0f} ops/s (client CPU {median(found.async_cpu) * 1e6:.0f} "
        f"us/op) vs the sync runner in {args.concurrency} threads {sync_rate:.0f} ops/s "
        f"({median(found.sync_cpu) * 1e6:.0f} us/op): {median(paired):.2f}x "
        f"(rounds {', '.join(f'{r:.2f}' for r in paired)})"
    )
    return "\n".join(lines)


async def _run(db: Database, args: argparse.Namespace) -> tuple[dict[str, Result], Throughput]:
    async_url = (
        make_url(db.url).set(drivername="mysql+asyncmy").render_as_string(hide_password=False)
    )
    engines = [
        create_async_engine(async_url, pool_size=1),
        create_async_engine(async_url, pool_size=1),
        sqlalchemy_create_async_engine(async_url, pool_size=1),
    ]
    counters = ServerCounters(db)
    try:
        ops = {
            "session_async": hand_write(engines[0]),
            "uow_async": uow_write(engines[1]),
            "session_async_plain": hand_write(engines[2]),
        }
        results = await measure(ops, counters, args)
    finally:
        counters.close()
        for engine in engines:
            await engine.dispose()
    return results, await throughput(db, async_url, args)


def run(args: argparse.Namespace) -> int:
    if args.rounds < 2 or args.ops < 1:
        raise SystemExit("--rounds must be at least 2 (the first is a warm-up), --ops at least 1")
    started = time.monotonic()
    with database(given_url(args.database_url), durable=False) as db:
        schema = sqlalchemy_create_engine(db.url, connect_args=NO_TLS)
        try:
            reset_schema(schema)
            facts = server_facts(db)
            results, found = asyncio.run(_run(db, args))
            drop_schema(schema)
        finally:
            schema.dispose()
    print(machine.describe(facts))
    print(f"asyncmy {version('asyncmy')}, driver of every async case")
    print(
        f"rounds: {args.rounds} (first dropped), ops per case per round: {args.ops}; "
        f"throughput: {args.throughput_rounds} rounds of {args.throughput_ops} ops each; "
        f"wall time {time.monotonic() - started:.0f} s\n"
    )
    print(report(results))
    print()
    print(goals(results, found, args))
    return 0
