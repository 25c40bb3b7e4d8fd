"""A fault-injecting TCP proxy that understands just enough of the MySQL protocol.

The retrying unit of work exists for failures real networks produce rarely: a
connection lost before the COMMIT reached the server, after the server committed
but before the client heard back, inside a result set, or a peer that goes silent.
Between PyMySQL and a real MariaDB on loopback, this proxy produces each on demand
at an exact protocol point. Its asyncio loop runs in a daemon thread so synchronous
tests drive it in-process; every public method is thread-safe.

Packets (3-byte little-endian payload length, sequence id, payload) are reassembled
in both directions. A *command packet* is a client packet with sequence id 0 after
the login (login packets and continuations of 16 MiB payloads have ids >= 1); the
server packets after it, up to the next command, are its *response*. Login packets
count in the ``stats()`` packet totals, but faults only hit commands and responses.
A COMMIT is a COM_QUERY whose SQL, after leading whitespace, starts with ``COMMIT``
(any case). A client that negotiates TLS is forwarded untouched, without faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence

_T = TypeVar("_T")
_HEADER = 4
_CLIENT_SSL = 0x0800
_NOT_A_RESULT_SET = (b"\x00", b"\xff", b"\xfb")  # first reply byte of OK, ERR, LOCAL INFILE
_LINGER_RST = struct.pack("ii", 1, 0)
_TIMEOUT = 10.0


class CutMode(enum.Enum):
    """FIN closes both sockets normally; RST sets SO_LINGER (1, 0) first so the kernel resets.

    As with any close, the kernel still resets a socket that has unread bytes.
    """

    FIN = "fin"
    RST = "rst"


class FaultKind(enum.Enum):
    """What a cut or blackhole came from; MANUAL is ``cut_all()``."""

    BEFORE_COMMIT = "before_commit"
    AFTER_COMMIT_REPLY = "after_commit_reply"
    MID_RESULT = "mid_result"
    AT_PACKET = "at_packet"
    BLACKHOLE = "blackhole"
    MANUAL = "manual"


@dataclass(frozen=True)
class BeforeCommit:
    """Drop the client's COMMIT and cut: the server sees the client vanish and rolls back."""

    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.BEFORE_COMMIT


@dataclass(frozen=True)
class AfterCommitReply:
    """Forward a COMMIT, swallow the server's reply to it and cut: committed, client unaware."""

    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.AFTER_COMMIT_REPLY


@dataclass(frozen=True)
class MidResult:
    """Forward the first ``after_packets`` packets of a result-set response, then cut.

    Counting starts at the column-count packet; PyMySQL (no DEPRECATE_EOF) then gets
    one packet per column definition, an EOF, one per row. Responses that are no
    result set, or end before ``after_packets + 1`` packets, don't match.
    """

    after_packets: int = 10
    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.MID_RESULT

    def __post_init__(self) -> None:
        if self.after_packets < 1:
            raise ValueError("after_packets must be >= 1")


@dataclass(frozen=True)
class AtPacket:
    """Cut instead of forwarding the ``n``-th command packet of a connection (1-based).

    PyMySQL's connect sends ``SET NAMES`` (command 1), then ``SET AUTOCOMMIT`` unless
    ``autocommit`` is None or equals the server's default. Chaos mode ignores ``n``
    and cuts at the command that drew the fault.
    """

    n: int
    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.AT_PACKET

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")


@dataclass(frozen=True)
class Blackhole:
    """Swallow the next command packet and all later traffic of its connection, both ways."""

    kind: ClassVar[FaultKind] = FaultKind.BLACKHOLE


@dataclass(frozen=True)
class BlackholeAfterCommit:
    """Forward a COMMIT, then swallow its reply and all later traffic of its connection.

    The server has committed; the client waits for an answer that never comes (until it
    gives up and closes, which the proxy passes on as for a ``Blackhole``).
    """

    kind: ClassVar[FaultKind] = FaultKind.BLACKHOLE


Fault = BeforeCommit | AfterCommitReply | MidResult | AtPacket | Blackhole | BlackholeAfterCommit


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of the counters; packet totals include handshake packets."""

    connections_accepted: int = 0
    connections_open: int = 0
    upstream_failures: int = 0
    client_packets: int = 0
    server_packets: int = 0
    commands: int = 0
    commits_seen: int = 0
    commit_replies_seen: int = 0
    faults_fired: int = 0  # armed or chaos faults that took effect (cut_all() is not a fault)
    chaos_triggered: int = 0  # chaos draws; a drawn MidResult may meet no long result set
    blackholes: int = 0  # connections blackholed by a Blackhole or BlackholeAfterCommit
    cuts: Mapping[tuple[FaultKind, CutMode], int] = field(default_factory=dict)

    def cut_count(self, kind: FaultKind | None = None, mode: CutMode | None = None) -> int:
        """Number of cuts, optionally only those of one kind and/or mode."""
        return sum(n for (k, m), n in self.cuts.items() if kind in (None, k) and mode in (None, m))


@dataclass(frozen=True)
class _Cut:
    kind: FaultKind
    mode: CutMode
    armed: bool  # from arm(): wait_fired() is waiting for it


_Verdict = Literal["forward", "swallow"] | _Cut


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    """Protocol state of one proxied connection, touched only on the loop thread."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    commands: int = 0
    response_packets: int = 0
    result_set: bool = False
    awaiting_commit_reply: bool = False
    chaos_commit: AfterCommitReply | BlackholeAfterCommit | None = None
    chaos_mid: MidResult | None = None
    opaque: bool = False  # TLS: the bytes are no longer packets
    blackholed: bool = False
    closed: bool = False


@dataclass
class _Armed:
    fault: Fault
    remaining: int


@dataclass
class _Chaos:
    rng: random.Random
    probability: float
    faults: tuple[Fault, ...]


def _split_packets(buf: bytearray) -> list[bytes]:
    """Remove and return the complete packets at the start of ``buf``."""
    packets, pos = [], 0
    while len(buf) - pos >= _HEADER:
        end = pos + _HEADER + int.from_bytes(buf[pos : pos + 3], "little")
        if end > len(buf):
            break
        packets.append(bytes(buf[pos:end]))
        pos = end
    del buf[:pos]
    return packets


class FaultProxy:
    """Forward ``host``:``port`` to the upstream server, injecting armed or random faults."""

    host = "127.0.0.1"

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        """Remember the upstream; nothing listens until ``start()``."""
        self.upstream_host, self.upstream_port, self.port = upstream_host, upstream_port, 0
        self._cond = threading.Condition()  # guards what test threads share with the loop
        self._counts: Counter[str] = Counter()  # keyed by ProxyStats field names
        self._cuts: Counter[tuple[FaultKind, CutMode]] = Counter()
        self._armed: list[_Armed] = []
        self._unfired = 0
        self._chaos: _Chaos | None = None
        self._blackhole_all = False
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        """Start the loop thread and listen on a free port (``self.port``)."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy")
        self._thread.daemon = True
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._accept, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Close the listener and every connection, end all tasks and join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_TIMEOUT)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = self._server = None

    def __enter__(self) -> FaultProxy:  # noqa: PYI034 - Self needs Python 3.11
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def arm(self, fault: Fault, *, times: int = 1) -> None:
        """Fire ``fault`` at the next ``times`` matching events, on any connection."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._cond:
            self._armed.append(_Armed(fault, times))
            self._unfired += times

    def disarm_all(self) -> None:
        """Forget every armed fault that has not fired yet (chaos mode is left alone)."""
        with self._cond:
            self._armed.clear()
            self._unfired = 0
            self._cond.notify_all()

    def wait_fired(self, timeout: float) -> bool:
        """Block until every armed fault has fired (cut done); False if ``timeout`` passed."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfired <= 0, timeout)

    def set_chaos(
        self, rng_seed: int | None, probability: float = 0.0, faults: Sequence[Fault] = ()
    ) -> None:
        """Give each command ``probability`` of firing one of ``faults``; None turns it off.

        A COMMIT draws among all ``faults``, other commands among the ones not tied to
        a COMMIT (and not at all if there are none). Armed faults take precedence.
        """
        if rng_seed is not None and (not faults or not 0.0 <= probability <= 1.0):
            raise ValueError("chaos needs faults and a probability in [0, 1]")
        with self._cond:
            self._chaos = None
            if rng_seed is not None:
                self._chaos = _Chaos(random.Random(rng_seed), probability, (*faults,))

    def cut_all(self, mode: CutMode = CutMode.FIN) -> int:
        """Cut every open connection now; return how many were cut."""

        def cut() -> int:
            live = [conn for conn in self._conns if not conn.closed]
            for conn in live:
                self._cut(conn, _Cut(FaultKind.MANUAL, mode, armed=False))
            return len(live)

        return self._run(self._call(cut))

    def blackhole_all(self) -> None:
        """Swallow all traffic of every connection, present and new, until ``restore()``."""
        with self._cond:
            self._blackhole_all = True

    def restore(self) -> None:
        """Stop blackholing new connections; the blackholed ones stay so (their bytes are lost)."""
        with self._cond:
            self._blackhole_all = False

    def stats(self) -> ProxyStats:
        """A consistent snapshot of the counters."""
        with self._cond:
            counts: dict[str, Any] = dict(self._counts)
            return ProxyStats(**counts, cuts=MappingProxyType(dict(self._cuts)))

    # Everything below runs on the loop thread.

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the loop thread and wait for its result."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_TIMEOUT)

    @staticmethod
    async def _call(fn: Callable[[], _T]) -> _T:
        return fn()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._conns):  # accepted, but cancelled before its handler ran
            await self._release(conn)
        if self._server is not None:
            await self._server.wait_closed()

    def _take(self, match: Callable[[Fault], bool]) -> Fault | None:
        """Claim the first armed fault that matches (lock held)."""
        for armed in self._armed:
            if match(armed.fault):
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.remove(armed)
                return armed.fault
        return None

    def _draw(self, is_commit: bool) -> Fault | None:
        """Let chaos mode pick a fault for this command, or none (lock held)."""
        chaos = self._chaos
        if chaos is None:
            return None
        commit_only = BeforeCommit | AfterCommitReply | BlackholeAfterCommit
        fits = [f for f in chaos.faults if is_commit or not isinstance(f, commit_only)]
        if not fits or chaos.rng.random() >= chaos.probability:
            return None
        self._counts["chaos_triggered"] += 1
        return chaos.rng.choice(fits)

    def _fired(self, armed: bool) -> None:
        """Count a fault that took effect (lock held)."""
        self._counts["faults_fired"] += 1
        if armed:
            self._unfired = max(0, self._unfired - 1)  # disarm_all() may have zeroed it
            self._cond.notify_all()

    def _command_fault(self, n: int, is_commit: bool) -> tuple[Fault | None, bool]:
        """Count a command; pick the fault it fires and whether that was armed."""

        def match(f: Fault) -> bool:
            at_n = isinstance(f, AtPacket) and f.n == n
            return at_n or isinstance(f, Blackhole) or (is_commit and isinstance(f, BeforeCommit))

        with self._cond:
            self._counts["commands"] += 1
            self._counts["commits_seen"] += is_commit
            fault, armed = self._take(match), True
            if fault is None:
                fault, armed = self._draw(is_commit), False
            if isinstance(fault, Blackhole):
                self._counts["blackholes"] += 1
                self._fired(armed)
        return fault, armed

    def _client_packet(self, conn: _Conn, packet: bytes) -> _Verdict:
        if conn.blackholed:
            return "swallow"
        payload = packet[_HEADER:]
        if conn.opaque or packet[3] != 0:  # TLS, login, continuation or LOCAL INFILE data
            # An SSLRequest is a bare 32-byte login packet with CLIENT_SSL; TLS follows.
            if conn.commands == 0 and len(payload) == 32:
                conn.opaque = bool(int.from_bytes(payload[:4], "little") & _CLIENT_SSL)
            return "forward"
        conn.commands += 1
        conn.response_packets, conn.chaos_mid, conn.chaos_commit = 0, None, None
        conn.awaiting_commit_reply = is_commit = (
            payload[:1] == b"\x03" and payload[1:].lstrip()[:6].upper() == b"COMMIT"
        )
        fault, armed = self._command_fault(conn.commands, is_commit)
        if isinstance(fault, BeforeCommit | AtPacket):
            return _Cut(fault.kind, fault.mode, armed)
        if isinstance(fault, Blackhole):
            conn.blackholed = True
            return "swallow"
        if isinstance(fault, AfterCommitReply | BlackholeAfterCommit):
            conn.chaos_commit = fault
        elif isinstance(fault, MidResult):
            conn.chaos_mid = fault
        return "forward"

    def _server_packet(self, conn: _Conn, packet: bytes) -> _Verdict:
        if conn.blackholed:
            return "swallow"
        if conn.opaque or conn.commands == 0:  # TLS, greeting or login
            return "forward"
        conn.response_packets += 1
        if conn.response_packets == 1:
            conn.result_set = packet[_HEADER : _HEADER + 1] not in _NOT_A_RESULT_SET
        if conn.awaiting_commit_reply:
            conn.awaiting_commit_reply = False
            verdict = self._commit_reply(conn)
            if verdict is not None:
                return verdict
        forwarded = conn.response_packets - 1
        if conn.result_set and forwarded > 0:
            if conn.chaos_mid is not None and conn.chaos_mid.after_packets == forwarded:
                mode, conn.chaos_mid = conn.chaos_mid.mode, None
                return _Cut(FaultKind.MID_RESULT, mode, armed=False)

            def match(f: Fault) -> bool:
                return isinstance(f, MidResult) and f.after_packets == forwarded

            with self._cond:
                fault = self._take(match)
            if isinstance(fault, MidResult):
                return _Cut(fault.kind, fault.mode, armed=True)
        return "forward"

    def _commit_reply(self, conn: _Conn) -> _Verdict | None:
        """The verdict on the server's reply to a COMMIT, when a fault claims it."""
        with self._cond:
            self._counts["commit_replies_seen"] += 1
            chaos, conn.chaos_commit = conn.chaos_commit, None
            fault = chaos or self._take(
                lambda f: isinstance(f, AfterCommitReply | BlackholeAfterCommit)
            )
            if isinstance(fault, BlackholeAfterCommit):
                self._counts["blackholes"] += 1
                self._fired(armed=chaos is None)
        if isinstance(fault, BlackholeAfterCommit):
            conn.blackholed = True
            return "swallow"
        if isinstance(fault, AfterCommitReply):
            return _Cut(fault.kind, fault.mode, armed=chaos is None)
        return None

    @staticmethod
    def _shut(conn: _Conn, mode: CutMode) -> None:
        conn.closed = True
        for writer in filter(None, (conn.client, conn.server)):
            sock = writer.get_extra_info("socket")
            if mode is CutMode.FIN or sock is None:
                writer.close()  # flushes what was forwarded, then FIN
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            writer.transport.abort()

    def _cut(self, conn: _Conn, cut: _Cut) -> None:
        if conn.closed:
            return
        self._shut(conn, cut.mode)
        with self._cond:
            self._cuts[cut.kind, cut.mode] += 1
            if cut.kind is not FaultKind.MANUAL:
                self._fired(cut.armed)

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        """Copy one direction, packet by packet, applying each packet's verdict."""
        inspect = self._client_packet if up else self._server_packet
        buf = bytearray()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if conn.closed:
                    return
                if conn.blackholed or self._blackhole_all:
                    conn.blackholed = True  # for good: its packet framing is lost
                    continue
                buf += data
                packets = [] if conn.opaque else _split_packets(buf)
                with self._cond:
                    self._counts["client_packets" if up else "server_packets"] += len(packets)
                out, verdict = bytearray(), None
                for packet in packets:
                    verdict = inspect(conn, packet)
                    if isinstance(verdict, _Cut):
                        break
                    if verdict == "forward":
                        out += packet
                if conn.opaque and not isinstance(verdict, _Cut):
                    out += buf  # TLS bytes are no packets: forward them as they come
                    buf.clear()
                writer.write(out)
                if isinstance(verdict, _Cut):
                    self._cut(conn, verdict)  # no await since write(): the cut lands right here
                    return
                await writer.drain()

    def _accept(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        # Our own task rather than asyncio's: cancelling that one at stop() logs errors.
        conn = _Conn(client)
        self._conns.add(conn)
        with self._cond:
            self._counts["connections_accepted"] += 1
            self._counts["connections_open"] += 1
        task = asyncio.ensure_future(self._handle(conn, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        try:
            upstream, conn.server = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            pumps = [
                asyncio.ensure_future(self._pump(conn, reader, conn.server, up=True)),
                asyncio.ensure_future(self._pump(conn, upstream, conn.client, up=False)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            with self._cond:
                self._counts["upstream_failures"] += 1
        finally:
            await self._release(conn)

    async def _release(self, conn: _Conn) -> None:
        """Close both sides of a finished connection and wait until they are closed."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        with self._cond:
            self._counts["connections_open"] -= 1
        self._shut(conn, CutMode.FIN)
        for writer in filter(None, (conn.client, conn.server)):
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except TimeoutError:
                writer.transport.abort()  # a peer that stopped reading blocks the flush
            except (ConnectionError, OSError):
                pass
