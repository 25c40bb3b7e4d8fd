"""The async FastAPI example against MariaDB, through asyncmy.

The application is ``examples/fastapi_async_app`` driven in-process through httpx's ASGI
transport (its lifespan entered by the test), which, like the TestClient, awaits a
request's background tasks before it returns the response. Rows are checked through the
server's admin connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from adapters.sqlalchemy import AsyncSqlAlchemyBackend
from examples.fastapi_async_app.app import Settings, create_app
from tests.integration.helpers import FAST_POLICY, Recorder
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from tests.integration.helpers import Database

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

GONE = {2006, 2013}
"""What asyncmy reports for a connection the server closed for idling (2006 when it sat in
the pool, 2013 when the session held it)."""
SMALL_POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 2}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(db: Database, **changes: Any) -> Settings:
    url = db.server.url(db.name, driver="mysql+asyncmy")
    return Settings(database_url=url, policy=FAST_POLICY, **changes)


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client


def checked_out(app: FastAPI) -> int:
    backend = app.state.units.backend
    assert isinstance(backend, AsyncSqlAlchemyBackend)
    return int(backend.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


def imports(db: Database, source: str) -> list[tuple[Any, ...]]:
    return db.query(
        "SELECT i.id, i.status, COUNT(o.id) FROM {db}.fastapi_app_imports i "
        "LEFT JOIN {db}.fastapi_app_outcomes o ON o.import_id = i.id "
        "WHERE i.source = %s GROUP BY i.id, i.status",
        [source],
    )


async def test_the_outcome_is_recorded_once_although_the_pooled_connection_died(
    db: Database, recorder: Recorder
) -> None:
    """The download outlasts wait_timeout: the outcome's write reruns once, on a new connection."""
    app = create_app(settings(db, wait_timeout=1, download_seconds=1.6, hooks=(recorder,)))
    async for client in serve(app):
        response = await client.post("/imports", json={"source": "new"})
        shown = (await client.get(f"/imports/{response.json()['id']}")).json()

    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    [(import_id, status, outcomes)] = imports(db, "new")
    assert (import_id, status, outcomes) == (response.json()["id"], "done", 1)
    assert shown == {"id": import_id, "source": "new", "status": "done", "size": 3 * 1024}
    [record] = recorder.records
    assert (record.operation, record.attempt, record.will_retry) == ("record_outcome", 1, True)
    assert record.kind is ErrorKind.DISCONNECT
    assert record.errno in GONE
    assert record.cause is not None
    assert "in the pool" in record.cause


async def test_downloads_hold_no_connection_so_other_requests_are_served(db: Database) -> None:
    """Four imports await their downloads on a pool of two; reads are served meanwhile."""
    release, all_started = asyncio.Event(), asyncio.Event()
    started: list[str] = []

    async def held_download(source: str, _seconds: float) -> int:
        started.append(source)
        if len(started) == 4:
            all_started.set()
        await release.wait()
        return len(source)

    app = create_app(settings(db, download=held_download, engine_options=SMALL_POOL))
    async for client in serve(app):
        posts = [
            asyncio.ensure_future(client.post("/imports", json={"source": f"s{n}"}))
            for n in range(4)
        ]
        async with asyncio.timeout(10):
            await all_started.wait()
        assert checked_out(app) == 0  # four downloads under way, no connection held
        for n in range(6):
            async with asyncio.timeout(1.0):  # far below pool_timeout: nobody waits
                listed = await client.get("/imports", params={"source": f"s{n % 4}"})
            assert [row["status"] for row in listed.json()] == ["pending"]
        release.set()
        answers = await asyncio.gather(*posts)

    assert [answer.status_code for answer in answers] == [202] * 4
    assert sorted(db.query("SELECT status FROM {db}.fastapi_app_imports")) == [("done",)] * 4
    assert db.query("SELECT COUNT(*) FROM {db}.fastapi_app_outcomes") == [(4,)]
