"""What every adapter's unit of work shares: its lifetime, repositories and events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uow._errors import UnitOfWorkClosedError
from uow._kinds import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from uow._kinds import Classification
    from uow._protocols import AttemptInfo


class UnitOfWorkBase:
    """Base of the adapters' units of work: one per attempt, unusable once it ended.

    Repositories are attributes named as in the ``repositories`` mapping, built on
    first use from a factory that receives the unit of work (a repository class
    fits). Events recorded with :meth:`record_event` are published by the runner
    after the attempt commits, and dropped if it does not.
    """

    def __init__(
        self, attempt: AttemptInfo, repositories: Mapping[str, Callable[[Any], Any]]
    ) -> None:
        """Start the unit of work of one attempt."""
        self._attempt = attempt
        self._factories = repositories
        self._built: dict[str, Any] = {}
        self._events: list[object] = []
        self._active = True

    @property
    def active(self) -> bool:
        """Whether the attempt is still running."""
        return self._active

    @property
    def attempt(self) -> AttemptInfo:
        """The attempt this unit of work belongs to."""
        return self._attempt

    @property
    def events(self) -> tuple[object, ...]:
        """Events recorded so far in this attempt."""
        return tuple(self._events)

    def record_event(self, event: object) -> None:
        """Record a domain event, published once after this attempt commits."""
        self.check_active()
        self._events.append(event)

    def refuse_swallowed_errors(
        self,
        errors: Iterable[BaseException],
        classify: Callable[[BaseException], Classification],
    ) -> None:
        """Raise the first transient error the operation's own code caught (before COMMIT).

        An operation that catches a deadlock, a lock wait timeout or a lost connection
        and returns normally must not be committed: on a single server the rest of the
        transaction would commit without the undone part, and on Galera a COMMIT after
        a certification failure returns OK with the writes gone. Raising the original
        error again makes the runner roll back and rerun (or give up) as for any other.
        """
        for error in errors:
            if classify(error).kind is not ErrorKind.PERMANENT:
                add_note = getattr(error, "add_note", None)
                if add_note is not None:
                    add_note(
                        "retrying-uow: the operation caught this error and returned; "
                        "its attempt was not committed"
                    )
                raise error

    def close(self) -> None:
        """End the attempt's use of this unit of work (the runner does this)."""
        self._active = False

    def check_active(self) -> None:
        """Raise :class:`~uow.UnitOfWorkClosedError` once the attempt has ended."""
        if not self._active:
            msg = (
                f"the unit of work of operation {self._attempt.operation!r} "
                f"(attempt {self._attempt.number}) has ended; do the work inside the "
                "operation instead of keeping its unit of work, session or repositories"
            )
            raise UnitOfWorkClosedError(msg)

    def __getattr__(self, name: str) -> Any:
        factories = self.__dict__.get("_factories", {})
        if name not in factories:
            known = ", ".join(sorted(factories)) or "none"
            msg = f"{type(self).__name__} has no repository {name!r} (repositories: {known})"
            raise AttributeError(msg)
        self.check_active()
        if name not in self._built:
            self._built[name] = factories[name](self)
        return self._built[name]

    def __repr__(self) -> str:
        state = "active" if self._active else "ended"
        return (
            f"<{type(self).__name__} {self._attempt.operation!r} "
            f"attempt={self._attempt.number} {state}>"
        )
