"""The in-memory tables: rows by primary key, and the integrity rules a flush checks.

A repository says which table its entities are rows of, which attribute is the primary
key, and which columns are unique. A row that repeats a primary key or a unique value, or
leaves a NOT NULL column of a mapped class ``None``, raises SQLAlchemy's ``IntegrityError``,
as the database does.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from sqlalchemy.exc import IntegrityError

from adapters.memory._errors import DuplicateKey
from adapters.memory._mapping import null_column

Rows = dict[Hashable, Any]
"""One table: entities by primary key."""
Tables = dict[str, Rows]
"""The tables of the store (or of an attempt's copy), by name."""


class TableSchema(Protocol):
    """A repository as its table sees it: the table's name, primary key and unique columns."""

    id_attribute: str
    unique: tuple[str, ...]

    def table(self) -> str:
        """Return the name of the table."""


def primary_key(schema: TableSchema, entity: object) -> Any:
    """Return the entity's primary key, or ``None`` while it has none."""
    return getattr(entity, schema.id_attribute, None)


def check_key(schema: TableSchema, rows: Rows, ident: Hashable, entity: object) -> None:
    """Raise ``IntegrityError`` when another row of the table has this primary key."""
    if ident in rows and rows[ident] is not entity:
        raise _violation(schema, f"duplicate primary key: {ident!r}")


def check_columns(schema: TableSchema, rows: Rows, entity: object) -> None:
    """Raise ``IntegrityError`` for a NULL in a NOT NULL column, or a unique value taken.

    NULLs never clash in a unique column, as in SQL.
    """
    column = null_column(entity)
    if column is not None:
        raise _violation(schema, f"NULL in NOT NULL column {column}")
    for column in schema.unique:
        value = getattr(entity, column)
        if value is None:
            continue
        if any(getattr(row, column) == value for row in rows.values() if row is not entity):
            raise _violation(schema, f"duplicate {column}: {value!r}")


def entity_state(entity: object) -> dict[str, Any]:
    """Return an entity's attributes (not an ORM's own bookkeeping), to tell whether it changed."""
    try:
        values = vars(entity)
    except TypeError:  # __slots__
        names = {name for klass in type(entity).__mro__ for name in getattr(klass, "__slots__", ())}
        return {name: getattr(entity, name) for name in names if hasattr(entity, name)}
    return {name: value for name, value in values.items() if not name.startswith("_sa_")}


def _violation(schema: TableSchema, what: str) -> IntegrityError:
    table = schema.table()
    return IntegrityError(f"INSERT INTO {table}", {}, DuplicateKey(f"{what} in {table}"))
