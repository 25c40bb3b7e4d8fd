"""The latency relay against a plain echo server: delay added, bytes unchanged and in order."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from servers.relay import Relay, RelayProcess, WaitMode

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class EchoServer:
    """Sends back whatever it receives, one thread per connection."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._echo, args=(connection,), daemon=True).start()

    @staticmethod
    def _echo(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := connection.recv(65536):
                connection.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock: socket.socket, message: bytes) -> tuple[bytes, float]:
    start = time.perf_counter()
    sock.sendall(message)
    received = b""
    while len(received) < len(message):
        received += sock.recv(65536)
    return received, time.perf_counter() - start


@pytest.mark.parametrize("wait", list(WaitMode), ids=lambda mode: mode.value)
def test_bytes_arrive_unchanged_and_in_order(echo: EchoServer, wait: WaitMode) -> None:
    """Seeded random bytes in random-sized writes come back through the relay as sent."""
    rng = random.Random(7)
    payload = rng.randbytes(300_000)
    with Relay("127.0.0.1", echo.port, delay=0.002, wait=wait) as relay:
        sock = connect(relay.port)
        received = bytearray()

        def read() -> None:
            while len(received) < len(payload):
                data = sock.recv(65536)
                if not data:
                    return
                received.extend(data)

        reader = threading.Thread(target=read)
        reader.start()
        position = 0
        while position < len(payload):
            size = rng.randint(1, 20_000)
            sock.sendall(payload[position : position + size])
            position += size
        reader.join(10)
        sock.close()
        assert bytes(received) == payload
        # Each chunk is counted just after it is sent: wait for the last one's count.
        assert wait_for(lambda: relay.stats().bytes_down == len(payload))
        stats = relay.stats()
    assert stats.accepted == stats.connected == 1
    assert stats.bytes_up == len(payload)


def test_round_trip_is_delayed(echo: EchoServer) -> None:
    """No round trip through the relay is shorter than the delay it adds."""
    delay = 0.05
    with Relay("127.0.0.1", echo.port, delay=delay) as relay:
        sock = connect(relay.port)
        for n in range(5):
            message = f"ping {n}".encode()
            received, seconds = round_trip(sock, message)
            assert received == message
            assert seconds >= delay * 0.95  # a lower bound: the relay never sends early
        relay.set_delay(0.0)
        assert round_trip(sock, b"undelayed")[0] == b"undelayed"
        sock.close()


def test_refuses_while_the_upstream_refuses(echo: EchoServer) -> None:
    """With mirror_refusal, the relay stops listening when its upstream does, and comes back."""
    with Relay("127.0.0.1", echo.port, mirror_refusal=True, probe_interval=0.01) as relay:
        sock = connect(relay.port)
        assert round_trip(sock, b"hello")[0] == b"hello"
        echo.close()  # stops listening and closes the connection first: the relay probes
        assert sock.recv(10) == b""
        sock.close()
        assert wait_for(lambda: refused(relay.port))
        back = EchoServer(echo.port)
        try:
            assert wait_for(lambda: not refused(relay.port))
            again = connect(relay.port)
            assert round_trip(again, b"again")[0] == b"again"
            again.close()
        finally:
            back.close()
        kinds = [kind for _, kind in relay.events()]
        assert "down" in kinds
        assert "up" in kinds


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_relay_process_reports_counts_and_cpu(echo: EchoServer) -> None:
    """The relay in a child process forwards, and reports its counters, events and CPU time."""
    with RelayProcess("127.0.0.1", echo.port, delay=0.001, wait=WaitMode.SLEEP) as relay:
        sock = connect(relay.port)
        assert round_trip(sock, b"x" * 1000)[0] == b"x" * 1000
        sock.close()
        relay.set_delay(0.0)
        assert wait_for(lambda: relay.stats().bytes_down == 1000)
        stats = relay.stats()
        events = relay.events()
    assert stats.connected == 1
    assert stats.bytes_up == 1000
    assert stats.cpu_seconds > 0
    assert [kind for _, kind in events] == ["accepted", "connected"]
