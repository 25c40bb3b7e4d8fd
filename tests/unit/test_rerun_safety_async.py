"""The rerun-safety check of async operations, on the async in-memory adapter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import (
    AsyncInMemoryBackend,
    AsyncInMemoryRepository,
    AsyncInMemoryUnitOfWork,
    InMemoryBackend,
    InMemoryRepository,
    InMemoryUnitOfWork,
)
from tests.unit.conftest import Task
from uow import AsyncRunner, RetryPolicy, Runner
from uow.testing import (
    RerunReport,
    assert_rerun_safe,
    assert_rerun_safe_async,
    check_rerun_safety,
    check_rerun_safety_async,
    is_testing,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio


class AsyncTaskRepository(AsyncInMemoryRepository[Task]):
    table_name = "tasks"


class AsyncTasks(AsyncInMemoryUnitOfWork):
    pass


async def create(uow: Any, name: str) -> Task:
    """Two statements: a read, then the insert (flushed at the commit)."""
    if any(t.name == name for t in await uow.tasks.all()):
        raise ValueError(name)
    task: Task = uow.tasks.add(Task(name=name))
    await asyncio.sleep(0)  # an await point inside the operation
    return task


@dataclass
class World:
    """The async runner and what a test restores before every run: the store and the outbox."""

    runner: AsyncRunner[Any]
    outbox: list[str]
    restores: int = 0

    @property
    def backend(self) -> AsyncInMemoryBackend:
        backend = self.runner.backend
        assert isinstance(backend, AsyncInMemoryBackend)
        return backend

    async def restore(self) -> None:
        await asyncio.sleep(0)  # an async restore, awaited by the check
        self.restores += 1
        self.backend.tables = {}
        self.outbox.clear()

    def snapshot(self) -> list[str]:
        return sorted(t.name for t in self.backend.tables.get("tasks", {}).values())

    async def check(self, operation: Any, *args: Any, **kwargs: Any) -> RerunReport:
        return await check_rerun_safety_async(
            self.runner,
            operation,
            *args,
            snapshot=self.snapshot,
            restore=self.restore,
            side_effects=lambda: list(self.outbox),
            **kwargs,
        )


@pytest.fixture
def world() -> World:
    runner = AsyncTasks.factory(
        repositories={"tasks": AsyncTaskRepository}, policy=RetryPolicy(attempts=3)
    )
    return World(runner, [])


async def test_a_safe_async_operation_passes_at_every_point(world: World) -> None:
    """Faults at both statements rerun to the same state; lost COMMITs stay unresolved."""
    report = await world.check(create, "a", result=lambda task: task.name)

    assert report.safe, str(report)
    assert report.statements == 2
    assert [(str(f.fault), f.verdict, f.attempts) for f in report.findings] == [
        ("disconnect (2013) at statement 1", "safe", 2),
        ("disconnect (2013) at statement 2", "safe", 2),
        ("lost COMMIT (2013), not applied", "unresolved", 1),
        ("lost COMMIT (2013), applied", "unresolved", 1),
    ]
    assert world.restores == 6  # before each of the 5 runs, and at the end
    assert world.snapshot() == []
    assert not is_testing()  # retries were instant only during the check


async def test_async_mail_sent_inside_the_unit_of_work_is_flagged(world: World) -> None:
    """Mail sent after the read goes out twice when the flush at COMMIT fails: flagged there."""

    async def create_and_mail(uow: Any, name: str) -> Task:
        task = await create(uow, name)
        world.outbox.append(f"created {name}")
        return task

    report = await world.check(create_and_mail, "a", result=lambda task: task.name)

    assert [f.fault.at for f in report.unsafe] == [2]  # a fault at the read comes before it
    assert report.unsafe[0].differences == (
        "side effects: expected ['created a'], got ['created a', 'created a']",
    )
    with pytest.raises(AssertionError, match=r"UNSAFE +disconnect \(2013\) at statement 2"):
        report.assert_safe()


async def test_async_commit_markers_resolve_lost_commits(world: World) -> None:
    """With commit markers the lost COMMITs are checked like the other points: all safe."""
    world.backend.commit_markers = True
    report = await assert_rerun_safe_async(
        world.runner,
        create,
        "a",
        snapshot=world.snapshot,
        restore=world.restore,
        result=lambda task: task.name,
    )
    assert [f.verdict for f in report.findings] == ["safe"] * 4
    assert [f.attempts for f in report.findings[-2:]] == [2, 1]


async def test_sync_and_async_reports_are_the_same(world: World) -> None:
    """The same operation, sync and async, gives the same findings: one comparison."""

    def create_sync(uow: Any, name: str) -> Task:
        task: Task = uow.tasks.add(Task(name=name))
        return task

    async def create_async(uow: Any, name: str) -> Task:
        return create_sync(uow, name)

    create_async.__qualname__ = create_sync.__qualname__

    class SyncTaskRepository(InMemoryRepository[Task]):
        table_name = "tasks"

    sync_runner = InMemoryUnitOfWork.factory(repositories={"tasks": SyncTaskRepository})
    sync_store: object = sync_runner.backend
    assert isinstance(sync_store, InMemoryBackend)

    def restore_sync() -> None:
        sync_store.tables = {}

    def snapshot_sync() -> list[str]:
        return sorted(t.name for t in sync_store.tables.get("tasks", {}).values())

    sync_report = check_rerun_safety(
        sync_runner,
        create_sync,
        "a",
        snapshot=snapshot_sync,
        restore=restore_sync,
        result=lambda task: task.name,
    )
    async_report = await world.check(create_async, "a", result=lambda task: task.name)
    assert str(async_report) == str(sync_report)


async def test_the_sync_check_refuses_an_async_runner_and_back(world: World) -> None:
    """Each entry point names the other when given the other kind of runner."""
    with pytest.raises(TypeError, match=r"await check_rerun_safety_async\(\.\.\.\)"):
        check_rerun_safety(
            world.runner,  # type: ignore[arg-type]
            create,
            "a",
            snapshot=world.snapshot,
            restore=world.restore,
        )
    sync_runner: Runner[Any] = Runner(AsyncInMemoryBackend())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"call check_rerun_safety\(\.\.\.\)"):
        await check_rerun_safety_async(
            sync_runner,  # type: ignore[arg-type]
            create,
            "a",
            snapshot=world.snapshot,
            restore=world.restore,
        )
    with pytest.raises(TypeError):
        assert_rerun_safe(
            world.runner,  # type: ignore[arg-type]
            create,
            "a",
            snapshot=world.snapshot,
            restore=world.restore,
        )


async def test_a_failing_clean_async_run_cannot_be_checked(world: World) -> None:
    """The clean run's own failure is reported, and the starting state is restored after it."""

    async def broken(_uow: Any) -> None:
        raise LookupError("no such thing")

    with pytest.raises(AssertionError, match=r"the clean run of .*broken failed") as caught:
        await world.check(broken)
    assert isinstance(caught.value.__cause__, LookupError)
    assert world.restores == 2


async def test_a_cancellation_during_the_check_propagates(world: World) -> None:
    """A cancelled check is not a finding: CancelledError leaves it, testing mode is reset."""
    started = asyncio.Event()

    async def waits(uow: Any) -> None:
        await uow.tasks.all()
        started.set()
        await asyncio.sleep(10)

    task = asyncio.ensure_future(world.check(waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not is_testing()
    assert world.restores == 2  # the clean run's, and the one at the end


async def test_the_plugin_fixture_checks_async_operations(
    world: World, uow_rerun_check_async: Callable[..., Awaitable[RerunReport]]
) -> None:
    """``uow_rerun_check_async`` is the async assertion: a report back, or AssertionError."""
    report = await uow_rerun_check_async(
        world.runner, create, "a", snapshot=world.snapshot, restore=world.restore
    )
    assert report.statements == 2

    async def create_and_mail(uow: Any, name: str) -> Task:
        world.outbox.append(name)
        return await create(uow, name)

    with pytest.raises(AssertionError, match="2 UNSAFE"):
        await uow_rerun_check_async(
            world.runner,
            create_and_mail,
            "a",
            snapshot=world.snapshot,
            restore=world.restore,
            side_effects=lambda: list(world.outbox),
        )
