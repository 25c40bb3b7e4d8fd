"""In-memory units of work and repositories: a faithful fake for fast tests of domain services.

It follows the same protocols as the SQLAlchemy adapter and behaves as it does
wherever user code can see it (one contract suite, ``tests/contract``, holds on both):

- entities added to a repository are pending until a flush (``uow.flush()``, a read
  through a repository, or the commit), which assigns missing ids from each table's own
  sequence, as an auto-increment column does at INSERT (never reused, moved past an id
  given explicitly); Python-side column defaults of SQLAlchemy-mapped classes are given
  then too;
- changed attributes of entities the attempt has read are written by the next flush;
- within an attempt a repository returns the same object for the same id, and ``get``
  serves what the attempt already holds without a statement or a flush (an entity whose
  removal is pending too);
- a duplicate id, a duplicate value of a column listed in ``unique`` (NULLs never clash),
  or a NULL in a NOT NULL column of a mapped class raises SQLAlchemy's ``IntegrityError``
  at the flush; removing an entity that was never written raises ``InvalidRequestError``;
- a failed flush rolls the attempt back: later reads and flushes raise
  ``PendingRollbackError``, and it cannot commit; ``uow.begin_nested()`` is a savepoint,
  so that an error caught around its block undoes only the block;
- an attempt works on a private copy: a failed attempt leaves no trace, and objects
  returned after the commit are detached copies that stay readable.

Faults injected with [`uow.testing.inject`][uow.testing.inject] strike here too: every read
that does not come from the identity map is a statement, and so is each kind of write
(UPDATEs, INSERTs, DELETEs) to each table in a flush, and each SAVEPOINT, RELEASE and
ROLLBACK TO sent. The async twins (``AsyncInMemoryUnitOfWork``,
``AsyncInMemoryRepository``) serve operations run by an ``AsyncRunner``.
"""

from adapters.memory._errors import DuplicateKey, SimulatedError
from adapters.memory._repositories import AsyncInMemoryRepository, InMemoryRepository
from adapters.memory._store import (
    AsyncInMemoryBackend,
    AsyncInMemoryUnitOfWork,
    InMemoryBackend,
    InMemoryUnitOfWork,
)

__all__ = [
    "AsyncInMemoryBackend",
    "AsyncInMemoryRepository",
    "AsyncInMemoryUnitOfWork",
    "DuplicateKey",
    "InMemoryBackend",
    "InMemoryRepository",
    "InMemoryUnitOfWork",
    "SimulatedError",
]


def _public_module() -> None:
    """Show public names as this package's (tracebacks, reprs, logs), not a private module's."""
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("adapters.memory._"):
            value.__module__ = __name__


_public_module()
