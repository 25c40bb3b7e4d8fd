"""A PostgreSQL chaos run: thousands of operations through the fault proxy, then an audit.

Worker threads share one psycopg engine and run operations that each read a small
catalog (12 rows), insert one uniquely keyed entry (the key has a non-unique index,
so a duplicate would show) and increment a shared counter. The proxy cuts connections
at random: before a COMMIT reaches the server (FIN, RST, or half-open: the server
keeps the transaction open), after the server committed but before the client heard
(FIN, RST), in the middle of the catalog's rows, and at any message (FIN, RST). Lost
COMMITs are settled by transaction id (``settle_lost_commits``) or by commit markers.
At the end the database is read through the server's admin socket and compared with
what every call returned or raised.

Run it on its own (a throwaway PostgreSQL is started and removed)::

    python -m tests.postgres.chaos_run --operations 2000 --workers 4 --mode both
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from adapters.postgresql import settle_lost_commits
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, create_engine
from servers.pg_proxy import (
    AfterCommitReply,
    AtMessage,
    BeforeCommit,
    CutMode,
    Fault,
    FaultKind,
    FaultProxy,
    MidResult,
)
from servers.postgres import PostgresServer, ensure_postgres_installed
from tests.postgres.conftest import Database, with_schema
from uow import CommitOutcomeUnknown, RetryDetails, RetryPolicy, retry_details

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from uow import Runner

LOGGER = "retrying_uow"
CATALOG_ROWS = 12
MID_RESULT_AFTER = 6
COMMIT_WEIGHT = 3
"""A COMMIT draws a cut at it this many times as often as any other fault."""
CHAOS_FAULTS: tuple[Fault, ...] = (
    *(BeforeCommit(CutMode.FIN), BeforeCommit(CutMode.RST)) * COMMIT_WEIGHT,
    *(BeforeCommit(CutMode.HALF_OPEN),) * COMMIT_WEIGHT,
    *(AfterCommitReply(CutMode.FIN), AfterCommitReply(CutMode.RST)) * COMMIT_WEIGHT,
    MidResult(MID_RESULT_AFTER, CutMode.FIN),
    MidResult(MID_RESULT_AFTER, CutMode.RST),
    AtMessage(None, 1, CutMode.FIN),  # chaos cuts at the message that drew it, whatever n says
    AtMessage(None, 1, CutMode.RST),
)
"""Every cut but a half-open one anywhere else than at a COMMIT (its open transaction would
hold the counter's row lock until the server notices the client is gone: hours)."""
POLICY = RetryPolicy(attempts=20, timeout=30, wait_initial=0.01, wait_max=0.2, retry_budget=None)
RUN_LIMIT = 300.0
CATALOG = (
    "CREATE TABLE catalog (id INT PRIMARY KEY, label TEXT NOT NULL)",
    f"INSERT INTO catalog SELECT n, 'item-' || n FROM generate_series(1, {CATALOG_ROWS}) n",
)


@dataclass(frozen=True)
class OperationOutcome:
    key: str
    returned: bool
    error: str = ""
    commit_unknown: bool = False
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ChaosReport:
    """The figures of one chaos run and the audit of the database after it."""

    mode: str
    """``"xid"`` (settled by transaction id) or ``"markers"`` (commit markers)."""
    operations: int
    workers: int
    succeeded: int
    failed: int
    commit_unknown: int
    cuts: dict[str, int]
    chaos_draws: int
    retries: int
    resolved: dict[str, int]
    lost: int
    duplicated: int
    phantom: int
    counter: int
    expected_counter: int
    markers: int
    expected_markers: int
    elapsed: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def total_cuts(self) -> int:
        return sum(self.cuts.values())

    def cut_count(self, kind: FaultKind, mode: CutMode | None = None) -> int:
        return sum(
            n
            for name, n in self.cuts.items()
            if name.split("/")[0] == kind.value and mode in (None, CutMode(name.split("/")[1]))
        )

    @property
    def consistent(self) -> bool:
        return (
            (self.lost, self.duplicated, self.phantom) == (0, 0, 0)
            and self.failed == 0
            and self.counter == self.expected_counter
            and self.markers == self.expected_markers
        )

    def format(self) -> str:
        cuts = ", ".join(f"{name} {n}" for name, n in sorted(self.cuts.items()))
        resolved = ", ".join(
            f"{outcome} {self.resolved.get(outcome, 0)}"
            for outcome in ("committed", "absent", "unknown")
        )
        figures: list[tuple[str, object]] = [
            ("succeeded", self.succeeded),
            ("failed", f"{self.failed} {self.errors or ''}".strip()),
            ("commit unknown", self.commit_unknown),
            ("cuts", f"{self.total_cuts} ({cuts})"),
            ("chaos draws", self.chaos_draws),
            ("retries", self.retries),
            ("lost COMMITs", resolved),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("phantom", self.phantom),
            ("counter", f"{self.counter} (expected {self.expected_counter})"),
        ]
        if self.markers >= 0:
            figures.append(("markers", f"{self.markers} (expected {self.expected_markers})"))
        figures.append(("elapsed", f"{self.elapsed:.1f} s"))
        title = f"chaos run ({self.mode}): {self.operations} operations, {self.workers} workers"
        return "\n".join([title, *(f"  {name:<16} {value}" for name, value in figures)])


class _Resolutions(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.outcomes: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "uow_commit_outcome", None)
        if outcome is not None:
            self.outcomes[str(outcome)] += 1


class _Retries:
    def __init__(self) -> None:
        self.retries = 0
        self._lock = threading.Lock()

    def __call__(self, details: RetryDetails, /) -> None:
        if details.will_retry:
            with self._lock:
                self.retries += 1


@contextlib.contextmanager
def _counting_resolutions() -> Iterator[_Resolutions]:
    handler = _Resolutions()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def place_entry(uow: Any, key: str) -> tuple[str, int]:
    """The operation: read the catalog, insert the entry, increment the counter."""
    session = uow.session
    catalog = session.execute(text("SELECT id, label FROM catalog ORDER BY id")).all()
    if len(catalog) != CATALOG_ROWS:
        msg = f"catalog read {len(catalog)} rows"
        raise AssertionError(msg)
    session.execute(
        text("INSERT INTO entries (op_key, attempt) VALUES (:key, :attempt)"),
        {"key": key, "attempt": uow.attempt.number},
    )
    session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
    return key, int(uow.attempt.number)


def _call(runner: Runner[Any], key: str) -> OperationOutcome:
    try:
        runner.run(place_entry, key)
    except Exception as error:  # every failure is audited afterwards
        details = retry_details(error)
        return OperationOutcome(
            key,
            returned=False,
            error=type(error).__name__,
            commit_unknown=isinstance(error, CommitOutcomeUnknown),
            reason=details.reason if details is not None else "",
            detail=" ".join(str(error).split())[:300],
        )
    return OperationOutcome(key, returned=True)


def _work_through(runner: Runner[Any], keys: list[str], workers: int) -> list[OperationOutcome]:
    """Run one operation per key on ``workers`` threads; return what each call did."""
    outcomes: list[OperationOutcome] = []
    crashes: list[BaseException] = []
    lock = threading.Lock()
    pending = iter(keys)

    def work() -> None:
        try:
            while True:
                with lock:
                    key = next(pending, None)
                if key is None:
                    return
                outcome = _call(runner, key)
                with lock:
                    outcomes.append(outcome)
        except BaseException as error:
            crashes.append(error)

    started = time.monotonic()
    threads = [
        threading.Thread(target=work, name=f"pg-chaos-{n}", daemon=True) for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(started + RUN_LIMIT - time.monotonic(), 0.0))
    if any(thread.is_alive() for thread in threads):
        msg = f"operations still running after {RUN_LIMIT:.0f} s"
        raise RuntimeError(msg)
    if crashes:
        raise crashes[0]
    return outcomes


def run_chaos(
    db: Database,
    *,
    operations: int = 2000,
    workers: int = 4,
    mode: str = "xid",
    probability: float = 0.04,
    seed: int = 20240611,
    faults: Sequence[Fault] = CHAOS_FAULTS,
) -> ChaosReport:
    """Run ``operations`` operations through a chaotic proxy on ``db`` and audit it.

    ``db`` has the entries and counter tables, empty; the catalog is created here.
    """
    for statement in CATALOG:
        db.as_app(statement)
    if mode == "markers":
        db.create_marker_table()
    keys = [f"{mode}-{index:06d}" for index in range(operations)]
    retries = _Retries()
    server = db.server
    with FaultProxy(server.host, server.port) as proxy, _counting_resolutions() as resolutions:
        engine = create_engine(db.url(host=proxy.host, port=proxy.port), pool_size=workers)
        try:
            if mode == "xid":
                settle_lost_commits(engine)
            runner = SqlAlchemyUnitOfWork.factory(
                engine, policy=POLICY, hooks=[retries], commit_markers=mode == "markers"
            )
            runner.run(place_entry, f"{mode}-warmup")
            proxy.set_chaos(seed, probability, faults)
            started = time.monotonic()
            outcomes = _work_through(runner, keys, workers)
            elapsed = time.monotonic() - started
            proxy.set_chaos(None)
        finally:
            engine.dispose()
        stats = proxy.stats()
    return _audit(
        db,
        mode=mode,
        workers=workers,
        outcomes=outcomes,
        cuts={f"{kind.value}/{cut.value}": n for (kind, cut), n in stats.cuts.items()},
        chaos_draws=stats.chaos_triggered,
        retries=retries.retries,
        resolved=dict(resolutions.outcomes),
        elapsed=elapsed,
    )


def _audit(
    db: Database,
    *,
    mode: str,
    workers: int,
    outcomes: list[OperationOutcome],
    cuts: dict[str, int],
    chaos_draws: int,
    retries: int,
    resolved: dict[str, int],
    elapsed: float,
) -> ChaosReport:
    stored = Counter(db.entries())
    markers = db.markers() if mode == "markers" else -1
    warmup = f"{mode}-warmup"
    if stored[warmup] != 1:
        msg = f"the warm-up operation is stored {stored[warmup]} times"
        raise AssertionError(msg)
    returned = [o for o in outcomes if o.returned]
    failed = [o for o in outcomes if not o.returned]
    unknown = [o for o in failed if o.commit_unknown]
    committed = len(returned) + sum(1 for o in unknown if stored[o.key] == 1) + 1
    return ChaosReport(
        mode=mode,
        operations=len(outcomes),
        workers=workers,
        succeeded=len(returned),
        failed=len(failed),
        commit_unknown=len(unknown),
        cuts=cuts,
        chaos_draws=chaos_draws,
        retries=retries,
        resolved=resolved,
        lost=sum(1 for o in returned if stored[o.key] == 0),
        duplicated=sum(1 for count in stored.values() if count > 1),
        phantom=sum(1 for o in failed if not o.commit_unknown and stored[o.key] > 0),
        counter=db.counter(),
        expected_counter=committed,
        markers=markers,
        expected_markers=committed if mode == "markers" else -1,
        elapsed=elapsed,
        errors=dict(Counter(f"{o.error} ({o.reason}): {o.detail}" for o in failed)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run chaos runs on a throwaway server, print their figures; exit 1 if one is off."""
    parser = argparse.ArgumentParser(prog="python -m tests.postgres.chaos_run", description=__doc__)
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--probability", type=float, default=0.04)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--mode", choices=["xid", "markers", "both"], default="xid")
    args = parser.parse_args(argv)
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    modes = ["xid", "markers"] if args.mode == "both" else [args.mode]
    ok = True
    ensure_postgres_installed()
    with PostgresServer() as server:
        for mode in modes:
            name = server.create_database(f"chaos_{mode}_{uuid.uuid4().hex[:8]}")
            try:
                report = run_chaos(
                    with_schema(server, name),
                    operations=args.operations,
                    workers=args.workers,
                    mode=mode,
                    probability=args.probability,
                    seed=args.seed,
                )
            finally:
                server.drop_database(name)
            print(report.format())  # noqa: T201 -- the figures are the output
            ok = ok and report.consistent
    print("consistent" if ok else "INCONSISTENT")  # noqa: T201
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
