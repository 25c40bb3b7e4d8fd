"""Flask-SQLAlchemy integration: the runner on the application's engine, ``db.session`` kept out.

Flask-SQLAlchemy gives each application context one session, ``db.session``, and
rolls it back and closes it when the context ends. Inside an operation it is the wrong
session: what it writes is not part of the operation's transaction, so nothing reruns
or commits it with the operation. Unless someone commits ``db.session`` later, the
write is rolled back at the end of the request, silently, although ``db.session``
itself still reads it back until then. So the runner is built on the application's
engine, operations use ``uow.session``, and ``db.session`` used inside an operation
(``add``, ``execute``, ``get``, ``scalars``, ``flush``, ``Model.query``) raises
`DirectSessionError`:

    class Base(DeclarativeBase): ...

    db = SQLAlchemy(model_class=Base)     # models: class Order(db.Model), as usual
    units = Units(db, Shop, policy=RetryPolicy(timeout=10))

    def create_app() -> Flask:
        app = Flask(__name__)
        db.init_app(app)
        units.init_app(app)               # after db.init_app: the app's engine exists

        @app.post("/orders")
        def place() -> dict[str, int]:
            order = units.run(place_order, request.json["sku"])
            return {"id": order.id}

        return app

The ``db.Model`` classes are ordinary mapped classes: an operation reads and writes them through
``uow.session`` (or repositories on it). Without the extension, build the runner inside an
application context with `units_for`. Outside operations ``db.session`` works as before. To find the
remaining direct uses (``db.session`` in a view, a connection of one's own, anything the check above
cannot see), run the test suite in strict mode (``pytest --uow-strict``, see
[`adapters.sqlalchemy.strict`][adapters.sqlalchemy.strict]): every failure is a direct use left.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec

from flask import current_app
from sqlalchemy import event
from typing_extensions import TypeVar, Unpack

from adapters.sqlalchemy import SqlAlchemyUnitOfWork
from uow import Runner, RunnerOptions, UnitOfWorkError
from uow._attempt import active_attempt

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy.orm import Session

    from adapters.sqlalchemy import Classifier, RepositoryFactory

__all__ = ["EXTENSION", "DirectSessionError", "Units", "units_for"]

EXTENSION = "retrying_uow"
"""Key of ``app.extensions``: a dict from each `Units` to the application's runner."""

U = TypeVar("U", bound=SqlAlchemyUnitOfWork[Any], default=SqlAlchemyUnitOfWork[Any])
P = ParamSpec("P")
R = TypeVar("R")


class DirectSessionError(UnitOfWorkError):
    """Flask-SQLAlchemy's ``db.session`` was used inside an operation.

    Its writes would not be part of the operation: not rerun with it, not committed
    with it, and rolled back, silently, when the application context ends.
    """


def units_for(
    db: SQLAlchemy,
    unit_class: type[U] = SqlAlchemyUnitOfWork,  # type: ignore[assignment]  # U's default
    *,
    bind_key: str | None = None,
    repositories: Mapping[str, RepositoryFactory] | None = None,
    session_class: type[Session] | None = None,
    classifier: Classifier | None = None,
    commit_markers: bool = False,
    **options: Unpack[RunnerOptions],
) -> Runner[U]:
    """Return a runner on the engine of the current Flask application (call it in its context).

    ``bind_key`` picks the engine of another bind (``SQLALCHEMY_BINDS``); one unit of work is on one
    database. The rest is
    [`SqlAlchemyUnitOfWork.factory`][adapters.sqlalchemy.SqlAlchemyUnitOfWork.factory]'s. Sessions
    are plain SQLAlchemy sessions (or ``session_class``, or the class the unit of work is
    parametrised with), not Flask-SQLAlchemy's: ``db.session`` used inside an operation raises
    `DirectSessionError` from now on.
    """
    engine = db.engines[bind_key]  # raises outside an application context, as db.engine does
    runner = unit_class.factory(
        engine,
        repositories=repositories,
        session_class=session_class,
        classifier=classifier,
        commit_markers=commit_markers,
        **options,
    )
    _keep_out_of_operations(db)
    return runner


class Units(Generic[U]):
    """A Flask extension holding one runner per application, on ``app.extensions``.

    Create it once (``units = Units(db, Shop, policy=...)``) and call `init_app`
    in the application factory, after ``db.init_app(app)``; or give ``app=`` to do both
    at once. ``db`` comes first because the extension is usually made before any app.
    In a request (or any application context), `runner` is the current
    application's runner, and `run`, `operation` and `using` use it.
    """

    def __init__(
        self,
        db: SQLAlchemy,
        unit_class: type[U] = SqlAlchemyUnitOfWork,  # type: ignore[assignment]  # U's default
        *,
        app: Flask | None = None,
        bind_key: str | None = None,
        repositories: Mapping[str, RepositoryFactory] | None = None,
        session_class: type[Session] | None = None,
        classifier: Classifier | None = None,
        commit_markers: bool = False,
        **options: Unpack[RunnerOptions],
    ) -> None:
        """Keep the recipe of the runner; it is built for each application by `init_app`."""
        self._db = db
        self._unit_class = unit_class
        self._bind_key = bind_key
        self._repositories = repositories
        self._session_class = session_class
        self._classifier = classifier
        self._commit_markers = commit_markers
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the application's runner on its engine and keep it on ``app.extensions``."""
        if "sqlalchemy" not in app.extensions:
            msg = "call db.init_app(app) before units.init_app(app): the runner needs its engine"
            raise RuntimeError(msg)
        with app.app_context():
            runner = units_for(
                self._db,
                self._unit_class,
                bind_key=self._bind_key,
                repositories=self._repositories,
                session_class=self._session_class,
                classifier=self._classifier,
                commit_markers=self._commit_markers,
                **self._options,
            )
        app.extensions.setdefault(EXTENSION, {})[self] = runner

    @property
    def runner(self) -> Runner[U]:
        """The current application's runner (in an application context)."""
        runners: dict[Units[Any], Runner[U]] = current_app.extensions.get(EXTENSION, {})
        runner = runners.get(self)
        if runner is None:
            msg = f"units.init_app(app) was not called for the application {current_app.name!r}"
            raise RuntimeError(msg)
        return runner

    def run(self, fn: Callable[Concatenate[U, P], R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(uow, *args, **kwargs)`` as one operation: see `uow.Runner.run`."""
        return self.runner.run(fn, *args, **kwargs)

    def operation(self, fn: Callable[Concatenate[U, P], R], /) -> Callable[P, R]:
        """Decorate a function taking a unit of work first; each call runs it as an operation.

        The current application's runner is looked up at each call, so the decorator
        can be applied at import time, before any application exists.
        """

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.runner.run(fn, *args, **kwargs)

        return call

    def using(self, **options: Unpack[RunnerOptions]) -> Runner[U]:
        """Return the current application's runner with some settings replaced."""
        return self.runner.using(**options)

    def __repr__(self) -> str:
        return f"Units({self._unit_class.__qualname__})"


def _keep_out_of_operations(db: SQLAlchemy) -> None:
    """Make ``db.session`` refuse to be used while an operation runs (once per ``db``)."""
    session = db.session
    if event.contains(session, "do_orm_execute", _refuse_execute):
        return
    event.listen(session, "do_orm_execute", _refuse_execute)
    event.listen(session, "before_attach", _refuse_attach)
    event.listen(session, "before_flush", _refuse_flush)


def _refuse(call: str) -> None:
    running = active_attempt.get()
    if running is None:
        return
    unit = getattr(running.transaction, "unit", None)
    attempt = getattr(unit, "attempt", None)
    name = "an operation" if attempt is None else f"operation {attempt.operation!r}"
    msg = (
        f"db.session.{call} inside {name}: db.session is Flask-SQLAlchemy's session, not "
        "the operation's, so its writes are not rerun or committed with the operation and "
        "are rolled back when the application context ends. Use `uow.session` (or "
        "repositories on it) inside operations; `Model.query` is db.session too"
    )
    raise DirectSessionError(msg)


def _refuse_execute(_state: Any) -> None:
    _refuse("execute() (or get(), scalars(), a query)")


def _refuse_attach(_session: Any, instance: object) -> None:
    _refuse(f"add({type(instance).__name__}(...))")


def _refuse_flush(_session: Any, _context: Any, _instances: Any) -> None:
    _refuse("flush()")
