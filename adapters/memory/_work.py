"""One attempt's working copy: pending changes, the identity map, flushes and savepoints.

It behaves as a SQLAlchemy Session on a transactional database does, wherever the code
of an operation can see it:

- ``add``/``remove`` only stage; a flush writes, per table, changes and additions, and
  removals last, each kind of change to a table in one statement; missing ids come from the
  table's own sequence (never reused, moved past any id given);
- every entity the attempt has loaded or written is in the identity map: ``get`` returns it
  without a statement or a flush, even while its removal is pending;
- changed attributes of loaded entities are written by the next flush;
- a flush that fails (a duplicate key, a fault) rolls the whole attempt back: every later
  read or flush raises SQLAlchemy's ``PendingRollbackError``, unless it failed inside a
  savepoint, which is then rolled back alone; a lost connection ends the attempt likewise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlalchemy.exc import IntegrityError, InvalidRequestError, PendingRollbackError

from adapters.memory._errors import SimulatedError
from adapters.memory._mapping import apply_defaults
from adapters.memory._tables import (
    Tables,
    TableSchema,
    check_columns,
    check_key,
    entity_state,
    primary_key,
)
from uow import ErrorKind

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence

    from uow import AttemptInfo
    from uow._faults import Point

Key = tuple[str, "Hashable"]
"""An entity's identity: its table and primary key."""
C = TypeVar("C", "Change", "Loaded")


class Store(Protocol):
    """The committed tables an attempt copies, and the id sequences its INSERTs draw from."""

    @property
    def tables(self) -> Tables:
        """The committed tables, by name."""

    def next_id(self, table: str) -> int:
        """Return a fresh id of ``table``, never given before."""

    def used_id(self, table: str, ident: object) -> None:
        """Note an id given explicitly: the table's sequence continues after it."""


S = TypeVar("S", bound=Store)


@dataclass
class Loaded:
    """An entity in the identity map, with its attributes as last written or read."""

    entity: Any
    state: dict[str, Any]
    repository: TableSchema


@dataclass
class Savepoint:
    """What rolling back to a savepoint restores; the SAVEPOINT is sent with its first statement."""

    tables: Tables
    loaded: dict[Key, Loaded]
    sent: bool = False
    failed: BaseException | None = None


@dataclass
class Change:
    """A staged addition (``added``) or removal, written at the next flush."""

    repository: TableSchema
    entity: Any
    added: bool


class Work(Generic[S]):
    """One attempt's working copy, pending changes and what went wrong, shared by joined units."""

    def __init__(self, backend: S, attempt: AttemptInfo) -> None:
        self.backend = backend
        self.attempt = attempt
        self.tables: Tables = copy.deepcopy(backend.tables)
        self.pending: list[Change] = []
        self.loaded: dict[Key, Loaded] = {}
        """The identity map: every entity this attempt has read or written."""
        self.errors: list[BaseException] = []
        self.statements = 0
        self.wrote = False
        self.failed: BaseException | None = None
        """The error that rolled the attempt back; it can only end now."""
        self.savepoints: list[Savepoint] = []

    # --- statements -------------------------------------------------------------------------

    def check_usable(self) -> None:
        """Refuse statements once the attempt, or the savepoint it is in, was rolled back."""
        if self.failed is not None:
            msg = (
                "this attempt's transaction was rolled back by an earlier error "
                f"({type(self.failed).__name__}: {self.failed}); it cannot go on. Let the error "
                "propagate, or catch an expected one outside a savepoint's block"
            )
            raise PendingRollbackError(msg)
        if self.savepoints and self.savepoints[-1].failed is not None:
            msg = (
                "the savepoint was rolled back by an error during flush "
                f"({self.savepoints[-1].failed}); leave its block before going on"
            )
            raise InvalidRequestError(msg)

    def statement(self) -> None:
        """Count one statement (after the SAVEPOINTs not sent yet); raise a fault due there."""
        self.check_usable()
        for savepoint in self.savepoints:
            if not savepoint.sent:
                savepoint.sent = True
                self.count()
        self.count()

    def count(self) -> None:
        self.statements += 1
        self.strike(self.statements)

    def strike(self, at: Point) -> None:
        fault = self.attempt.fault_at(at)
        if fault is not None:
            error = SimulatedError(fault.kind, fault.errno)
            self.errors.append(error)
            if fault.kind is ErrorKind.DISCONNECT:
                self.failed = error  # the connection, and its transaction, are gone
            raise error

    # --- staging and reading ----------------------------------------------------------------

    def stage(self, repository: TableSchema, entity: object, *, added: bool) -> None:
        """Stage an addition or removal until the next flush."""
        pending = [change for change in self.pending if change.entity is entity]
        if added:
            if not pending and not self._persistent(repository, entity):
                self.pending.append(Change(repository, entity, added=True))
            return
        if any(change.added for change in pending) or primary_key(repository, entity) is None:
            msg = f"Instance {entity!r} is not persisted"
            raise InvalidRequestError(msg)
        if not pending:
            self.pending.append(Change(repository, entity, added=False))

    def get(self, repository: TableSchema, ident: Hashable) -> Any:
        """Return the entity from the identity map, or else flush and read it (a statement)."""
        self.check_usable()
        found = self.loaded.get((repository.table(), ident))
        if found is not None:
            return found.entity
        self.flush()
        self.statement()
        entity = self.tables.get(repository.table(), {}).get(ident)
        if entity is not None:
            self._load(repository, ident, entity)
        return entity

    def read(self, repository: TableSchema) -> Sequence[Any]:
        """Flush, then read every row of the repository's table (a statement), by primary key."""
        self.flush()
        self.statement()
        rows = self.tables.setdefault(repository.table(), {})
        try:
            keys: list[Any] = sorted(rows)
        except TypeError:  # keys that do not sort: in the order they were written
            keys = list(rows)
        for key in keys:
            self._load(repository, key, rows[key])
        return [rows[key] for key in keys]

    # --- flushes ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write pending changes: per table, UPDATEs then INSERTs; DELETEs last.

        Each kind of change to a table is one statement, as SQLAlchemy batches them.
        """
        additions = [change for change in self.pending if change.added]
        removals = [change for change in self.pending if not change.added]
        removed = {id(change.entity) for change in removals}
        changed = [
            loaded
            for loaded in self.loaded.values()
            if id(loaded.entity) not in removed and entity_state(loaded.entity) != loaded.state
        ]
        if not (additions or removals or changed):
            return
        self.check_usable()
        self.pending = []
        try:
            written = [c.repository.table() for c in changed] + [
                c.repository.table() for c in additions
            ]
            for table in dict.fromkeys(written):
                self._write([c for c in changed if c.repository.table() == table], self._update)
                self._write([c for c in additions if c.repository.table() == table], self._insert)
            for table in dict.fromkeys(c.repository.table() for c in removals):
                self._write([c for c in removals if c.repository.table() == table], self._delete)
        except (IntegrityError, SimulatedError) as error:
            self._flush_failed(error)
            raise
        self.wrote = True

    def _write(self, changes: list[C], write: Callable[[C], None]) -> None:
        """Send one statement for changes of one kind to one table."""
        if changes:
            self.statement()
            for change in changes:
                write(change)

    def _update(self, loaded: Loaded) -> None:
        rows = self.tables.get(loaded.repository.table(), {})
        check_columns(loaded.repository, rows, loaded.entity)
        loaded.state = entity_state(loaded.entity)

    def _delete(self, change: Change) -> None:
        table = change.repository.table()
        ident = primary_key(change.repository, change.entity)
        self.tables.setdefault(table, {}).pop(ident, None)
        self.loaded.pop((table, ident), None)

    def _insert(self, change: Change) -> None:
        repository, entity = change.repository, change.entity
        table = repository.table()
        rows = self.tables.setdefault(table, {})
        apply_defaults(entity)
        ident = primary_key(repository, entity)
        if ident is None:
            ident = self.backend.next_id(table)
            setattr(entity, repository.id_attribute, ident)
        else:
            self.backend.used_id(table, ident)
        check_key(repository, rows, ident, entity)
        check_columns(repository, rows, entity)
        rows[ident] = entity
        self._load(repository, ident, entity)

    def _flush_failed(self, error: BaseException) -> None:
        """Roll back what the flush belongs to: the innermost savepoint, or else the attempt."""
        if not isinstance(error, SimulatedError):
            self.errors.append(error)  # a simulated one is noted where it struck
        if self.failed is not None or not self.savepoints:
            self.failed = self.failed or error
            return
        savepoint = self.savepoints[-1]
        savepoint.failed = error
        self._restore(savepoint)
        self.count()  # ROLLBACK TO SAVEPOINT

    def _load(self, repository: TableSchema, ident: Hashable, entity: Any) -> None:
        key = (repository.table(), ident)
        if key not in self.loaded:
            self.loaded[key] = Loaded(entity, entity_state(entity), repository)

    def _persistent(self, repository: TableSchema, entity: object) -> bool:
        found = self.loaded.get((repository.table(), primary_key(repository, entity)))
        return found is not None and found.entity is entity

    # --- savepoints -------------------------------------------------------------------------

    def begin_nested(self) -> Savepoint:
        """Flush, then open a savepoint (sent with the first statement inside it)."""
        self.check_usable()
        self.flush()
        savepoint = Savepoint(
            tables={name: dict(rows) for name, rows in self.tables.items()},
            loaded={key: copy.copy(loaded) for key, loaded in self.loaded.items()},
        )
        self.savepoints.append(savepoint)
        return savepoint

    def release(self, savepoint: Savepoint) -> None:
        """Leave the savepoint's block normally: flush it, then RELEASE it."""
        try:
            if savepoint.failed is None:
                self.flush()
                if savepoint.sent:
                    self.count()  # RELEASE SAVEPOINT
        finally:
            self.savepoints.remove(savepoint)

    def rollback_to(self, savepoint: Savepoint) -> None:
        """Leave the savepoint's block on an error: undo everything done inside it."""
        try:
            if savepoint.failed is None:
                self._restore(savepoint)
                if savepoint.sent and self.failed is None:
                    self.count()  # ROLLBACK TO SAVEPOINT
        finally:
            self.savepoints.remove(savepoint)

    def _restore(self, savepoint: Savepoint) -> None:
        """Put rows, the identity map and the attributes of loaded entities back as they were."""
        self.pending = []
        self.tables = {name: dict(rows) for name, rows in savepoint.tables.items()}
        self.loaded = {key: copy.copy(loaded) for key, loaded in savepoint.loaded.items()}
        for loaded in self.loaded.values():
            for name, value in loaded.state.items():
                if getattr(loaded.entity, name, None) is not value:
                    setattr(loaded.entity, name, value)
