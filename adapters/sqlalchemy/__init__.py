"""The unit of work on SQLAlchemy: one fresh Session per attempt, on your own Engine.

    from adapters.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork, repository

    class Shop(SqlAlchemyUnitOfWork):
        orders = repository(OrderRepository)

    units = Shop.factory(engine, policy=RetryPolicy(timeout=30))
    order = units.run(place_order, cart)      # one operation, rerun whole on a lost connection

Databases plug in by dialect: MySQL/MariaDB ([`adapters.mysql`][adapters.mysql]) and PostgreSQL
(`adapters.postgresql`) classify their errors and bound reads; SQLite and any
other database get the generic rules.

Strict mode ([`strict`][adapters.sqlalchemy.strict], ``RETRYING_UOW_STRICT=1``, ``pytest
--uow-strict``) finds the statements that still bypass the unit of work: turn it on in your test
suite, and every failure is a direct use left.
"""

from adapters.sqlalchemy._async import (
    AsyncSessionTransaction,
    AsyncSqlAlchemyBackend,
    AsyncSqlAlchemyRepository,
    AsyncSqlAlchemyUnitOfWork,
)
from adapters.sqlalchemy._backend import (
    Classifier,
    RepositoryFactory,
    SqlAlchemyBackend,
    SqlAlchemyUnitOfWork,
)
from adapters.sqlalchemy._databases import DatabaseSupport
from adapters.sqlalchemy._engine import create_async_engine, create_engine
from adapters.sqlalchemy._generic import classify_generic
from adapters.sqlalchemy._markers import (
    MARKER_TABLE,
    CommitMarkers,
    commit_marker_ddl,
    commit_markers_metadata,
    commit_markers_table,
    create_commit_marker_table,
)
from adapters.sqlalchemy._repository import SqlAlchemyRepository
from adapters.sqlalchemy._statements import Effect
from adapters.sqlalchemy._strict import StrictMode, StrictModeError, strict
from adapters.sqlalchemy._transaction import SessionTransaction
from uow import repository

__all__ = [
    "MARKER_TABLE",
    "AsyncSessionTransaction",
    "AsyncSqlAlchemyBackend",
    "AsyncSqlAlchemyRepository",
    "AsyncSqlAlchemyUnitOfWork",
    "Classifier",
    "CommitMarkers",
    "DatabaseSupport",
    "Effect",
    "RepositoryFactory",
    "SessionTransaction",
    "SqlAlchemyBackend",
    "SqlAlchemyRepository",
    "SqlAlchemyUnitOfWork",
    "StrictMode",
    "StrictModeError",
    "classify_generic",
    "commit_marker_ddl",
    "commit_markers_metadata",
    "commit_markers_table",
    "create_async_engine",
    "create_commit_marker_table",
    "create_engine",
    "repository",
    "strict",
]


def _public_module() -> None:
    """Show public names as this package's (tracebacks, reprs, logs), not a private module's."""
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("adapters.sqlalchemy._"):
            value.__module__ = __name__


_public_module()
