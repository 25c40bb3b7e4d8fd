"""What every adapter's unit of work shares: its lifetime, repositories and events."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Never, NoReturn, TypeVar, overload

from uow._errors import UnitOfWorkClosedError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Self

    from uow._protocols import AttemptInfo

R = TypeVar("R")
RepositoryFactory = Callable[[Any], Any]
"""Builds a repository on one attempt's unit of work (a repository class fits)."""


class AttemptScope:
    """The life of one attempt, shared by every unit of work that works in it.

    A nested operation of another runner on the same database joins the attempt with
    a unit of work of its own type; both see the same events and end together.
    """

    __slots__ = ("active", "attempt", "events")

    def __init__(self, attempt: AttemptInfo) -> None:
        """Start the scope of one attempt."""
        self.attempt = attempt
        self.events: list[object] = []
        self.active = True


class repository(Generic[R]):  # noqa: N801 -- used like ``property``
    """Declare a typed repository on a unit-of-work class; built once per attempt on first use.

        class Shop(SqlAlchemyUnitOfWork):
            orders = repository(OrderRepository)   # uow.orders: OrderRepository

    ``factory`` receives the unit of work (a repository class taking it fits).
    """

    def __init__(self, factory: Callable[[Any], R]) -> None:
        """Keep the factory; nothing is built before an attempt uses it."""
        self.factory = factory
        self.name = getattr(factory, "__name__", "repository")

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, unit: None, owner: type) -> Self: ...
    @overload
    def __get__(self, unit: object, owner: type) -> R: ...
    def __get__(self, unit: object, owner: type) -> R | Self:
        if unit is None:
            return self
        if not isinstance(unit, UnitOfWorkBase):
            msg = f"repository {self.name!r} is declared on a class that is not a unit of work"
            raise TypeError(msg)
        return unit.built(self.name, self.factory)  # type: ignore[no-any-return]

    def __set__(self, unit: object, value: Never) -> NoReturn:
        msg = f"repository {self.name!r} is built by the unit of work; it cannot be replaced"
        raise AttributeError(msg)


class UnitOfWorkBase:
    """Base of the adapters' units of work: one per attempt, unusable once it ended.

    Repositories are declared on a subclass with [`repository`][uow.repository] (typed), or given as
    a mapping of names to factories (built on first use; dynamic, so typed ``Any``). Events recorded
    with [`record_event`][uow.UnitOfWorkBase.record_event] are published by the runner after the
    attempt commits, and dropped if it does not.
    """

    def __init__(
        self,
        attempt: AttemptInfo,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        scope: AttemptScope | None = None,
    ) -> None:
        """Start the unit of work of one attempt (or join the running ``scope``)."""
        self._scope = scope if scope is not None else AttemptScope(attempt)
        self._factories: Mapping[str, RepositoryFactory] = repositories or {}
        self._built: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        """Whether the attempt is still running."""
        return self._scope.active

    @property
    def attempt(self) -> AttemptInfo:
        """The attempt this unit of work belongs to."""
        return self._scope.attempt

    @property
    def scope(self) -> AttemptScope:
        """The attempt's scope, shared with the units of work of nested operations."""
        return self._scope

    @property
    def events(self) -> tuple[object, ...]:
        """Events recorded so far in this attempt."""
        return tuple(self._scope.events)

    def record_event(self, event: object) -> None:
        """Record a domain event, published once after this attempt commits."""
        self.check_active()
        self._scope.events.append(event)

    def close(self) -> None:
        """End the attempt's use of this unit of work (the runner does this)."""
        self._scope.active = False

    def check_active(self) -> None:
        """Raise [`UnitOfWorkClosedError`][uow.UnitOfWorkClosedError] once the attempt has ended."""
        if not self._scope.active:
            attempt = self._scope.attempt
            msg = (
                f"the unit of work of operation {attempt.operation!r} "
                f"(attempt {attempt.number}) has ended; do the work inside the "
                "operation instead of keeping its unit of work, session or repositories"
            )
            raise UnitOfWorkClosedError(msg)

    def built(self, name: str, factory: Callable[[Any], Any]) -> Any:
        """Return repository ``name`` of this attempt, building it on first use."""
        self.check_active()
        found = self._built.get(name)
        if found is None:
            found = self._built[name] = factory(self)
        return found

    if not TYPE_CHECKING:  # mypy must not accept ``uow.typo``: declare typed repositories

        def __getattr__(self, name: str) -> Any:
            factories = self.__dict__.get("_factories", {})
            if name not in factories:
                known = sorted({*factories, *_declared(type(self))}) or ["none"]
                msg = (
                    f"{type(self).__name__} has no repository {name!r} "
                    f"(repositories: {', '.join(known)})"
                )
                raise AttributeError(msg)
            return self.built(name, factories[name])

    def __repr__(self) -> str:
        state = "active" if self._scope.active else "ended"
        attempt = self._scope.attempt
        return f"<{type(self).__name__} {attempt.operation!r} attempt={attempt.number} {state}>"


def _declared(cls: type) -> list[str]:
    return [
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, repository)
    ]
