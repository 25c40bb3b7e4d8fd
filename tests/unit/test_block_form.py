"""The block form: `return` and `break` are refused before any attempt, attempts must be entered.

Every loop checked here is written out in this file: the check reads the loop's source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from adapters.memory import AsyncInMemoryBackend
from tests.unit.conftest import Task, TaskRepository, backend_of, committed_names
from uow import AsyncRunner, BlockFormError, Runner
from uow.testing import Fault, inject, set_testing

if TYPE_CHECKING:
    from collections.abc import Sequence


def nothing_ran(runner: Any, body_ran: list[str]) -> bool:
    backend = backend_of(runner)
    return body_ran == [] and (backend.attempts, backend.commits) == (0, 0)


# --- refused ---------------------------------------------------------------------------------


def test_return_inside_the_with_block_is_refused(units: Runner[Any]) -> None:
    """A `return` in the attempt's `with` block raises BlockFormError before the first attempt."""
    ran: list[str] = []

    def create() -> Task:
        for attempt in units.attempts("create"):
            with attempt as uow:
                ran.append("body")
                task: Task = uow.tasks.add(Task(name="lost"))
                return task
        raise AssertionError

    with pytest.raises(BlockFormError, match="`return` inside the block form's loop"):
        create()
    assert nothing_ran(units, ran)


def test_return_after_the_with_block_is_refused(units: Runner[Any]) -> None:
    """A `return` after the `with`, still in the loop, is refused the same way."""
    ran: list[str] = []

    def create() -> Task:
        for attempt in units.attempts("create"):
            with attempt as uow:
                ran.append("body")
                task: Task = uow.tasks.add(Task(name="lost"))
            return task  # a return after the block is the subject
        raise AssertionError

    with pytest.raises(BlockFormError, match=r"test_block_form\.py:\d+: `return`"):
        create()
    assert nothing_ran(units, ran)


def test_break_inside_the_with_block_is_refused(units: Runner[Any]) -> None:
    """A `break` in the `with` block would end the loop before a failed attempt is rerun."""
    ran: list[str] = []

    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                ran.append("body")
                uow.tasks.add(Task(name="lost"))
                break

    with pytest.raises(BlockFormError, match="`break` inside the block form's loop"):
        create()
    assert nothing_ran(units, ran)


def test_break_after_the_with_block_is_refused(units: Runner[Any]) -> None:
    """A `break` after the `with` (say, 'done, leave the loop') is refused before any attempt."""
    ran: list[str] = []

    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                ran.append("body")
                uow.tasks.add(Task(name="lost"))
            if ran:
                break

    with pytest.raises(BlockFormError, match="`break`"):
        create()
    assert nothing_ran(units, ran)


def test_return_inside_an_inner_loop_is_refused(units: Runner[Any]) -> None:
    """A `return` leaves every loop, so one inside an inner loop of the body is refused too."""
    ran: list[str] = []

    def first_match() -> str:
        for attempt in units.attempts("find"):
            with attempt as uow:
                tasks: Sequence[Task] = uow.tasks.all()
                for task in tasks:
                    ran.append("body")
                    return task.name
        return ""

    with pytest.raises(BlockFormError, match="`return`"):
        first_match()
    assert nothing_ran(units, ran)


def test_break_in_the_else_of_an_inner_loop_is_refused(units: Runner[Any]) -> None:
    """A `break` in an inner loop's `else:` breaks the block form's own loop: refused."""
    ran: list[str] = []

    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                ran.append("body")
                for name in ("a", "b"):
                    uow.tasks.add(Task(name=name))
                else:  # noqa: PLW0120 -- this `break` would leave the outer loop
                    break

    with pytest.raises(BlockFormError, match="`break`"):
        create()
    assert nothing_ran(units, ran)


def test_the_refusal_names_the_line_of_the_offending_statement(units: Runner[Any]) -> None:
    """The message points at the file and line of the `break` and the loop's own line."""

    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                uow.tasks.add(Task(name="lost"))
            break

    first_line = create.__code__.co_firstlineno
    with pytest.raises(BlockFormError) as excinfo:
        create()
    assert f"test_block_form.py:{first_line + 4}: `break`" in str(excinfo.value)
    assert f"(line {first_line + 1})" in str(excinfo.value)


# --- allowed ---------------------------------------------------------------------------------


def test_break_in_an_inner_loop_is_allowed(units: Runner[Any]) -> None:
    """A `break` that ends an inner loop leaves the block form's loop alone: it runs and reruns."""

    def create_until_b() -> list[str]:
        for attempt in units.attempts("create_until_b"):
            with attempt as uow:
                for name in ("a", "b", "c"):
                    if name == "b":
                        break
                    uow.tasks.add(Task(name=name))
                names = [task.name for task in uow.tasks.all()]
        return names

    with inject(Fault.disconnect(at=2)):
        assert create_until_b() == ["a"]
    assert (backend_of(units).attempts, backend_of(units).commits) == (2, 1)
    assert committed_names(units) == ["a"]


def test_continue_is_allowed(units: Runner[Any]) -> None:
    """`continue` (inside or after the `with`) just goes on to the loop's next iteration."""

    def create() -> None:
        for attempt in units.attempts("create"):
            with attempt as uow:
                uow.tasks.add(Task(name="kept"))
                if uow.active:
                    continue
            continue

    with inject(Fault.disconnect(at=1)):
        create()
    assert (backend_of(units).attempts, backend_of(units).commits) == (2, 1)
    assert committed_names(units) == ["kept"]


def test_return_in_a_function_defined_in_the_body_is_allowed(units: Runner[Any]) -> None:
    """A `return` of a nested function (or lambda) in the loop body is that function's own."""

    def create() -> str:
        for attempt in units.attempts("create"):
            with attempt as uow:

                def named(suffix: str) -> str:
                    return f"task-{suffix}"

                uow.tasks.add(Task(name=named("1")))
        else:  # noqa: PLW0120 -- a return in the loop's own `else` is allowed
            return "loop ended"

    assert create() == "loop ended"
    assert committed_names(units) == ["task-1"]


# --- attempts never entered ------------------------------------------------------------------


def test_attempt_never_entered_is_refused_at_once(units: Runner[Any]) -> None:
    """A loop body that never enters its attempt raises at once instead of spinning."""
    iterations: list[int] = []

    def spin() -> None:
        for attempt in units.attempts("spin"):
            iterations.append(attempt.number)  # noqa: PERF401 -- a body that never enters

    with pytest.raises(BlockFormError, match="never entered"):
        spin()
    assert iterations == [1]
    assert backend_of(units).attempts == 0


def test_attempt_skipped_with_continue_is_refused(units: Runner[Any]) -> None:
    """`continue` before the `with` skips the attempt: refused like any attempt never entered."""
    iterations: list[int] = []

    def skip() -> None:
        for attempt in units.attempts("skip"):
            iterations.append(attempt.number)
            if iterations:
                continue
            with attempt as uow:
                uow.tasks.add(Task(name="never"))

    with pytest.raises(BlockFormError, match="never entered"):
        skip()
    assert iterations == [1]
    assert committed_names(units) == []


def test_attempt_entered_twice_is_refused(units: Runner[Any]) -> None:
    """One attempt is one unit of work: entering it a second time is refused."""

    def twice() -> None:
        for attempt in units.attempts("twice"):
            with attempt as uow:
                uow.tasks.add(Task(name="first"))
            with attempt as uow:
                uow.tasks.add(Task(name="second"))

    with pytest.raises(BlockFormError, match="entered twice"):
        twice()
    assert committed_names(units) == ["first"]


# --- the async block form --------------------------------------------------------------------


@pytest.fixture
def aunits() -> Any:
    """An async runner on a fresh in-memory store, retries instant."""
    with set_testing(True):
        yield AsyncRunner(AsyncInMemoryBackend({"tasks": TaskRepository}))


@pytest.mark.anyio
async def test_async_return_is_refused_before_any_attempt(aunits: AsyncRunner[Any]) -> None:
    """`return` in an `async for` block form is refused before any attempt, as in sync code."""
    ran: list[str] = []

    async def create() -> Task:
        async for attempt in aunits.attempts("create"):
            async with attempt as uow:
                ran.append("body")
                task: Task = uow.tasks.add(Task(name="lost"))
            return task
        raise AssertionError

    with pytest.raises(BlockFormError, match="`return`"):
        await create()
    assert nothing_ran(aunits, ran)


@pytest.mark.anyio
async def test_async_break_is_refused_before_any_attempt(aunits: AsyncRunner[Any]) -> None:
    """`break` in an `async for` block form is refused before any attempt."""
    ran: list[str] = []

    async def create() -> None:
        async for attempt in aunits.attempts("create"):
            async with attempt as uow:
                ran.append("body")
                uow.tasks.add(Task(name="lost"))
                break

    with pytest.raises(BlockFormError, match="`break`"):
        await create()
    assert nothing_ran(aunits, ran)


@pytest.mark.anyio
async def test_async_inner_break_and_continue_are_allowed(aunits: AsyncRunner[Any]) -> None:
    """An inner loop's `break` and a `continue` are fine in the async block form; it reruns."""

    async def create() -> None:
        async for attempt in aunits.attempts("create"):
            async with attempt as uow:
                for name in ("a", "b"):
                    if name == "b":
                        break
                    uow.tasks.add(Task(name=name))
            continue

    with inject(Fault.disconnect(at=1)):
        await create()
    assert (backend_of(aunits).attempts, backend_of(aunits).commits) == (2, 1)
    assert committed_names(aunits) == ["a"]


@pytest.mark.anyio
async def test_async_attempt_never_entered_is_refused_at_once(aunits: AsyncRunner[Any]) -> None:
    """An `async for` body that never enters its attempt raises at once instead of spinning."""
    iterations: list[int] = []

    async def spin() -> None:
        async for attempt in aunits.attempts("spin"):
            iterations.append(attempt.number)  # noqa: PERF401 -- a body that never enters

    with pytest.raises(BlockFormError, match="never entered"):
        await spin()
    assert iterations == [1]
    assert backend_of(aunits).attempts == 0
