"""What the runner calls an operation, and which callables it can run at all."""

from __future__ import annotations

import functools
import inspect
from types import FunctionType, MethodType
from typing import Literal

Flavour = Literal["sync", "async"]

_NOT_PLAIN = (
    inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_GENERATOR
    | inspect.CO_ASYNC_GENERATOR
)
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict, set})


def operation_name(fn: object) -> str:
    """Return the name an operation goes by in logs, notes and hook records.

    Built from qualified names only, never from ``repr()``: a ``functools.partial``
    is named after its function, a callable object after its class, so bound
    arguments (a card number, a password) never reach a log line.
    """
    target = _unwrapped(fn)
    name = getattr(target, "__qualname__", None)
    if isinstance(name, str) and not inspect.isclass(target):
        return name
    return type(target).__qualname__


def check_operation(fn: object, flavour: Flavour) -> str:
    """Refuse, at once, a callable the runner of this flavour cannot run; return its name.

    A sync runner given an ``async def`` would commit an empty transaction and return
    an un-awaited coroutine; a generator function's body would never run at all.
    """
    if type(fn) is FunctionType or type(fn) is MethodType:
        # The common case, told from the code's flags without inspect's general path.
        plain = not fn.__code__.co_flags & _NOT_PLAIN
        if plain and getattr(fn, "_is_coroutine_marker", None) is None:
            return fn.__qualname__
    if not callable(fn):
        msg = f"an operation must be callable, not {type(fn).__name__}"
        raise TypeError(msg)
    target = _unwrapped(fn)
    call = target if inspect.isroutine(target) else getattr(target, "__call__", target)  # noqa: B004
    name = operation_name(fn)
    if inspect.isasyncgenfunction(call) or inspect.isgeneratorfunction(call):
        kind = "an async generator" if inspect.isasyncgenfunction(call) else "a generator"
        msg = (
            f"{name} is {kind} function: an operation must return its result, "
            "not yield it (its body would never run)"
        )
        raise TypeError(msg)
    is_async = inspect.iscoroutinefunction(call)
    if flavour == "sync" and is_async:
        msg = (
            f"{name} is an async function: the sync runner would commit before its body "
            "ran; run it with the async runner (adapters.sqlalchemy.AsyncSqlAlchemyUnitOfWork"
            ".factory(async_engine) gives one) as `await units.run(...)`"
        )
        raise TypeError(msg)
    return name


def check_result(fn: object, result: object, flavour: Flavour) -> None:
    """Refuse a result that shows the callable was of the wrong flavour after all.

    A lambda or a callable object can return a coroutine or generator without being
    declared as one; committing then would commit nothing of it.
    """
    if type(result) in _PLAIN_RESULTS:
        return
    if flavour == "sync" and inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        msg = (
            f"{operation_name(fn)} returned an awaitable: it is async, so the sync "
            "runner cannot run it; use the async runner"
        )
        raise TypeError(msg)
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        msg = f"{operation_name(fn)} returned a generator: an operation must return its result"
        raise TypeError(msg)


def _unwrapped(fn: object) -> object:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    return getattr(target, "__func__", target)  # bound methods
