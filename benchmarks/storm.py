"""Outage storm: many writers through the default retry policy while the server goes away.

Writer threads (``--processes`` x ``--threads``, 1 x 40 by default) each run one-row
INSERTs in a loop, every one through the library's runner with the default retry
policy and a unique ``op_id``, on a throwaway MariaDB behind a counting relay
(``servers.relay``, undelayed, refusing while the server refuses). Each scenario runs
steady state, an outage, recovery and steady state again:

- ``stop10`` / ``stop60``: graceful stop (SIGTERM), started again 10 / 60 s after the
  stop was asked for: connections are refused meanwhile;
- ``freeze10``: SIGSTOP for 10 s, then SIGCONT: connects are accepted, nothing answers;
- ``restart``: an ordinary restart (stop, then start at once);
- ``kill10``: kill -9, started again 10 s later.

"Accepts again" is the first PyMySQL login that succeeds directly (polled every
millisecond, not through the relay), or the SIGCONT. Per scenario: operations started
during the outage, attempts per operation, connection attempts that reached the server
(per 100 ms, from the relay), failed operations by reason, the time from "accepts
again" to the first and to the 95th-percentile success among the operations that were
waiting then, and an audit: every operation that returned is in the table exactly once.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import random
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pymysql
from sqlalchemy import BigInteger, Column, Index, MetaData, Table, event, insert
from sqlalchemy import create_engine as sqlalchemy_create_engine
from sqlalchemy.engine import make_url

from benchmarks import machine
from benchmarks.server import NO_TLS, Database, server_facts, throwaway_server
from benchmarks.stats import markdown_table
from servers.relay import RelayProcess

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine, ExceptionContext

    from servers.mariadb import MariaDBServer

metadata = MetaData()
storm_ops = Table(
    "storm_ops",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("op_id", BigInteger, nullable=False),
    Index("storm_ops_op_id", "op_id"),  # not unique: a duplicate must show, not fail
)
INSERT_OP = insert(storm_ops)

_BUCKET = 0.1
_POLL = 0.001
_WORKER_START = 120.0
_IDS_PER_THREAD = 10**7


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    action: str
    """stop, freeze, restart or kill."""
    away: float
    """Seconds from the action to the start (or SIGCONT); 0 for an ordinary restart."""


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("stop10", "(a) stopped 10 s", "stop", 10.0),
        Scenario("stop60", "(b) stopped 60 s", "stop", 60.0),
        Scenario("freeze10", "(c) frozen 10 s", "freeze", 10.0),
        Scenario("restart", "(d) restart", "restart", 0.0),
        Scenario("kill10", "(e) kill -9, 10 s", "kill", 10.0),
    )
}
DEFAULT_SCENARIOS = ("stop10", "freeze10", "restart", "kill10")
QUICK_SCALE = 0.3
"""--quick: outages this fraction of their length (10 s: 3 s; 60 s: 18 s)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[*SCENARIOS, "all"],
        default=list(DEFAULT_SCENARIOS),
        help=f"scenarios to run, in order (default: {' '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument("--processes", type=int, default=1, help="writer processes (1)")
    parser.add_argument("--threads", type=int, default=40, help="writer threads per process (40)")
    parser.add_argument(
        "--budget",
        choices=["on", "off"],
        default="off",
        help="retry budgets in the runner (make_runner(engine, budget=...)); default off",
    )
    parser.add_argument("--steady", type=float, default=5.0, help="s of load before (5)")
    parser.add_argument("--after", type=float, default=10.0, help="s of load after (10)")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="mean pause of a writer between operations, s (0.1; uniform 0 to twice it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the writers' pauses (0)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: 2 s steady, outages x {QUICK_SCALE:g}, 3 s after",
    )


# The writers, in processes of their own.


@dataclass
class WorkerReport:
    ops: list[tuple[int, float, float, int, str | None]] = field(default_factory=list)
    """(op_id, started, ended, attempts, failure reason or None) per operation."""
    failed_attempts: list[tuple[float, str, int | None, bool, str]] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    """When the engine opened (or tried to open) a connection."""


def count_connects(engine: Engine, times: list[float]) -> None:
    """Note when the engine opened a connection, or failed to open one.

    Successes are the pool's ``connect`` events; failures are the errors raised while
    no connection existed yet (``handle_error`` without a connection).
    """

    def failed(context: ExceptionContext) -> None:
        if context.connection is None:
            times.append(time.monotonic())

    event.listen(engine.pool, "connect", lambda *_: times.append(time.monotonic()))
    event.listen(engine, "handle_error", failed)


def worker(
    index: int,
    url: str,
    threads: int,
    *,
    budget: bool,
    seed: int,
    pause: float,
    base_id: int,
    control: Any,
    out: Any,
) -> None:
    """One writer process: ``threads`` writers, from the go signal until the stop signal."""
    from benchmarks import storm_runner  # noqa: PLC0415 -- in the writer processes only

    storm_runner.quiet_library_logs()
    report = WorkerReport()
    try:
        engine = storm_runner.make_engine(url, pool_size=threads)
        count_connects(engine, report.connects)
        runner = storm_runner.make_runner(
            engine, budget=budget, on_failed_attempt=report.failed_attempts.append
        )
    except Exception as error:  # noqa: BLE001 -- reported to the harness, which stops
        out.put(("error", index, f"{type(error).__name__}: {error}"))
        return
    warm = threading.Barrier(threads + 1)
    go, stop = threading.Event(), threading.Event()

    def write(thread: int) -> None:
        pauses = random.Random(seed * 1_000_003 + index * 1_009 + thread)
        op_id = base_id + (index * threads + thread) * _IDS_PER_THREAD
        # One operation before the go: the pool is warm when the timeline starts.
        started = time.monotonic()
        attempts, failure = storm_runner.write_row(runner, INSERT_OP, op_id)
        report.ops.append((op_id, started, time.monotonic(), attempts, failure))
        warm.wait()
        go.wait()
        while not stop.is_set():
            op_id += 1
            started = time.monotonic()
            attempts, failure = storm_runner.write_row(runner, INSERT_OP, op_id)
            report.ops.append((op_id, started, time.monotonic(), attempts, failure))
            if pause:
                stop.wait(pauses.uniform(0, 2 * pause))

    writers = [
        threading.Thread(target=write, args=(n,), name=f"writer-{n}") for n in range(threads)
    ]
    for thread in writers:
        thread.start()
    warm.wait()
    out.put(("ready", index, None))
    command = control.get()  # "go", or "quit" when another process failed
    if command == "go":
        go.set()
        control.get()  # "stop"
    stop.set()
    go.set()
    for thread in writers:
        thread.join()
    engine.dispose()
    if command == "go":
        out.put(("report", index, report))
    else:
        out.cancel_join_thread()


# The harness.


@dataclass
class Timeline:
    go: float = 0.0
    action: float = 0.0
    """The stop, SIGSTOP or kill was sent."""
    accepted: float = 0.0
    """The server accepted a login again (or SIGCONT was sent)."""
    end: float = 0.0
    """Writers were told to stop."""


@dataclass
class Outcome:
    scenario: Scenario
    timeline: Timeline
    report: WorkerReport
    relay_events: list[tuple[float, str]]
    audit: dict[int, int]
    """op_id -> rows with it."""


def wait_accepting(db: Database, deadline: float) -> float:
    """Poll (TCP, then a PyMySQL login) until the server takes a login; return when."""
    server = db.server
    if server is None:
        raise RuntimeError("the storm needs a server of its own")
    while time.monotonic() < deadline:
        try:
            socket.create_connection((server.host, server.port), timeout=0.5).close()
            db.connect(connect_timeout=1, **NO_TLS).close()
        except (OSError, pymysql.err.MySQLError):
            time.sleep(_POLL)
            continue
        return time.monotonic()
    raise TimeoutError("the server did not accept logins again")


def outage(scenario: Scenario, server: MariaDBServer, db: Database, away: float) -> Timeline:
    """Take the server away as the scenario says; return when it accepts logins again."""
    timeline = Timeline(action=time.monotonic())
    if scenario.action == "freeze":
        pid = server.pid
        if pid is None:
            raise RuntimeError("the server is not running")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(away)
        os.kill(pid, signal.SIGCONT)
        timeline.accepted = time.monotonic()
        return timeline
    if scenario.action == "kill":
        server.kill()
    else:
        server.stop()
    if scenario.action != "restart":
        time.sleep(max(timeline.action + away - time.monotonic(), 0.0))
    starter = threading.Thread(target=server.start, name="server-start")
    starter.start()
    timeline.accepted = wait_accepting(db, time.monotonic() + 120)
    starter.join()
    return timeline


def run_scenario(
    scenario: Scenario,
    db: Database,
    relay: RelayProcess,
    index: int,
    args: argparse.Namespace,
) -> Outcome:
    server = db.server
    if server is None:
        raise RuntimeError("the storm needs a server of its own")
    admin = sqlalchemy_create_engine(db.url, connect_args=NO_TLS)
    with admin.begin() as connection:
        connection.execute(storm_ops.delete())
    relayed = make_url(db.url).set(host=relay.host, port=relay.port)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    controls = [context.Queue() for _ in range(args.processes)]
    processes = [
        context.Process(
            target=worker,
            args=(n, relayed.render_as_string(hide_password=False), args.threads),
            kwargs={
                "budget": args.budget == "on",
                "seed": args.seed,
                "pause": args.pause,
                "base_id": (index + 1) * 10**14,
                "control": controls[n],
                "out": out,
            },
            name=f"storm-writer-{n}",
        )
        for n in range(args.processes)
    ]
    for process in processes:
        process.start()
    report = WorkerReport()
    timeline = Timeline()
    try:
        _wait_ready(out, args.processes)
        steady, after, away = _durations(scenario, args)
        for control in controls:
            control.put("go")
        go = time.monotonic()
        time.sleep(steady)
        timeline = outage(scenario, server, db, away)
        timeline.go = go
        time.sleep(after)
        timeline.end = time.monotonic()
        for control in controls:
            control.put("stop")
        for _ in processes:
            kind, _, payload = out.get(timeout=_WORKER_START)
            if kind == "report":
                report.ops += payload.ops
                report.failed_attempts += payload.failed_attempts
                report.connects += payload.connects
    finally:
        for control in controls:
            control.put("quit")
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    admin.dispose()  # its pooled connection did not outlive the outage
    with admin.connect() as connection:
        rows = connection.exec_driver_sql("SELECT op_id, COUNT(*) FROM storm_ops GROUP BY op_id")
        audit = {int(op_id): int(count) for op_id, count in rows}
    admin.dispose()
    return Outcome(scenario, timeline, report, relay.events(since=timeline.go), audit)


def _wait_ready(out: Any, processes: int) -> None:
    ready = 0
    while ready < processes:
        try:
            kind, index, message = out.get(timeout=_WORKER_START)
        except queue.Empty:
            raise SystemExit("writer processes did not start in time") from None
        if kind == "error":
            raise SystemExit(f"writer process {index}: {message}")
        ready += kind == "ready"


def _durations(scenario: Scenario, args: argparse.Namespace) -> tuple[float, float, float]:
    if args.quick:
        return 2.0, 3.0, scenario.away * QUICK_SCALE
    return args.steady, args.after, scenario.away


# The report.


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def per_second(times: Sequence[float], start: float, end: float) -> list[int]:
    counts = [0] * max(1, math.ceil(end - start))
    for when in times:
        if start <= when < end:
            counts[int(when - start)] += 1
    return counts


def compact(counts: Sequence[int]) -> str:
    """Counts separated by spaces, with runs of three or more written ``value*run``."""
    parts: list[str] = []
    index = 0
    while index < len(counts):
        run = 1
        while index + run < len(counts) and counts[index + run] == counts[index]:
            run += 1
        parts += [f"{counts[index]}*{run}"] if run >= 3 else [str(counts[index])] * run
        index += run
    return " ".join(parts)


@dataclass
class Figures:
    """What one scenario's table row and time series say."""

    outcome: Outcome
    ops: int = 0
    started_in_outage: int = 0
    failed: int = 0
    attempts_per_op: float = 0.0
    attempts_per_outage_op: float = 0.0
    server_connects: int = 0
    peak: tuple[int, float] = (0, 0.0)
    """Most connects reaching the server in 100 ms, and when (s after accepting again)."""
    client_connects: int = 0
    waiting: int = 0
    first_ms: float | None = None
    p95_ms: float | None = None
    failures: Counter[str] = field(default_factory=Counter)
    audit: str = ""


def figures(outcome: Outcome) -> Figures:
    t = outcome.timeline
    ops = [op for op in outcome.report.ops if op[1] >= t.go]
    fig = Figures(outcome, ops=len(ops))
    fig.started_in_outage = sum(t.action <= started < t.accepted for _, started, *_ in ops)
    fig.failed = sum(failure is not None for *_, failure in ops)
    fig.failures = Counter(failure for *_, failure in ops if failure is not None)
    fig.attempts_per_op = sum(op[3] for op in ops) / max(len(ops), 1)
    overlapping = [op for op in ops if op[1] < t.accepted and op[2] > t.action]
    fig.attempts_per_outage_op = sum(op[3] for op in overlapping) / max(len(overlapping), 1)
    connected = [when for when, kind in outcome.relay_events if kind == "connected"]
    fig.server_connects = sum(t.go <= when < t.end for when in connected)
    buckets = Counter(math.floor((when - t.accepted) / _BUCKET) for when in connected)
    if buckets:
        bucket, count = max(buckets.items(), key=lambda item: (item[1], -item[0]))
        fig.peak = (count, bucket * _BUCKET)
    fig.client_connects = sum(t.go <= when < t.end for when in outcome.report.connects)
    waiting = [op for op in outcome.report.ops if op[1] < t.accepted < op[2]]
    fig.waiting = len(waiting)
    delays = [(op[2] - t.accepted) * 1e3 for op in waiting if op[4] is None]
    if delays:
        fig.first_ms, fig.p95_ms = min(delays), _percentile(delays, 0.95)
    fig.audit = audit_text(outcome)
    return fig


def audit_text(outcome: Outcome) -> str:
    returned = [op[0] for op in outcome.report.ops if op[4] is None]
    failed = [op[0] for op in outcome.report.ops if op[4] is not None]
    missing = sum(outcome.audit.get(op_id, 0) == 0 for op_id in returned)
    duplicated = sum(count > 1 for count in outcome.audit.values())
    written_anyway = sum(outcome.audit.get(op_id, 0) > 0 for op_id in failed)
    known = set(returned) | set(failed)
    strangers = sum(op_id not in known for op_id in outcome.audit)
    problems = [
        f"{count} {what}"
        for count, what in (
            (missing, "missing"),
            (duplicated, "duplicated"),
            (strangers, "unknown"),
        )
        if count
    ]
    text = "ok" if not problems else "FAILED: " + ", ".join(problems)
    return text + (f" ({written_anyway} failed but written)" if written_anyway else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(all_figures: Sequence[Figures]) -> str:
    header = [
        "scenario",
        "away s",
        "ops",
        "started in outage",
        "failed",
        "attempts/op",
        "attempts/op in outage",
        "connects to server",
        "peak per 100 ms (s after accept)",
        "client connects",
        "waiting at accept",
        "first ok ms",
        "p95 ok ms",
        "audit",
    ]
    rows = []
    for fig in all_figures:
        t = fig.outcome.timeline
        count, when = fig.peak
        rows.append(
            [
                fig.outcome.scenario.label,
                f"{t.accepted - t.action:.1f}",
                str(fig.ops),
                str(fig.started_in_outage),
                str(fig.failed),
                f"{fig.attempts_per_op:.2f}",
                f"{fig.attempts_per_outage_op:.2f}",
                str(fig.server_connects),
                f"{count} ({when:+.1f})",
                str(fig.client_connects),
                str(fig.waiting),
                _ms(fig.first_ms),
                _ms(fig.p95_ms),
                fig.audit,
            ]
        )
    return markdown_table(header, rows)


def series(fig: Figures) -> str:
    outcome = fig.outcome
    t = outcome.timeline
    start = t.action - math.floor(t.action - t.go)
    ops = outcome.report.ops
    rows = {
        "connects to server": [when for when, kind in outcome.relay_events if kind == "connected"],
        "client connects": outcome.report.connects,
        "ops ok": [op[2] for op in ops if op[4] is None],
        "ops failed": [op[2] for op in ops if op[4] is not None],
    }
    title = (
        f"{outcome.scenario.name} {outcome.scenario.label}: per second from "
        f"{start - t.action:+.0f} s (0 = outage; the server accepts again at "
        f"{t.accepted - t.action:+.1f} s)"
    )
    lines = [title]
    lines += [
        f"  {name + ':':19} {compact(per_second(times, start, t.end))}"
        for name, times in rows.items()
    ]
    refused = sum(kind == "refused" for _, kind in outcome.relay_events)
    downs = [when - t.action for when, kind in outcome.relay_events if kind == "down"]
    ups = [when - t.action for when, kind in outcome.relay_events if kind == "up"]
    relay = (
        f"  relay: stopped listening at {', '.join(f'{d:+.2f}' for d in downs) or '-'} s, "
        f"listening again at {', '.join(f'{u:+.2f}' for u in ups) or '-'} s; "
        f"{refused} connections reset before it stopped"
    )
    lines.append(relay)
    retries = Counter(
        f"{kind} {errno}"
        for when, kind, errno, will_retry, _ in outcome.report.failed_attempts
        if will_retry and t.go <= when < t.end
    )
    listed = ", ".join(f"{what}: {count}" for what, count in retries.most_common())
    lines.append(f"  retries by kind and errno: {listed or '-'}")
    lines += [f"  failed: {count} x {reason}" for reason, count in fig.failures.most_common()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    names = list(SCENARIOS) if "all" in args.scenarios else list(args.scenarios)
    if args.processes < 1 or args.threads < 1:
        raise SystemExit("--processes and --threads must be at least 1")
    from benchmarks import storm_runner  # noqa: PLC0415 -- the library, where it is used

    started = time.monotonic()
    outcomes: list[Outcome] = []
    with throwaway_server() as server:
        db = Database(server.url(), server)
        facts = server_facts(db)
        admin = sqlalchemy_create_engine(db.url, connect_args=NO_TLS)
        metadata.drop_all(admin)
        metadata.create_all(admin)
        admin.dispose()
        with RelayProcess(server.host, server.port, mirror_refusal=True) as relay:
            for index, name in enumerate(names):
                outcomes.append(run_scenario(SCENARIOS[name], db, relay, index, args))
            relay_stats = relay.stats()
    all_figures = [figures(outcome) for outcome in outcomes]
    print(machine.describe(facts))
    print(f"default retry policy: {storm_runner.describe_default_policy()}")
    print(
        f"storm: {args.processes} process(es) x {args.threads} writer threads, budget "
        f"{args.budget}, pause {args.pause * 1e3:g} ms mean, seed {args.seed}"
        f"{', quick' if args.quick else ''}; pool of {args.threads} per process; "
        f"relay CPU {relay_stats.cpu_seconds:.1f} s over {relay_stats.wall_seconds:.0f} s; "
        f"wall time {time.monotonic() - started:.0f} s\n"
    )
    print(table(all_figures))
    print()
    for fig in all_figures:
        print(series(fig))
    failed_audits = [fig for fig in all_figures if fig.audit.startswith("FAILED")]
    return 1 if failed_audits else 0
