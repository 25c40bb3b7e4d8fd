"""Permanent errors, read-only servers, and the COMMIT of a transaction an error aborted."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError

from adapters.postgresql import sqlstate_of
from tests.postgres.conftest import ALL_DRIVERS, place
from uow import ErrorKind, Reason, RetryDetails, retry_details

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tests.postgres.conftest import Database, Flavour, Recorder

pytestmark = pytest.mark.postgres


def test_unique_violation_is_permanent(db: Database, flavour: Flavour, recorder: Recorder) -> None:
    """23505: raised unchanged after one attempt, nothing written."""
    db.query("INSERT INTO tags VALUES ('dup')")
    runner = flavour.runner(flavour.engine(db.url(flavour.driver)), hooks=[recorder])

    def duplicate(session: Session, uow: Any) -> None:
        place(session, uow, "dup-op")
        session.execute(text("INSERT INTO tags VALUES ('dup')"))

    with pytest.raises(IntegrityError) as raised:
        flavour.run(runner, duplicate)

    assert sqlstate_of(raised.value) == "23505"
    details = retry_details(raised.value)
    assert details is not None
    assert (details.attempt, details.kind, details.reason) == (
        1,
        ErrorKind.PERMANENT,
        Reason.NOT_RETRYABLE,
    )
    assert db.entries() == {}


def test_syntax_error_is_permanent(db: Database, flavour: Flavour, recorder: Recorder) -> None:
    """42601: a bug, not a failure: one attempt."""
    runner = flavour.runner(flavour.engine(db.url(flavour.driver)), hooks=[recorder])

    def broken(session: Session, uow: Any) -> None:
        del uow
        session.execute(text("SELEC 1"))

    with pytest.raises(DBAPIError) as raised:
        flavour.run(runner, broken)

    assert sqlstate_of(raised.value) == "42601"
    assert [(r.attempt, r.kind, r.will_retry) for r in recorder.records] == [
        (1, ErrorKind.PERMANENT, False)
    ]


@pytest.mark.parametrize("wrong", ["password", "database"])
def test_wrong_password_and_unknown_database_fail_at_once(
    db: Database, flavour: Flavour, recorder: Recorder, wrong: str
) -> None:
    """28P01 and 3D000 at connect (psycopg loses their SQLSTATE): permanent, one attempt."""
    url = db.url(flavour.driver)
    if wrong == "password":
        url = url.replace(db.server.password, "not-the-password")
    else:
        url = url.rsplit("/", 1)[0] + "/no_such_database"
    runner = flavour.runner(flavour.engine(url), hooks=[recorder])

    with pytest.raises(DBAPIError):
        flavour.run(runner, place, "never")

    assert [(r.attempt, r.kind, r.will_retry) for r in recorder.records] == [
        (1, ErrorKind.PERMANENT, False)
    ]


@ALL_DRIVERS
def test_read_only_server_is_failover_and_its_connections_are_dropped(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """25006 drops the pool's connections: once the server is writable, the rerun commits."""
    engine = flavour.engine(db.url(flavour.driver), pool_size=3)
    writable: list[bool] = []

    def make_writable(details: RetryDetails, /) -> None:
        if details.kind is ErrorKind.FAILOVER and not writable:
            db.server.admin(f"ALTER DATABASE {db.name} RESET default_transaction_read_only")
            writable.append(True)

    runner = flavour.runner(engine, hooks=[recorder, make_writable])
    flavour.run(runner, place, "before")  # pooled connections from the writable time
    db.server.admin(f"ALTER DATABASE {db.name} SET default_transaction_read_only = on")
    # Pooled connections keep the setting they connected with: drop them, as a switchover would.
    flavour.await_(engine.dispose())
    flavour.run(runner, place, "warm")  # fails with 25006 once, then is rerun on a new one
    assert [(r.kind, r.will_retry) for r in recorder.records] == [(ErrorKind.FAILOVER, True)]
    assert "25006" in str(recorder.records[0].error) or sqlstate_of(recorder.records[0].error) == (
        "25006"
    )
    assert db.entries() == {"before": 1, "warm": 1}


def test_caught_transient_error_is_never_committed(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """Code that catches a lock timeout and returns: that attempt is rolled back and rerun."""
    import psycopg  # noqa: PLC0415

    db.server.admin(f"ALTER DATABASE {db.name} SET lock_timeout = '200ms'")
    blocker = psycopg.connect(db.server.conninfo(db.name))
    caught: list[str | None] = []

    def release(details: RetryDetails, /) -> None:
        if details.kind is ErrorKind.LOCK_WAIT:
            blocker.rollback()

    def swallow(session: Session, uow: Any, key: str) -> int:
        session.execute(
            text("INSERT INTO entries (op_key, attempt) VALUES (:key, :n)"),
            {"key": key, "n": uow.attempt.number},
        )
        try:
            session.execute(text("UPDATE counter SET n = n + 1 WHERE id = 1"))
        except DBAPIError as error:  # the mistake under test: swallow and carry on
            caught.append(sqlstate_of(error))
        return int(uow.attempt.number)

    try:
        blocker.execute("SELECT n FROM counter WHERE id = 1 FOR UPDATE")
        runner = flavour.runner(flavour.engine(db.url(flavour.driver)), hooks=[recorder, release])
        attempt = flavour.run(runner, swallow, "swallowed")
    finally:
        blocker.close()

    assert caught == ["55P03"]
    assert attempt == 2
    assert db.entries() == {"swallowed": 1}
    assert db.counter() == 1
    [record] = recorder.records
    assert (record.kind, record.will_retry) == (ErrorKind.LOCK_WAIT, True)
    assert any("was not committed" in note for note in record.error.__notes__)


@ALL_DRIVERS
@pytest.mark.parametrize("markers", [False, True], ids=["plain", "markers"])
def test_caught_permanent_error_does_not_report_an_empty_commit(
    db: Database, flavour: Flavour, recorder: Recorder, markers: bool
) -> None:
    """PostgreSQL would answer this COMMIT with a ROLLBACK: the operation fails instead."""
    db.query("INSERT INTO tags VALUES ('dup')")
    engine = flavour.engine(db.url(flavour.driver))
    if markers:
        db.create_marker_table()
    runner = flavour.runner(engine, hooks=[recorder], commit_markers=markers)

    def insert_or_ignore(session: Session, uow: Any) -> None:
        place(session, uow, "lost-if-committed")
        with contextlib.suppress(IntegrityError):  # fine on MySQL; aborts the whole PG transaction
            session.execute(text("INSERT INTO tags VALUES ('dup')"))

    with pytest.raises(DBAPIError) as raised:  # psycopg: InternalError; asyncpg: DBAPIError
        flavour.run(runner, insert_or_ignore)

    assert sqlstate_of(raised.value) == "25P02"  # in_failed_sql_transaction
    assert any("aborts the whole transaction" in note for note in raised.value.__notes__)
    assert [(r.attempt, r.kind, r.will_retry) for r in recorder.records] == [
        (1, ErrorKind.PERMANENT, False)
    ]
    assert db.entries() == {}


def test_savepoint_around_the_failing_statement_commits_once(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """The PostgreSQL way to insert-or-ignore: a savepoint; the rest of the attempt commits."""
    db.query("INSERT INTO tags VALUES ('dup')")
    runner = flavour.runner(flavour.engine(db.url(flavour.driver)), hooks=[recorder])

    def insert_or_ignore(session: Session, uow: Any) -> int:
        attempt = place(session, uow, "kept")
        with contextlib.suppress(IntegrityError), session.begin_nested():
            session.execute(text("INSERT INTO tags VALUES ('dup')"))
        session.execute(text("INSERT INTO tags VALUES ('new')"))
        return attempt

    assert flavour.run(runner, insert_or_ignore) == 1
    assert db.entries() == {"kept": 1}
    assert sorted(db.query("SELECT name FROM tags")) == [("dup",), ("new",)]
    assert recorder.records == []
