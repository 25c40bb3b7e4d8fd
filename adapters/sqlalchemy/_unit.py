"""The unit of work on a SQLAlchemy Session, and the repository base."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session
from typing_extensions import TypeVar as DefaultTypeVar
from typing_extensions import Unpack

from uow import AttemptInfo, AttemptScope, Runner, RunnerOptions, UnitOfWorkBase

if TYPE_CHECKING:
    from typing import Self

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import SessionTransaction, sessionmaker

    from uow import Classification

T = TypeVar("T")
S = DefaultTypeVar("S", bound=Session, default=Session)

RepositoryFactory = Callable[[Any], Any]
"""Builds a repository on one attempt's unit of work (a repository class fits)."""
Classifier = Callable[[BaseException], "Classification"]
"""Says what an exception means for the operation (``uow.Classification``)."""


class SqlAlchemyUnitOfWork(UnitOfWorkBase, Generic[S]):
    """One attempt's unit of work: a Session and the repositories built on it.

    Declare typed repositories on a subclass, and build the runner from it:

        class Shop(SqlAlchemyUnitOfWork):
            orders = repository(OrderRepository)

        units = Shop.factory(engine)          # Runner[Shop]; uow.orders is typed

    Everything raises [`UnitOfWorkClosedError`][uow.UnitOfWorkClosedError] once the attempt has
    ended, so no one can keep the session (or its connection) for later. For SQLModel, or any
    Session subclass, parametrise the class: ``class Shop(SqlAlchemyUnitOfWork[ sqlmodel.Session])``
    (the session is then made of that class).
    """

    def __init__(
        self,
        session: S,
        attempt: AttemptInfo,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        scope: AttemptScope | None = None,
    ) -> None:
        """Wrap a fresh session; the runner's backend does this once per attempt."""
        super().__init__(attempt, repositories, scope=scope)
        self._session = session

    @property
    def session(self) -> S:
        """The attempt's Session, for repositories and queries of your own."""
        self.check_active()
        return self._session

    def flush(self) -> None:
        """Send pending writes now: generated ids are known, unique keys checked.

        The commit stays the runner's, when the operation returns.
        """
        self.session.flush()

    def begin_nested(self) -> SessionTransaction:
        """Return a savepoint: ``with uow.begin_nested(): ...``.

        An error leaving the block rolls back what the block did and propagates; catch it
        around the block and the attempt goes on. The same call as on the in-memory fake.
        """
        return self.session.begin_nested()

    @classmethod
    def session_class(cls) -> type[Session]:
        """Return the Session class the unit of work is parametrised with (default ``Session``)."""
        for klass in cls.__mro__:
            for base in getattr(klass, "__orig_bases__", ()):
                origin = getattr(base, "__origin__", None)
                args = getattr(base, "__args__", ())
                if (
                    isinstance(origin, type)
                    and issubclass(origin, SqlAlchemyUnitOfWork)
                    and args
                    and isinstance(args[0], type)
                    and issubclass(args[0], Session)
                ):
                    return args[0]
        return Session

    @classmethod
    def factory(
        cls,
        bind: Engine | sessionmaker[Any],
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        session_class: type[Session] | None = None,
        classifier: Classifier | None = None,
        commit_markers: bool = False,
        **options: Unpack[RunnerOptions],
    ) -> Runner[Self]:
        """Return a runner whose operations each run in fresh units of work of this class.

        ``bind`` is your Engine, or a sessionmaker bound to one (its settings and session class are
        kept). ``repositories`` adds repositories by name to those the class declares.
        ``session_class`` makes the sessions of another Session subclass. ``classifier`` replaces
        the database's error classification. ``commit_markers=True`` resolves lost COMMITs exactly
        (create the table first, see
        [`create_commit_marker_table`][adapters.sqlalchemy.create_commit_marker_table]). ``options``
        are the runner's settings (``policy``, ``hooks``, ``idempotent``, ``verify``,
        ``event_handlers``, ...).
        """
        from adapters.sqlalchemy._backend import SqlAlchemyBackend  # noqa: PLC0415 -- cycle

        backend = SqlAlchemyBackend(
            bind,
            repositories=repositories,
            unit_class=cls,
            session_class=session_class,
            classifier=classifier,
            commit_markers=commit_markers,
        )
        return Runner(backend, **options)  # type: ignore[arg-type]


class SqlAlchemyRepository(Generic[T]):
    """A generic repository of one mapped class; subclass it and set ``model``.

        class TaskRepository(SqlAlchemyRepository[Task]):
            model = Task

            def by_name(self, name: str) -> Task | None:
                return self.session.scalars(select(Task).where(Task.name == name)).first()

    It never commits or rolls back: the unit of work owns the transaction.
    """

    model: type[T]

    def __init__(self, uow: SqlAlchemyUnitOfWork[Any]) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    @property
    def session(self) -> Session:
        """The attempt's session; raises once the attempt has ended."""
        session: Session = self._uow.session
        return session

    def add(self, entity: T) -> T:
        """Stage a new entity; it is written at the next flush, at the latest on commit."""
        self.session.add(entity)
        return entity

    def get(self, ident: Any) -> T | None:
        """Return the entity with this primary key, or ``None``."""
        return self.session.get(self.model, ident)

    def all(self) -> Sequence[T]:
        """Return every entity of the model."""
        return self.session.scalars(select(self.model)).all()

    def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        self.session.delete(entity)
