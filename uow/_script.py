"""Scripts: the attempt's steps written once, run by a sync or an async driver.

A script is a generator that yields zero-argument callables (the steps: flush,
commit, roll back, a marker lookup, ...) and receives what each returned; an
exception a step raised is thrown back into it. The sync driver calls each step;
the async driver also awaits what a step returns when it is awaitable. So the order
of the steps, and every rule between them, exists once for both runners.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")
Step = Callable[[], Any]
Script = Generator[Step, Any, T]


def run_sync(script: Script[T]) -> T:
    """Run a script, calling each step."""
    try:
        step = next(script)
        while True:
            try:
                value = step()
            except BaseException as error:  # noqa: BLE001 -- the script decides what it means
                step = script.throw(error)
            else:
                step = script.send(value)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(script: Script[T]) -> T:
    """Run a script, awaiting what each step returns when it is awaitable."""
    try:
        step = next(script)
        while True:
            try:
                value = step()
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as error:  # noqa: BLE001 -- cancellation included
                step = script.throw(error)
            else:
                step = script.send(value)
    except StopIteration as done:
        result: T = done.value
        return result
