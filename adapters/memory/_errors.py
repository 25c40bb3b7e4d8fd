"""The errors the in-memory adapter raises where a database, or its driver, would."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uow import ErrorKind


class SimulatedError(Exception):
    """A database failure of a given kind, raised where an injected fault strikes."""

    def __init__(self, kind: ErrorKind, errno: int | None = None) -> None:
        """Describe the simulated failure by its kind (and errno, for log assertions)."""
        super().__init__(
            f"simulated {kind.value} failure" + ("" if errno is None else f" ({errno})")
        )
        self.kind = kind
        self.errno = errno


class DuplicateKey(Exception):
    """The stand-in driver error behind an ``IntegrityError``: a duplicate key, or a NULL."""
