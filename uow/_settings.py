"""A runner's settings: one frozen record, so that ``using()`` is a replace and nothing drifts."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict

from uow._policy import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from uow._events import EventHandler, EventHandlers
    from uow._hooks import RetryHook

_DEFAULT_POLICY = RetryPolicy()


class _CommonOptions(TypedDict, total=False):
    policy: RetryPolicy
    """How often and how long operations are rerun (default: ``RetryPolicy()``)."""
    hooks: Sequence[RetryHook]
    """Called with a [`RetryDetails`][uow.RetryDetails] on every failed attempt."""
    idempotent: bool
    """Rerun after a lost COMMIT even when nothing tells whether it committed."""
    event_handlers: EventHandlers
    """Handlers of the domain events operations record, called after the commit."""
    independent: bool
    """Run as an operation of its own even inside an operation on another database
    (a rerun of the outer operation then repeats it)."""
    isolation_level: str | None
    """The transaction isolation level of every attempt (e.g. ``"SERIALIZABLE"``), where
    the adapter supports one; ``None`` leaves the connection's own."""
    clock: Callable[[], float]
    """Monotonic clock of the time budget (default ``time.monotonic``; a fake in tests)."""


class RunnerOptions(_CommonOptions, total=False):
    """The settings of a sync [`Runner`][uow.Runner], as keyword arguments."""

    verify: Callable[[Any], bool]
    """After a lost COMMIT, run in a fresh unit of work: did the operation's writes land?"""
    sleep: Callable[[float], None]
    """Waits between attempts (default ``time.sleep``; skipped in testing mode)."""


class AsyncRunnerOptions(_CommonOptions, total=False):
    """The settings of an [`AsyncRunner`][uow.AsyncRunner], as keyword arguments."""

    verify: Callable[[Any], Awaitable[bool]]
    """After a lost COMMIT, awaited in a fresh unit of work: did the writes land?"""
    sleep: Callable[[float], Awaitable[None]]
    """Waits between attempts (default ``asyncio.sleep``; skipped in testing mode)."""


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Everything a runner decides with, besides its backend; shared by sync and async."""

    policy: RetryPolicy = _DEFAULT_POLICY
    hooks: tuple[RetryHook, ...] = ()
    idempotent: bool = False
    verify: Callable[[Any], object] | None = None
    event_handlers: Mapping[type, tuple[EventHandler, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    independent: bool = False
    isolation_level: str | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] | None = None

    @classmethod
    def of(cls, options: Mapping[str, Any], base: RunnerSettings | None = None) -> RunnerSettings:
        """Return ``base`` (or the defaults) with ``options`` applied, checked by name and type."""
        current = base if base is not None else cls()
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            msg = f"unknown runner setting(s): {', '.join(unknown)}"
            raise TypeError(msg)
        changes = dict(options)
        if "policy" in changes and not isinstance(changes["policy"], RetryPolicy):
            msg = f"policy must be a RetryPolicy, not {type(changes['policy']).__name__}"
            raise TypeError(msg)
        if "hooks" in changes:
            changes["hooks"] = tuple(changes["hooks"])
        if "event_handlers" in changes:
            handlers = changes["event_handlers"] or {}
            changes["event_handlers"] = MappingProxyType(
                {event: tuple(listed) for event, listed in handlers.items()}
            )
        return dataclasses.replace(current, **changes)
