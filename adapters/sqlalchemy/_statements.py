"""What a statement does to a transaction, by the rules every SQL database shares.

A database's support starts from `generic_effect` and adds its own exceptions (MySQL's
statements that commit implicitly, PostgreSQL's ``PREPARE TRANSACTION``...).
"""

from __future__ import annotations

import enum


class Effect(enum.Enum):
    """What a statement does to the attempt's transaction."""

    READ = "read"
    WRITE = "write"
    ENDS = "ends"
    """It commits, rolls back or restarts the transaction (refused inside an operation)."""


_READS = frozenset(
    {"SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "DESC", "SAVEPOINT", "RELEASE", "VALUES",
     "TABLE", "HANDLER", "USE", "PRAGMA", "FETCH", "DECLARE", "CLOSE", "MOVE", "LISTEN",
     "UNLISTEN"}
)  # fmt: skip
_CONTROL = frozenset({"COMMIT", "BEGIN", "START", "END", "ABORT", "XA"})
_WRITING_WORDS = ("INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE")


def generic_effect(keyword: str, statement: str) -> tuple[Effect, str]:  # noqa: PLR0911 -- a table
    """Apply the rules every database shares: control ends it, reads read, the rest writes."""
    if keyword == "SELECT":
        return Effect.READ, keyword
    if keyword in {"INSERT", "UPDATE", "DELETE"}:
        return Effect.WRITE, keyword
    if keyword == "ROLLBACK":
        second = _word(statement, 1)
        if second == "TO" or (second == "WORK" and _word(statement, 2) == "TO"):
            return Effect.READ, "ROLLBACK TO SAVEPOINT"
        return Effect.ENDS, "ROLLBACK"
    if keyword in _CONTROL or (keyword == "PREPARE" and _word(statement, 1) == "TRANSACTION"):
        name = "START TRANSACTION" if keyword == "START" else keyword
        return Effect.ENDS, name
    if keyword == "SET":
        head = statement[:80].upper()
        if "AUTOCOMMIT" in head:
            return Effect.ENDS, "SET autocommit"
        return Effect.READ, keyword
    if keyword in _READS:
        return Effect.READ, keyword
    if keyword == "WITH":
        upper = statement.upper()
        writes = any(word in upper for word in _WRITING_WORDS)
        return (Effect.WRITE if writes else Effect.READ), keyword
    return Effect.WRITE, keyword


_PLAIN_HEADS = frozenset({"INSERT ", "SELECT ", "UPDATE ", "DELETE "})
"""How the statements SQLAlchemy itself writes begin: no comment or parenthesis to skip."""


def first_keyword(statement: str) -> str:
    """Return the first SQL keyword of a statement, upper-cased, past comments."""
    head = statement[:7]
    if head in _PLAIN_HEADS:
        return head[:6]
    return _word(statement, 0)


def _word(statement: str, index: int) -> str:
    text = statement.lstrip()
    while text.startswith(("/*", "--", "#")):
        if text.startswith("/*"):
            end = text.find("*/")
            text = text[end + 2 :].lstrip() if end >= 0 else ""
        else:
            end = text.find("\n")
            text = text[end + 1 :].lstrip() if end >= 0 else ""
    parts = text[:200].replace("(", " ").replace(";", " ").split(None, index + 1)
    return parts[index].upper() if len(parts) > index else ""
