"""Statements per operation, from the server's global status counters."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.server import Database

COUNTERS = (
    "Questions",
    "Com_insert",
    "Com_select",
    "Com_commit",
    "Com_rollback",
    "Com_admin_commands",
)
"""Questions counts every statement a client sends; a ping shows only in Com_admin_commands."""
_QUERY = "SHOW GLOBAL STATUS WHERE Variable_name IN ({})".format(
    ", ".join(f"'{name}'" for name in COUNTERS)
)
_NOOP_SAMPLES = 5


class ServerCounters:
    """Reads the counters on a connection of its own and subtracts what reading them costs.

    The counters are global: anything else talking to the server during a case shows
    up too. The harness takes the median over rounds, which a stray statement cannot move.
    """

    def __init__(self, db: Database) -> None:
        self._connection = db.connect(ssl_disabled=True, autocommit=True)
        samples = []
        for _ in range(_NOOP_SAMPLES):
            before = self.read()
            samples.append(self._subtract(self.read(), before))
        self.noop = {
            name: int(statistics.median(sample[name] for sample in samples)) for name in COUNTERS
        }
        """What one reading adds to the counters (the SHOW itself), as measured."""

    def read(self) -> dict[str, int]:
        with self._connection.cursor() as cursor:
            cursor.execute(_QUERY)
            values = {str(name): int(value) for name, value in cursor.fetchall()}
        return {name: values.get(name, 0) for name in COUNTERS}

    @staticmethod
    def _subtract(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
        return {name: after[name] - before[name] for name in COUNTERS}

    def delta(self, after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
        """Counts between two readings, less the reading's own share."""
        raw = self._subtract(after, before)
        return {name: raw[name] - self.noop[name] for name in COUNTERS}

    def close(self) -> None:
        self._connection.close()
