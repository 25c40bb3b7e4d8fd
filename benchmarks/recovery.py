"""Recovery: kill -9 and restart of the server under load; failed operations and delay.

Four threads run unit-of-work writes on a warm pool of five connections. The server
is killed (SIGKILL) and restarted; right after the restart a tight loop polls a raw
TCP connect and then a PyMySQL connect. The delay measured is from that first
successful PyMySQL connect ("the server accepts connections again") to the first
operation that succeeds after the kill.
"""

from __future__ import annotations

import faulthandler
import logging
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pymysql

from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_commit_marker_table, create_engine
from benchmarks import connect, machine
from benchmarks.model import REPOSITORIES, reset_schema, write_one
from benchmarks.server import NO_TLS, Database, server_facts, throwaway_server
from benchmarks.stats import markdown_table, median
from uow import KindPolicy, RetryDetails, RetryPolicy

if TYPE_CHECKING:
    import argparse

    from sqlalchemy.engine import Engine

    from servers.mariadb import MariaDBServer

_POLL_PAUSE = 0.001


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restarts", type=int, default=10, help="kill/restart cycles (10)")
    parser.add_argument("--threads", type=int, default=4, help="threads of load (4)")
    parser.add_argument("--pool-size", type=int, default=5, help="pool size, warmed first (5)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds of load before each kill (1.0)"
    )
    parser.add_argument(
        "--wait-max",
        type=float,
        default=0.02,
        help="largest backoff step while the server is away, s (0.02)",
    )
    parser.add_argument(
        "--default-tls",
        action="store_true",
        help="PyMySQL's default TLS setting instead of ssl_disabled=True",
    )
    parser.add_argument(
        "--no-markers",
        action="store_true",
        help="no commit markers: a COMMIT lost to the kill fails the operation",
    )
    parser.add_argument(
        "--skip-connect",
        action="store_true",
        help="skip the cost of a new connection per TLS setting",
    )


def outage_policy(wait_max: float) -> RetryPolicy:
    """Retries every ``wait_max`` seconds or so while the server is down, for up to 30 s."""
    return RetryPolicy(
        attempts=100,
        timeout=30.0,
        wait_initial=min(0.005, wait_max),
        wait_max=wait_max,
        retry_budget=None,
        disconnect=KindPolicy(wait_initial=0.0),
    )


def write_and_count(uow: Any) -> int:
    """The operation of the load: a one-row write; returns the attempt's number."""
    write_one(uow)
    return int(uow.attempt.number)


@dataclass
class Load:
    """Threads running operations until told to stop; what they saw."""

    units: Any = None
    successes: list[tuple[float, float, int]] = field(default_factory=list)
    """(started, ended, attempts) of each operation that succeeded."""
    failures: Counter[str] = field(default_factory=Counter)
    retries: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    messages: list[tuple[float, str]] = field(default_factory=list)

    def hook(self, details: RetryDetails) -> None:
        if details.will_retry:
            self.retries.append((time.monotonic(), f"{details.kind.value} {details.errno}"))
            self.messages.append((time.monotonic(), str(details.error)[:160]))

    def work(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                attempts = self.units.run(write_and_count)
            except Exception as error:  # noqa: BLE001 -- every failure is counted, by type
                self.failures[type(error).__name__] += 1
            else:
                self.successes.append((started, time.monotonic(), attempts))

    def first_success_after(self, dead_at: float) -> float | None:
        """End of the first operation that succeeded on the restarted server.

        It ended after the old server was gone, and either started after that too or
        needed more than one attempt (its first one met the old server).
        """
        later = [
            ended
            for started, ended, attempts in self.successes[-5000:]
            if ended > dead_at and (started > dead_at or attempts > 1)
        ]
        return min(later) if later else None

    def retries_between(self, start: float, end: float) -> Counter[str]:
        return Counter(what for when, what in self.retries if start <= when < end)


class LostCommits(logging.Handler):
    """Counts lost COMMITs and how they were settled, from the library's log records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.outcomes: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "uow_commit_outcome", None)
        if outcome is not None:
            self.outcomes[str(outcome)] += 1


def wait_accepting(db: Database, deadline: float) -> tuple[float, float]:
    """Poll until a TCP connect and then a PyMySQL connect succeed; return both moments.

    The probe never uses TLS, whatever the load does, so it measures the server only.
    """
    server = db.server
    if server is None:
        raise RuntimeError("recovery needs a server of its own")
    tcp_at = None
    while time.monotonic() < deadline:
        if tcp_at is None:
            try:
                socket.create_connection((server.host, server.port), timeout=0.5).close()
            except OSError:
                time.sleep(_POLL_PAUSE)
                continue
            tcp_at = time.monotonic()
        try:
            db.connect(connect_timeout=1, **NO_TLS).close()
        except pymysql.err.MySQLError:
            time.sleep(_POLL_PAUSE)
            continue
        return tcp_at, time.monotonic()
    raise TimeoutError("the server did not accept connections again")


def warm(engine: Engine, size: int) -> None:
    connections = [engine.connect() for _ in range(size)]
    for connection in connections:
        connection.close()


def restart_once(server: MariaDBServer, db: Database, load: Load) -> dict[str, float]:
    kill_at = time.monotonic()
    server.kill()  # returns once the process is gone
    dead_at = time.monotonic()
    starter = threading.Thread(target=server.start, name="restart")
    starter.start()
    tcp_at, accepted_at = wait_accepting(db, dead_at + 60)
    starter.join()
    deadline = time.monotonic() + 30
    while (first := load.first_success_after(dead_at)) is None:
        if time.monotonic() > deadline:
            faulthandler.dump_traceback(sys.stderr)
            raise TimeoutError("no operation succeeded within 30 s of the restart")
        time.sleep(_POLL_PAUSE)
    return {
        "kill_at": kill_at,
        "dead_at": dead_at,
        "accepted_at": accepted_at,
        "down": (tcp_at - dead_at) * 1e3,
        "tcp_to_accept": (accepted_at - tcp_at) * 1e3,
        # An operation can beat the poller to the new server: then the delay is nil.
        "accept_to_first_op": max(first - accepted_at, 0.0) * 1e3,
    }


def run(args: argparse.Namespace) -> int:
    connect_args: dict[str, Any] = {} if args.default_tls else dict(NO_TLS)
    lost = LostCommits()
    logging.getLogger("retrying_uow").addHandler(lost)
    logging.getLogger("retrying_uow").propagate = False  # counted, not printed
    # A pooled connection whose reset ROLLBACK meets the dead server is logged with its
    # traceback by SQLAlchemy, once per connection and restart: expected here, so quiet.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    with throwaway_server() as server:
        db = Database(server.url(), server)
        facts = server_facts(db)
        engine = create_engine(db.url, pool_size=args.pool_size, connect_args=connect_args)
        try:
            reset_schema(engine)
            if not args.no_markers:
                create_commit_marker_table(engine)
            warm(engine, args.pool_size)
            load = Load()
            load.units = SqlAlchemyUnitOfWork.factory(
                engine,
                repositories=REPOSITORIES,
                policy=outage_policy(args.wait_max),
                hooks=[load.hook],
                commit_markers=not args.no_markers,
            )
            threads = [
                threading.Thread(target=load.work, name=f"load-{n}") for n in range(args.threads)
            ]
            for thread in threads:
                thread.start()
            cycles = []
            try:
                for _ in range(args.restarts):
                    time.sleep(args.settle)
                    cycles.append(restart_once(server, db, load))
                time.sleep(args.settle)
            finally:
                load.stop.set()
                for thread in threads:
                    thread.join()
        finally:
            engine.dispose()
    print(machine.describe(facts))
    print(report(args, load, cycles, lost))
    if not args.skip_connect:
        print()
        connect.run(args=connect_defaults())
    return 0


def connect_defaults() -> argparse.Namespace:
    import argparse  # noqa: PLC0415 -- only for building the defaults

    parser = argparse.ArgumentParser()
    connect.add_arguments(parser)
    return parser.parse_args([])


def after_back(load: Load, cycles: list[dict[str, float]]) -> Counter[str]:
    """Retries on lost connections that began after the server accepted connections again."""
    ends = [c["kill_at"] for c in cycles[1:]] + [float("inf")]
    seen: Counter[str] = Counter()
    for cycle, end in zip(cycles, ends, strict=True):
        for what, count in load.retries_between(cycle["accepted_at"], end).items():
            if what.startswith("disconnect"):
                seen[what] += count
    return seen


def report(
    args: argparse.Namespace, load: Load, cycles: list[dict[str, float]], lost: LostCommits
) -> str:
    tls = "PyMySQL default (PREFERRED)" if args.default_tls else "ssl_disabled=True"
    markers = "off" if args.no_markers else "on"
    lines = [
        (
            f"recovery: {args.restarts} x (kill -9, restart), {args.threads} threads of "
            f"unit-of-work writes, warm pool of {args.pool_size}, TLS {tls}, commit markers "
            f"{markers}, backoff <= {args.wait_max * 1e3:.0f} ms"
        ),
        "",
    ]
    header = ["restart", "server down, ms", "TCP to accept, ms", "accept to first op, ms"]
    rows = [
        [
            str(n + 1),
            f"{c['down']:.0f}",
            f"{c['tcp_to_accept']:.1f}",
            f"{c['accept_to_first_op']:.1f}",
        ]
        for n, c in enumerate(cycles)
    ]
    rows.append(
        [
            "median",
            *(
                f"{median([c[key] for c in cycles]):.1f}"
                for key in ("down", "tcp_to_accept", "accept_to_first_op")
            ),
        ]
    )
    rows.append(
        [
            "max",
            *(
                f"{max(c[key] for c in cycles):.1f}"
                for key in ("down", "tcp_to_accept", "accept_to_first_op")
            ),
        ]
    )
    lines.append(markdown_table(header, rows))
    failures = sum(load.failures.values())
    kinds = dict(sorted(Counter(what for _, what in load.retries).items()))
    delay = median([c["accept_to_first_op"] for c in cycles])
    lines += [
        "",
        f"operations: {len(load.successes)} succeeded, {failures} failed "
        f"{dict(load.failures) or ''}".rstrip(),
        f"retries by kind and errno: {kinds}",
        f"connections lost after the server was back: {sum(after_back(load, cycles).values())}",
        f"lost COMMITs settled: {dict(lost.outcomes) or 0}",
        (
            f"goals: failed operations {failures} (goal 0) "
            f"{'met' if failures == 0 else 'MISSED'}; median accept to first op "
            f"{delay:.1f} ms (goal <= 60 ms) {'met' if delay <= 60 else 'MISSED'}"
        ),
    ]
    return "\n".join(lines)
