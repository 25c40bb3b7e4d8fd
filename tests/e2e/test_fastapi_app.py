"""The FastAPI example's application tested as its users would: in memory, no database.

``app.dependency_overrides[get_units]`` hands the routes a runner on the in-memory
adapter; the lifespan then builds no engine. The operations are typed against the
application's own ``ImportsUnitOfWork`` protocol, which the fake unit of work below
satisfies as the SQLAlchemy one does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import warnings
from typing import TYPE_CHECKING

import httpx
import pytest

from adapters.fastapi import get_units, install_exception_handlers
from adapters.memory import InMemoryRepository, InMemoryUnitOfWork, SimulatedError
from examples.fastapi_app.app import (
    ImportOutcome,
    ImportStatus,
    ImportsUnitOfWork,
    ImportTask,
    ImportUnits,
    Settings,
    create_app,
    find_imports,
)
from uow import ErrorKind, RetryPolicy, Runner, repository
from uow.testing import Fault, inject, set_testing

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from fastapi import FastAPI

# Never connected to: the lifespan must build nothing while get_units is overridden.
UNUSED_URL = "mysql+pymysql://nobody:secret@db.invalid/none"


class MemoryImports(InMemoryRepository[ImportTask]):
    def by_source(self, source: str) -> Sequence[ImportTask]:
        return [task for task in self.all() if task.source == source]


class MemoryOutcomes(InMemoryRepository[ImportOutcome]):
    unique = ("import_id",)  # as the table's unique key

    def for_import(self, import_id: int) -> ImportOutcome | None:
        return next((o for o in self.all() if o.import_id == import_id), None)


class FakeImports(InMemoryUnitOfWork):
    imports = repository(MemoryImports)
    outcomes = repository(MemoryOutcomes)


def instant_download(source: str, _seconds: float) -> int:
    return len(source)


def make_app(units: Runner[ImportsUnitOfWork]) -> FastAPI:
    app = create_app(Settings(database_url=UNUSED_URL, download=instant_download))
    app.dependency_overrides[get_units] = lambda: units
    # The fake's errors are what a give-up raises here; a real app keeps the defaults.
    install_exception_handlers(app, errors=(SimulatedError,))
    return app


@pytest.fixture
def units() -> Runner[FakeImports]:
    return FakeImports.factory(policy=RetryPolicy(attempts=3))


@pytest.fixture
def client(units: Runner[FakeImports]) -> Iterator[TestClient]:
    app = make_app(units)
    with TestClient(app) as client:  # runs the lifespan, which builds nothing
        assert getattr(app.state, "units", None) is None
        yield client


def test_imports_run_end_to_end_on_the_in_memory_adapter(client: TestClient) -> None:
    """The placeholder, the background download and its outcome, all without a database."""
    accepted = client.post("/imports", json={"source": "s1"})
    assert accepted.status_code == 202
    assert accepted.json() == {"id": 1, "status": "pending"}
    shown = client.get("/imports/1").json()
    assert shown == {"id": 1, "source": "s1", "status": "done", "size": 2}
    assert client.get("/imports", params={"source": "s1"}).json() == [shown]
    assert client.get("/imports/99").status_code == 404


@pytest.mark.usefixtures("uow_instant_retries")
def test_a_background_give_up_is_logged_and_never_reaches_the_server(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The outcome's write gives up after 3 attempts: an ERROR with its details, a 202 anyway."""
    caplog.set_level(logging.WARNING, logger="retrying_uow")
    # Statement 2 is the outcome's INSERT: the placeholder runs only one statement.
    with inject(Fault.disconnect(at=2, times=3)):
        response = client.post("/imports", json={"source": "s2"})  # would raise if it did

    assert response.status_code == 202
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and "background" in r.msg]
    assert record.getMessage() == (
        "background task download_and_record failed: SimulatedError (attempts exhausted)"
    )
    assert (record.uow_operation, record.uow_attempt) == ("record_outcome", 3)  # type: ignore[attr-defined]
    assert (record.uow_kind, record.uow_errno) == ("disconnect", 2013)  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert client.get(f"/imports/{response.json()['id']}").json()["status"] == "pending"
    assert client.get("/imports", params={"source": "s2"}).status_code == 200  # still serving


@pytest.mark.usefixtures("uow_instant_retries")
def test_a_transient_give_up_answers_503_with_retry_after(client: TestClient) -> None:
    """A request whose operation ran out of attempts on a lost connection gets 503."""
    with inject(Fault.disconnect(at=1, times=3)):
        response = client.get("/imports/1")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"  # the policy's time budget
    assert response.json() == {
        "error": "database_unavailable",
        "kind": "disconnect",
        "reason": "attempts exhausted",
    }


def test_a_lost_commit_answers_a_500_of_its_own(client: TestClient) -> None:
    """CommitOutcomeUnknown is not "try again": its 500 says to check before repeating."""
    with inject(Fault.lost_commit(committed=True)):
        response = client.post("/imports", json={"source": "s3"})

    assert response.status_code == 500
    assert response.json()["error"] == "commit_outcome_unknown"
    assert response.json()["operation"] == "create_placeholder"
    assert "Retry-After" not in response.headers
    # It did commit: the client that checks finds the import.
    assert [row["source"] for row in client.get("/imports", params={"source": "s3"}).json()] == [
        "s3"
    ]


def test_a_permanent_error_is_not_turned_into_a_503(units: Runner[FakeImports]) -> None:
    """An error that is never retried keeps FastAPI's own handling (here a plain 500)."""
    app = make_app(units)

    @app.get("/broken")
    def broken(units: ImportUnits) -> None:
        units.run(record_nothing)

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


def record_nothing(_uow: ImportsUnitOfWork) -> None:
    raise SimulatedError(ErrorKind.PERMANENT)  # e.g. a constraint the data breaks


async def loop_lag_during(app: FastAPI, path: str) -> tuple[float, float, int]:
    """Request ``path`` while a ticker runs on the loop: (request time, worst gap, ticks)."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with inject(Fault.disconnect(at=1)):  # attempt 1 fails; the rerun waits 0.5 s
            response = await client.get(path, params={"source": "s"})
        took = time.monotonic() - started
        await asyncio.sleep(0.05)  # a stalled ticker ticks again only now
        ticking.cancel()
    assert response.status_code == 200, response.text
    last_before = max(tick for tick in ticks if tick <= started)
    during = [tick for tick in ticks if tick >= last_before]
    gaps = [later - earlier for earlier, later in itertools.pairwise(during)]
    return took, max(gaps), len([tick for tick in during if tick <= started + took])


def test_an_async_endpoint_keeps_the_event_loop_serving_while_an_operation_reruns() -> None:
    """``await run_in_threadpool(units.run, ...)``: the loop ticks on through a real 0.5 s wait."""
    with set_testing(False):
        slow = FakeImports.factory(sleep=lambda _wait: time.sleep(0.5))  # a real, blocking wait
        app = make_app(slow)

        @app.get("/blocking")
        async def blocking(source: str, units: ImportUnits) -> list[ImportStatus]:
            return units.run(find_imports, source)  # what not to do: on the loop's thread

        took, worst_gap, ticks = asyncio.run(loop_lag_during(app, "/imports"))
        assert took >= 0.5
        assert worst_gap < 0.2, f"the loop stalled {worst_gap:.3f} s"
        assert ticks >= 20

        # The control: the same operation on the loop's thread stops the ticker.
        took, worst_gap, _ = asyncio.run(loop_lag_during(app, "/blocking"))
        assert took >= 0.5
        assert worst_gap >= 0.45
