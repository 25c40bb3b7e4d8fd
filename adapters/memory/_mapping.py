"""What the in-memory adapter reads of a SQLAlchemy mapping: column defaults and NOT NULL.

Entities of mapped classes get, at the INSERT, the Python-side defaults of the columns
they were given no value for (``mapped_column(default=...)``), as SQLAlchemy sends them;
a ``None`` left in a NOT NULL column raises ``IntegrityError``, as the database does.
Server-side defaults are SQL the fake cannot run: such columns may stay ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, inspect
from sqlalchemy.orm import Mapper


@dataclass(frozen=True)
class ColumnRule:
    """One mapped column: the attribute, its Python-side default, whether it may be NULL."""

    attribute: str
    default: Any
    """SQLAlchemy's ``ColumnDefault``, or ``None``."""
    nullable: bool


class _Context:
    """What a context-sensitive default reads: the row's other values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.current_parameters = values

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:  # noqa: ARG002, FBT001, FBT002 -- SQLAlchemy's signature
        return self.current_parameters


_RULES: dict[type, tuple[ColumnRule, ...]] = {}


def column_rules(cls: type) -> tuple[ColumnRule, ...]:
    """Return the rules of a mapped class's columns; none for a class that is not mapped."""
    rules = _RULES.get(cls)
    if rules is None:
        rules = _RULES[cls] = _read_rules(cls)
    return rules


def _read_rules(cls: type) -> tuple[ColumnRule, ...]:
    mapper: object = inspect(cls, raiseerr=False)
    if not isinstance(mapper, Mapper):
        return ()
    rules = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if not isinstance(column, Column):
            continue  # an SQL expression, not a stored column
        default = column.default
        if default is not None and not (default.is_scalar or default.is_callable):
            default = None  # a sequence: the database's, like an auto-increment
        nullable = bool(column.nullable) or column.primary_key or column.server_default is not None
        rules.append(ColumnRule(prop.key, default, nullable=nullable))
    return tuple(rules)


def apply_defaults(entity: object) -> None:
    """Give unset columns their Python-side defaults, as the INSERT of a mapped entity does."""
    rules = column_rules(type(entity))
    if not rules:
        return
    values = vars(entity)
    for rule in rules:
        if rule.default is None or rule.attribute in values:
            continue
        if rule.default.is_scalar:
            value = rule.default.arg
        else:
            present = {r.attribute: values[r.attribute] for r in rules if r.attribute in values}
            value = rule.default.arg(_Context(present))
        setattr(entity, rule.attribute, value)


def null_column(entity: object) -> str | None:
    """Return a NOT NULL column the entity leaves ``None``, if any."""
    for rule in column_rules(type(entity)):
        if not rule.nullable and getattr(entity, rule.attribute, None) is None:
            return rule.attribute
    return None
