"""The main run: every case once per round, in shuffled order; one table at the end."""

from __future__ import annotations

import gc
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import create_engine as sqlalchemy_create_engine
from sqlalchemy import inspect as sqlalchemy_inspect

from adapters.sqlalchemy import MARKER_TABLE
from adapters.sqlalchemy import commit_markers_table as markers_table
from benchmarks import machine
from benchmarks.cases import CASES, COMPARISONS, MARIADB, STATEMENT_GOALS, Builder, Case
from benchmarks.counters import COUNTERS, ServerCounters
from benchmarks.model import drop_schema, reset_schema
from benchmarks.server import NO_TLS, database, given_url, server_facts
from benchmarks.stats import markdown_table, median, ratio_summary

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from benchmarks.server import Database

SHORT = {
    "Questions": "stmts",
    "Com_insert": "INSERT",
    "Com_select": "SELECT",
    "Com_commit": "COMMIT",
    "Com_rollback": "ROLLBACK",
    "Com_admin_commands": "ping",
}


@dataclass
class Result:
    case: Case
    seconds_per_op: list[float] = field(default_factory=list)
    cpu_per_op: list[float] = field(default_factory=list)
    """Client CPU time per operation (this process only: no server, no waiting)."""
    counts_per_op: list[dict[str, float]] = field(default_factory=list)

    def median_us(self) -> float:
        return median(self.seconds_per_op) * 1e6

    def statements(self, name: str) -> float | None:
        if not self.counts_per_op:
            return None
        return median([counts[name] for counts in self.counts_per_op])

    def round_trips(self) -> float | None:
        questions, pings = self.statements("Questions"), self.statements("Com_admin_commands")
        return None if questions is None or pings is None else questions + pings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = [case.name for case in CASES]
    parser.add_argument(
        "--rounds",
        type=int,
        default=31,
        help="rounds including the warm-up round, which is dropped (default 31)",
    )
    parser.add_argument(
        "--ops", type=int, default=200, help="operations per case per round (default 200)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="CASE",
        choices=names,
        help=f"run only these cases (of: {', '.join(names)})",
    )
    parser.add_argument(
        "--database-url",
        help="reuse this MariaDB/MySQL (mysql+pymysql://...; default: "
        "$DATABASE_URL, else a throwaway server)",
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="throwaway server with an fsync per COMMIT (the server default)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the shuffled order")


def run(args: argparse.Namespace) -> int:
    if args.rounds < 2 or args.ops < 1:
        raise SystemExit("--rounds must be at least 2 (the first is a warm-up), --ops at least 1")
    cases = [case for case in CASES if not args.only or case.name in args.only]
    needs_mariadb = any(case.db == MARIADB for case in cases)
    url = given_url(args.database_url) if needs_mariadb else None
    started = time.monotonic()
    if not needs_mariadb:
        results = _measure(cases, None, args)
        facts: dict[str, str] = {}
    else:
        with database(url, durable=args.durable) as db:
            schema_engine = sqlalchemy_create_engine(db.url, connect_args=NO_TLS)
            try:
                had_markers = sqlalchemy_inspect(schema_engine).has_table(MARKER_TABLE)
                reset_schema(schema_engine)
                facts = server_facts(db)
                results = _measure(cases, db, args)
                drop_schema(schema_engine)
                if not had_markers:
                    markers_table.drop(schema_engine, checkfirst=True)
            finally:
                schema_engine.dispose()
    print(machine.describe(facts))
    print(
        f"rounds: {args.rounds} (first dropped), ops per case per round: {args.ops}, "
        f"wall time {time.monotonic() - started:.0f} s\n"
    )
    print(report(results))
    print()
    print(goals(results))
    return 0


def _measure(
    cases: Sequence[Case],
    db: Database | None,
    args: argparse.Namespace,
) -> dict[str, Result]:
    shuffle = random.Random(args.seed)
    results = {case.name: Result(case) for case in cases}
    with Builder(db) as builder:
        ops: dict[str, Callable[[], object]] = {case.name: case.build(builder) for case in cases}
        counters = ServerCounters(db) if db is not None else None
        try:
            for round_number in range(args.rounds):
                order = list(cases)
                shuffle.shuffle(order)
                for case in order:
                    seconds, cpu, counts = _run_case(ops[case.name], args.ops, case, counters)
                    if round_number == 0:
                        continue  # warm-up: pools fill, caches compile
                    results[case.name].seconds_per_op.append(seconds / args.ops)
                    results[case.name].cpu_per_op.append(cpu / args.ops)
                    if counts is not None:
                        per_op = {name: counts[name] / args.ops for name in COUNTERS}
                        results[case.name].counts_per_op.append(per_op)
        finally:
            if counters is not None:
                counters.close()
    return results


def _run_case(
    op: Callable[[], object], count: int, case: Case, counters: ServerCounters | None
) -> tuple[float, float, dict[str, int] | None]:
    """Wall time, client CPU time and counter deltas of ``count`` operations."""
    gc.collect()
    counting = counters if case.db == MARIADB else None
    before = counting.read() if counting is not None else None
    cpu_start = time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        op()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if counting is None or before is None:
        return seconds, cpu, None
    return seconds, cpu, counting.delta(counting.read(), before)


def _ratios(
    results: dict[str, Result], case: str, baseline: str, *, cpu: bool = False
) -> list[float] | None:
    """Paired per-round ratios of wall time (or client CPU time)."""
    if case not in results or baseline not in results:
        return None
    mine, theirs = (
        (results[case].cpu_per_op, results[baseline].cpu_per_op)
        if cpu
        else (results[case].seconds_per_op, results[baseline].seconds_per_op)
    )
    return [a / b for a, b in zip(mine, theirs, strict=True)]


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(results: dict[str, Result]) -> str:
    header = [
        "case",
        "db",
        "us/op",
        "cpu us/op",
        "x raw",
        "vs baseline",
        "ratio",
        "min-max",
        "IQR",
        "round trips",
        *(SHORT[name] for name in COUNTERS),
    ]
    rows = []
    floor = results.get("raw")
    for result in results.values():
        name = result.case.name
        x_raw = "-"
        if floor is not None and result.case.db == MARIADB:
            x_raw = f"{median(_ratios(results, name, 'raw') or [1.0]):.2f}"
        counts = [_count(result.statements(counter)) for counter in COUNTERS]
        cpu_us = median(result.cpu_per_op) * 1e6
        stats = [name, result.case.db, f"{result.median_us():.0f}", f"{cpu_us:.0f}", x_raw]
        comparisons = [c for c in COMPARISONS if c.case == name and c.baseline in results]
        if not comparisons:
            rows.append([*stats, "-", "-", "-", "-", _count(result.round_trips()), *counts])
        for index, comparison in enumerate(comparisons):
            ratios = _ratios(results, name, comparison.baseline) or []
            lead = stats if index == 0 else [""] * len(stats)
            tail = [_count(result.round_trips()), *counts] if index == 0 else [""] * 7
            rows.append([*lead, comparison.baseline, *ratio_summary(ratios), *tail])
    return markdown_table(header, rows, text_columns=2)


def goals(results: dict[str, Result]) -> str:
    lines = ["goals:"]
    for comparison in COMPARISONS:
        if comparison.goal is None:
            continue
        ratios = _ratios(results, comparison.case, comparison.baseline)
        if not ratios:
            continue
        achieved = median(ratios)
        cpu = median(_ratios(results, comparison.case, comparison.baseline, cpu=True) or [0.0])
        verdict = "met" if achieved <= comparison.goal else "MISSED"
        lines.append(
            f"- {comparison.case} {comparison.label}: {achieved:.3f}x "
            f"(goal <= {comparison.goal:.2f}x) {verdict}; client CPU {cpu:.3f}x"
        )
    for case, label, most in STATEMENT_GOALS:
        result = results.get(case)
        trips = result.round_trips() if result is not None else None
        if trips is None:
            continue
        verdict = "met" if trips <= most else "MISSED"
        lines.append(f"- {label} ({case}): {trips:.2f} (goal <= {most:g}) {verdict}")
    return "\n".join(lines)
