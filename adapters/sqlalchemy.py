"""The unit of work on a SQLAlchemy Session: one fresh Session per attempt.

Built from the user's own Engine or sessionmaker, so their pool settings, event
listeners and instrumentation stay in force. The Session is wrapped, not rebuilt:
SQLAlchemy keeps doing identity mapping, change tracking and disconnect detection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from adapters import faults, mysql, pooling
from adapters.markers import CommitMarkers
from adapters.pooling import create_engine
from uow import (
    AttemptInfo,
    Classification,
    ErrorKind,
    EventHandlers,
    RetryHook,
    RetryPolicy,
    Runner,
    UnitOfWorkBase,
)
from uow.testing import injecting

__all__ = [
    "Classifier",
    "RepositoryFactory",
    "SqlAlchemyBackend",
    "SqlAlchemyRepository",
    "SqlAlchemyUnitOfWork",
    "classify_generic",
    "create_engine",
]

T = TypeVar("T")
logger = logging.getLogger("retrying_uow")

RepositoryFactory = Callable[["SqlAlchemyUnitOfWork"], Any]
"""Builds a repository on one attempt's unit of work (a repository class fits)."""
Classifier = Callable[[BaseException], Classification]


def classify_generic(error: BaseException) -> Classification:
    """Classify errors of databases without a table of their own (SQLite, ...).

    Only what SQLAlchemy itself detects as a disconnect is transient; everything else
    is permanent.
    """
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Classification(ErrorKind.DISCONNECT)
    return Classification(ErrorKind.PERMANENT)


class SqlAlchemyUnitOfWork(UnitOfWorkBase):
    """One attempt's unit of work: a Session and the repositories built on it.

    Repositories are attributes named as in the ``repositories`` mapping, built on
    first use. Everything raises :class:`~uow.UnitOfWorkClosedError` once the attempt
    has ended, so no one can keep the session (or its connection) for later.
    """

    def __init__(
        self,
        session: Session,
        repositories: Mapping[str, RepositoryFactory],
        attempt: AttemptInfo,
    ) -> None:
        """Wrap a fresh session; the runner's backend does this once per attempt."""
        super().__init__(attempt, repositories)
        self._session = session

    @property
    def session(self) -> Session:
        """The attempt's Session, for repositories and queries of your own."""
        self.check_active()
        return self._session

    @classmethod
    def factory(
        cls,
        bind: Engine | sessionmaker[Session],
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        policy: RetryPolicy | None = None,
        hooks: Sequence[RetryHook] = (),
        classifier: Classifier | None = None,
        commit_markers: bool = False,
        event_handlers: EventHandlers | None = None,
    ) -> Runner[Any]:
        """Return a runner whose operations each run in fresh units of work on ``bind``.

        ``commit_markers=True`` resolves lost COMMITs exactly (see ``adapters.markers``;
        create the table first). Annotate the result with your own unit-of-work protocol
        for full typing: ``units: Runner[Tasks] = SqlAlchemyUnitOfWork.factory(engine)``.
        """
        backend = SqlAlchemyBackend(
            bind, repositories=repositories, classifier=classifier, commit_markers=commit_markers
        )
        return Runner(backend, policy=policy, hooks=hooks, event_handlers=event_handlers)


class SqlAlchemyBackend:
    """Opens one Session per attempt and classifies the errors of its database."""

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        classifier: Classifier | None = None,
        commit_markers: bool = False,
    ) -> None:
        """Use the user's Engine, or their sessionmaker and the Engine it is bound to."""
        given: object = bind  # checked at run time too: configuration often comes untyped
        if isinstance(given, Engine):
            self._sessions: sessionmaker[Session] = sessionmaker(given)
            engine = given
        elif isinstance(given, sessionmaker):
            bound: object = given.kw.get("bind")
            if not isinstance(bound, Engine):
                msg = (
                    "the sessionmaker must be bound to an Engine "
                    f"(sessionmaker(bind=engine)); its bind is {bound!r}"
                )
                raise TypeError(msg)
            self._sessions = given
            engine = bound
        else:
            msg = f"bind must be an Engine or a sessionmaker, not {type(given).__name__}"
            raise TypeError(msg)
        self._engine = engine
        self._repositories = dict(repositories or {})
        if classifier is not None:
            self._classify = classifier
        elif engine.dialect.name in {"mysql", "mariadb"}:
            self._classify = mysql.classify
        else:
            self._classify = classify_generic
        if engine.dialect.name in {"mysql", "mariadb"}:
            mysql.install(engine)
        pooling.attach(self._sessions, engine)
        self._markers = CommitMarkers(engine) if commit_markers else None

    @property
    def engine(self) -> Engine:
        """The Engine sessions are opened on."""
        return self._engine

    @property
    def commit_markers(self) -> CommitMarkers | None:
        """The commit markers of this backend, when enabled."""
        return self._markers

    def begin(self, attempt: AttemptInfo) -> _SessionTransaction:
        """Open a fresh session (it connects lazily, on its first statement)."""
        if injecting():  # a test's uow.testing.inject block: make this engine honour it
            faults.arm(self._engine, self._sessions)
        # Results must stay readable after the session closes, and a closed session
        # must not quietly start a new transaction for someone who kept it.
        session = self._sessions(
            expire_on_commit=False,
            close_resets_only=False,
            info={pooling.ATTEMPT: attempt},
        )
        unit = SqlAlchemyUnitOfWork(session, self._repositories, attempt)
        return _SessionTransaction(unit, self._markers, self._classify)

    def classify(self, error: BaseException) -> Classification:
        """Classify with the database's table (MySQL/MariaDB) or the generic rules."""
        return self._classify(error)

    def __repr__(self) -> str:
        return f"SqlAlchemyBackend({self._engine!r})"


class _SessionTransaction:
    """The runner's handle on one attempt's session."""

    def __init__(
        self, unit: SqlAlchemyUnitOfWork, markers: CommitMarkers | None, classify: Classifier
    ) -> None:
        self.unit = unit
        self._session = unit.session
        self._markers = markers
        self._classify = classify
        self._token: str | None = None
        # Until close(), connections opened for this attempt are bounded by its deadline.
        self._connects = pooling.bound_connects(unit.attempt.deadline)

    @property
    def events(self) -> Sequence[object]:
        return self.unit.events

    def flush(self) -> None:
        self.unit.refuse_swallowed_errors(pooling.errors_seen(self._session), self._classify)
        self._session.flush()
        if self._markers is not None:
            self._token = self._markers.new_token()
            self._markers.write(self._session.connection(), self._token)

    def commit(self) -> None:
        self._session.commit()
        if self._markers is not None:
            self._markers.maybe_prune(self.unit.attempt.deadline)

    def committed(self, timeout: float) -> bool | None:
        if self._markers is None or self._token is None:
            return None
        origin = pooling.origin(self._session)
        return self._markers.lookup(self._token, origin=origin, timeout=timeout)

    def rollback(self) -> None:
        try:
            self._session.rollback()
        except Exception:  # the original error matters; a dead link cannot roll back
            logger.debug("rollback failed after an error; the session is discarded", exc_info=True)

    def close(self) -> None:
        self.unit.close()
        try:
            self._session.close()
        except Exception:
            logger.debug("closing the session failed; it is discarded", exc_info=True)
        finally:
            pooling.unbound_connects(self._connects)


class SqlAlchemyRepository(Generic[T]):
    """A generic repository of one mapped class; subclass it and set ``model``.

    ::

        class TaskRepository(SqlAlchemyRepository[Task]):
            model = Task

            def by_name(self, name: str) -> Task | None:
                return self.session.scalars(select(Task).where(Task.name == name)).first()

    It never commits or rolls back: the unit of work owns the transaction.
    """

    model: type[T]

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    @property
    def session(self) -> Session:
        """The attempt's session; raises once the attempt has ended."""
        return self._uow.session

    def add(self, entity: T) -> T:
        """Stage a new entity; it is written when the operation commits."""
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
