"""Strict mode, the migration tool: every statement that bypasses the unit of work fails.

A code base moving to units of work keeps direct uses of the database for a while: a
``Session(engine)`` in a view, Flask-SQLAlchemy's ``db.session`` inside an operation,
a helper calling ``engine.connect()``. Their statements are not part of any operation:
nothing reruns them after a lost connection, and inside an operation they commit (or
are lost) apart from it. Turn on strict mode in your test suite; every failure is a
direct use left:

    pytest --uow-strict                     # the pytest plugin's option (or uow_strict = true)
    RETRYING_UOW_STRICT=1 python -m myapp   # read when a backend is built on an engine
    with strict(): ...                      # in code: every watched engine, restored after

Under strict mode, a statement run on a watched engine (one a backend was built on) raises
[`StrictModeError`][adapters.sqlalchemy.StrictModeError] when it runs outside a unit of work, or,
while an operation runs, on a connection other than its attempt's. The error names the call site:
the first stack frame outside SQLAlchemy (and the wrappers around it: SQLModel, Flask-SQLAlchemy,
Alembic) and this library. A deliberate direct use, such as creating the tables in a test, goes in
``with strict(engine, enabled=False): ...``.

The library's own statements never count: commit-marker lookups and pruning run on
`own` connections (the execution option `OWN`), the server facts query is
sent to the driver directly, and SQLAlchemy's first-connect initialisation of the
dialect runs on a connection that belongs to no pool entry. With strict mode off, a
statement of the user's own connections costs one boolean check.

Settings, from the strongest: ``strict(engine, ...)`` for one engine; ``strict(...)``
for every engine; ``RETRYING_UOW_STRICT`` (``1``/``0``, also ``true``/``false``,
``yes``/``no``, ``on``/``off``) for the engines whose backends were built while it was
set.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

from uow import UnitOfWorkError
from uow._attempt import active_attempt

if TYPE_CHECKING:
    from types import FrameType, TracebackType
    from typing import Self

    from sqlalchemy.engine import Dialect, Engine, ExecutionContext
    from sqlalchemy.ext.asyncio import AsyncEngine

ENV_VARIABLE = "RETRYING_UOW_STRICT"
"""The environment variable read when a backend is built: ``1`` turns strict mode on."""
OWN = "retrying_uow_own"
"""Execution option marking the library's own statements (``{OWN: True}``): never refused."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
_WRAPPERS = ("sqlalchemy", "sqlmodel", "flask_sqlalchemy", "alembic", "uow", "adapters")
"""Packages whose frames are not a call site: SQLAlchemy, its wrappers, this library."""
_SHOWN = 120

active = False
"""Whether strict mode is on for any engine: the one check on the path of every statement."""

_lock = threading.Lock()
_everywhere: bool | None = None
_engines: weakref.WeakKeyDictionary[Dialect, bool] = weakref.WeakKeyDictionary()
_from_env: weakref.WeakSet[Dialect] = weakref.WeakSet()


class StrictModeError(UnitOfWorkError):
    """Under strict mode, a statement bypassed the unit of work; it names the call site.

    ``filename``, ``lineno`` and ``function`` locate the call (the first frame outside
    SQLAlchemy and this library); ``operation`` is the operation running in the same
    context, if any.
    """

    def __init__(
        self, message: str, *, filename: str, lineno: int, function: str, operation: str | None
    ) -> None:
        super().__init__(message)
        self.filename = filename
        self.lineno = lineno
        self.function = function
        self.operation = operation


class StrictMode:
    """The switch `strict` set; as a context manager it restores the previous one."""

    __slots__ = ("_key", "_previous")

    def __init__(self, key: Dialect | None, *, previous: bool | None) -> None:
        self._key = key
        self._previous = previous

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _set(self._key, value=self._previous)


def strict(engine: Engine | AsyncEngine | None = None, *, enabled: bool = True) -> StrictMode:
    """Turn strict mode on (or off, ``enabled=False``) for ``engine``, or for every engine.

    Applies at once; used as a context manager (``with strict(): ...``), the previous
    setting returns at the end of the block. A setting for one engine wins over the one
    for every engine, which wins over ``RETRYING_UOW_STRICT``. An engine is checked
    once a backend is built on it; setting it before is fine.
    """
    key = None if engine is None else _dialect_of(engine)
    with _lock:
        previous = _everywhere if key is None else _engines.get(key)
    _set(key, value=enabled)
    return StrictMode(key, previous=previous)


def own(engine: Engine) -> Engine:
    """Return ``engine`` with the library's statements marked (`OWN`) for database support.

    For the connections the library opens outside attempts (commit-marker lookups,
    pruning, a database's own outcome queries): strict mode lets their statements through.
    """
    return engine.execution_options(**{OWN: True})


def watch(engine: Engine) -> None:
    """Read ``RETRYING_UOW_STRICT`` for an engine a backend is being built on."""
    raw = os.environ.get(ENV_VARIABLE)
    if raw is None:
        return
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        msg = f"{ENV_VARIABLE}={raw!r}: expected 1 (strict mode on) or 0 (off)"
        raise ValueError(msg)
    with _lock:
        if value in _TRUE:
            _from_env.add(engine.dialect)
        else:
            _from_env.discard(engine.dialect)
        _update()


def enabled_for(dialect: Dialect) -> bool:
    """Tell whether statements on engines of ``dialect`` are checked now."""
    explicit = _engines.get(dialect)
    if explicit is not None:
        return explicit
    if _everywhere is not None:
        return _everywhere
    return dialect in _from_env


def check(context: ExecutionContext, statement: str) -> None:
    """Refuse a statement that runs on no attempt's connection, unless the library's own.

    Called for the statements of watched engines that no attempt holds, only while
    `active` is true.
    """
    if not enabled_for(context.dialect) or context.execution_options.get(OWN):
        return
    try:
        connection = context.root_connection
        connection.connection.info  # noqa: B018 -- raises for the first-connect setup
    except Exception:  # noqa: BLE001 -- no pool entry (dialect initialisation) or gone
        return
    raise _refusal(connection.engine.url.render_as_string(), statement)


def _refusal(url: str, statement: str) -> StrictModeError:
    frame = _call_site(sys._getframe(1))  # noqa: SLF001 -- the statement's call site
    filename, lineno, function = "<unknown>", 0, "<unknown>"
    if frame is not None:
        filename, lineno = _shown(frame.f_code.co_filename), frame.f_lineno
        function = frame.f_code.co_name
    shown = " ".join(statement.split())
    shown = shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."
    called = function if function.startswith("<") else f"{function}()"
    where = f"at {filename}:{lineno} in {called}"
    running = active_attempt.get()
    attempt = getattr(getattr(running and running.transaction, "unit", None), "attempt", None)
    operation = None if attempt is None else str(attempt.operation)
    if running is None:
        message = (
            f"strict mode: a statement ran outside any unit of work {where}, on {url}: "
            f"{shown!r}. Nothing reruns it after a lost connection. Run it in an operation "
            "(`units.run(fn)`, through `uow.session`); for a deliberate direct use (creating "
            "tables, say) wrap it in `with strict(engine, enabled=False):`"
        )
    else:
        number = "" if attempt is None else f" (attempt {attempt.number})"
        message = (
            f"strict mode: a statement ran inside operation {operation!r}{number} on a "
            f"connection other than the operation's {where}, on {url}: {shown!r}. It is not "
            "part of the operation's transaction: a rerun repeats it, a rollback keeps it, "
            "and its own session may never commit it. Use the unit of work's session "
            "(`uow.session`; with Flask-SQLAlchemy, not `db.session`)"
        )
    return StrictModeError(
        message, filename=filename, lineno=lineno, function=function, operation=operation
    )


def _call_site(frame: FrameType | None) -> FrameType | None:
    """Return the first frame outside the libraries, looking through asyncio's greenlets."""
    skipped = _library_folders()
    greenlets = sys.modules.get("greenlet")
    current = None if greenlets is None else greenlets.getcurrent()
    while frame is not None:
        while frame is not None and frame.f_code.co_filename.startswith(skipped):
            frame = frame.f_back
        if frame is not None:
            return frame
        # SQLAlchemy's asyncio bridge runs a statement in a greenlet whose stack ends in
        # SQLAlchemy; the coroutine that awaits it is on the parent greenlet's stack.
        current = None if current is None else current.parent
        frame = None if current is None else current.gr_frame
    return None


def _library_folders() -> tuple[str, ...]:
    folders = ["<sqlalchemy "]  # the wrappers SQLAlchemy generates (``warned()`` and others)
    for name in _WRAPPERS:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            folders.append(os.path.dirname(os.path.abspath(path)) + os.sep)  # noqa: PTH100, PTH120
    return tuple(folders)


def _shown(filename: str) -> str:
    """Return a file's path relative to the working folder when it is inside it."""
    here = os.getcwd() + os.sep  # noqa: PTH109
    return filename.removeprefix(here)


def _dialect_of(engine: Any) -> Dialect:
    sync_engine = getattr(engine, "sync_engine", engine)  # an AsyncEngine's
    dialect = getattr(sync_engine, "dialect", None)
    if dialect is None:
        msg = f"engine must be an Engine or an AsyncEngine, not {type(engine).__name__}"
        raise TypeError(msg)
    found: Dialect = dialect
    return found


def _set(key: Dialect | None, *, value: bool | None) -> None:
    global _everywhere  # noqa: PLW0603 -- the process-wide switch
    with _lock:
        if key is None:
            _everywhere = value
        elif value is None:
            _engines.pop(key, None)
        else:
            _engines[key] = value
        _update()


def _update() -> None:
    global active  # noqa: PLW0603 -- the process-wide switch
    active = bool(
        _everywhere or any(_engines.values()) or (_everywhere is None and len(_from_env) > 0)
    )
