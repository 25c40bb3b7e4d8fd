"""The rerun-safety check of async operations on the async SQLAlchemy adapter.

On a SQLite file through aiosqlite, and on MariaDB through asyncmy: the faults go through
SQLAlchemy's own error handling on the AsyncEngine's sync side, as for the sync adapter.
The database is restored and read with an AsyncEngine of its own (``async def`` callbacks,
awaited by the check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import (
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
    create_commit_marker_table,
    repository,
)
from tests.integration.model import Base, Counter, Task
from uow import AsyncRunner, RetryPolicy
from uow.testing import RerunReport, assert_rerun_safe_async, check_rerun_safety_async

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from tests.integration.helpers import Database

pytestmark = pytest.mark.anyio
POLICY = RetryPolicy(attempts=3, timeout=20)


class AsyncTasks(AsyncSqlAlchemyRepository[Task]):
    model = Task


class AsyncCounters(AsyncSqlAlchemyRepository[Counter]):
    model = Counter

    async def locked(self, name: str) -> Counter:
        query = sa.select(Counter).where(Counter.name == name).with_for_update()
        return (await self.session.scalars(query)).one()


class Registry(AsyncSqlAlchemyUnitOfWork):
    tasks = repository(AsyncTasks)
    counters = repository(AsyncCounters)


async def register(uow: Registry, name: str) -> str:
    """Safe: three statements (the INSERT autoflushed by the locking read, it, the UPDATE)."""
    uow.tasks.add(Task(name=name))
    counter = await uow.counters.locked("hits")
    counter.value += 1
    return name


@dataclass
class Target:
    """An AsyncEngine under test, and another one to restore and read the rows."""

    engine: AsyncEngine
    inspector: AsyncEngine
    outbox: list[str] = field(default_factory=list)

    def runner(self, **options: Any) -> AsyncRunner[Registry]:
        return Registry.factory(self.engine, policy=POLICY, **options)

    async def restore(self) -> None:
        self.outbox.clear()
        async with self.inspector.begin() as connection:
            await connection.execute(sa.delete(Task))
            await connection.execute(sa.delete(Counter))
            await connection.execute(sa.insert(Counter).values(name="hits", value=0))

    async def snapshot(self) -> tuple[list[str], dict[str, int]]:
        async with self.inspector.connect() as connection:
            names = list(await connection.scalars(sa.select(Task.name).order_by(Task.name)))
            counters = (await connection.execute(sa.select(Counter.name, Counter.value))).all()
        return names, {str(name): int(value) for name, value in counters}

    async def check(
        self, runner: AsyncRunner[Registry], operation: Callable[..., Awaitable[Any]]
    ) -> RerunReport:
        return await check_rerun_safety_async(
            runner,
            operation,
            "a",
            snapshot=self.snapshot,
            restore=self.restore,
            side_effects=lambda: list(self.outbox),
        )


async def _target(sync_url: str, async_url: str, **engine_options: Any) -> AsyncIterator[Target]:
    schema = sa.create_engine(sync_url, poolclass=NullPool)
    try:
        Base.metadata.create_all(schema)
        create_commit_marker_table(schema)
    finally:
        schema.dispose()
    engine = create_async_engine(async_url, **engine_options)
    inspector = create_async_engine(async_url, poolclass=NullPool, **engine_options)
    try:
        yield Target(engine, inspector)
    finally:
        await engine.dispose()
        await inspector.dispose()


@pytest.fixture(params=["aiosqlite", pytest.param("asyncmy", marks=pytest.mark.integration)])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    """The same checks on a SQLite file (aiosqlite) and on the throwaway MariaDB (asyncmy)."""
    if request.param == "aiosqlite":
        path = tmp_path / "app.db"
        async for made in _target(f"sqlite:///{path}", f"sqlite+aiosqlite:///{path}"):
            yield made
        return
    db: Database = request.getfixturevalue("db")
    async_url = db.server.url(db.name, driver="mysql+asyncmy")
    async for made in _target(db.url, async_url):
        yield made


async def test_async_check_passes_a_safe_operation(target: Target) -> None:
    """A fault at each of the 3 statements reruns to the same rows; lost COMMITs unknown."""
    report = await target.check(target.runner(), register)

    assert report.safe, str(report)
    assert [(str(f.fault), f.verdict, f.attempts) for f in report.findings] == [
        ("disconnect (2013) at statement 1", "safe", 2),
        ("disconnect (2013) at statement 2", "safe", 2),
        ("disconnect (2013) at statement 3", "safe", 2),
        ("lost COMMIT (2013), not applied", "unresolved", 1),
        ("lost COMMIT (2013), applied", "unresolved", 1),
    ]
    assert await target.snapshot() == ([], {"hits": 0})


async def test_async_commit_markers_make_lost_commits_safe(target: Target) -> None:
    """With commit markers both lost COMMITs are resolved on the async adapter too."""
    report = await assert_rerun_safe_async(
        target.runner(commit_markers=True),
        register,
        "a",
        snapshot=target.snapshot,
        restore=target.restore,
    )
    assert report.statements == 4  # the marker's INSERT is the last one
    assert [f.verdict for f in report.findings] == ["safe"] * 6
    assert [f.attempts for f in report.findings[-2:]] == [2, 1]


async def test_async_check_flags_mail_sent_inside_the_unit_of_work(target: Target) -> None:
    """Mail sent from the operation goes out again on every rerun: each statement flagged."""

    async def register_and_mail(uow: Registry, name: str) -> str:
        target.outbox.append(f"welcome {name}")
        return await register(uow, name)

    report = await target.check(target.runner(), register_and_mail)

    assert [f.fault.at for f in report.unsafe] == [1, 2, 3]
    assert report.unsafe[0].differences == (
        "side effects: expected ['welcome a'], got ['welcome a', 'welcome a']",
    )
