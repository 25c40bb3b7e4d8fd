"""PostgreSQL (psycopg 3): the unit of work against an equally configured hand-written Session.

Every case runs on a throwaway PostgreSQL 15 server (fsync off, TLS off, loopback),
on a lean engine (``adapters.sqlalchemy.create_engine``) of its own, each round in a
shuffled order; the first round is a warm-up and is dropped. Ratios are paired per
round, then their median is taken. Statements per operation come from a separate,
untimed pass with ``pg_stat_statements`` tracking (it is off while timing): every
statement psycopg sends is one round trip, ``BEGIN`` included.

Cases: a one-row write and a read by primary key, hand-written and as an operation;
the write with lost COMMITs settled by transaction id (``settle_lost_commits``: one
more round trip per write) and with commit markers.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from adapters.postgresql import settle_lost_commits
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_commit_marker_table, create_engine
from benchmarks.model import REPOSITORIES, SEED_ROWS, Item, read_one, reset_schema, write_one
from benchmarks.stats import markdown_table, median, ratio_summary
from servers.postgres import PostgresServer, ensure_postgres_installed

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    Op = Callable[[], object]

COMPARISONS: tuple[tuple[str, str, float | None, str], ...] = (
    ("uow_write", "session_write", 1.03, "one-row write vs an equally configured Session"),
    ("uow_read", "session_read", 1.03, "read by primary key vs an equally configured Session"),
    ("uow_write_xid", "uow_write", None, "lost COMMITs settled by transaction id, on vs off"),
    ("uow_write_markers", "uow_write", None, "commit markers on vs off"),
)
STATEMENT_GOALS = (("uow_write", 3.0), ("uow_read", 3.0))
"""Most statements per operation: BEGIN, the statement, COMMIT (no reset ROLLBACK, no ping)."""
KINDS = ("BEGIN", "INSERT", "SELECT", "COMMIT", "ROLLBACK", "ping", "other")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=21, help="rounds with the warm-up (21)")
    parser.add_argument("--ops", type=int, default=200, help="operations per case per round")
    parser.add_argument("--seed", type=int, default=None, help="seed of the shuffled order")


@dataclass
class Result:
    name: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Client CPU time per operation (this process only: no server, no waiting)."""
    statements: dict[str, float] = field(default_factory=dict)

    def median_us(self) -> float:
        return median(self.seconds) * 1e6

    def cpu_us(self) -> float:
        return median(self.cpu) * 1e6


def hand_write(engine: Engine) -> Op:
    def op() -> None:
        with Session(engine) as session:
            session.add(Item(name="one", qty=1))
            session.commit()

    return op


def hand_read(engine: Engine) -> Op:
    ids = _ids()

    def op() -> int:
        with Session(engine) as session:
            item = session.get(Item, ids())
            assert item is not None  # noqa: S101 -- the seed rows exist
            return item.qty

    return op


def uow_write(engine: Engine, **options: Any) -> Op:
    units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES, **options)
    return lambda: units.run(write_one)


def uow_read(engine: Engine) -> Op:
    units = SqlAlchemyUnitOfWork.factory(engine, repositories=REPOSITORIES)
    ids = _ids()
    return lambda: units.run(read_one, ids())


def _ids() -> Callable[[], int]:
    counter = iter(range(10**12))
    return lambda: next(counter) % SEED_ROWS + 1


def build(url: str, engines: list[Engine]) -> dict[str, Op]:
    """One lean engine per case, so that no case warms another's pool."""

    def lean() -> Engine:
        engine = create_engine(url, pool_size=1)
        engines.append(engine)
        return engine

    xid_engine = lean()
    settle_lost_commits(xid_engine)
    markers_engine = lean()
    return {
        "session_write": hand_write(lean()),
        "uow_write": uow_write(lean()),
        "uow_write_xid": uow_write(xid_engine),
        "uow_write_markers": uow_write(markers_engine, commit_markers=True),
        "session_read": hand_read(lean()),
        "uow_read": uow_read(lean()),
    }


def _time(op: Op, count: int) -> tuple[float, float]:
    """Wall time and client CPU time per operation."""
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        op()
    return (time.perf_counter() - start) / count, (time.process_time() - cpu) / count


def _kind(query: str) -> str:
    words = query.split()
    head = words[0].upper() if words else ""
    if head in {"BEGIN", "COMMIT", "ROLLBACK", "INSERT"}:
        return head
    if query.strip().upper() in {"SELECT 1", "SELECT $1"}:
        return "ping"
    return "SELECT" if head == "SELECT" else "other"


class Statements:
    """Counts the app role's statements per operation with pg_stat_statements."""

    def __init__(self, server: PostgresServer, database: str) -> None:
        self.server = server
        self.database = database
        server.admin("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", database=database)
        self.tracking(on=False)

    def tracking(self, *, on: bool) -> None:
        value = "top" if on else "none"
        self.server.admin(f"ALTER SYSTEM SET pg_stat_statements.track = '{value}'")
        self.server.admin("SELECT pg_reload_conf()")
        time.sleep(0.2)  # backends apply a reload at their next statement

    def count(self, op: Op, count: int) -> dict[str, float]:
        self.server.admin("SELECT pg_stat_statements_reset()", database=self.database)
        for _ in range(count):
            op()
        rows = self.server.admin(
            "SELECT s.query, s.calls FROM pg_stat_statements s "
            "JOIN pg_roles r ON r.oid = s.userid JOIN pg_database d ON d.oid = s.dbid "
            "WHERE r.rolname = %s AND d.datname = %s",
            [self.server.user, self.database],
            database=self.database,
        )
        kinds: Counter[str] = Counter()
        for query, calls in rows:
            kinds[_kind(str(query))] += int(calls)
        return {kind: kinds[kind] / count for kind in KINDS}


def measure(ops: dict[str, Op], rounds: int, count: int, seed: int | None) -> dict[str, Result]:
    shuffle = random.Random(seed)
    results = {name: Result(name) for name in ops}
    for round_number in range(rounds):
        order = list(ops)
        shuffle.shuffle(order)
        for name in order:
            seconds, cpu = _time(ops[name], count)
            if round_number:  # the first round warms pools and caches
                results[name].seconds.append(seconds)
                results[name].cpu.append(cpu)
    return results


def report(results: dict[str, Result]) -> str:
    header = ["case", "us/op", "cpu us/op", "vs", "ratio", "min-max", "IQR", "stmts", *KINDS]
    rows = []
    for result in results.values():
        counts = result.statements
        stmts = [f"{sum(counts.values()):.2f}", *(f"{counts.get(k, 0):.2f}" for k in KINDS)]
        comparisons = [c for c in COMPARISONS if c[0] == result.name]
        times = [result.name, f"{result.median_us():.0f}", f"{result.cpu_us():.0f}"]
        if not comparisons:
            rows.append([*times, "-", "-", "-", "-", *stmts])
        for case, baseline, _goal, _label in comparisons:
            ratios = _ratios(results, case, baseline)
            rows.append([*times, baseline, *ratio_summary(ratios), *stmts])
    return markdown_table(header, rows)


def _ratios(
    results: dict[str, Result], case: str, baseline: str, *, cpu: bool = False
) -> list[float]:
    """Paired per-round ratios of wall time (or client CPU time)."""
    mine, theirs = results[case], results[baseline]
    pairs = (
        zip(mine.cpu, theirs.cpu, strict=True)
        if cpu
        else zip(mine.seconds, theirs.seconds, strict=True)
    )
    return [a / b for a, b in pairs]


def goals(results: dict[str, Result]) -> str:
    lines = ["goals and costs:"]
    for case, baseline, goal, label in COMPARISONS:
        ratio = median(_ratios(results, case, baseline))
        cpu = median(_ratios(results, case, baseline, cpu=True))
        extra = results[case].median_us() - results[baseline].median_us()
        extra_cpu = results[case].cpu_us() - results[baseline].cpu_us()
        costs = f"{extra:+.0f} us per op, client CPU {cpu:.3f}x ({extra_cpu:+.0f} us)"
        if goal is None:
            lines.append(f"- {case} {label}: {ratio:.3f}x ({costs})")
        else:
            verdict = "met" if ratio <= goal else "MISSED"
            lines.append(f"- {case} {label}: {ratio:.3f}x (goal <= {goal:.2f}x) {verdict}; {costs}")
    for case, most in STATEMENT_GOALS:
        counts = results[case].statements
        total = sum(counts.values())
        verdict = "met" if total <= most else "MISSED"
        detail = f"ROLLBACK {counts.get('ROLLBACK', 0):.2f}, ping {counts.get('ping', 0):.2f}"
        lines.append(
            f"- statements per op ({case}): {total:.2f} ({detail}; goal <= {most:g}) {verdict}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.rounds < 2 or args.ops < 1:
        raise SystemExit("--rounds must be at least 2 (the first is a warm-up), --ops at least 1")
    started = time.monotonic()
    ensure_postgres_installed()
    settings = {"shared_preload_libraries": "pg_stat_statements", "ssl": "off"}
    engines: list[Engine] = []
    with PostgresServer(settings=settings) as server:
        name = server.create_database(f"bench_{uuid.uuid4().hex[:8]}")
        url = server.url(name)
        setup = create_engine(url)
        try:
            reset_schema(setup)
            create_commit_marker_table(setup)
        finally:
            setup.dispose()
        statements = Statements(server, name)
        try:
            ops = build(url, engines)
            results = measure(ops, args.rounds, args.ops, args.seed)
            statements.tracking(on=True)
            for case, op in ops.items():
                results[case].statements = statements.count(op, args.ops)
        finally:
            for engine in engines:
                engine.dispose()
        [(server_version,)] = server.admin("SHOW server_version")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load}; Python "
        f"{platform.python_version()}, SQLAlchemy {version('SQLAlchemy')}, psycopg "
        f"{version('psycopg')}; PostgreSQL {server_version} (fsync off, loopback, no TLS)"
    )
    print(
        f"rounds: {args.rounds} (first dropped), ops per case per round: {args.ops}, "
        f"wall time {time.monotonic() - started:.0f} s\n"
    )
    print(report(results))
    print()
    print(goals(results))
    return 0
