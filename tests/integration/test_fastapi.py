"""The FastAPI example against MariaDB: the seed incident's old pattern, and the runner's way.

The application is ``examples/fastapi_app`` driven by FastAPI's TestClient, which runs a
request's background tasks before it returns (so a background task's exception comes
out of ``client.post``). Rows are checked through the server's admin connection.
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any

import fastapi
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from adapters.sqlalchemy import SqlAlchemyBackend
from examples.fastapi_app.app import Settings, create_app
from tests.integration.helpers import CONNECT_ARGS, FAST_POLICY, Recorder, Threads
from uow import ErrorKind

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from fastapi import FastAPI
    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database

pytestmark = pytest.mark.integration

CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
SMALL_POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 2}
# From FastAPI 0.106 to 0.117, a yield dependency (get_db) exited before background tasks.
CLOSES_BEFORE_BACKGROUND_TASKS = (
    (0, 106) <= tuple(int(part) for part in fastapi.__version__.split(".")[:2]) < (0, 118)
)


class Downloads:
    """A fake download that blocks until released, and counts the ones under way."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.release = threading.Event()
        self.running = 0
        self._lock = threading.Lock()

    def __call__(self, source: str, _seconds: float) -> int:
        with self._lock:
            self.running += 1
        self.started.release()
        try:
            assert self.release.wait(20), "the test never released the downloads"
        finally:
            with self._lock:
                self.running -= 1
        return len(source)

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=10), "a download did not start"


def settings(db: Database, **changes: Any) -> Settings:
    engine_options = {"connect_args": dict(CONNECT_ARGS), **changes.pop("engine_options", {})}
    return Settings(
        database_url=db.url, policy=FAST_POLICY, engine_options=engine_options, **changes
    )


def engine_of(app: FastAPI) -> Engine:
    backend = app.state.units.backend
    assert isinstance(backend, SqlAlchemyBackend)
    return backend.engine


def imports(db: Database, source: str) -> list[tuple[Any, ...]]:
    return db.query(
        "SELECT i.id, i.status, COUNT(o.id) FROM {db}.fastapi_app_imports i "
        "LEFT JOIN {db}.fastapi_app_outcomes o ON o.import_id = i.id "
        "WHERE i.source = %s GROUP BY i.id, i.status",
        [source],
    )


def test_old_pattern_loses_the_outcome_with_a_lost_connection(db: Database) -> None:
    """The request's session, held through the download, fails its commit with 2006/2013."""
    app = create_app(settings(db, wait_timeout=1, download_seconds=1.6))
    with TestClient(app) as client, pytest.raises(RuntimeError) as caught:
        client.post("/imports/old-pattern", json={"source": "old"})

    # The app's exception handlers map DBAPIError; raised after the response started (in
    # the background task), Starlette reports it as a RuntimeError from the original.
    assert "response already started" in str(caught.value)
    error = caught.value.__cause__
    assert isinstance(error, OperationalError)
    assert error.orig is not None
    assert error.orig.args[0] in {CR_SERVER_GONE_ERROR, CR_SERVER_LOST}
    assert error.connection_invalidated
    [(_, status, outcomes)] = imports(db, "old")
    assert (status, outcomes) == ("pending", 0)
    assert db.query("SELECT COUNT(*) FROM {db}.fastapi_app_outcomes") == [(0,)]


def test_new_pattern_records_one_outcome_although_the_pooled_connection_died(
    db: Database, recorder: Recorder
) -> None:
    """The background task holds nothing; its write reruns once on a fresh connection."""
    app = create_app(settings(db, wait_timeout=1, download_seconds=1.6, hooks=(recorder,)))
    with TestClient(app) as client:
        response = client.post("/imports", json={"source": "new"})
        shown = client.get(f"/imports/{response.json()['id']}").json()

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    [(import_id, status, outcomes)] = imports(db, "new")
    assert (import_id, status, outcomes) == (response.json()["id"], "done", 1)
    assert db.query("SELECT COUNT(*) FROM {db}.fastapi_app_outcomes") == [(1,)]
    assert shown == {"id": import_id, "source": "new", "status": "done", "size": 3 * 1024}
    # The connection the placeholder used idled in the pool past wait_timeout.
    [record] = recorder.records
    assert (record.operation, record.attempt, record.will_retry) == ("record_outcome", 1, True)
    assert (record.kind, record.errno) == (ErrorKind.DISCONNECT, CR_SERVER_GONE_ERROR)
    assert record.cause is not None
    assert "in the pool" in record.cause


def test_background_downloads_hold_no_connection_so_other_requests_run(db: Database) -> None:
    """Four imports download on a pool of two; meanwhile every other request is served at once."""
    downloads = Downloads()
    app = create_app(settings(db, download=downloads, engine_options=SMALL_POOL))
    threads = Threads()
    with TestClient(app) as client:
        try:
            for i in range(4):
                threads.start(
                    f"import-{i}",
                    functools.partial(client.post, "/imports", json={"source": f"s{i}"}),
                )
            downloads.wait_started(4)
            assert engine_of(app).pool.checkedout() == 0  # type: ignore[attr-defined]
            served = []
            for i in range(6):
                started = time.monotonic()
                response = client.get("/imports", params={"source": f"s{i % 4}"})
                served.append(time.monotonic() - started)
                assert response.status_code == 200
                assert [row["status"] for row in response.json()] == ["pending"]
            assert downloads.running == 4  # all of it happened while every download ran
        finally:
            downloads.release.set()
        threads.join(20)

    assert threads.errors == {}
    assert all(result.status_code == 202 for result in threads.results.values())  # type: ignore[attr-defined]
    assert max(served) < 1.0  # far below pool_timeout: nobody waited for a connection
    assert sorted(db.query("SELECT status FROM {db}.fastapi_app_imports")) == [("done",)] * 4
    assert db.query("SELECT COUNT(*) FROM {db}.fastapi_app_outcomes") == [(4,)]


def test_old_pattern_exhausts_the_pool_while_it_downloads(db: Database) -> None:
    """Same setup, old pattern: two downloads hold the pool; everything else times out."""
    downloads = Downloads()
    app = create_app(settings(db, download=downloads, engine_options=SMALL_POOL))
    threads = Threads()
    with TestClient(app) as client:
        try:
            for i in range(4):
                threads.start(
                    f"import-{i}",
                    functools.partial(
                        client.post, "/imports/old-pattern", json={"source": f"s{i}"}
                    ),
                )
            downloads.wait_started(2)  # the other two wait for a connection
            assert engine_of(app).pool.checkedout() == 2  # type: ignore[attr-defined]
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError):
                client.get("/imports", params={"source": "s0"})
            waited = time.monotonic() - started
            while len(threads.errors) < 2 and time.monotonic() - started < 5:
                time.sleep(0.05)  # the two waiting imports reach their pool_timeout too
            assert downloads.running == 2  # all of it happened while the downloads ran
        finally:
            downloads.release.set()
        threads.join(20)

    assert waited >= SMALL_POOL["pool_timeout"] - 0.1
    timed_out = [
        key for key, error in threads.errors.items() if isinstance(error, PoolTimeoutError)
    ]
    assert len(timed_out) == 2
    assert len(threads.results) == 2  # the two that got connections finished after the release
    statuses = sorted(
        status for (status,) in db.query("SELECT status FROM {db}.fastapi_app_imports")
    )
    if CLOSES_BEFORE_BACKGROUND_TASKS:
        # The session closed at the response and its task opened it again: some of the
        # two that timed out did so in their task, after writing their placeholder.
        assert statuses[:2] == ["done", "done"]
        assert set(statuses[2:]) <= {"pending"}
    else:  # the two that timed out never got a connection to write their placeholder
        assert statuses == ["done", "done"]
