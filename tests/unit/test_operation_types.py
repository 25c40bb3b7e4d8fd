"""What a runner can run: sync runners refuse async and generator functions at once."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import AsyncInMemoryBackend
from tests.unit.conftest import Task, TaskRepository, backend_of, committed_names, create_task
from uow import AsyncRunner, Runner
from uow.testing import Fault, inject, set_testing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


async def create_later(uow: Any, name: str = "async") -> Task:
    """An async operation: the sync runner would commit before its body ran."""
    task: Task = uow.tasks.add(Task(name=name))
    return task


def create_lazily(uow: Any) -> Iterator[Task]:
    """A generator function: its body would never run."""
    yield uow.tasks.add(Task(name="generator"))


async def create_lazily_later(uow: Any) -> AsyncIterator[Task]:
    """An async generator function: neither runner can run it."""
    yield uow.tasks.add(Task(name="async generator"))


class AsyncCallable:
    """A callable object whose __call__ is async."""

    async def __call__(self, uow: Any) -> Task:
        task: Task = uow.tasks.add(Task(name="callable"))
        return task


class Service:
    """A bound method that is async."""

    async def create(self, uow: Any) -> Task:
        task: Task = uow.tasks.add(Task(name="method"))
        return task


ASYNC_ONES: list[tuple[Callable[..., Any], str]] = [
    (create_later, "create_later"),
    (functools.partial(create_later, name="partial"), "create_later"),
    (AsyncCallable(), "AsyncCallable"),
    (Service().create, "Service.create"),
]
ASYNC_IDS = ["async def", "partial of async def", "async __call__", "async method"]
GENERATORS: list[tuple[Callable[..., Any], str, str]] = [
    (create_lazily, "create_lazily", "is a generator function"),
    (create_lazily_later, "create_lazily_later", "is an async generator function"),
]


def refuse(runner: Runner[Any], how: str, fn: Callable[..., Any]) -> None:
    if how == "run":
        runner.run(fn)
    else:
        runner.operation(fn)


@pytest.mark.parametrize("how", ["run", "operation"])
@pytest.mark.parametrize(("fn", "name"), ASYNC_ONES, ids=ASYNC_IDS)
def test_async_function_is_refused_at_once(
    units: Runner[Any], how: str, fn: Callable[..., Any], name: str
) -> None:
    """An async callable is a TypeError naming it and pointing at the async runner; no attempt."""
    with pytest.raises(TypeError) as excinfo:
        refuse(units, how, fn)
    message = str(excinfo.value)
    assert message.startswith(f"{name} is an async function")
    assert "async runner" in message
    assert (backend_of(units).attempts, backend_of(units).commits) == (0, 0)


@pytest.mark.parametrize("how", ["run", "operation"])
@pytest.mark.parametrize(("fn", "name", "kind"), GENERATORS, ids=["generator", "async generator"])
def test_generator_function_is_refused_at_once(
    units: Runner[Any], how: str, fn: Callable[..., Any], name: str, kind: str
) -> None:
    """A generator or async generator function is a TypeError naming it; no attempt is made."""
    with pytest.raises(TypeError, match=f"^{name} {kind}: an operation must return its result"):
        refuse(units, how, fn)
    assert (backend_of(units).attempts, backend_of(units).commits) == (0, 0)


def test_lambda_returning_a_coroutine_is_refused_and_rolled_back(units: Runner[Any]) -> None:
    """A plain callable that returns a coroutine is refused at its first attempt, uncommitted."""
    with pytest.raises(TypeError) as excinfo:
        units.run(lambda uow: create_later(uow))  # type: ignore[unused-coroutine]  # the misuse under test  # noqa: PLW0108 -- a plain callable is the subject
    assert "<lambda> returned an awaitable" in str(excinfo.value)
    assert "async runner" in str(excinfo.value)
    assert (backend_of(units).attempts, backend_of(units).commits) == (1, 0)


def test_decorated_lambda_returning_a_coroutine_is_refused_when_called(
    units: Runner[Any],
) -> None:
    """The decorator cannot tell in advance; calling it raises TypeError and commits nothing."""
    decorated = units.operation(lambda uow: create_later(uow))  # noqa: PLW0108 -- as above
    with pytest.raises(TypeError, match="<lambda> returned an awaitable"):
        decorated()  # type: ignore[unused-coroutine]  # the misuse under test: refused
    assert backend_of(units).commits == 0
    assert committed_names(units) == []


def test_callable_returning_a_generator_is_refused(units: Runner[Any]) -> None:
    """A plain callable returning a generator is refused too: nothing of it would run."""
    with pytest.raises(TypeError, match="returned a generator"):
        units.run(lambda uow: create_lazily(uow))  # noqa: PLW0108 -- as above
    assert backend_of(units).commits == 0


def test_something_not_callable_is_refused(units: Runner[Any]) -> None:
    """A value that is not callable is a TypeError naming its type."""
    with pytest.raises(TypeError, match="must be callable, not str"):
        units.run("create_task")  # type: ignore[arg-type]


def test_sync_callables_of_every_shape_run(units: Runner[Any]) -> None:
    """Functions, partials, bound methods and callable objects that return plainly all run."""

    class Creator:
        def __call__(self, uow: Any) -> Task:
            return create_task(uow, "object")

        def create(self, uow: Any) -> Task:
            return create_task(uow, "method")

    units.run(functools.partial(create_task, name="partial"))
    units.run(Creator())
    units.run(Creator().create)
    assert committed_names(units) == ["method", "object", "partial"]


# --- the async runner --------------------------------------------------------------------------


@pytest.fixture
def aunits() -> Any:
    with set_testing(True):
        yield AsyncRunner(AsyncInMemoryBackend({"tasks": TaskRepository}))


@pytest.mark.anyio
async def test_async_runner_awaits_async_operations_and_reruns_them(
    aunits: AsyncRunner[Any],
) -> None:
    """The async runner awaits an async def, reruns it on a disconnect and commits once."""
    with inject(Fault.disconnect(at=1)):
        task = await aunits.run(create_later, "awaited")
    assert task.name == "awaited"
    assert (backend_of(aunits).attempts, backend_of(aunits).commits) == (2, 1)


@pytest.mark.anyio
async def test_async_runner_runs_plain_functions_and_async_callables(
    aunits: AsyncRunner[Any],
) -> None:
    """A plain function, a partial of an async def and an async callable object all run."""
    await aunits.run(create_task, "plain")  # type: ignore[arg-type]  # plain functions run too; run() is typed for awaitables
    await aunits.run(functools.partial(create_later, name="partial"))
    await aunits.run(AsyncCallable())
    assert committed_names(aunits) == ["callable", "partial", "plain"]


@pytest.mark.anyio
@pytest.mark.parametrize(("fn", "name", "kind"), GENERATORS, ids=["generator", "async generator"])
async def test_async_runner_refuses_generator_functions(
    aunits: AsyncRunner[Any], fn: Callable[..., Any], name: str, kind: str
) -> None:
    """Generators cannot be operations of the async runner either, as a call or decorated."""
    with pytest.raises(TypeError, match=f"^{name} {kind}"):
        await aunits.run(fn)
    with pytest.raises(TypeError, match=f"^{name} {kind}"):
        aunits.operation(fn)
    assert backend_of(aunits).attempts == 0


@pytest.mark.anyio
async def test_async_decorator_keeps_the_name(aunits: AsyncRunner[Any]) -> None:
    """The async decorator wraps with functools.wraps and runs the operation when awaited."""
    decorated = aunits.operation(create_later)
    assert decorated.__name__ == "create_later"
    assert (await decorated("decorated")).name == "decorated"
