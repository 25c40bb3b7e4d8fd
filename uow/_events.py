"""Domain events: published once, after the commit of the attempt that succeeded."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from uow._hooks import logger

EventHandler = Callable[[Any], None]
"""Receives one event after its operation committed."""
EventHandlers = Mapping[type, Sequence[EventHandler]]
"""Handlers by event class; an event goes to the handlers of every class it is an instance of."""


def publish(events: Sequence[object], handlers: EventHandlers, operation: str) -> None:
    """Hand each event to its handlers; a failing handler is logged, the commit stands."""
    for event in events:
        for event_type, type_handlers in handlers.items():
            if not isinstance(event, event_type):
                continue
            for handler in type_handlers:
                try:
                    handler(event)
                except Exception:  # noqa: BLE001 -- committed: report it, never undo or rerun
                    logger.exception(
                        "event handler %s failed for %s of %s; the commit stands",
                        getattr(handler, "__qualname__", repr(handler)),
                        type(event).__qualname__,
                        operation,
                        extra={"uow_operation": operation, "uow_event": type(event).__qualname__},
                    )
