"""Network: the write and read cases with a round-trip time added by a relay.

On loopback a round trip costs about 0.1 ms, so the round trips the unit of work saves
hardly show. Here every engine's URL points at a relay (``servers.relay``, in a process
of its own) that adds a calibrated delay to each round trip, as between two hosts in
one data centre (about 0.4 ms). Per target the relay is first calibrated: the round
trip of a COM_PING (``conn.ping(reconnect=False)``) and of ``SELECT 1`` is measured
directly and through the relay, interleaved, and the relay's delay is adjusted until
the median added time of a ping meets the target. Then the cases run in interleaved
rounds, as in the main table, and their ratios are taken within the run.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine as sqlalchemy_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from benchmarks import machine
from benchmarks.cases import MARIADB, Builder, Case, Comparison, hand_session, raw_pymysql
from benchmarks.cases import uow_read as uow_read_case
from benchmarks.cases import uow_write as uow_write_case
from benchmarks.counters import COUNTERS, ServerCounters
from benchmarks.model import SEED_ROWS, Item, drop_schema, reset_schema
from benchmarks.run import SHORT, Result
from benchmarks.server import NO_TLS, Database, database, given_url, server_facts
from benchmarks.stats import markdown_table, median, quartiles, ratio_summary
from servers.relay import RelayProcess, WaitMode

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from sqlalchemy.engine import Engine

_CALIBRATION_STEPS = 6
_CLOSE_ENOUGH = 0.02
"""Calibration stops once a ping's median added time is within this fraction of the target."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rtt",
        type=float,
        nargs="+",
        default=[0.4],
        metavar="MS",
        help="round-trip times to add, ms (default 0.4); 0 runs through the relay undelayed",
    )
    parser.add_argument(
        "--wait",
        choices=[mode.value for mode in WaitMode],
        default=WaitMode.HYBRID.value,
        help="how the relay waits for a chunk's due time (default hybrid)",
    )
    parser.add_argument(
        "--spin-us",
        type=float,
        default=100.0,
        help="hybrid: spin for the last this many microseconds (default 100)",
    )
    parser.add_argument(
        "--relay-nice",
        type=int,
        default=-10,
        help="niceness change of the relay process, so that its wake-ups stay on time on a "
        "busy machine (default -10; needs root, else the relay runs at the usual niceness)",
    )
    parser.add_argument("--rounds", type=int, default=21, help="rounds incl. warm-up (21)")
    parser.add_argument("--ops", type=int, default=100, help="operations per case per round")
    parser.add_argument(
        "--samples",
        type=int,
        default=2000,
        help="round trips per way and kind in a calibration measurement (2000)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="only calibrate, with every wait mode, and print the relay's accuracy and CPU",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        help="busy processes to run meanwhile, to see the relay on a loaded machine (0)",
    )
    parser.add_argument("--database-url", help="reuse this MariaDB/MySQL")
    parser.add_argument("--durable", action="store_true", help="fsync per COMMIT")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders (0)")


# The cases: the one-row write and the read by primary key of the main table, each
# hand-written (plain engine, with pool_pre_ping, lean engine) and as a unit of work.


def hand_read(engine: Engine) -> Callable[[], object]:
    counter = iter(range(1 << 62))

    def op() -> int:
        with Session(engine) as session:
            item = session.get(Item, next(counter) % SEED_ROWS + 1)
            if item is None:
                raise LookupError("no seed row")
            return item.qty

    return op


CASES: tuple[Case, ...] = (
    Case("raw", MARIADB, "raw PyMySQL: INSERT + COMMIT on one connection", raw_pymysql),
    Case("session", MARIADB, "hand-written write, plain engine", lambda b: hand_session(b.plain())),
    Case(
        "session_pre_ping",
        MARIADB,
        "hand-written write, plain engine, pool_pre_ping",
        lambda b: hand_session(b.plain(pool_pre_ping=True)),
    ),
    Case(
        "session_lean",
        MARIADB,
        "hand-written write, lean engine",
        lambda b: hand_session(b.lean()),
    ),
    Case("uow_write", MARIADB, "unit of work, one-row write", lambda b: uow_write_case(b.lean())),
    Case(
        "session_read", MARIADB, "hand-written read, plain engine", lambda b: hand_read(b.plain())
    ),
    Case(
        "session_read_pre_ping",
        MARIADB,
        "hand-written read, plain engine, pool_pre_ping",
        lambda b: hand_read(b.plain(pool_pre_ping=True)),
    ),
    Case(
        "uow_read", MARIADB, "unit of work, read by primary key", lambda b: uow_read_case(b.lean())
    ),
)

COMPARISONS: tuple[Comparison, ...] = (
    Comparison("uow_write", "session_lean"),
    Comparison("uow_write", "session"),
    Comparison("uow_write", "session_pre_ping"),
    Comparison("uow_read", "session_read"),
    Comparison("uow_read", "session_read_pre_ping"),
)


@dataclass
class Calibration:
    """Round trips measured directly and through the relay, paired sample by sample."""

    target_ms: float
    delay_ms: float
    """The relay's delay setting that met the target."""
    direct_us: dict[str, float]
    relayed_us: dict[str, float]
    added_us: dict[str, list[float]]
    """Per kind (ping, select), relayed minus direct of each interleaved pair."""
    relay_cpu: float
    """Relay CPU seconds per wall second during the measurement."""
    lateness_us: tuple[float, float, float]


@dataclass
class Measured:
    """One target's case results, and the relay's CPU time per operation."""

    calibration: Calibration
    results: dict[str, Result]
    relay_cpu_per_op: dict[str, list[float]] = field(default_factory=dict)


def round_trips(
    direct: Any, relayed: Any, samples: int, shuffle: random.Random
) -> dict[str, dict[str, list[float]]]:
    """Seconds per round trip, by kind (ping, select) and way (direct, relayed), interleaved."""
    times: dict[str, dict[str, list[float]]] = {
        kind: {"direct": [], "relayed": []} for kind in ("ping", "select")
    }
    cursors = {"direct": direct.cursor(), "relayed": relayed.cursor()}
    connections = {"direct": direct, "relayed": relayed}
    ways = ["direct", "relayed"]
    try:
        for _ in range(samples):
            shuffle.shuffle(ways)
            for way in ways:
                start = time.perf_counter()
                connections[way].ping(reconnect=False)
                times["ping"][way].append(time.perf_counter() - start)
            shuffle.shuffle(ways)
            for way in ways:
                cursor = cursors[way]
                start = time.perf_counter()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                times["select"][way].append(time.perf_counter() - start)
    finally:
        for cursor in cursors.values():
            cursor.close()
    return times


def calibrate(
    relay: RelayProcess,
    direct: Any,
    relayed: Any,
    *,
    target_ms: float,
    samples: int,
    shuffle: random.Random,
) -> Calibration:
    """Set the relay's delay so that a ping's median added time meets the target."""
    target = target_ms / 1e3
    delay = target
    relay.set_delay(delay)
    for _ in range(_CALIBRATION_STEPS if target > 0 else 0):
        times = round_trips(direct, relayed, max(samples // 2, 50), shuffle)["ping"]
        error = target - median(
            [r - d for d, r in zip(times["direct"], times["relayed"], strict=True)]
        )
        if abs(error) <= _CLOSE_ENOUGH * target:
            break
        delay = max(delay + error, 0.0)
        relay.set_delay(delay)
    before = relay.stats()
    times_by_kind = round_trips(direct, relayed, samples, shuffle)
    after = relay.stats()
    return Calibration(
        target_ms=target_ms,
        delay_ms=delay * 1e3,
        direct_us={kind: median(t["direct"]) * 1e6 for kind, t in times_by_kind.items()},
        relayed_us={kind: median(t["relayed"]) * 1e6 for kind, t in times_by_kind.items()},
        added_us={
            kind: [(r - d) * 1e6 for d, r in zip(t["direct"], t["relayed"], strict=True)]
            for kind, t in times_by_kind.items()
        },
        relay_cpu=(after.cpu_seconds - before.cpu_seconds)
        / (after.wall_seconds - before.wall_seconds),
        lateness_us=after.lateness_us,
    )


def measure(
    cases: Sequence[Case], db: Database, relay: RelayProcess, args: argparse.Namespace
) -> tuple[dict[str, Result], dict[str, list[float]]]:
    """The cases in shuffled rounds (the first dropped): results and relay CPU per op."""
    shuffle = random.Random(args.seed)
    results = {case.name: Result(case) for case in cases}
    relay_cpu: dict[str, list[float]] = {case.name: [] for case in cases}
    with Builder(db) as builder:
        ops = {case.name: case.build(builder) for case in cases}
        counters = ServerCounters(db)
        try:
            for round_number in range(args.rounds):
                order = list(cases)
                shuffle.shuffle(order)
                for case in order:
                    op = ops[case.name]
                    relay_before, before = relay.stats(), counters.read()
                    cpu_start, start = time.process_time(), time.perf_counter()
                    for _ in range(args.ops):
                        op()
                    seconds = time.perf_counter() - start
                    cpu = time.process_time() - cpu_start
                    counts, relay_after = counters.delta(counters.read(), before), relay.stats()
                    if round_number == 0:
                        continue  # warm-up: pools fill, caches compile
                    result = results[case.name]
                    result.seconds_per_op.append(seconds / args.ops)
                    result.cpu_per_op.append(cpu / args.ops)
                    result.counts_per_op.append({k: v / args.ops for k, v in counts.items()})
                    relay_cpu[case.name].append(
                        (relay_after.cpu_seconds - relay_before.cpu_seconds) / args.ops
                    )
        finally:
            counters.close()
    return results, relay_cpu


def _ratios(results: dict[str, Result], case: str, baseline: str) -> list[float]:
    mine, theirs = results[case].seconds_per_op, results[baseline].seconds_per_op
    return [a / b for a, b in zip(mine, theirs, strict=True)]


def statement_mix(result: Result) -> str:
    """The statements and pings of one operation, e.g. ``INSERT, COMMIT, ROLLBACK``."""
    parts = []
    for name in COUNTERS[1:]:  # each statement's own counter, and pings
        count = round(result.statements(name) or 0)
        if count:
            parts.append(SHORT[name] if count == 1 else f"{count} {SHORT[name]}")
    return ", ".join(parts)


def _iqr(values: Sequence[float]) -> str:
    q1, q3 = quartiles(values)
    return f"{q1:.0f}-{q3:.0f}"


def calibration_table(calibrations: Sequence[tuple[str, Calibration]]) -> str:
    header = [
        "wait",
        "target ms",
        "delay set ms",
        "ping direct us",
        "ping relayed us",
        "ping added us",
        "IQR",
        "SELECT 1 added us",
        "IQR",
        "lateness us p50/p90",
        "relay CPU %",
    ]
    rows = [
        [
            wait,
            f"{c.target_ms:g}",
            f"{c.delay_ms:.3f}",
            f"{c.direct_us['ping']:.0f}",
            f"{c.relayed_us['ping']:.0f}",
            f"{median(c.added_us['ping']):.0f}",
            _iqr(c.added_us["ping"]),
            f"{median(c.added_us['select']):.0f}",
            _iqr(c.added_us["select"]),
            f"{c.lateness_us[0]:.0f}/{c.lateness_us[1]:.0f}",
            f"{c.relay_cpu * 100:.0f}",
        ]
        for wait, c in calibrations
    ]
    return markdown_table(header, rows, text_columns=1)


def cases_table(measured: Measured) -> str:
    results = measured.results
    header = [
        "case",
        "us/op",
        "cpu us/op",
        "relay cpu us/op",
        "round trips",
        "statements",
        "vs",
        "ratio",
        "min-max",
        "IQR",
    ]
    rows = []
    for name, result in results.items():
        trips = result.round_trips()
        stats = [
            name,
            f"{result.median_us():.0f}",
            f"{median(result.cpu_per_op) * 1e6:.0f}",
            f"{median(measured.relay_cpu_per_op[name]) * 1e6:.0f}",
            "-" if trips is None else f"{trips:.2f}",
            statement_mix(result),
        ]
        comparisons = [c for c in COMPARISONS if c.case == name and c.baseline in results]
        if not comparisons:
            rows.append([*stats, "-", "-", "-", "-"])
        for index, comparison in enumerate(comparisons):
            lead = stats if index == 0 else [""] * len(stats)
            ratios = _ratios(results, name, comparison.baseline)
            rows.append([*lead, comparison.baseline, *ratio_summary(ratios)])
    return markdown_table(header, rows, text_columns=1)


def _busy(count: int) -> list[Any]:
    import subprocess  # noqa: PLC0415 -- only with --load
    import sys  # noqa: PLC0415

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def run(args: argparse.Namespace) -> int:
    if args.rounds < 2 or args.ops < 1 or args.samples < 10:
        raise SystemExit("--rounds must be at least 2, --ops at least 1, --samples at least 10")
    url = given_url(args.database_url)
    started = time.monotonic()
    shuffle = random.Random(args.seed)
    waits = list(WaitMode) if args.calibrate else [WaitMode(args.wait)]
    calibrations: list[tuple[str, Calibration]] = []
    niceness = 0
    measured: list[Measured] = []
    busy = _busy(args.load)
    try:
        with database(url, durable=args.durable) as db:
            schema_engine = sqlalchemy_create_engine(db.url, connect_args=NO_TLS)
            try:
                reset_schema(schema_engine)
                facts = server_facts(db)
                direct = db.connect(**NO_TLS)
                upstream = make_url(db.url)
                for wait in waits:
                    with RelayProcess(
                        upstream.host or "127.0.0.1",
                        upstream.port or 3306,
                        wait=wait,
                        spin=args.spin_us / 1e6,
                        nice=args.relay_nice,
                    ) as relay:
                        niceness = relay.nice
                        relayed_url = make_url(db.url).set(host=relay.host, port=relay.port)
                        relayed_db = Database(
                            relayed_url.render_as_string(hide_password=False), None
                        )
                        relayed = relayed_db.connect(**NO_TLS)
                        for target in args.rtt:
                            calibration = calibrate(
                                relay,
                                direct,
                                relayed,
                                target_ms=target,
                                samples=args.samples,
                                shuffle=shuffle,
                            )
                            calibrations.append((wait.value, calibration))
                            if not args.calibrate:
                                results, cpu = measure(CASES, relayed_db, relay, args)
                                measured.append(Measured(calibration, results, cpu))
                        relayed.close()
                direct.close()
                drop_schema(schema_engine)
            finally:
                schema_engine.dispose()
    finally:
        for process in busy:
            process.kill()
            process.wait()
    print(machine.describe(facts))
    waits_run = "every wait mode" if args.calibrate else f"wait {args.wait}"
    print(
        f"relay: servers.relay in a process of its own (niceness {niceness}), "
        f"{waits_run} (hybrid spins the last {args.spin_us:g} us); "
        f"busy processes meanwhile: {args.load}; wall time {time.monotonic() - started:.0f} s"
    )
    print(f"calibration: {args.samples} interleaved pairs per kind\n")
    print(calibration_table(calibrations))
    for item in measured:
        c = item.calibration
        print(
            f"\nadded round trip {c.target_ms:g} ms (measured: ping +"
            f"{median(c.added_us['ping']):.0f} us, SELECT 1 +{median(c.added_us['select']):.0f}"
            f" us); rounds: {args.rounds} (first dropped), ops per case per round: {args.ops}\n"
        )
        print(cases_table(item))
    return 0
