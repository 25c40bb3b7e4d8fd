"""Domain events: published once, after the commit of the attempt that succeeded."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from uow._hooks import logger
from uow._names import operation_name

if TYPE_CHECKING:
    from uow._script import Script

EventHandler = Callable[[Any], Any]
"""Receives one event after its operation committed (an async runner awaits what it returns)."""
EventHandlers = Mapping[type, Sequence[EventHandler]]
"""Handlers by event class; an event goes to the handlers of every class it is an instance of."""


def publish(events: Sequence[object], handlers: EventHandlers, operation: str) -> Script[None]:
    """Hand each event to its handlers; a failing handler is logged, the commit stands."""
    for event in events:
        for event_type, type_handlers in handlers.items():
            if not isinstance(event, event_type):
                continue
            for handler in type_handlers:
                try:
                    yield partial(handler, event)
                except Exception:  # noqa: BLE001 -- committed: report it, never undo or rerun
                    logger.exception(
                        "event handler %s failed for %s of %s; the commit stands",
                        operation_name(handler),
                        type(event).__qualname__,
                        operation,
                        extra={"uow_operation": operation, "uow_event": type(event).__qualname__},
                    )
