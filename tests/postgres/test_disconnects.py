"""Lost sessions on a real PostgreSQL: each operation is rerun whole and commits once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import text

from adapters.postgresql import settle_lost_commits
from tests.postgres.conftest import ALL_DRIVERS, place
from uow import ErrorKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tests.postgres.conftest import Database, Flavour, Recorder

pytestmark = pytest.mark.postgres


@ALL_DRIVERS
def test_idle_in_transaction_timeout_then_a_write_is_rerun(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """The seed incident's twin: idle past the server's timeout, then a write: rerun, once."""
    db.server.admin(f"ALTER DATABASE {db.name} SET idle_in_transaction_session_timeout = '1s'")
    engine = flavour.engine(db.url(flavour.driver))
    runner = flavour.runner(engine, hooks=[recorder])

    def slow_then_write(uow: Any, key: str) -> int:
        uow.session.execute(text("SELECT count(*) FROM entries")).all()
        if uow.attempt.number == 1:
            time.sleep(2.0)  # slow work inside the transaction: the server gives up after 1 s
        return place(uow.session, uow, key)

    async def slow_then_write_async(uow: Any, key: str) -> int:
        (await uow.session.execute(text("SELECT count(*) FROM entries"))).all()
        if uow.attempt.number == 1:
            await asyncio.sleep(2.0)  # the loop runs: asyncpg reads the FATAL in the background
        return int(await uow.session.run_sync(place, uow, key))

    if flavour.is_async:
        attempt = flavour.loop.run_until_complete(runner.run(slow_then_write_async, "seed"))
    else:
        attempt = runner.run(slow_then_write, "seed")

    assert attempt == 2
    assert db.entries() == {"seed": 1}
    assert db.counter() == 1
    [record] = recorder.records
    assert (record.kind, record.will_retry) == (ErrorKind.DISCONNECT, True)
    assert record.cause is not None
    assert "idle_in_transaction_session_timeout" in record.cause
    assert "idle 2." in record.cause or "after 2." in record.cause


@ALL_DRIVERS
def test_terminated_backend_mid_transaction_is_rerun(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """pg_terminate_backend of the operation's own backend between two statements: rerun, once."""
    engine = flavour.engine(db.url(flavour.driver))
    runner = flavour.runner(engine, hooks=[recorder])

    def terminated(session: Session, uow: Any, key: str) -> int:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        session.execute(text("INSERT INTO tags VALUES (:name)"), {"name": f"{key}-tag"})
        if uow.attempt.number == 1:
            assert db.server.terminate_backends(pids=[pid]) == [pid]
        return place(session, uow, key)

    assert flavour.run(runner, terminated, "t") == 2
    assert db.entries() == {"t": 1}
    assert db.query("SELECT name FROM tags") == [("t-tag",)]
    assert db.counter() == 1
    [record] = recorder.records
    assert (record.kind, record.attempt) == (ErrorKind.DISCONNECT, 1)
    if flavour.driver != "asyncpg":  # 57P01; asyncpg only says "connection is closed"
        assert (
            record.cause
            == "the server ended the session (pg_terminate_backend, or a fast shutdown)"
        )


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_mid_transaction_is_rerun_once_the_server_is_back(
    private_db: Database, flavour: Flavour, recorder: Recorder, mode: str
) -> None:
    """pg_ctl stop -m fast / immediate inside an operation, start 0.5 s later: rerun, once."""
    server = private_db.server
    engine = flavour.engine(private_db.url(flavour.driver), pool_size=2)
    runner = flavour.runner(engine, hooks=[recorder])
    flavour.run(runner, place, "warm-up")  # a pooled connection from before the restart
    starter: list[threading.Thread] = []

    def restarted(session: Session, uow: Any, key: str) -> int:
        session.execute(text("INSERT INTO tags VALUES (:name)"), {"name": key})
        if uow.attempt.number == 1:
            server.stop(mode)  # type: ignore[arg-type]
            thread = threading.Timer(0.5, server.start)
            thread.start()
            starter.append(thread)
        return place(session, uow, key)

    started = time.monotonic()
    attempt = flavour.run(runner, restarted, f"restart-{mode}")
    elapsed = time.monotonic() - started
    for thread in starter:
        thread.join(60)

    assert attempt >= 2
    assert elapsed < 15
    assert private_db.entries() == {"warm-up": 1, f"restart-{mode}": 1}
    assert private_db.query("SELECT name FROM tags") == [(f"restart-{mode}",)]
    assert private_db.counter() == 2
    kinds = {record.kind for record in recorder.records}
    assert recorder.records[0].kind is ErrorKind.DISCONNECT  # the statement after the stop
    assert recorder.records[0].cause is not None
    assert kinds <= {ErrorKind.DISCONNECT, ErrorKind.UNAVAILABLE}  # then refused connects
    assert all(record.will_retry for record in recorder.records)


@ALL_DRIVERS
def test_idle_in_transaction_timeout_at_commit_is_not_an_unknown_outcome(
    db: Database, flavour: Flavour, recorder: Recorder
) -> None:
    """Idle past the timeout right before COMMIT: the session was gone, so rerun, not unknown."""
    # psycopg reads the server's 25P03 at COMMIT (it ended the session before the COMMIT
    # arrived); asyncpg loses it ("connection is closed"), and the transaction id tells.
    db.server.admin(f"ALTER DATABASE {db.name} SET idle_in_transaction_session_timeout = '1s'")
    engine = flavour.engine(db.url(flavour.driver))
    if flavour.driver == "asyncpg":
        settle_lost_commits(engine)
    runner = flavour.runner(engine, hooks=[recorder])

    async def write_then_idle_async(uow: Any, key: str) -> int:
        attempt = int(await uow.session.run_sync(place, uow, key))
        if attempt == 1:
            await asyncio.sleep(2.0)
        return attempt

    def write_then_idle(uow: Any, key: str) -> int:
        attempt = place(uow.session, uow, key)
        if attempt == 1:
            time.sleep(2.0)
        return attempt

    if flavour.is_async:
        attempt = flavour.loop.run_until_complete(runner.run(write_then_idle_async, "late"))
    else:
        attempt = runner.run(write_then_idle, "late")

    assert attempt == 2
    assert db.entries() == {"late": 1}
    assert db.counter() == 1
    [record] = recorder.records
    assert (record.kind, record.will_retry) == (ErrorKind.DISCONNECT, True)
