"""The workload of the Galera tests: operations, recorders, and the audit of their results.

Each operation inserts one uniquely keyed entry (the key has a non-unique index, so a
duplicate would show), records the node that ran it, and increments one shared counter,
so concurrent writers on different nodes conflict at certification (1213).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from uow import CommitOutcomeUnknown, RetryDetails, retry_details

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

    from servers.galera import GaleraCluster
    from uow import Runner

SCHEMA = (
    (
        "CREATE TABLE {db}.entries ("
        " id BIGINT AUTO_INCREMENT PRIMARY KEY,"
        " op_key VARCHAR(40) NOT NULL,"
        " worker VARCHAR(16) NOT NULL,"
        " attempt INT NOT NULL,"
        " node VARCHAR(16) NOT NULL,"
        " KEY ix_entries_op_key (op_key)"  # not unique: a duplicate must be visible
        ") ENGINE=InnoDB"
    ),
    "CREATE TABLE {db}.counter (id INT PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB",
    "INSERT INTO {db}.counter VALUES (1, 0)",
)


def create_schema(cluster: GaleraCluster, database: str) -> None:
    """Create the entries and counter tables (admin connection, replicated)."""
    for statement in SCHEMA:
        cluster.admin(statement.replace("{db}", f"`{database}`"))


INSERT_ENTRY = text(
    "INSERT INTO entries (op_key, worker, attempt, node)"
    " VALUES (:key, :worker, :attempt, @@wsrep_node_name)"
)
BUMP_COUNTER = text("UPDATE counter SET n = n + 1 WHERE id = 1")


def place_entry(uow: Any, key: str, worker: str) -> str:
    """The operation: insert the entry (with the node's name), increment the counter."""
    session = uow.session
    session.execute(INSERT_ENTRY, {"key": key, "worker": worker, "attempt": uow.attempt.number})
    session.execute(BUMP_COUNTER)
    return key


@dataclass(frozen=True)
class Outcome:
    """One call: its key, when it ran, and what it returned or raised."""

    key: str
    worker: str
    started: float
    ended: float
    returned: bool
    error: str = ""
    reason: str = ""
    commit_unknown: bool = False
    retries: tuple[str, ...] = ()
    """``kind/errno@elapsed`` of each retry of this call (from :class:`RetryCounter`)."""

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


def call(
    runner: Runner[Any], key: str, worker: str, retries: RetryCounter | None = None
) -> Outcome:
    """Run one operation and record how it ended (never raises)."""
    if retries is not None:
        retries.begin()
    started = time.monotonic()
    mine = retries.of_call if retries is not None else tuple
    try:
        runner.run(place_entry, key, worker)
    except Exception as error:  # every failure is audited
        return outcome_of(key, worker, started, error, mine())
    return outcome_of(key, worker, started, None, mine())


def outcome_of(
    key: str, worker: str, started: float, error: Exception | None, retries: tuple[str, ...]
) -> Outcome:
    """How a call that began at ``started`` ended: returned, or with ``error``."""
    ended = time.monotonic()
    if error is None:
        return Outcome(key, worker, started, ended, returned=True, retries=retries)
    details = retry_details(error)
    return Outcome(
        key,
        worker,
        started,
        ended,
        returned=False,
        error=f"{type(error).__name__}: {error}"[:200],
        reason=details.reason if details is not None else "",
        commit_unknown=isinstance(error, CommitOutcomeUnknown),
        retries=retries,
    )


class RetryCounter:
    """A retry hook counting scheduled retries by ``kind/errno`` (and 1213 at COMMIT)."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.give_ups: Counter[str] = Counter()
        self.conflicts_at_commit = 0
        self._lock = threading.Lock()
        self._call = threading.local()

    def begin(self) -> None:
        """Start collecting the retries of the calling thread's next call."""
        self._call.retries = []

    def of_call(self) -> tuple[str, ...]:
        """The retries of the calling thread's call since :meth:`begin`."""
        return tuple(getattr(self._call, "retries", ()))

    def __call__(self, details: RetryDetails, /) -> None:
        name = f"{details.kind.value}/{details.errno}"
        at_commit = details.errno == 1213 and getattr(details.error, "statement", "") is None
        collected = getattr(self._call, "retries", None)
        if collected is not None:
            collected.append(f"{name}@{details.elapsed:.2f}")
        with self._lock:
            if details.will_retry:
                self.by_kind[name] += 1
                self.conflicts_at_commit += at_commit
            else:
                self.give_ups[f"{name} ({details.reason})"] += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class ResolutionCounter(logging.Handler):
    """Counts the lost-COMMIT resolutions the library logs (``uow_commit_outcome``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.outcomes: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        outcome = getattr(record, "uow_commit_outcome", None)
        if outcome is not None:
            source = getattr(record, "uow_commit_source", "?")
            self.outcomes[f"{outcome} ({source})"] += 1

    def __enter__(self) -> Self:
        logging.getLogger("retrying_uow").addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("retrying_uow").removeHandler(self)


@dataclass
class Audit:
    """What the database holds after a run, against what the calls said."""

    operations: int
    returned: int
    failed: list[Outcome]
    lost: list[str]
    duplicated: dict[str, int]
    phantom: list[str]
    """Calls that raised (not CommitOutcomeUnknown) yet committed."""
    counter_by_node: dict[str, int]
    expected_counter: int
    markers: int
    by_node: dict[str, int] = field(default_factory=dict)
    """Committed entries by the node that ran them."""

    @property
    def counters_consistent(self) -> bool:
        """Every usable node holds the expected counter."""
        return set(self.counter_by_node.values()) == {self.expected_counter}


def audit(
    cluster: GaleraCluster,
    database: str,
    outcomes: list[Outcome],
    *,
    extra_committed: int = 0,
    markers_table: str | None = None,
) -> Audit:
    """Read every node (after it has applied everything) and compare with the outcomes."""
    db = f"`{database}`"
    anchor = cluster.usable_node()
    stored: Counter[str] = Counter()
    for key, count in anchor.admin(f"SELECT op_key, COUNT(*) FROM {db}.entries GROUP BY op_key"):
        stored[str(key)] = int(count)
    by_node = dict(anchor.admin(f"SELECT node, COUNT(*) FROM {db}.entries GROUP BY node"))
    counters: dict[str, int] = {}
    for node in cluster.nodes:
        if node.pid is None or node.frozen or not node.state().usable:
            continue
        [(value,)] = node.admin(f"SELECT n FROM {db}.counter WHERE id = 1", causal=True)
        counters[node.name] = int(value)
    markers = -1
    if markers_table is not None:
        [(markers,)] = anchor.admin(f"SELECT COUNT(*) FROM {db}.{markers_table}")
    returned = [o for o in outcomes if o.returned]
    failed = [o for o in outcomes if not o.returned]
    unknown_committed = sum(1 for o in failed if o.commit_unknown and stored[o.key] == 1)
    return Audit(
        operations=len(outcomes),
        returned=len(returned),
        failed=failed,
        lost=[o.key for o in returned if stored[o.key] == 0],
        duplicated={key: n for key, n in stored.items() if n > 1},
        phantom=[o.key for o in failed if not o.commit_unknown and stored[o.key] > 0],
        counter_by_node=counters,
        expected_counter=len(returned) + unknown_committed + extra_committed,
        markers=int(markers),
        by_node={str(k): int(v) for k, v in by_node.items()},
    )


class Workers:
    """Threads calling operations until told to stop (and a minimum count is reached)."""

    def __init__(
        self,
        workers: list[tuple[str, Runner[Any]]],
        retries: RetryCounter,
        minimum: int = 0,
        think: float = 0.0,
    ) -> None:
        """``workers`` are (name, runner) pairs, one thread each, pausing ``think`` s per call."""
        self.outcomes: list[Outcome] = []
        self._think = think
        self.crashes: list[BaseException] = []
        self._stop = threading.Event()
        self._minimum = minimum
        self._retries = retries
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, args=pair, daemon=True, name=f"worker-{pair[0]}")
            for pair in workers
        ]

    def _work(self, name: str, runner: Runner[Any]) -> None:
        try:
            index = 0
            while not (self._stop.is_set() and len(self.outcomes) >= self._minimum):
                outcome = call(runner, f"{name}-{index:06d}", name, self._retries)
                with self._lock:
                    self.outcomes.append(outcome)
                index += 1
                time.sleep(self._think)
        except BaseException as error:
            self.crashes.append(error)

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:
            raise AssertionError(f"workers still running after 120 s: {alive}")
        if self.crashes:
            raise self.crashes[0]


def around_faults(
    outcomes: list[Outcome], events: list[tuple[str, float]], *, lead: float = 1.0
) -> Iterator[tuple[str, float, float, Counter[str]]]:
    """For each fault: (label, when, longest pause, retries until the next fault).

    The longest pause is that of the slowest operation in flight at the fault or begun
    within ``lead`` seconds after it; retries count by ``kind/errno``.
    """
    for index, (label, when) in enumerate(events):
        until = events[index + 1][1] if index + 1 < len(events) else float("inf")
        hit = [o.elapsed for o in outcomes if o.started <= when + lead and o.ended >= when]
        kinds: Counter[str] = Counter()
        for outcome in outcomes:
            for retry in outcome.retries:
                name, _, offset = retry.partition("@")
                if when <= outcome.started + float(offset) < until:
                    kinds[name] += 1
        yield label, when, max(hit, default=0.0), kinds
