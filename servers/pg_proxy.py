"""A fault-injecting TCP proxy that understands just enough of the PostgreSQL protocol.

The retrying unit of work exists for failures real networks produce rarely: a
connection lost before the COMMIT reached the server, after the server committed
but before the client heard back, inside a result set, a client that vanished while
its server session stays "idle in transaction", or a peer that goes silent. Between
a client (psycopg, asyncpg) and a real PostgreSQL on loopback, this proxy produces
each on demand at an exact protocol point. Its asyncio loop runs in a daemon thread
so synchronous tests drive it in-process; every public method is thread-safe.

Messages are reassembled in both directions. A connection starts with untyped
messages (4-byte length, 4-byte code): an optional SSLRequest or GSSENCRequest,
answered by the server with one byte (``N``: go on in plain text; ``S``/``G``: the
encrypted bytes that follow are forwarded untouched, without faults), then the
StartupMessage (or a CancelRequest). Every later message, both ways, is a type byte
and a 4-byte length. Client messages are counted per type: ``p`` (password and SASL
messages: two with scram-sha-256) precede the first query; ``Q`` is a simple query;
``P``/``B``/``D``/``E``/``S``/``H``/``C`` are the extended protocol's Parse, Bind,
Describe, Execute, Sync, Flush and Close. A connection is *ready* once the server
first sent ReadyForQuery; only then can a COMMIT, a blackhole or chaos strike.

A COMMIT is a ``Q`` message whose whole text is ``COMMIT`` or ``END`` (any case, an
optional ``WORK``/``TRANSACTION``, ``AND [NO] CHAIN`` and trailing ``;``): psycopg
sends ``COMMIT``, asyncpg ``COMMIT;``. A COMMIT inside the extended protocol or
after other statements in one ``Q`` is not recognised. Its *reply* is every server
message up to and including the next ReadyForQuery.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import re
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping, Sequence
    from typing import Self

_T = TypeVar("_T")
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_TLS_HANDSHAKE = 0x16  # first byte of a TLS record: a client that starts TLS at once
_RESULT_END = frozenset(b"TCZIsE")  # RowDescription, CommandComplete, ReadyForQuery, ...
_COMMIT = re.compile(
    rb"\s*(?:COMMIT|END)(?:\s+(?:WORK|TRANSACTION))?(?:\s+AND\s+(?:NO\s+)?CHAIN)?\s*;?\s*",
    re.IGNORECASE,
)
_LINGER_RST = struct.pack("ii", 1, 0)
_TIMEOUT = 10.0


class CutMode(enum.Enum):
    """How a connection is cut.

    FIN closes both sockets normally; RST sets SO_LINGER (1, 0) first so the kernel
    resets (as with any close, the kernel resets a socket that has unread bytes).
    HALF_OPEN closes only the client's socket and keeps the server's open and silent:
    the server session waits for a client that is gone, e.g. "idle in transaction",
    until ``release_half_open()``, ``cut_all()``, ``stop()`` or the server ends it.
    """

    FIN = "fin"
    RST = "rst"
    HALF_OPEN = "half_open"


class FaultKind(enum.Enum):
    """What a cut or blackhole came from; MANUAL is ``cut_all()`` and ``release_half_open()``."""

    BEFORE_COMMIT = "before_commit"
    AFTER_COMMIT_REPLY = "after_commit_reply"
    MID_RESULT = "mid_result"
    AT_MESSAGE = "at_message"
    BLACKHOLE = "blackhole"
    MANUAL = "manual"


@dataclass(frozen=True)
class BeforeCommit:
    """Drop the client's COMMIT and cut: the server sees the client vanish and rolls back.

    With HALF_OPEN the server never hears of it: the transaction stays open.
    """

    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.BEFORE_COMMIT


@dataclass(frozen=True)
class AfterCommitReply:
    """Forward a COMMIT, swallow the server's reply (``C COMMIT`` + ``Z``) and cut.

    The transaction is committed; the client never learns it.
    """

    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.AFTER_COMMIT_REPLY


@dataclass(frozen=True)
class MidResult:
    """Forward the first ``after_rows`` DataRow messages of a result, then cut.

    Results with no more than ``after_rows`` rows don't match.
    """

    after_rows: int = 10
    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.MID_RESULT

    def __post_init__(self) -> None:
        if self.after_rows < 1:
            raise ValueError("after_rows must be >= 1")


@dataclass(frozen=True)
class AtMessage:
    """Cut instead of forwarding a connection's ``n``-th client message of ``message_type``.

    ``message_type`` is a type letter (``"P"`` Parse, ``"B"`` Bind, ``"E"`` Execute,
    ``"S"`` Sync, ``"Q"`` query, ``"p"`` password, ...), or None for any type; the
    untyped startup messages are not counted. Chaos mode ignores ``n`` and cuts at the
    message that drew the fault, if it is of ``message_type``.
    """

    message_type: str | None = None
    n: int = 1
    mode: CutMode = CutMode.FIN
    kind: ClassVar[FaultKind] = FaultKind.AT_MESSAGE

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.message_type is not None and len(self.message_type.encode()) != 1:
            raise ValueError("message_type must be one ASCII letter or None")


@dataclass(frozen=True)
class Blackhole:
    """Swallow the next client message and all later traffic of its connection, both ways.

    The client's socket stays open and silent even if the server closes its side.
    """

    kind: ClassVar[FaultKind] = FaultKind.BLACKHOLE


Fault = BeforeCommit | AfterCommitReply | MidResult | AtMessage | Blackhole


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of the counters; message totals include the startup phase."""

    connections_accepted: int = 0
    connections_open: int = 0  # half-open ones included until their server side closes
    upstream_failures: int = 0
    client_messages: int = 0
    server_messages: int = 0
    encryption_requests: int = 0  # SSLRequest and GSSENCRequest
    commits_seen: int = 0
    commit_replies_seen: int = 0
    faults_fired: int = 0  # armed or chaos faults that took effect (manual cuts are not)
    chaos_triggered: int = 0  # chaos draws; a drawn MidResult may meet no long result
    blackholes: int = 0  # connections blackholed by a Blackhole fault
    half_open_held: int = 0  # server sides held open now, after a HALF_OPEN cut
    messages_by_type: Mapping[str, int] = field(default_factory=dict)  # typed client messages
    cuts: Mapping[tuple[FaultKind, CutMode], int] = field(default_factory=dict)

    def cut_count(self, kind: FaultKind | None = None, mode: CutMode | None = None) -> int:
        """Number of cuts, optionally only those of one kind and/or mode."""
        return sum(n for (k, m), n in self.cuts.items() if kind in (None, k) and mode in (None, m))


@dataclass(frozen=True)
class _Cut:
    kind: FaultKind
    mode: CutMode
    armed: bool  # from arm(): wait_fired() is waiting for it


# "forward", "swallow", a cut, or bytes to answer the client with instead of forwarding.
_Verdict = Literal["forward", "swallow"] | _Cut | bytes


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Conn:
    """Protocol state of one proxied connection, touched only on the loop thread."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    startup: bool = True  # untyped messages expected from the client
    awaiting_answer: bool = False  # the server's one-byte answer to an encryption request
    opaque: bool = False  # encrypted: the bytes are no longer messages
    ready: bool = False  # the server has sent its first ReadyForQuery
    counts: Counter[str] = field(default_factory=Counter)
    total: int = 0
    rows: int = 0  # DataRows forwarded in the current result
    awaiting_commit_reply: bool = False
    commit_cut: _Cut | None = None  # swallow the COMMIT's reply, then cut
    chaos_mid: MidResult | None = None
    blackholed: bool = False
    closed: bool = False  # nothing is forwarded any more
    half_open: bool = False  # client side closed, server side held


@dataclass
class _Armed:
    fault: Fault
    remaining: int


@dataclass
class _Chaos:
    rng: random.Random
    probability: float
    faults: tuple[Fault, ...]


def _take_untyped(buf: bytearray) -> bytes | None:
    """Remove and return a complete startup-phase message from the start of ``buf``."""
    if len(buf) < 4:
        return None
    end = int.from_bytes(buf[:4], "big")
    if end < 4:
        raise ValueError(f"bad startup message length {end}")
    return _cut_front(buf, end)


def _take_typed(buf: bytearray) -> bytes | None:
    """Remove and return a complete typed message from the start of ``buf``."""
    if len(buf) < 5:
        return None
    length = int.from_bytes(buf[1:5], "big")
    if length < 4:
        raise ValueError(f"bad message length {length}")
    return _cut_front(buf, 1 + length)


def _cut_front(buf: bytearray, end: int) -> bytes | None:
    if len(buf) < end:
        return None
    message = bytes(buf[:end])
    del buf[:end]
    return message


def _fits(fault: Fault, message_type: str, is_commit: bool) -> bool:
    """Whether chaos may fire ``fault`` at a client message of this type."""
    if isinstance(fault, BeforeCommit | AfterCommitReply):
        return is_commit
    if isinstance(fault, AtMessage):
        return fault.message_type in (None, message_type)
    return True


class FaultProxy:
    """Forward ``host``:``port`` to the upstream server, injecting armed or random faults.

    With ``refuse_encryption`` the proxy itself answers SSLRequest and GSSENCRequest
    with ``N``, so clients that prefer TLS fall back to plain text and faults still
    work in front of a server that offers TLS.
    """

    host = "127.0.0.1"

    def __init__(
        self, upstream_host: str, upstream_port: int, *, refuse_encryption: bool = False
    ) -> None:
        """Remember the upstream; nothing listens until ``start()``."""
        self.upstream_host, self.upstream_port, self.port = upstream_host, upstream_port, 0
        self.refuse_encryption = refuse_encryption
        self._cond = threading.Condition()  # guards what test threads share with the loop
        self._counts: Counter[str] = Counter()  # keyed by ProxyStats field names
        self._types: Counter[str] = Counter()
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

    def __repr__(self) -> str:
        return f"FaultProxy(port={self.port}, upstream={self.upstream_host!r}:{self.upstream_port})"

    def start(self) -> None:
        """Start the loop thread and listen on a free port (``self.port``)."""
        if self._loop is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-fault-proxy")
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

    def __enter__(self) -> Self:
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
        """Give each client message of a ready connection ``probability`` to fire a fault.

        The fault is drawn among those of ``faults`` that fit the message: COMMIT
        faults only at a COMMIT, an ``AtMessage`` only at its type. None turns chaos
        off. Armed faults take precedence.
        """
        if rng_seed is not None and (not faults or not 0.0 <= probability <= 1.0):
            raise ValueError("chaos needs faults and a probability in [0, 1]")
        with self._cond:
            self._chaos = None
            if rng_seed is not None:
                self._chaos = _Chaos(random.Random(rng_seed), probability, (*faults,))

    def cut_all(self, mode: CutMode = CutMode.FIN) -> int:
        """Cut every open connection now, held half-open server sides too; return how many."""

        def cut() -> int:
            live = [conn for conn in self._conns if not conn.closed or conn.half_open]
            for conn in live:
                if conn.half_open:
                    self._close_held(conn)
                else:
                    self._cut(conn, _Cut(FaultKind.MANUAL, mode, armed=False))
            return len(live)

        return self._run(self._call(cut))

    def release_half_open(self) -> int:
        """Close the server side of every half-open connection (FIN); return how many.

        Each server session then sees its client vanish and rolls back.
        """

        def release() -> int:
            held = [conn for conn in self._conns if conn.half_open]
            for conn in held:
                self._close_held(conn)
            return len(held)

        return self._run(self._call(release))

    def blackhole_all(self) -> None:
        """Swallow all traffic of every connection, present and new, until ``restore()``.

        New connections are accepted and never hear anything; none reaches the server.
        """
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
            return ProxyStats(
                **counts,
                messages_by_type=MappingProxyType(dict(self._types)),
                cuts=MappingProxyType(dict(self._cuts)),
            )

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

    def _draw(self, message_type: str, is_commit: bool) -> Fault | None:
        """Let chaos mode pick a fault for this message, or none (lock held)."""
        chaos = self._chaos
        if chaos is None:
            return None
        fits = [f for f in chaos.faults if _fits(f, message_type, is_commit)]
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

    def _message_fault(
        self, conn: _Conn, message_type: str, is_commit: bool
    ) -> tuple[Fault | None, bool]:
        """Count a typed client message; pick the fault it fires and whether that was armed."""

        def match(f: Fault) -> bool:
            if isinstance(f, AtMessage):
                n = conn.total if f.message_type is None else conn.counts[message_type]
                return f.message_type in (None, message_type) and f.n == n
            if not conn.ready:
                return False
            return isinstance(f, Blackhole) or (
                is_commit and isinstance(f, BeforeCommit | AfterCommitReply)
            )

        with self._cond:
            self._types[message_type] += 1
            self._counts["commits_seen"] += is_commit
            fault, armed = self._take(match), True
            if fault is None and conn.ready:
                fault, armed = self._draw(message_type, is_commit), False
            if isinstance(fault, Blackhole):
                self._counts["blackholes"] += 1
                self._fired(armed)
        return fault, armed

    def _client_message(self, conn: _Conn, message: bytes) -> _Verdict:
        if conn.blackholed:
            return "swallow"
        if conn.startup:
            code = int.from_bytes(message[4:8], "big")
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                with self._cond:
                    self._counts["encryption_requests"] += 1
                if self.refuse_encryption:
                    return b"N"
                conn.awaiting_answer = True
            elif code != _CANCEL_REQUEST:
                conn.startup = False  # the StartupMessage: typed messages follow
            return "forward"
        message_type = chr(message[0])
        conn.counts[message_type] += 1
        conn.total += 1
        is_commit = message_type == "Q" and bool(_COMMIT.fullmatch(message[5:].rstrip(b"\0")))
        fault, armed = self._message_fault(conn, message_type, is_commit)
        if isinstance(fault, BeforeCommit | AtMessage):
            return _Cut(fault.kind, fault.mode, armed)
        if isinstance(fault, Blackhole):
            conn.blackholed = True
            return "swallow"
        if isinstance(fault, AfterCommitReply):
            conn.commit_cut = _Cut(fault.kind, fault.mode, armed)
        elif isinstance(fault, MidResult):
            conn.chaos_mid = fault
        conn.awaiting_commit_reply = is_commit
        return "forward"

    def _server_message(self, conn: _Conn, message: bytes) -> _Verdict:
        if conn.blackholed:
            return "swallow"
        if conn.awaiting_answer:  # one byte: N, or S / G and encrypted bytes follow
            conn.awaiting_answer = False
            conn.opaque = message in (b"S", b"G")
            return "forward"
        message_type = message[0]
        if message_type == ord("Z"):
            conn.ready = True
        if conn.awaiting_commit_reply:
            return self._commit_reply(conn, message_type)
        if message_type == ord("D"):
            return self._data_row(conn)
        if message_type in _RESULT_END:
            conn.rows = 0
        if message_type == ord("Z"):
            conn.chaos_mid = None
        return "forward"

    def _commit_reply(self, conn: _Conn, message_type: int) -> _Verdict:
        """Forward or swallow a message of a COMMIT's reply; cut at its end if planned."""
        if message_type != ord("Z"):
            return "forward" if conn.commit_cut is None else "swallow"
        conn.awaiting_commit_reply = False
        with self._cond:
            self._counts["commit_replies_seen"] += 1
        cut, conn.commit_cut = conn.commit_cut, None
        return "forward" if cut is None else cut

    def _data_row(self, conn: _Conn) -> _Verdict:
        """Forward a DataRow, or cut if a MidResult wants no more rows of this result."""
        forwarded, conn.rows = conn.rows, conn.rows + 1
        if conn.chaos_mid is not None and conn.chaos_mid.after_rows == forwarded:
            mode, conn.chaos_mid = conn.chaos_mid.mode, None
            return _Cut(FaultKind.MID_RESULT, mode, armed=False)
        with self._cond:
            fault = self._take(lambda f: isinstance(f, MidResult) and f.after_rows == forwarded)
        if isinstance(fault, MidResult):
            return _Cut(fault.kind, fault.mode, armed=True)
        return "forward"

    @staticmethod
    def _take_message(conn: _Conn, buf: bytearray, *, up: bool) -> bytes | None:
        """Remove and return the next complete message of this direction, if any."""
        if up and conn.startup:
            if buf[:1] == bytes([_TLS_HANDSHAKE]):  # TLS without asking first (PG 17+)
                conn.opaque = True
                return None
            return _take_untyped(buf)
        if not up and conn.awaiting_answer:
            return _cut_front(buf, 1)
        return _take_typed(buf)

    def _shut(self, conn: _Conn, mode: CutMode) -> None:
        conn.closed = True
        writers = [conn.client] if mode is CutMode.HALF_OPEN else [conn.client, conn.server]
        if mode is CutMode.HALF_OPEN and conn.server is not None:
            conn.half_open = True
            with self._cond:
                self._counts["half_open_held"] += 1
        for writer in filter(None, writers):
            sock = writer.get_extra_info("socket")
            if mode is not CutMode.RST or sock is None:
                writer.close()  # flushes what was forwarded, then FIN
                continue
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            writer.transport.abort()

    def _close_held(self, conn: _Conn) -> None:
        """Close the server side held open after a HALF_OPEN cut."""
        if not conn.half_open:
            return
        conn.half_open = False
        with self._cond:
            self._counts["half_open_held"] -= 1
            self._cuts[FaultKind.MANUAL, CutMode.FIN] += 1
        if conn.server is not None:
            conn.server.close()

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
        """Copy one direction, message by message, applying each message's verdict."""
        buf = bytearray()
        with contextlib.suppress(ConnectionError, OSError, ValueError):
            while data := await reader.read(65536):
                if conn.closed:
                    return
                if conn.blackholed or self._blackhole_all:
                    conn.blackholed = True  # for good: its message framing is lost
                    continue
                buf += data
                out, answer, cut = self._process(conn, buf, up=up)
                writer.write(out)
                if answer:
                    conn.client.write(answer)
                if cut is not None:
                    self._cut(conn, cut)  # no await since write(): the cut lands right here
                    return
                await writer.drain()

    def _process(
        self, conn: _Conn, buf: bytearray, *, up: bool
    ) -> tuple[bytearray, bytearray, _Cut | None]:
        """Judge the complete messages in ``buf``: what to forward, answer, and any cut."""
        inspect = self._client_message if up else self._server_message
        out, answer, cut, count = bytearray(), bytearray(), None, 0
        while not conn.opaque:
            message = self._take_message(conn, buf, up=up)
            if message is None:
                break
            count += 1
            verdict = inspect(conn, message)
            if isinstance(verdict, _Cut):
                cut = verdict
                break
            if isinstance(verdict, bytes):
                answer += verdict
            elif verdict == "forward":
                out += message
        with self._cond:
            self._counts["client_messages" if up else "server_messages"] += count
        if conn.opaque and cut is None:
            out += buf  # encrypted bytes are no messages: forward them as they come
            buf.clear()
        return out, answer, cut

    @staticmethod
    async def _drain(reader: asyncio.StreamReader) -> None:
        """Read and drop everything until the peer closes (or the task is cancelled)."""
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65536):
                pass

    def _accept(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        # Our own task rather than asyncio's: cancelling that one at stop() logs errors.
        conn = _Conn(client)
        self._conns.add(conn)
        with self._cond:
            self._counts["connections_accepted"] += 1
            self._counts["connections_open"] += 1
            conn.blackholed = self._blackhole_all
        task = asyncio.ensure_future(self._handle(conn, reader))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        try:
            if conn.blackholed:  # blackhole_all(): accept, never connect, stay silent
                await self._drain(reader)
                return
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
            await self._hold(conn, reader, upstream)
        except OSError:
            with self._cond:
                self._counts["upstream_failures"] += 1
        finally:
            await self._release(conn)

    async def _hold(
        self, conn: _Conn, reader: asyncio.StreamReader, upstream: asyncio.StreamReader
    ) -> None:
        """Once forwarding is over, keep a half-open server side or a blackholed client waiting."""
        if conn.half_open:
            await self._drain(upstream)
        elif conn.blackholed and not conn.closed:
            if conn.server is not None:
                conn.server.close()
            await self._drain(reader)

    async def _release(self, conn: _Conn) -> None:
        """Close both sides of a finished connection and wait until they are closed."""
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        with self._cond:
            self._counts["connections_open"] -= 1
            if conn.half_open:
                self._counts["half_open_held"] -= 1
        conn.half_open = False
        self._shut(conn, CutMode.FIN)
        for writer in filter(None, (conn.client, conn.server)):
            try:
                await asyncio.wait_for(writer.wait_closed(), 2.0)
            except TimeoutError:
                writer.transport.abort()  # a peer that stopped reading blocks the flush
            except (ConnectionError, OSError):
                pass
