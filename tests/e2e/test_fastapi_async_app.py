"""The async FastAPI example tested as its users would: in memory, no database.

``app.dependency_overrides[get_async_units]`` hands the routes an ``AsyncRunner`` on the
async in-memory adapter; the lifespan then builds no engine. The operations are typed
against the application's ``AsyncImportsUnitOfWork`` protocol, which the fake unit of
work below satisfies as the SQLAlchemy one does.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import TYPE_CHECKING

import httpx
import pytest

from adapters.fastapi import get_async_units, install_exception_handlers
from adapters.memory import AsyncInMemoryRepository, AsyncInMemoryUnitOfWork, SimulatedError
from examples.fastapi_app.app import ImportOutcome, ImportTask
from examples.fastapi_async_app.app import AsyncImportsUnitOfWork, Settings, create_app
from uow import AsyncRunner, RetryPolicy, repository
from uow.testing import Fault, inject

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from fastapi import FastAPI

# Never connected to: the lifespan must build nothing while get_async_units is overridden.
UNUSED_URL = "mysql+asyncmy://nobody:secret@db.invalid/none"


class MemoryImports(AsyncInMemoryRepository[ImportTask]):
    async def by_source(self, source: str) -> Sequence[ImportTask]:
        return [task for task in await self.all() if task.source == source]


class MemoryOutcomes(AsyncInMemoryRepository[ImportOutcome]):
    unique = ("import_id",)  # as the table's unique key

    async def for_import(self, import_id: int) -> ImportOutcome | None:
        return next((o for o in await self.all() if o.import_id == import_id), None)


class FakeImports(AsyncInMemoryUnitOfWork):
    imports = repository(MemoryImports)
    outcomes = repository(MemoryOutcomes)


async def instant_download(source: str, _seconds: float) -> int:
    return len(source)


def make_app(
    units: AsyncRunner[AsyncImportsUnitOfWork],
    download: Callable[[str, float], Awaitable[int]] = instant_download,
) -> FastAPI:
    app = create_app(Settings(database_url=UNUSED_URL, download=download))
    app.dependency_overrides[get_async_units] = lambda: units
    # The fake's errors are what a give-up raises here; a real app keeps the defaults.
    install_exception_handlers(app, errors=(SimulatedError,))
    return app


@pytest.fixture
def units() -> AsyncRunner[FakeImports]:
    return FakeImports.factory(policy=RetryPolicy(attempts=3))


@pytest.fixture
def client(units: AsyncRunner[FakeImports]) -> Iterator[TestClient]:
    app = make_app(units)
    with TestClient(app) as client:  # runs the lifespan, which builds nothing
        assert getattr(app.state, "units", None) is None
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_async_imports_run_end_to_end_on_the_in_memory_adapter(client: TestClient) -> None:
    """The placeholder, the awaited background download and its outcome, without a database."""
    accepted = client.post("/imports", json={"source": "s1"})
    assert accepted.status_code == 202
    assert accepted.json() == {"id": 1, "status": "pending"}
    shown = client.get("/imports/1").json()
    assert shown == {"id": 1, "source": "s1", "status": "done", "size": 2}
    assert client.get("/imports", params={"source": "s1"}).json() == [shown]
    assert client.get("/imports/99").status_code == 404


@pytest.mark.usefixtures("uow_instant_retries")
def test_an_async_background_give_up_is_logged_and_never_reaches_the_server(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The outcome's write gives up after 3 attempts: an ERROR with its details, a 202 anyway."""
    caplog.set_level(logging.WARNING, logger="retrying_uow")
    # Statement 2 is the outcome's flush: the placeholder runs only one statement.
    with inject(Fault.disconnect(at=2, times=3)):
        response = client.post("/imports", json={"source": "s2"})

    assert response.status_code == 202
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR and "background" in r.msg]
    assert record.getMessage() == (
        "background task download_and_record failed: SimulatedError (attempts exhausted)"
    )
    assert (record.uow_operation, record.uow_attempt) == ("record_outcome", 3)  # type: ignore[attr-defined]
    assert client.get(f"/imports/{response.json()['id']}").json()["status"] == "pending"


@pytest.mark.usefixtures("uow_instant_retries")
def test_an_async_transient_give_up_answers_503_with_retry_after(client: TestClient) -> None:
    """A request whose operation ran out of attempts on a lost connection gets 503."""
    with inject(Fault.disconnect(at=1, times=3)):
        response = client.get("/imports/1")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json()["error"] == "database_unavailable"


def test_an_async_lost_commit_answers_a_500_of_its_own(client: TestClient) -> None:
    """CommitOutcomeUnknown is not "try again": its 500 says to check before repeating."""
    with inject(Fault.lost_commit(committed=True)):
        response = client.post("/imports", json={"source": "s3"})

    assert response.status_code == 500
    assert response.json()["error"] == "commit_outcome_unknown"
    assert response.json()["operation"] == "create_placeholder"
    assert [row["source"] for row in client.get("/imports", params={"source": "s3"}).json()] == [
        "s3"
    ]


@pytest.mark.anyio
async def test_other_requests_are_served_while_downloads_are_awaited(
    units: AsyncRunner[FakeImports],
) -> None:
    """Three imports await their downloads; meanwhile the loop serves reads, no attempt open."""
    release, all_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def held_download(source: str, _seconds: float) -> int:
        started.append(source)
        if len(started) == 3:
            all_started.set()
        await release.wait()
        return len(source)

    app = make_app(units, held_download)
    backend = units.backend
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        posts = [
            asyncio.ensure_future(client.post("/imports", json={"source": f"d{n}"}))
            for n in range(3)
        ]
        async with asyncio.timeout(5):
            await all_started.wait()
        attempts = backend.attempts  # type: ignore[attr-defined]
        listed = await client.get("/imports", params={"source": "d0"})
        assert [row["status"] for row in listed.json()] == ["pending"]
        assert backend.attempts == attempts + 1  # type: ignore[attr-defined]  # just the read
        assert not any(post.done() for post in posts)
        release.set()
        answers = await asyncio.gather(*posts)
        assert [answer.status_code for answer in answers] == [202] * 3
        done = await client.get("/imports", params={"source": "d2"})
        assert [row["status"] for row in done.json()] == ["done"]
