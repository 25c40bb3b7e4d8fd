"""The unit of work on SQLAlchemy's asyncio extension: a fresh AsyncSession per attempt.

The async adapter is the sync one run through SQLAlchemy's own bridge: an
``AsyncSession`` is a sync ``Session`` driven in a greenlet, so every rule of the sync
adapter (the listeners on the engine, the refused transaction control, the flush and
commit of an attempt, commit markers, the transaction guard) applies unchanged, on
``AsyncEngine.sync_engine``. This module only awaits where the sync adapter calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from adapters.sqlalchemy._backend import SqlAlchemyBackend
from adapters.sqlalchemy._control import attempt_session_class
from adapters.sqlalchemy._databases import AttemptState, bind_session
from adapters.sqlalchemy._transaction import SessionTransaction
from uow import AsyncRunner, AttemptInfo, AttemptScope, NestingError, UnitOfWorkBase

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Self

    from sqlalchemy.ext.asyncio import AsyncSessionTransaction as AsyncSavepoint
    from typing_extensions import Unpack

    from adapters.sqlalchemy._backend import Classifier, RepositoryFactory
    from uow import AsyncRunnerOptions, Classification

T = TypeVar("T")


class AsyncSqlAlchemyUnitOfWork(UnitOfWorkBase):
    """One attempt's unit of work on an ``AsyncSession``, and the repositories built on it.

        class Shop(AsyncSqlAlchemyUnitOfWork):
        orders = repository(AsyncOrderRepository)

    units = Shop.factory(async_engine)            # AsyncRunner[Shop]
    order = await units.run(place_order, cart)
    """

    def __init__(
        self,
        session: AsyncSession,
        attempt: AttemptInfo,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        *,
        scope: AttemptScope | None = None,
    ) -> None:
        """Wrap a fresh session; the runner's backend does this once per attempt."""
        super().__init__(attempt, repositories, scope=scope)
        self._session = session

    @property
    def session(self) -> AsyncSession:
        """The attempt's AsyncSession, for repositories and queries of your own."""
        self.check_active()
        return self._session

    async def flush(self) -> None:
        """Send pending writes now: generated ids are known; the commit stays the runner's."""
        await self.session.flush()

    def begin_nested(self) -> AsyncSavepoint:
        """Return a savepoint: ``async with uow.begin_nested(): ...``.

        An error leaving the block rolls back what the block did and propagates; catch it
        around the block and the attempt goes on. The same call as on the in-memory fake.
        """
        return self.session.begin_nested()

    @classmethod
    def factory(
        cls,
        bind: AsyncEngine | async_sessionmaker[Any],
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        session_class: type[Session] | None = None,
        classifier: Classifier | None = None,
        commit_markers: bool = False,
        **options: Unpack[AsyncRunnerOptions],
    ) -> AsyncRunner[Self]:
        """Return an async runner whose operations each run in fresh units of work of this class.

        ``bind`` is your ``AsyncEngine`` or an ``async_sessionmaker`` bound to one;
        ``session_class`` is the sync Session class behind the AsyncSession (SQLModel's, say). The
        rest is as for
        [`SqlAlchemyUnitOfWork.factory`][adapters.sqlalchemy.SqlAlchemyUnitOfWork.factory].
        """
        backend = AsyncSqlAlchemyBackend(
            bind,
            repositories=repositories,
            unit_class=cls,
            session_class=session_class,
            classifier=classifier,
            commit_markers=commit_markers,
        )
        return AsyncRunner(backend, **options)  # type: ignore[arg-type]


class AsyncSqlAlchemyBackend:
    """Opens one AsyncSession per attempt on the user's AsyncEngine."""

    def __init__(
        self,
        bind: AsyncEngine | async_sessionmaker[Any],
        *,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        unit_class: type[AsyncSqlAlchemyUnitOfWork] = AsyncSqlAlchemyUnitOfWork,
        session_class: type[Session] | None = None,
        classifier: Classifier | None = None,
        commit_markers: bool = False,
    ) -> None:
        """Use the user's AsyncEngine, or their async_sessionmaker and its engine."""
        engine, settings, async_class = _resolve(bind)
        base = session_class or settings.pop("sync_session_class", None) or Session
        if not (isinstance(base, type) and issubclass(base, Session)):
            msg = f"session_class must be a Session subclass, not {base!r}"
            raise TypeError(msg)
        self._engine = engine
        self._sync = SqlAlchemyBackend(
            engine.sync_engine,
            classifier=classifier,
            commit_markers=commit_markers,
        )
        self._repositories = dict(repositories or {})
        self._unit_class = unit_class
        self._sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            **{
                **settings,
                "bind": engine,
                "class_": async_class,
                "sync_session_class": attempt_session_class(base),
                "expire_on_commit": False,
                "close_resets_only": False,
            }
        )

    @property
    def engine(self) -> AsyncEngine:
        """The AsyncEngine sessions are opened on."""
        return self._engine

    @property
    def database(self) -> object:
        """The sync Engine behind the AsyncEngine: async runners on it nest by joining."""
        return self._engine.sync_engine

    def begin(self, attempt: AttemptInfo) -> AsyncSessionTransaction:
        """Open a fresh AsyncSession (no I/O: it connects on its first statement)."""
        level = attempt.isolation_level
        if level is None:
            session = self._sessions()
        else:
            session = self._sessions(bind=self._engine.execution_options(isolation_level=level))
        state = AttemptState(attempt, self._sync.state_support)
        bind_session(session.sync_session, state)
        unit = self._unit_class(session, attempt, self._repositories)
        sync = SessionTransaction(unit, session.sync_session, state, self._sync.commit_markers)
        return AsyncSessionTransaction(unit, session, sync)

    def join(self, transaction: object) -> AsyncSqlAlchemyUnitOfWork:
        """Return a unit of work of this backend on another async runner's attempt."""
        if not isinstance(transaction, AsyncSessionTransaction):
            msg = "an async SQLAlchemy unit of work can only join another one's attempt"
            raise NestingError(msg)
        outer = transaction.unit
        return self._unit_class(
            transaction.session, outer.attempt, self._repositories, scope=outer.scope
        )

    def classify(self, error: BaseException) -> Classification:
        """Classify as the sync adapter does on the same engine."""
        return self._sync.classify(error)

    async def dispose(self) -> None:
        """Close the engine's pooled connections (at application shutdown)."""
        await self._engine.dispose()

    def __repr__(self) -> str:
        return f"AsyncSqlAlchemyBackend({self._engine!r})"


def _resolve(bind: object) -> tuple[AsyncEngine, dict[str, Any], type[AsyncSession]]:
    if isinstance(bind, AsyncEngine):
        return bind, {}, AsyncSession
    if isinstance(bind, async_sessionmaker):
        settings = dict(bind.kw)
        engine = settings.pop("bind", None)
        if not isinstance(engine, AsyncEngine):
            msg = f"the async_sessionmaker must be bound to an AsyncEngine; its bind is {engine!r}"
            raise TypeError(msg)
        return engine, settings, bind.class_
    hint = (
        "; for a sync Engine use SqlAlchemyUnitOfWork.factory" if hasattr(bind, "connect") else ""
    )
    msg = f"bind must be an AsyncEngine or an async_sessionmaker, not {type(bind).__name__}{hint}"
    raise TypeError(msg)


class AsyncSessionTransaction:
    """The async runner's handle on one attempt: the sync adapter's, awaited in a greenlet."""

    __slots__ = ("_sync", "session", "unit")

    def __init__(
        self, unit: AsyncSqlAlchemyUnitOfWork, session: AsyncSession, sync: SessionTransaction
    ) -> None:
        """Hold the attempt's AsyncSession and the sync handle that does the work."""
        self.unit = unit
        self.session = session
        self._sync = sync

    @property
    def events(self) -> Sequence[object]:
        return self._sync.events

    @property
    def errors(self) -> Sequence[BaseException]:
        return self._sync.errors

    @property
    def wrote(self) -> bool:
        return self._sync.wrote

    async def prepare(self) -> None:
        await greenlet_spawn(self._sync.prepare)

    async def commit(self) -> None:
        await greenlet_spawn(self._sync.commit)

    async def rollback(self) -> None:
        await greenlet_spawn(self._sync.rollback)

    async def close(self) -> None:
        await greenlet_spawn(self._sync.close)

    async def committed(self, timeout: float) -> bool | None:  # noqa: ASYNC109 -- bounds reads
        found: bool | None = await greenlet_spawn(self._sync.committed, timeout)
        return found


class AsyncSqlAlchemyRepository(Generic[T]):
    """A generic async repository of one mapped class; subclass it and set ``model``.

    ``add`` stages (no I/O); ``get``, ``all`` and ``remove`` are awaited. It never
    commits or rolls back: the unit of work owns the transaction.
    """

    model: type[T]

    def __init__(self, uow: AsyncSqlAlchemyUnitOfWork) -> None:
        """Build the repository on one attempt's unit of work."""
        self._uow = uow

    @property
    def session(self) -> AsyncSession:
        """The attempt's AsyncSession; raises once the attempt has ended."""
        return self._uow.session

    def add(self, entity: T) -> T:
        """Stage a new entity; it is written at the next flush, at the latest on commit."""
        self.session.add(entity)
        return entity

    async def get(self, ident: Any) -> T | None:
        """Return the entity with this primary key, or ``None``."""
        return await self.session.get(self.model, ident)

    async def all(self) -> Sequence[T]:
        """Return every entity of the model."""
        return (await self.session.scalars(select(self.model))).all()

    async def remove(self, entity: T) -> None:
        """Stage the deletion of an entity."""
        await self.session.delete(entity)
