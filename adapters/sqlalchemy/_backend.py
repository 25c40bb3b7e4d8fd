"""The runner's backend on SQLAlchemy: one fresh Session per attempt, on the user's Engine.

Built from the user's own Engine or sessionmaker, so their pool settings, event
listeners and instrumentation stay in force. The Session is wrapped, not rebuilt:
SQLAlchemy keeps doing identity mapping, change tracking and disconnect detection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from adapters.sqlalchemy._control import attempt_session_class
from adapters.sqlalchemy._databases import support_for
from adapters.sqlalchemy._expired import load_expired
from adapters.sqlalchemy._listeners import (
    CAUSE_ATTRIBUTE,
    KIND_ATTRIBUTE,
    connect_deadline,
    install,
)
from adapters.sqlalchemy._markers import CommitMarkers
from adapters.sqlalchemy._pool import bound_pool_waits
from adapters.sqlalchemy._state import KEY, AttemptState
from adapters.sqlalchemy._unit import SqlAlchemyUnitOfWork
from uow import Classification, ErrorKind, NestingError, UnitOfWorkBase

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from contextvars import Token

    from adapters.sqlalchemy._databases import DatabaseSupport
    from adapters.sqlalchemy._unit import Classifier, RepositoryFactory
    from uow import AttemptInfo

logger = logging.getLogger("retrying_uow")
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
        session.info[KEY] = state
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


class SessionTransaction:
    """The runner's handle on one attempt's session."""

    __slots__ = ("_connects", "_markers", "_token", "session", "state", "unit")

    def __init__(
        self,
        unit: UnitOfWorkBase,
        session: Session,
        state: AttemptState,
        markers: CommitMarkers | None,
    ) -> None:
        """Hold the attempt; until `close`, new connections are bounded by its deadline."""
        self.unit = unit
        self.session = session
        self.state = state
        self._markers = markers
        self._token: str | None = None
        self._connects: Token[float | None] | None = connect_deadline.set(unit.attempt.deadline)

    @property
    def events(self) -> Sequence[object]:
        return self.unit.events

    @property
    def errors(self) -> Sequence[BaseException]:
        return self.state.errors

    @property
    def wrote(self) -> bool:
        return self.state.wrote

    @property
    def support(self) -> DatabaseSupport:
        return self.state.support

    def prepare(self) -> None:
        session = self.session
        session.flush()
        load_expired(session)
        if not self.state.wrote:
            return  # nothing to lose at COMMIT
        self.state.support.before_commit(session, self.state)
        if self._markers is not None:
            self._token = self._markers.new_token()
            self._markers.write(session.connection(), self._token)

    def commit(self) -> None:
        self.state.owner = True
        self.session.commit()
        if self._markers is not None and self._token is not None:
            self._markers.maybe_prune(self.unit.attempt.deadline)

    def committed(self, timeout: float) -> bool | None:
        if self._markers is not None and self._token is not None:
            return self._markers.lookup(self._token, self.state, timeout)
        # No marker: the database may still be able to tell (PostgreSQL can).
        engine = self.session.get_bind()
        if not isinstance(engine, Engine):
            return None
        return self.state.support.outcome(engine, self.state, timeout)

    def rollback(self) -> None:
        self.state.owner = True
        try:
            self.session.rollback()
        except Exception:  # the original error matters; a dead link cannot roll back
            logger.debug("rollback failed after an error; the session is discarded", exc_info=True)

    def close(self) -> None:
        self.unit.close()
        self.state.owner = True
        try:
            self.session.close()
        except Exception:
            logger.debug("closing the session failed; it is discarded", exc_info=True)
        finally:
            self.state.ended = True
            self.state.owner = False
            if self._connects is not None:
                try:
                    connect_deadline.reset(self._connects)
                except ValueError:  # closed in another context (an async task's cleanup)
                    connect_deadline.set(None)
                self._connects = None
