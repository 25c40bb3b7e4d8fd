"""PostgreSQL: what its errors mean, how waits are bounded, how a lost COMMIT is settled.

Errors are classified by SQLSTATE (``SQLSTATE_KINDS``) for psycopg 3 (sync and async) and
asyncpg alike. The SQLAlchemy adapter finds [`SUPPORT`][adapters.postgresql.SUPPORT] by the
engine's dialect; nothing here needs to be called by hand, except
[`settle_lost_commits`][adapters.postgresql.settle_lost_commits], which turns on the PostgreSQL
way of settling a lost COMMIT (by transaction id, no marker table), and ``classify``, for a
``classifier=`` of your own.
"""

from adapters.postgresql._errors import (
    CONNECT_TEXTS,
    SQLSTATE_KINDS,
    classify,
    driver_error,
    sqlstate_of,
)
from adapters.postgresql._outcome import settle_lost_commits
from adapters.postgresql._support import FAULTS, SUPPORT, PostgreSQLSupport

__all__ = [
    "CONNECT_TEXTS",
    "FAULTS",
    "SQLSTATE_KINDS",
    "SUPPORT",
    "PostgreSQLSupport",
    "classify",
    "driver_error",
    "settle_lost_commits",
    "sqlstate_of",
]
