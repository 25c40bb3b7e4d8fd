"""A TCP relay that adds a set round-trip delay and counts the connections it forwards.

Between a client and a server on one host, the relay makes each round trip cost about
``delay`` seconds more, as a network between two hosts would: each chunk of bytes is
forwarded ``delay / 2`` after the kernel received it, in each direction, in the order it
came. The kernel's receive timestamp (``SO_TIMESTAMPNS``) is the reference, so the time
the relay takes to wake up and read is absorbed by the delay instead of added to it.
How it waits for a chunk's due time is a trade-off, measured in BENCHMARKS.md:

- ``sleep``: ``time.sleep`` with the thread's timer slack lowered to 1 ns; cheap, but
  each wake-up is late by the scheduler's latency, which grows with the machine's load;
- ``spin``: a busy loop; on time while it has a core, but it burns that core;
- ``hybrid``: sleep until ``spin`` seconds before the due time, then spin.

With ``mirror_refusal`` the relay refuses connections while its upstream does. When the
upstream refuses a connection or closes one first, the relay probes it; if the probe is
refused, the relay stops listening until a probe (every ``probe_interval``) gets through.
Clients then see "connection refused", as without the relay, not a connection that is
accepted and then dropped.

Every accepted connection, upstream connect and state change is recorded with its
``time.monotonic()``, so a harness in another process can line them up with its own.
Run the relay in a process of its own (``python -m servers.relay``, or
:class:`RelayProcess`) in front of a Python client: it then takes no share of the
client's GIL, and its CPU time is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import enum
import errno
import functools
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Self

__all__ = ["Relay", "RelayProcess", "RelayStats", "WaitMode"]

_CHUNK = 65536
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python names it only on 3.12+
_TIMESPEC = struct.Struct("qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
_LINGER_RST = struct.pack("ii", 1, 0)
_PR_SET_TIMERSLACK = 29
_POLL = 0.05
_LATENESS_SAMPLES = 100_000


class WaitMode(enum.Enum):
    """How a chunk waits for its due time (see the module docstring)."""

    SLEEP = "sleep"
    SPIN = "spin"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class RelayStats:
    """A snapshot of the relay's counters and of the CPU time it used."""

    accepted: int
    """Client connections accepted."""
    connected: int
    """Upstream connects that succeeded: connection attempts that reached the server."""
    refused: int
    """Upstream connects refused while the relay was listening (the client was reset)."""
    failed: int
    """Upstream connects that failed otherwise (timeout, unreachable)."""
    abandoned: int
    """Upstream connects given up because the client left first."""
    probes: int
    """Probes that reached the upstream (mirror_refusal only)."""
    downs: int
    """Times the relay stopped listening because the upstream refused."""
    bytes_up: int
    bytes_down: int
    chunks: int
    lateness_us: tuple[float, float, float]
    """Median, 90th percentile and largest lateness of delayed chunks, in microseconds."""
    cpu_seconds: float
    """CPU time of the whole process (the relay's own when it runs in a process alone)."""
    thread_cpu_seconds: float
    """CPU time of the relay's threads, finished ones included."""
    wall_seconds: float
    """Seconds since start()."""


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _lower_timer_slack() -> None:
    """Let this thread's sleeps end within 1 ns of their time, not 50 us (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)


def _received_at(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive time of a chunk (CLOCK_REALTIME, ns), or now if it gave none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds * 1_000_000_000 + nanoseconds)
    return time.time_ns()


def _reset(sock: socket.socket) -> None:
    """Close with RST, so the peer sees the connection reset rather than ended."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    sock.close()


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Link:
    """One relayed connection and its two pumps."""

    client: socket.socket
    server: socket.socket
    pumps: int = 2
    """Pumps still running; the last one to end closes both sockets."""
    client_done: bool = False
    """The client ended its side first: an upstream close after that is no news."""

    def abort(self) -> None:
        """Reset both sides, waking a pump blocked in recv() on either."""
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                sock.shutdown(socket.SHUT_RD)


class Relay:
    """Forward ``host``:``port`` to ``upstream_host``:``upstream_port`` with a delay.

    ``delay`` is the round-trip time added, in seconds (half of it each way); it can be
    changed while running with :meth:`set_delay`. Threads: one accepts, two per
    connection forward (one per direction), one probes while the upstream is down.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        delay: float = 0.0,
        wait: WaitMode = WaitMode.HYBRID,
        spin: float = 0.0001,
        mirror_refusal: bool = False,
        probe_interval: float = 0.002,
        connect_timeout: float = 30.0,
        port: int = 0,
    ) -> None:
        """Remember the settings; nothing listens until start()."""
        if delay < 0 or spin < 0:
            raise ValueError("delay and spin must not be negative")
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self.wait = wait
        self._one_way_ns = round(delay * 1e9 / 2)
        self._spin_ns = round(spin * 1e9)
        self.mirror_refusal = mirror_refusal
        self.probe_interval = probe_interval
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._events: list[tuple[float, str]] = []
        self._lateness: deque[int] = deque(maxlen=_LATENESS_SAMPLES)
        self._listener: socket.socket | None = None
        self._state = "stopped"  # up, checking, down, stopped
        self._stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._finished_cpu = 0.0
        self._links: set[_Link] = set()
        self._started_at = 0.0

    # Control, from any thread.

    def start(self) -> None:
        """Listen (on ``port``, or a free one stored in ``port``) and start accepting."""
        if self._state != "stopped":
            raise RuntimeError("relay already started")
        self._stopping.clear()
        self._started_at = time.monotonic()
        self._listen()
        self._state = "up"
        self._spawn(self._accept_loop, "relay-accept")

    def stop(self) -> None:
        """Stop listening, reset every connection and join the threads."""
        self._stopping.set()
        with self._lock:
            self._state = "stopped"
            self._close_listener()
            links, self._links = list(self._links), set()
            threads = list(self._threads)
        for link in links:
            link.abort()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(self.connect_timeout + 1.0)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_delay(self, delay: float) -> None:
        """Change the added round-trip time (seconds) from the next chunk on.

        The lateness samples of :meth:`stats` start afresh: they describe one setting.
        """
        if delay < 0:
            raise ValueError("delay must not be negative")
        self._one_way_ns = round(delay * 1e9 / 2)
        self._lateness.clear()

    @property
    def delay(self) -> float:
        """The round-trip time added, in seconds."""
        return self._one_way_ns * 2 / 1e9

    def stats(self) -> RelayStats:
        """A consistent snapshot of the counters and CPU times."""
        with self._lock:
            counts = dict(self._counts)
            thread_cpu = self._finished_cpu
            for thread in self._threads:  # each stays alive until it leaves this set
                if thread.ident is not None:
                    with contextlib.suppress(OSError):
                        clock = time.pthread_getcpuclockid(thread.ident)
                        thread_cpu += time.clock_gettime(clock)
        late = sorted(self._lateness.copy())  # copy(): atomic, unlike iterating
        lateness = (
            (statistics.median(late) / 1e3, late[len(late) * 9 // 10] / 1e3, late[-1] / 1e3)
            if late
            else (0.0, 0.0, 0.0)
        )
        return RelayStats(
            **{name: counts.get(name, 0) for name in _COUNTED},
            lateness_us=lateness,
            cpu_seconds=time.process_time(),
            thread_cpu_seconds=thread_cpu,
            wall_seconds=time.monotonic() - self._started_at,
        )

    def events(self, since: float = 0.0) -> list[tuple[float, str]]:
        """``(time.monotonic(), kind)`` of events from ``since`` on.

        Kinds: accepted, connected, refused, failed, abandoned (as counted in
        :class:`RelayStats`), and probe, down, up (mirror_refusal only).
        """
        with self._lock:
            return [event for event in self._events if event[0] >= since]

    # Everything below runs on the relay's threads.

    def _record(self, kind: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[kind] += amount
            if kind in _EVENTS:
                self._events.append((time.monotonic(), kind))

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=self._run_thread, args=(target, *args), name=name)
        thread.daemon = True
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run_thread(self, target: Any, *args: Any) -> None:
        try:
            target(*args)
        finally:
            with self._lock:
                self._finished_cpu += time.thread_time()
                self._threads.discard(threading.current_thread())

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(1024)
        self.port = listener.getsockname()[1]
        self._listener = listener

    def _close_listener(self) -> None:
        """Stop listening now (lock held): shutdown() refuses new connects at once."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:
                self._stopping.wait(_POLL / 10)
                continue
            try:
                ready, _, _ = select.select([listener], [], [], _POLL)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):  # closed by a down(), or a reset in the queue
                continue
            self._record("accepted")
            self._spawn(self._serve, "relay-up", client)

    def _serve(self, client: socket.socket) -> None:
        server = self._open_upstream(client)
        if server is None:
            return
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        link = _Link(client, server)
        with self._lock:
            if self._state == "stopped":
                _reset(client)
                _reset(server)
                return
            self._links.add(link)
        self._spawn(self._pump, "relay-down", link, server, client, False)
        self._pump(link, client, server, True)

    def _open_upstream(self, client: socket.socket) -> socket.socket | None:
        """Connect upstream; None if that failed or the client left first."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        code = self._connect(server, client)
        if code is None:
            self._record("abandoned")
            server.close()
            client.close()
            return None
        if code != 0:
            server.close()
            _reset(client)
            if code == errno.ECONNREFUSED:
                self._record("refused")
                if self.mirror_refusal:
                    self._go_down()
            else:
                self._record("failed")
            return None
        server.setblocking(True)
        self._record("connected")
        return server

    def _connect(self, server: socket.socket, client: socket.socket) -> int | None:
        """Connect ``server`` to the upstream: an errno (0: connected), None if the client left."""
        server.setblocking(False)
        code = server.connect_ex(self.upstream)
        deadline = time.monotonic() + self.connect_timeout
        watch = [client]
        while code in (errno.EINPROGRESS, errno.EALREADY):
            remaining = 0.0 if self._stopping.is_set() else deadline - time.monotonic()
            pause = min(max(remaining, 0.0), _POLL)
            readable, writable, _ = select.select(watch, [server], [], pause)
            if writable:
                code = server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            elif readable:
                try:
                    gone = client.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    gone = True
                if gone:
                    return None
                watch = []  # the client spoke first: its bytes wait for the server
            elif remaining <= 0:
                code = errno.ETIMEDOUT
        return code

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, up: bool) -> None:
        """Copy one direction chunk by chunk, each sent at its due time, until EOF."""
        _lower_timer_slack()
        counter = "bytes_up" if up else "bytes_down"
        ended = False
        try:
            while True:
                data, ancillary, _, _ = src.recvmsg(_CHUNK, _ANCILLARY)
                if not data:
                    ended = True
                    break
                one_way = self._one_way_ns
                if one_way:
                    due = _received_at(ancillary) + one_way
                    self._wait_until(due)
                    self._lateness.append(time.time_ns() - due)
                dst.sendall(data)
                self._record_chunk(counter, len(data))
        except OSError:
            pass
        with self._lock:
            upstream_first = not link.client_done and (not up or not ended)
            link.client_done = True
            link.pumps -= 1
            last = link.pumps == 0
            if last:
                self._links.discard(link)
        if ended:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)  # pass the EOF on; the other pump goes on
        else:  # a reset or an error: the other side learns of it at once
            link.abort()
        if last:
            link.client.close()
            link.server.close()
        if upstream_first and self.mirror_refusal:
            self._check_upstream()

    def _record_chunk(self, counter: str, size: int) -> None:
        with self._lock:
            self._counts[counter] += size
            self._counts["chunks"] += 1

    def _wait_until(self, due: int) -> None:
        mode = self.wait
        if mode is not WaitMode.SPIN:
            margin = self._spin_ns if mode is WaitMode.HYBRID else 0
            remaining = due - margin - time.time_ns()
            if remaining > 0:
                time.sleep(remaining / 1e9)
        if mode is not WaitMode.SLEEP:
            while time.time_ns() < due:
                pass

    def _check_upstream(self) -> None:
        """The upstream closed a connection first: find out whether it still listens."""
        with self._lock:
            if self._state != "up":
                return
            self._state = "checking"
        self._spawn(self._probe_loop, "relay-probe")

    def _go_down(self) -> None:
        with self._lock:
            if self._state not in ("up", "checking"):
                return
            starting = self._state == "up"
            self._down()
        if starting:
            self._spawn(self._probe_loop, "relay-probe")

    def _down(self) -> None:
        """Stop listening until the upstream accepts again (lock held)."""
        self._state = "down"
        self._close_listener()
        self._counts["downs"] += 1
        self._events.append((time.monotonic(), "down"))

    def _probe_loop(self) -> None:
        """Probe until the upstream accepts; listen again if the relay had stopped."""
        while not self._stopping.is_set():
            try:
                socket.create_connection(self.upstream, timeout=1.0).close()
            except OSError:
                with self._lock:
                    if self._state == "checking":
                        self._down()
                self._stopping.wait(self.probe_interval)
                continue
            if self._back_up():
                return
            self._stopping.wait(self.probe_interval)  # the port is taken for now

    def _back_up(self) -> bool:
        """A probe got through: listen again if the relay had stopped; False if it cannot."""
        with self._lock:
            self._counts["probes"] += 1
            self._events.append((time.monotonic(), "probe"))
            if self._state == "down":
                try:
                    self._listen()
                except OSError:
                    return False
                self._events.append((time.monotonic(), "up"))
            if self._state != "stopped":
                self._state = "up"
        return True


_COUNTED = (
    "accepted",
    "connected",
    "refused",
    "failed",
    "abandoned",
    "probes",
    "downs",
    "bytes_up",
    "bytes_down",
    "chunks",
)
_EVENTS = frozenset({"accepted", "connected", "refused", "failed", "abandoned"})


class RelayProcess:
    """A :class:`Relay` in a child process, driven over its stdin and stdout.

    Same options as Relay, and ``nice``: a change of the child's niceness (a negative
    one, which needs root, keeps its wake-ups on time on a loaded machine). The child
    exits when told to, or when its stdin closes (so it never outlives its parent).
    """

    host = Relay.host

    def __init__(self, upstream_host: str, upstream_port: int, **options: Any) -> None:
        """Remember the settings; nothing runs until start()."""
        self._argv = [f"--upstream={upstream_host}:{upstream_port}"]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                self._argv += [flag] if value else []
            else:
                shown = value.value if isinstance(value, enum.Enum) else value
                self._argv.append(f"{flag}={shown}")
        self._proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.pid = 0
        self.nice = 0
        """The child's niceness, as it reported it."""

    def start(self) -> None:
        """Start the child and wait until it listens (``port``, ``pid``)."""
        root = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "servers.relay", *self._argv],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self._reply()
        self.port, self.pid = int(ready["port"]), int(ready["pid"])
        self.nice = int(ready["nice"])

    def stop(self) -> None:
        """Tell the child to stop, and wait for it to exit. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._send(proc, "quit")
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_delay(self, delay: float) -> None:
        """As :meth:`Relay.set_delay`."""
        self._command(f"delay {delay!r}")

    def stats(self) -> RelayStats:
        """As :meth:`Relay.stats`; the CPU time is the child process's."""
        reply = self._command("stats")
        reply["lateness_us"] = tuple(reply["lateness_us"])
        return RelayStats(**reply)

    def events(self, since: float = 0.0) -> list[tuple[float, str]]:
        """As :meth:`Relay.events` (``time.monotonic()`` is the same clock in every process)."""
        return [(float(t), str(kind)) for t, kind in self._command(f"events {since!r}")["events"]]

    def _command(self, line: str) -> dict[str, Any]:
        if self._proc is None:
            raise RuntimeError("relay process is not running")
        self._send(self._proc, line)
        return self._reply()

    @staticmethod
    def _send(proc: subprocess.Popen[str], line: str) -> None:
        stdin: IO[str] | None = proc.stdin
        if stdin is None:
            raise RuntimeError("relay process has no stdin")
        stdin.write(line + "\n")
        stdin.flush()

    def _reply(self) -> dict[str, Any]:
        stdout = self._proc.stdout if self._proc is not None else None
        line = stdout.readline() if stdout is not None else ""
        if not line:
            raise RuntimeError("the relay process ended")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"relay: {reply['error']}")
        return reply


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m servers.relay", description=__doc__)
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--delay", type=float, default=0.0, help="round trip added, s")
    parser.add_argument("--wait", choices=[m.value for m in WaitMode], default="hybrid")
    parser.add_argument("--spin", type=float, default=0.0001, help="hybrid: spin this long, s")
    parser.add_argument("--mirror-refusal", action="store_true")
    parser.add_argument("--probe-interval", type=float, default=0.002)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument(
        "--nice", type=int, default=0, help="change the process's niceness (< 0 needs root)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a relay; answer ``stats``, ``events SINCE``, ``delay SECONDS`` and ``quit``."""
    args = _parse(argv)
    host, _, port = args.upstream.rpartition(":")
    relay = Relay(
        host,
        int(port),
        delay=args.delay,
        wait=WaitMode(args.wait),
        spin=args.spin,
        mirror_refusal=args.mirror_refusal,
        probe_interval=args.probe_interval,
        connect_timeout=args.connect_timeout,
        port=args.port,
    )

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    if args.nice:
        with contextlib.suppress(PermissionError):  # the niceness is reported either way
            os.nice(args.nice)
    relay.start()
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, 0)
        reply({"port": relay.port, "pid": os.getpid(), "nice": niceness})
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "quit":
                break
            if command == "stats":
                reply(asdict(relay.stats()))
            elif command == "events":
                reply({"events": relay.events(float(argument or 0))})
            elif command == "delay":
                relay.set_delay(float(argument))
                reply({"delay": relay.delay})
            else:
                reply({"error": f"unknown command {command!r}"})
    finally:
        relay.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
