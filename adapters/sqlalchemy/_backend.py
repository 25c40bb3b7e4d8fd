"""The unit of work on a SQLAlchemy Session, and the backend that opens one per attempt.

Built from the user's own Engine or sessionmaker, so their pool settings, event
listeners and instrumentation stay in force. The Session is wrapped, not rebuilt:
SQLAlchemy keeps doing identity mapping, change tracking and disconnect detection.
The unit's ``factory`` makes a backend and the backend makes units of that class,
so the two live together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typing_extensions import TypeVar as DefaultTypeVar
from typing_extensions import Unpack

from adapters.sqlalchemy._control import attempt_session_class
from adapters.sqlalchemy._databases import AttemptState, bind_session
from adapters.sqlalchemy._engine import support_for
from adapters.sqlalchemy._listeners import CAUSE_ATTRIBUTE, KIND_ATTRIBUTE, install
from adapters.sqlalchemy._markers import CommitMarkers
from adapters.sqlalchemy._pool import bound_pool_waits
from adapters.sqlalchemy._transaction import SessionTransaction
from uow import (
    AttemptInfo,
    AttemptScope,
    Classification,
    ErrorKind,
    NestingError,
    Runner,
    RunnerOptions,
    UnitOfWorkBase,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Self

    from sqlalchemy.orm import SessionTransaction as Savepoint

    from adapters.sqlalchemy._databases import DatabaseSupport

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

    def begin_nested(self) -> Savepoint:
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
        backend = SqlAlchemyBackend(
            bind,
            repositories=repositories,
            unit_class=cls,
            session_class=session_class,
            classifier=classifier,
            commit_markers=commit_markers,
        )
        return Runner(backend, **options)  # type: ignore[arg-type]


_FORCED = {"expire_on_commit": False, "close_resets_only": False}
# Results must stay readable after the session closes, and a closed session must not
# quietly start a new transaction for someone who kept it.


class SqlAlchemyBackend:
    """Opens one Session per attempt and classifies the errors of its database."""

    def __init__(
        self,
        bind: Engine | sessionmaker[Any],
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        unit_class: type[SqlAlchemyUnitOfWork[Any]] = SqlAlchemyUnitOfWork,
        session_class: type[Session] | None = None,
        classifier: Classifier | None = None,
        commit_markers: bool = False,
    ) -> None:
        """Use the user's Engine, or their sessionmaker and the Engine it is bound to."""
        engine, settings, given_class = _resolve(bind)
        base: object = session_class or given_class or unit_class.session_class()
        if not (isinstance(base, type) and issubclass(base, Session)):
            msg = f"session_class must be a Session subclass, not {base!r}"
            raise TypeError(msg)
        self._engine = engine
        self._support = support_for(engine.dialect)
        self._classifier = classifier or self._support.classify
        self._repositories = dict(repositories or {})
        self._unit_class = unit_class
        install(engine, self._support)
        bound_pool_waits(engine)
        self._session_class = attempt_session_class(base)
        self._session_settings = {**settings, **_FORCED, "bind": engine}
        self._sessions: sessionmaker[Session] = sessionmaker(
            **self._session_settings, class_=self._session_class
        )
        self._markers = CommitMarkers(engine, self._support) if commit_markers else None
        self._isolated: dict[str, Engine] = {}

    @property
    def engine(self) -> Engine:
        """The Engine sessions are opened on."""
        return self._engine

    @property
    def database(self) -> object:
        """The Engine: runners on the same engine nest by joining."""
        return self._engine

    @property
    def state_support(self) -> DatabaseSupport:
        """The database support attempts on this engine use."""
        return self._support

    @property
    def commit_markers(self) -> CommitMarkers | None:
        """The commit markers of this backend, when enabled."""
        return self._markers

    def begin(self, attempt: AttemptInfo) -> SessionTransaction:
        """Open a fresh session (it connects lazily, on its first statement)."""
        level = attempt.isolation_level
        if level is None:  # what the sessionmaker does, without merging its settings each time
            session = self._session_class(**self._session_settings)
        else:
            session = self._sessions(bind=self._bound(level))
        state = AttemptState(attempt, self._support)
        bind_session(session, state)
        unit = self._unit_class(session, attempt, self._repositories)
        return SessionTransaction(unit, session, state, self._markers)

    def _bound(self, isolation_level: str) -> Engine:
        """Return the engine with an isolation level (applied at checkout, reset at check-in)."""
        engine = self._isolated.get(isolation_level)
        if engine is None:
            engine = self._isolated[isolation_level] = self._engine.execution_options(
                isolation_level=isolation_level
            )
        return engine

    def join(self, transaction: object) -> SqlAlchemyUnitOfWork[Any]:
        """Return a unit of work of this backend on another runner's attempt on this engine."""
        if not isinstance(transaction, SessionTransaction):
            msg = "a SQLAlchemy unit of work can only join an attempt of another one"
            raise NestingError(msg)
        outer = transaction.unit
        return self._unit_class(
            transaction.session, outer.attempt, self._repositories, scope=outer.scope
        )

    def classify(self, error: BaseException) -> Classification:
        """Classify with the database's rules, keeping what the adapter learnt on the spot."""
        classification = self._classifier(error)
        known = getattr(error, KIND_ATTRIBUTE, None)
        cause = getattr(error, CAUSE_ATTRIBUTE, None)
        if isinstance(known, ErrorKind) or (cause is not None and classification.cause is None):
            kind = known if isinstance(known, ErrorKind) else classification.kind
            return Classification(kind, classification.errno, cause or classification.cause)
        return classification

    def dispose(self) -> None:
        """Close the engine's pooled connections (at application shutdown)."""
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"SqlAlchemyBackend({self._engine!r})"


def _resolve(bind: object) -> tuple[Engine, dict[str, Any], type[Session] | None]:
    """Return the engine, the sessionmaker's settings and its session class."""
    if isinstance(bind, Engine):
        return bind, {}, None
    if isinstance(bind, sessionmaker):
        settings = dict(bind.kw)
        engine = settings.pop("bind", None)
        if not isinstance(engine, Engine):
            msg = (
                "the sessionmaker must be bound to an Engine (sessionmaker(bind=engine)); "
                f"its bind is {engine!r}. With Flask-SQLAlchemy, give `db.engine` (inside the "
                "application context), or use adapters.flask.units_for(db)"
            )
            raise TypeError(msg)
        # Its own class (made by the sessionmaker): listeners on it apply to attempts too.
        return engine, settings, bind.class_
    msg = f"bind must be an Engine or a sessionmaker, not {type(bind).__name__}"
    raise TypeError(msg)
