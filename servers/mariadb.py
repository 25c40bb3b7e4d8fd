"""Run a throwaway MariaDB server as a plain child process for tests.

The retrying unit of work exists to survive real failures (server crashes,
restarts, lost connections), which only a real server reproduces faithfully.
This module runs ``mariadbd`` with its datadir, unix socket, pid file and
error log in one private temporary folder and on its own TCP port, so tests
can kill, restart and inspect it without touching any system-wide MariaDB.
It needs only the standard library and PyMySQL.
"""

from __future__ import annotations

import atexit
import gc
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

# PyMySQL ships no type information; "unused-ignore" keeps mypy quiet if stubs get installed.
import pymysql  # type: ignore[import-untyped, unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Self

__all__ = ["MariaDBServer", "ServerNotAvailable", "ensure_mariadb_installed"]

_SEARCH_DIRS = ("/usr/sbin", "/usr/bin")
_STOP_GRACE_SECONDS = 30.0
_INSTALL_TRIES = 3
_INNODB_ARGS = ("--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M")
# sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
# The servers run in their own session, so nothing else would stop them if the
# test run ends without cleanup(); atexit kills whatever is still running.
_LIVE_SERVERS: weakref.WeakSet[MariaDBServer] = weakref.WeakSet()


class ServerNotAvailable(RuntimeError):
    """The MariaDB server could not be installed, started or reached."""


def _find_binary(name: str) -> str | None:
    """Return the path of ``name`` from PATH or /usr/sbin, /usr/bin, if any."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *_SEARCH_DIRS]))


def _run(cmd: Sequence[str], timeout: float | None = None) -> tuple[int, str]:
    """Run a fixed command without a terminal; return its exit code and combined output."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(  # noqa: S603 - our own command lines
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def ensure_mariadb_installed() -> None:
    """Make sure ``mariadbd`` and ``mariadb-install-db`` are available.

    As root, installs Debian's ``mariadb-server`` package with apt-get;
    otherwise raises ServerNotAvailable saying what to install.
    """
    if _find_binary("mariadbd") and _find_binary("mariadb-install-db"):
        return
    if os.geteuid() != 0:
        raise ServerNotAvailable(
            "mariadbd / mariadb-install-db not found in PATH, /usr/sbin or /usr/bin: install the "
            "MariaDB server (Debian/Ubuntu: `apt-get install mariadb-server`), or run as root to "
            "have it installed automatically"
        )
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "mariadb-server"]):
        code, output = _run(cmd)
        if code != 0:
            tail = "\n".join(output.splitlines()[-30:])
            raise ServerNotAvailable(f"`{' '.join(cmd)}` failed with exit code {code}:\n{tail}")
    if not (_find_binary("mariadbd") and _find_binary("mariadb-install-db")):
        raise ServerNotAvailable("mariadb-server was installed but mariadbd is still not found")


def _free_port() -> int:
    """Ask the kernel for a currently unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _quote_ident(name: str) -> str:
    """Quote ``name`` as a MariaDB identifier."""
    return "`" + name.replace("`", "``") + "`"


class MariaDBServer:
    """One private ``mariadbd`` process with its own datadir, socket and port.

    Tests connect as ``app`` (password auth, over TCP, so a proxy can sit in
    between). Administration uses the unix socket as the OS user (root when
    run as root) via unix_socket auth, so it keeps working whatever the tests
    do to the app user or the TCP path.
    """

    host = "127.0.0.1"
    user = "app"
    password = "app-secret-pw"  # noqa: S105 - throwaway server on 127.0.0.1
    database = "app"

    def __init__(self, *, base_dir: Path | None = None, server_args: Sequence[str] = ()) -> None:
        """Prepare paths and pick a port; nothing runs until start()."""
        self._owns_base_dir = base_dir is None
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="uow-mdb-", dir="/tmp"))
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        # A tmpdir of its own: mariadbd deletes every #sql* file of its tmpdir at start,
        # which in a shared /tmp includes other servers' temporary tables.
        self.tmp_dir = base_dir / "tmp"
        self.socket_path = base_dir / "mysqld.sock"
        self.pid_file = base_dir / "mysqld.pid"
        self.error_log = base_dir / "error.log"
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"path too long for a unix socket: {self.socket_path}")
        self.server_args = tuple(server_args)
        # Chosen once so URLs handed out before a restart stay valid after it.
        self.port = _free_port()
        self._admin_user = pwd.getpwuid(os.geteuid()).pw_name
        self._proc: subprocess.Popen[bytes] | None = None
        self._provisioned = False

    def __repr__(self) -> str:
        return (
            f"MariaDBServer(base_dir={str(self.base_dir)!r}, host={self.host!r}, "
            f"port={self.port}, user={self.user!r}, pid={self.pid})"
        )

    @property
    def pid(self) -> int | None:
        """Pid of the running server process, or None when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()  # __exit__ is not called when __enter__ fails
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told so explicitly.
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install_db(self, timeout: float) -> None:
        """Create the system tables in a fresh datadir."""
        install_db = _find_binary("mariadb-install-db")
        if install_db is None:
            raise ServerNotAvailable(
                "mariadb-install-db not found; call ensure_mariadb_installed()"
            )
        # --no-defaults must come first, or Debian's my.cnf is read anyway. The
        # InnoDB sizes are passed through so the first start need not resize the redo log.
        cmd = [
            install_db,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--tmpdir={self.tmp_dir}",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={self._admin_user}",
            *_INNODB_ARGS,
            *self._user_args(),
        ]
        # mariadb-install-db was seen to crash (signal 11) now and then on a loaded
        # machine; a second run on a wiped datadir has always gone through.
        for tries_left in reversed(range(_INSTALL_TRIES)):
            try:
                code, output = _run(cmd, timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired as exc:
                msg = f"mariadb-install-db timed out after {timeout:.0f} s"
                raise ServerNotAvailable(msg) from exc
            if code == 0 or tries_left == 0:
                break
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir.mkdir(parents=True)
        if code != 0:
            # Its chatty output only matters when it failed.
            with self.error_log.open("a", encoding="utf-8") as log:
                log.write(output)
            raise self._failure(f"mariadb-install-db failed with exit code {code}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections.

        The first start initialises the datadir (if needed) and creates the
        ``app`` user and database. A no-op if the server is already running.
        """
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout
        mariadbd = _find_binary("mariadbd")
        if mariadbd is None:
            raise ServerNotAvailable("mariadbd not found; call ensure_mariadb_installed()")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        if not (self.data_dir / "mysql").is_dir():
            self._install_db(deadline - time.monotonic())
        # --no-defaults must come first, or Debian's my.cnf is read anyway.
        cmd = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--tmpdir={self.tmp_dir}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_file}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            *_INNODB_ARGS,
            "--skip-log-bin",
            "--skip-name-resolve",
            *self._user_args(),
            *self.server_args,
        ]
        with self.error_log.open("ab") as log:
            log.write(f"--- mariadbd start at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            # Own session: signals sent to the test process group (Ctrl-C,
            # timeouts) must not take the server down behind the tests' back.
            self._proc = subprocess.Popen(  # noqa: S603 - our own binaries and paths
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE_SERVERS.add(self)
        try:
            self.wait_ready(max(deadline - time.monotonic(), 1.0))
            if not self._provisioned:
                self._provision()
        except BaseException:
            self.kill()
            raise

    def _provision(self) -> None:
        """Create the app user (for 127.0.0.1 and %) and its database."""
        for host in ("127.0.0.1", "%"):
            self.admin(
                "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", [self.user, host, self.password]
            )
        self.admin(f"CREATE DATABASE IF NOT EXISTS {_quote_ident(self.database)}")
        self._grant(self.database)
        self._provisioned = True

    def _grant(self, database: str) -> None:
        # With --skip-name-resolve a 'localhost' account never matches TCP
        # clients, hence both the literal address and the wildcard.
        for host in ("127.0.0.1", "%"):
            self.admin(
                f"GRANT ALL PRIVILEGES ON {_quote_ident(database)}.* TO %s@%s", [self.user, host]
            )

    def wait_ready(self, timeout: float) -> None:
        """Block until the server accepts connections.

        Raises ServerNotAvailable if the process exits or the timeout passes.
        """
        # PyMySQL leaks the socket of every failed connect while the server boots.
        # Their ResourceWarnings are silenced here and the sockets collected before
        # leaving, so none surfaces in some later test (warnings are errors there).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                self._poll_ready(timeout)
            finally:
                gc.collect()

    def _poll_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""  # a string: a kept exception would keep its leaked socket alive
        while True:
            proc = self._proc
            if proc is None:
                raise ServerNotAvailable("MariaDB server is not started")
            code = proc.poll()
            if code is not None:
                raise self._failure(f"mariadbd exited with code {code} during start")
            try:
                # mariadbd opens its TCP listener before the unix socket, so this
                # covers both; a bare TCP probe would log an "Aborted connection".
                self._admin_connect(connect_timeout=2).close()
            except (pymysql.err.MySQLError, OSError) as exc:
                last_error = repr(exc)
            else:
                return
            if time.monotonic() >= deadline:
                what = f"mariadbd (pid {proc.pid}) not ready after {timeout:.1f} s ({last_error})"
                raise self._failure(what)
            time.sleep(0.05)

    def _failure(self, what: str) -> ServerNotAvailable:
        return ServerNotAvailable(f"{what}; error log {self.error_log}:\n{self.error_log_tail()}")

    def _signal_and_wait(self, sig: signal.Signals, grace: float | None) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # A reaped process has closed all its sockets, so the port is free again.
        self._proc = None
        _LIVE_SERVERS.discard(self)

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM, SIGKILL after 30 s). Idempotent."""
        self._signal_and_wait(signal.SIGTERM, _STOP_GRACE_SECONDS)

    def kill(self) -> None:
        """Crash the server with SIGKILL and wait until the process is gone."""
        self._signal_and_wait(signal.SIGKILL, None)

    def restart(self, timeout: float = 60.0) -> None:
        """Start again on the same datadir and port, stopping first if still running."""
        self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stop the server and delete the temporary folder if this object created it."""
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def url(
        self,
        database: str | None = None,
        *,
        driver: str = "mysql+pymysql",
        host: str | None = None,
        port: int | None = None,
    ) -> str:
        """SQLAlchemy URL for the app user over TCP; host/port override it (e.g. for a proxy)."""
        return (
            f"{driver}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.host}:{port or self.port}/{quote(database or self.database, safe='')}"
        )

    def _admin_connect(self, **kwargs: Any) -> Any:
        return pymysql.connect(unix_socket=str(self.socket_path), user=self._admin_user, **kwargs)

    def admin(self, sql: str, params: Sequence[object] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as admin over the unix socket with autocommit; return its rows."""
        conn = self._admin_connect(autocommit=True, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, None if params is None else tuple(params))
                return [tuple(row) for row in cur.fetchall()]
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create database ``name``, grant the app user everything on it, and return the name."""
        self.admin(f"CREATE DATABASE {_quote_ident(name)}")
        self._grant(name)
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists."""
        self.admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)}")

    def error_log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's error log ('' if there is none yet)."""
        try:
            data = self.error_log.read_bytes()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


@atexit.register
def _kill_leftover_servers() -> None:
    for server in list(_LIVE_SERVERS):
        server.kill()
