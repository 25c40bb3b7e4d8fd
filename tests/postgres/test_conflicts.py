"""Deadlocks, lock timeouts and serialization failures: the server's answers, each rerun whole."""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from sqlalchemy import text

from tests.postgres.conftest import place
from uow import ErrorKind, RetryDetails, RetryPolicy

if TYPE_CHECKING:
    from typing import Self

    from sqlalchemy.orm import Session

    from tests.postgres.conftest import Database, Flavour, Recorder

pytestmark = pytest.mark.postgres

DOCTORS = 5
OPERATIONS = {"psycopg": 1000, "asyncpg": 400}
"""Shift changes per run; 8 asyncio tasks share one thread, so the async run is shorter."""
WORKERS = 8


def test_deadlock_victim_is_rerun(db: Database, flavour: Flavour, recorder: Recorder) -> None:
    """Two operations lock two rows in opposite orders: the victim (40P01) reruns, both commit."""
    db.query("INSERT INTO tags VALUES ('a'), ('b')")
    runner = flavour.runner(flavour.engine(db.url(flavour.driver)), hooks=[recorder])

    def cross(session: Session, uow: Any, first: str, second: str) -> int:
        lock = text("SELECT name FROM tags WHERE name = :name FOR UPDATE")
        session.execute(lock, {"name": first}).all()
        if uow.attempt.number == 1:
            session.execute(text("SELECT pg_sleep(0.5)")).all()  # both hold their first row
        session.execute(lock, {"name": second}).all()
        return place(session, uow, f"{first}{second}")

    results = flavour.run_together(runner, cross, [("a", "b"), ("b", "a")])

    assert sorted(results) == [1, 2], results
    assert db.entries() == {"ab": 1, "ba": 1}
    assert db.counter() == 2
    [record] = recorder.records
    assert (record.kind, record.attempt, record.will_retry) == (ErrorKind.DEADLOCK, 1, True)


def test_lock_timeout_is_rerun_after_the_lock_is_released(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """lock_timeout (55P03) on a row another session holds: rolled back whole, rerun, once."""
    db.server.admin(f"ALTER DATABASE {db.name} SET lock_timeout = '300ms'")
    blocker = psycopg.connect(db.server.conninfo(db.name))
    try:
        blocker.execute("SELECT n FROM counter WHERE id = 1 FOR UPDATE")

        def release(details: RetryDetails, /) -> None:
            if details.kind is ErrorKind.LOCK_WAIT:
                blocker.rollback()

        runner = flavour.runner(flavour.engine(db.url(flavour.driver)), hooks=[recorder, release])
        attempt = flavour.run(runner, place, "locked")
    finally:
        blocker.close()

    assert attempt == 2
    assert db.entries() == {"locked": 1}
    assert db.counter() == 1
    [record] = recorder.records
    assert (record.kind, record.attempt, record.will_retry) == (ErrorKind.LOCK_WAIT, 1, True)


def test_serialization_failure_at_commit_is_rerun(db: Database, flavour: Flavour) -> None:
    """A 40001 raised by COMMIT is the server's answer (not committed): rerun, never unknown."""
    db.query("INSERT INTO tags VALUES ('x'), ('y')")
    recorder_records: list[RetryDetails] = []
    runner = flavour.runner(
        flavour.engine(db.url(flavour.driver)),
        hooks=[recorder_records.append],
        isolation_level="SERIALIZABLE",
    )

    def skew(session: Session, uow: Any, mine: str, other: str) -> int:
        seen = session.execute(text("SELECT count(*) FROM tags")).scalar_one()
        session.execute(text("SELECT pg_sleep(0.3)")).all()  # both read before either writes
        session.execute(
            text("INSERT INTO tags VALUES (:name)"), {"name": f"{mine}{seen}-{uow.attempt.number}"}
        )
        del other
        return int(uow.attempt.number)

    results = flavour.run_together(runner, skew, [("x", "y"), ("y", "x")])

    assert sorted(results) == [1, 2], results
    tags = sorted(name for (name,) in db.query("SELECT name FROM tags"))
    assert len(tags) == 4  # x, y and one tag per operation: each committed once
    [record] = recorder_records
    assert (record.kind, record.will_retry) == (ErrorKind.DEADLOCK, True)


def _set_up_doctors(db: Database) -> None:
    db.as_app("CREATE TABLE doctors (name TEXT PRIMARY KEY, on_call BOOLEAN NOT NULL)")
    db.as_app("CREATE TABLE shifts (op_key TEXT NOT NULL, action TEXT NOT NULL, seen INT NOT NULL)")
    db.as_app("CREATE INDEX ix_shifts_op_key ON shifts (op_key)")  # not unique: duplicates show
    db.as_app(
        "INSERT INTO doctors SELECT 'doctor-' || n, true FROM generate_series(1, %s) n", [DOCTORS]
    )


def change_shift(session: Session, uow: Any, key: str, doctor: str, action: str) -> int:
    """Go off call if at least one other doctor stays on call; or go back on call."""
    seen = session.execute(text("SELECT count(*) FROM doctors WHERE on_call")).scalar_one()
    if action == "off" and seen >= 2:
        session.execute(text("UPDATE doctors SET on_call = false WHERE name = :n"), {"n": doctor})
    elif action == "on":
        session.execute(text("UPDATE doctors SET on_call = true WHERE name = :n"), {"n": doctor})
    session.execute(
        text("INSERT INTO shifts VALUES (:key, :action, :seen)"),
        {"key": key, "action": action, "seen": seen},
    )
    del uow
    return int(seen)


class Monitor:
    """Samples the number of doctors on call through the admin socket while the run goes on."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            [(on_call,)] = self.db.query("SELECT count(*) FROM doctors WHERE on_call")
            self.samples.append(int(on_call))
            time.sleep(0.005)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_write_skew_under_serializable_keeps_a_doctor_on_call(
    db: Database, flavour: Flavour
) -> None:
    """8 workers, 1,000 shift changes under SERIALIZABLE: always a doctor on call, each op once."""
    operations = OPERATIONS[flavour.driver]
    _set_up_doctors(db)
    kinds: list[ErrorKind] = []
    # Conflicts are the point here: no count cap, and no process-wide retry budget.
    policy = RetryPolicy(
        timeout=60,
        wait_initial=0.002,
        wait_max=0.05,
        deadlock={"attempts": None},
        retry_budget=None,
    )
    engine = flavour.engine(db.url(flavour.driver), pool_size=WORKERS)
    runner = flavour.runner(
        engine,
        policy=policy,
        hooks=[lambda details: kinds.append(details.kind)],
        isolation_level="SERIALIZABLE",
    )
    rng = random.Random(20240611)
    work = [
        (f"op-{n:04d}", f"doctor-{rng.randint(1, DOCTORS)}", rng.choice(["off", "off", "on"]))
        for n in range(operations)
    ]
    started = time.monotonic()
    with Monitor(db) as monitor:
        results: list[Any] = []
        for start in range(0, operations, WORKERS):
            results += flavour.run_together(runner, change_shift, work[start : start + WORKERS])
    elapsed = time.monotonic() - started
    print(  # noqa: T201 -- the figures, shown with -s
        f"{flavour.driver}: {operations} ops in {elapsed:.1f} s, "
        f"{kinds.count(ErrorKind.DEADLOCK)} serialization reruns, {len(monitor.samples)} samples"
    )

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert min(monitor.samples) >= 1
    [(on_call,)] = db.query("SELECT count(*) FROM doctors WHERE on_call")
    assert on_call >= 1
    logged = dict(db.query("SELECT op_key, count(*) FROM shifts GROUP BY op_key"))
    assert logged == {key: 1 for key, _doctor, _action in work}  # every operation, exactly once
    assert ErrorKind.DEADLOCK in kinds  # the conflicts happened, and were rerun
    assert set(kinds) == {ErrorKind.DEADLOCK}


def test_write_skew_breaks_the_invariant_under_read_committed(
    db: Database, flavour: Flavour
) -> None:
    """The control: without SERIALIZABLE, two doctors going off call at once leave nobody."""
    _set_up_doctors(db)
    db.query("UPDATE doctors SET on_call = (name IN ('doctor-1', 'doctor-2'))")
    runner = flavour.runner(flavour.engine(db.url(flavour.driver)))

    def off_after_a_pause(session: Session, uow: Any, key: str, doctor: str) -> int:
        seen = session.execute(text("SELECT count(*) FROM doctors WHERE on_call")).scalar_one()
        session.execute(text("SELECT pg_sleep(0.3)")).all()  # both have read 2
        change_shift(session, uow, key, doctor, "off" if seen >= 2 else "none")
        return int(seen)

    results = flavour.run_together(
        runner, off_after_a_pause, [("a", "doctor-1"), ("b", "doctor-2")]
    )

    assert results == [2, 2]
    assert db.query("SELECT count(*) FROM doctors WHERE on_call") == [(0,)]
