"""Run a throwaway PostgreSQL server (and streaming standbys) as plain child processes.

The retrying unit of work exists to survive real failures (server crashes, restarts,
lost connections, failovers), which only a real server reproduces faithfully. This
module runs ``postgres`` with its datadir, socket directory and log in one private
temporary folder and on its own TCP port, so tests can kill, freeze, restart and
promote it without touching any system-wide cluster or service.

PostgreSQL refuses to run as root, so as root every server program runs as the OS
user ``postgres``, which owns the private folder. The app role logs in with a
password (scram-sha-256) over TCP, so a proxy can sit in between; administration
uses the unix socket with trust auth, so it keeps working whatever a test does to
the TCP path. Passwords are random per server, reach the server only as SCRAM
verifiers, and appear in no repr, exception or log line of this module. A standby's
``postgresql.auto.conf`` holds the replication password in clear text (written by
``pg_basebackup -R``); it stays inside the private folder, readable by its owner only.

Every child of the postmaster calls ``setsid()``, so a server is not one process
group: freeze, kill and cleanup find its processes by their working directory,
which every server process sets to the datadir.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import quote

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Self

    from psycopg.abc import Params

    # What Cursor.execute() takes (psycopg's own alias varies between versions).
    Query: TypeAlias = "str | bytes | sql.SQL | sql.Composed"

__all__ = ["PostgresServer", "ServerNotAvailable", "ensure_postgres_installed"]

_PROGRAMS = ("initdb", "postgres", "pg_ctl", "pg_basebackup")
_OS_USER = "postgres"
_STOP_GRACE_SECONDS = 30.0
_ORPHAN_GRACE_SECONDS = 10.0
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_DRIVERS = {
    "psycopg": "postgresql+psycopg",
    "psycopg_async": "postgresql+psycopg_async",
    "asyncpg": "postgresql+asyncpg",
}
# Small, so that several servers fit on a small test machine; a low max_connections
# also makes "too many connections" easy to provoke. wal_level, max_wal_senders and
# hot_standby allow a streaming standby. fsync=off: a killed server process loses
# nothing (the kernel keeps what was written), only a machine crash would.
_SETTINGS = {
    "max_connections": "20",
    "superuser_reserved_connections": "3",
    "shared_buffers": "32MB",
    "log_connections": "on",
    "log_disconnections": "on",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "wal_level": "replica",
    "max_wal_senders": "4",
    "hot_standby": "on",
    "fsync": "off",
}
# Trust only on the unix socket (the admin path); TCP always needs a password.
_PG_HBA = """\
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
"""
# sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
# The servers run in their own sessions, so nothing else would stop them if the
# test run ends without cleanup(); atexit kills whatever is still running.
_LIVE_SERVERS: weakref.WeakSet[PostgresServer] = weakref.WeakSet()


class ServerNotAvailable(RuntimeError):
    """The PostgreSQL server could not be installed, started or reached."""


def _find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding every program, else the one on PATH."""
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        with contextlib.suppress(ValueError):
            versions.append((float(candidate.parent.name), candidate))
    dirs = [path for _, path in sorted(versions, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path is not None:  # e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb
        dirs.append(Path(on_path).resolve().parent)
    for bin_dir in dirs:
        if all(os.access(bin_dir / name, os.X_OK) for name in _PROGRAMS):
            return bin_dir
    return None


def _run(cmd: list[str], *, timeout: float | None = None, **kwargs: Any) -> tuple[int, str]:
    """Run a fixed command without a terminal; return its exit code and combined output."""
    result = subprocess.run(  # noqa: S603 - our own command lines
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    return result.returncode, result.stdout + result.stderr


def ensure_postgres_installed() -> Path:
    """Make sure the PostgreSQL server programs exist; return their directory.

    As root, installs Debian's ``postgresql`` package with apt-get (which also sets
    up a system cluster of its own, never used here); otherwise raises
    ServerNotAvailable saying what to install.
    """
    bin_dir = _find_bin_dir()
    if bin_dir is not None:
        return bin_dir
    if os.geteuid() != 0:
        raise ServerNotAvailable(
            f"{', '.join(_PROGRAMS)} not found under /usr/lib/postgresql/*/bin or on PATH: "
            "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`), "
            "or run as root to have it installed automatically"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "postgresql"]):
        code, output = _run(cmd, env=env)
        if code != 0:
            tail = "\n".join(output.splitlines()[-30:])
            raise ServerNotAvailable(f"`{' '.join(cmd)}` failed with exit code {code}:\n{tail}")
    bin_dir = _find_bin_dir()
    if bin_dir is None:
        raise ServerNotAvailable("postgresql was installed but initdb is still not found")
    return bin_dir


def _free_port() -> int:
    """Ask the kernel for a currently unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_state(pid: int) -> str | None:
    """The state letter of ``pid`` from /proc (``T`` when stopped), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    state = stat.rpartition(")")[2].split()[0]  # the command name may hold spaces
    return None if state in ("Z", "X") else state


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check()`` every 10 ms until it is true; False if ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _conf_line(name: str, value: str) -> str:
    """One postgresql.conf line; any value may be quoted, whatever the setting's type."""
    quoted = value.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{quoted}'\n"


class PostgresServer:
    """One private ``postgres`` server (primary or streaming standby) with its own datadir.

    Tests connect as ``app`` (random password, scram-sha-256, over TCP on 127.0.0.1).
    ``admin()`` runs as the superuser ``postgres``, and ``query()``/``execute()`` as
    ``app``, over the unix socket with trust auth.
    """

    host = "127.0.0.1"
    user = "app"
    database = "app"
    admin_user = "postgres"
    replication_user = "replicator"

    def __init__(
        self,
        *,
        base_dir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        primary: PostgresServer | None = None,
    ) -> None:
        """Prepare paths and pick a port; nothing runs until start().

        ``settings`` are postgresql.conf lines added when the datadir is created. With
        ``primary`` this server is a standby of it, cloned by pg_basebackup at first start.
        """
        self._owns_base_dir = base_dir is None
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="uow-pg-", dir="/tmp"))
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "sock"
        self.error_log = base_dir / "server.log"
        socket_path = self.socket_dir / ".s.PGSQL.65535"
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"path too long for a unix socket: {socket_path}")
        self.settings = dict(settings or {})
        self.primary = primary
        self.standbys: list[PostgresServer] = []
        # Chosen once so URLs handed out before a restart stay valid after it.
        self.port = _free_port()
        if primary is None:
            self.password = secrets.token_urlsafe(18)
            self._replication_password = secrets.token_urlsafe(18)
        else:  # the roles are replicated with everything else
            self.password = primary.password
            self._replication_password = primary._replication_password
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen: list[int] = []
        self._provisioned = primary is not None

    def __repr__(self) -> str:
        role = "standby" if self.primary is not None else "primary"
        return (
            f"PostgresServer(base_dir={str(self.base_dir)!r}, host={self.host!r}, "
            f"port={self.port}, user={self.user!r}, role={role!r}, pid={self.pid})"
        )

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()  # __exit__ is not called when __enter__ fails
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def frozen(self) -> bool:
        """Whether the server's processes are stopped with SIGSTOP."""
        return bool(self._frozen)

    # Running programs as the server's OS user.

    def _as_owner(self) -> dict[str, Any]:
        """Popen arguments that run a program as the OS user owning the server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")  # English server messages
        kwargs: dict[str, Any] = {"cwd": self.base_dir, "env": env}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(_OS_USER)
            except KeyError:
                msg = f"OS user {_OS_USER!r} missing; call ensure_postgres_installed()"
                raise ServerNotAvailable(msg) from None
            env["HOME"] = account.pw_dir
            kwargs.update(
                user=account.pw_uid,
                group=account.pw_gid,
                extra_groups=os.getgrouplist(_OS_USER, account.pw_gid),
            )
        return kwargs

    def _program(self, name: str) -> str:
        bin_dir = _find_bin_dir()
        if bin_dir is None:
            raise ServerNotAvailable(f"{name} not found; call ensure_postgres_installed()")
        return str(bin_dir / name)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        owner = self._as_owner()
        if "user" in owner:
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, owner["user"], owner["group"])
            self.base_dir.chmod(0o700)

    def _tool(self, cmd: list[str], what: str, timeout: float, **env: str) -> None:
        """Run a server program as the owner; on failure log its output and raise."""
        kwargs = self._as_owner()
        kwargs["env"].update(env)
        try:
            code, output = _run(cmd, timeout=max(timeout, 1.0), **kwargs)
        except subprocess.TimeoutExpired as exc:
            raise ServerNotAvailable(f"{what} timed out after {timeout:.0f} s") from exc
        if code != 0:
            with self.error_log.open("a", encoding="utf-8") as log:
                log.write(output)
            raise self._failure(f"{what} failed with exit code {code}")

    def _initialise(self, timeout: float) -> None:
        """Create the datadir: initdb for a primary, pg_basebackup of the primary for a standby."""
        if self.primary is None:
            cmd = [self._program("initdb"), "-D", str(self.data_dir), "-U", self.admin_user]
            cmd += ["-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
            self._tool([*cmd, "--no-instructions"], "initdb", timeout)
            (self.data_dir / "pg_hba.conf").write_text(_PG_HBA, encoding="utf-8")
            lines = [_conf_line(k, v) for k, v in {**_SETTINGS, **self.settings}.items()]
        else:
            primary = self.primary
            conninfo = psycopg.conninfo.make_conninfo(
                host=primary.host,
                port=primary.port,
                user=self.replication_user,
                application_name=f"standby_{self.port}",
            )
            cmd = [self._program("pg_basebackup"), "-d", conninfo, "-D", str(self.data_dir)]
            cmd += ["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]
            self._tool(cmd, "pg_basebackup", timeout, PGPASSWORD=self._replication_password)
            lines = [_conf_line(k, v) for k, v in self.settings.items()]
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# throwaway test server\n")
            conf.writelines(lines)

    # Life cycle.

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it accepts connections.

        The first start creates the datadir (initdb, or pg_basebackup for a standby)
        and, on a primary, the ``app`` role and database. A no-op if already running.
        """
        if self.pid is not None:
            return
        deadline = time.monotonic() + timeout
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initialise(deadline - time.monotonic())
        # Per-instance settings go on the command line: a standby's postgresql.conf
        # is a copy of its primary's.
        cmd = [self._program("postgres"), "-D", str(self.data_dir)]
        for name, value in (
            ("port", str(self.port)),
            ("listen_addresses", self.host),
            ("unix_socket_directories", str(self.socket_dir)),
            ("cluster_name", f"uow_{self.port}"),
        ):
            cmd += ["-c", f"{name}={value}"]
        with self.error_log.open("ab") as log:
            log.write(f"--- postgres start at {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            # Own session: signals sent to the test process group (Ctrl-C,
            # timeouts) must not take the server down behind the tests' back.
            self._proc = subprocess.Popen(  # noqa: S603 - our own binaries and paths
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._as_owner(),
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
        """Create the app and replication roles (SCRAM verifiers only) and the app database."""
        with self._connect(self.admin_user, "postgres") as conn:
            for role, password, options in (
                (self.user, self.password, "LOGIN"),
                (self.replication_user, self._replication_password, "LOGIN REPLICATION"),
            ):
                # Hashed here, so the clear-text password never reaches the server or its log.
                verifier = conn.pgconn.encrypt_password(
                    password.encode(), role.encode(), b"scram-sha-256"
                )
                conn.execute(
                    sql.SQL("CREATE ROLE {} " + options + " PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(verifier.decode())
                    )
                )
        self.create_database(self.database)
        self._provisioned = True

    def wait_ready(self, timeout: float) -> None:
        """Block until the server accepts connections (as a primary or a hot standby).

        Raises ServerNotAvailable if the postmaster exits or the timeout passes.
        """
        proc = self._proc
        if proc is None:
            raise ServerNotAvailable("PostgreSQL server is not started")
        pid_file = self.data_dir / "postmaster.pid"

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:  # line 8 is the postmaster's status, the one pg_ctl -w waits for
                lines = pid_file.read_text(encoding="utf-8").splitlines()
            except OSError:
                return False
            # Line 1 tells ours from the stale file a killed postmaster leaves behind.
            return (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() in ("ready", "standby")
            )

        if not _wait_for(ready, timeout):
            raise self._failure(f"postgres (pid {proc.pid}) not ready after {timeout:.1f} s")
        code = proc.poll()
        if code is not None:
            raise self._failure(f"postgres exited with code {code} during start")
        self.admin("SELECT 1")

    def _failure(self, what: str) -> ServerNotAvailable:
        return ServerNotAvailable(f"{what}; server log {self.error_log}:\n{self.error_log_tail()}")

    def _server_pids(self) -> list[int]:
        """Pids of every process of this server, the postmaster's children and orphans too."""
        data_dir = str(self.data_dir.resolve())
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if str((entry / "cwd").readlink()) == data_dir:
                        pids.append(int(entry.name))
        return pids

    def _finish(self, proc: subprocess.Popen[bytes], others: list[int]) -> None:
        """Reap the postmaster, then wait until ``others`` are gone, killing stragglers."""
        proc.wait()

        # Orphaned backends exit once they notice the postmaster is gone; until then
        # they hold its shared memory and a new postmaster would refuse to start.
        def gone() -> bool:
            return all(_process_state(pid) is None for pid in others)

        if not _wait_for(gone, _ORPHAN_GRACE_SECONDS):
            _signal(others, signal.SIGKILL)
            _wait_for(gone, 5.0)
        self._proc = None
        self._frozen = []
        _LIVE_SERVERS.discard(self)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Shut down as ``pg_ctl stop -m mode`` does (fast: roll back sessions, checkpoint).

        Kills the server if it has not stopped after 30 s. Idempotent.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.thaw()
            others = [p for p in self._server_pids() if p != proc.pid]
            proc.send_signal(_STOP_SIGNALS[mode])
            try:
                proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        else:
            others = []
        self._finish(proc, others)

    def kill(self) -> None:
        """Crash the server: SIGKILL the postmaster, then wait until its processes are gone."""
        proc = self._proc
        if proc is None:
            return
        others: list[int] = []
        if proc.poll() is None:
            # Stopped first, so that it forks no backend between the listing and the kill.
            proc.send_signal(signal.SIGSTOP)
            others = [p for p in self._server_pids() if p != proc.pid]
            proc.kill()
            _signal(others, signal.SIGCONT)  # frozen backends could never exit
        self._finish(proc, others)

    def restart(
        self, timeout: float = 60.0, mode: Literal["smart", "fast", "immediate"] = "fast"
    ) -> None:
        """Start again on the same datadir and port, stopping (``mode``) first if running."""
        self.stop(mode)
        self.start(timeout)

    def freeze(self) -> None:
        """SIGSTOP every process of the server: sockets stay open, nothing answers.

        The kernel still accepts connections and acknowledges packets.
        """
        pid = self.pid
        if pid is None:
            raise RuntimeError("server is not running")
        if self._frozen:
            return
        os.kill(pid, signal.SIGSTOP)  # the postmaster first: no new children after this
        if not _wait_for(lambda: _process_state(pid) == "T", 10.0):
            raise RuntimeError(f"postmaster {pid} did not stop")
        self._frozen = [pid]
        children = [p for p in self._server_pids() if p != pid]
        _signal(children, signal.SIGSTOP)
        self._frozen += children
        _wait_for(lambda: all(_process_state(p) in ("T", None) for p in children), 10.0)

    def thaw(self) -> None:
        """SIGCONT what ``freeze()`` stopped. A no-op if the server is not frozen."""
        frozen, self._frozen = self._frozen, []
        _signal(reversed(frozen), signal.SIGCONT)

    def cleanup(self) -> None:
        """Clean up the standbys, stop the server and delete the folder if this object made it."""
        for standby in self.standbys:
            standby.cleanup()
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # Standbys.

    def make_standby(
        self, *, settings: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> PostgresServer:
        """Clone this running server with pg_basebackup and start it as a streaming hot standby.

        The standby has its own folder and port; ``cleanup()`` of this server cleans it up.
        """
        standby = PostgresServer(settings=settings, primary=self)
        self.standbys.append(standby)
        standby.start(timeout)
        return standby

    def promote(self, timeout: float = 60.0) -> float:
        """Promote this standby to a primary (``pg_ctl promote -w``); return the seconds taken."""
        if self.primary is None:
            raise RuntimeError("not a standby")
        started = time.monotonic()
        cmd = [self._program("pg_ctl"), "promote", "-w", "-t", str(max(int(timeout), 1))]
        self._tool([*cmd, "-D", str(self.data_dir)], "pg_ctl promote", timeout + 5)
        self.primary = None
        return time.monotonic() - started

    def in_recovery(self) -> bool:
        """Whether the server is a standby replaying WAL (``pg_is_in_recovery()``)."""
        return bool(self.admin("SELECT pg_is_in_recovery()")[0][0])

    def replication_status(self) -> str | None:
        """The standby's WAL receiver status (``streaming`` when healthy), None if it has none."""
        rows = self.admin("SELECT status FROM pg_stat_wal_receiver")
        return str(rows[0][0]) if rows else None

    def wait_streaming(self, timeout: float = 60.0) -> float:
        """Wait until this standby streams from its primary; return the seconds waited."""
        started = time.monotonic()
        if not _wait_for(lambda: self.replication_status() == "streaming", timeout):
            raise self._failure(f"standby not streaming after {timeout:.1f} s")
        return time.monotonic() - started

    def wait_caught_up(self, timeout: float = 60.0) -> float:
        """Wait until this standby has replayed all WAL its primary has written so far."""
        if self.primary is None:
            raise RuntimeError("not a standby")
        started = time.monotonic()
        target = self.primary.admin("SELECT pg_current_wal_lsn()")[0][0]
        query = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)"
        if not _wait_for(lambda: bool(self.admin(query, [target])[0][0]), timeout):
            raise self._failure(f"standby has not replayed up to {target} after {timeout:.1f} s")
        return time.monotonic() - started

    # Connections and SQL.

    def url(
        self,
        database: str | None = None,
        *,
        driver: str = "psycopg",
        host: str | None = None,
        port: int | None = None,
    ) -> str:
        """SQLAlchemy URL for the app role over TCP; host/port override it (e.g. for a proxy).

        ``driver`` is ``psycopg``, ``psycopg_async`` or ``asyncpg``.
        """
        if driver not in _DRIVERS:
            raise ValueError(f"driver must be one of {sorted(_DRIVERS)}, not {driver!r}")
        return (
            f"{_DRIVERS[driver]}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.host}:{port or self.port}/{quote(database or self.database, safe='')}"
        )

    def conninfo(
        self,
        database: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        **options: str | int,
    ) -> str:
        """A libpq connection string for the app role over TCP, e.g. for ``psycopg.connect``.

        ``options`` are added to it, or replace its defaults (``user``, ``password``, ...).
        """
        params: dict[str, str | int] = {
            "host": host or self.host,
            "port": port or self.port,
            "user": self.user,
            "password": self.password,
            "dbname": database or self.database,
        }
        return psycopg.conninfo.make_conninfo("", **{**params, **options})

    def _connect(self, user: str, database: str) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=user,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
            application_name="uow_admin",
        )

    def _run_sql(
        self, user: str, database: str, query: Query, params: Params | None
    ) -> tuple[list[tuple[Any, ...]], int]:
        with self._connect(user, database) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            rows = cur.fetchall() if cur.description is not None else []
            return rows, cur.rowcount

    def admin(
        self, query: Query, params: Params | None = None, *, database: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser over the unix socket, autocommit; return its rows."""
        return self._run_sql(self.admin_user, database, query, params)[0]

    def query(
        self, query: Query, params: Params | None = None, *, database: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement as the app role over the unix socket, autocommit; return its rows.

        Tables made this way belong to the app role, as if the application made them.
        """
        return self._run_sql(self.user, database or self.database, query, params)[0]

    def execute(
        self, query: Query, params: Params | None = None, *, database: str | None = None
    ) -> int:
        """Like ``query()``, for statements without rows; return the affected row count."""
        return self._run_sql(self.user, database or self.database, query, params)[1]

    def create_database(self, name: str) -> str:
        """Create database ``name`` owned by the app role, and return the name."""
        self.admin(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(self.user)
            )
        )
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, terminating the sessions still using it."""
        self.admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def terminate_backends(
        self,
        *,
        user: str | None = None,
        database: str | None = None,
        pids: Iterable[int] | None = None,
        timeout: float = 5.0,
    ) -> list[int]:
        """``pg_terminate_backend`` the matching client sessions; return the pids it ended.

        None matches any user, database or pid; the call waits up to ``timeout`` for each
        backend to exit. Replication connections and this call's own session are spared.
        """
        conditions: list[sql.Composable] = [
            sql.SQL("backend_type = 'client backend' AND pid <> pg_backend_pid()")
        ]
        params: list[object] = [int(timeout * 1000)]
        for column, value in (("usename", user), ("datname", database)):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if pids is not None:
            conditions.append(sql.SQL("pid = ANY(%s)"))
            params.append(list(pids))
        # In the select list, not the WHERE clause: the planner may evaluate WHERE
        # conditions in any order, and would terminate sessions that do not match.
        rows = self.admin(
            sql.SQL(
                "SELECT pid, pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE {}"
            ).format(sql.SQL(" AND ").join(conditions)),
            params,
        )
        return sorted(int(pid) for pid, ended in rows if ended)

    def error_log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server's log ('' if there is none yet)."""
        try:
            data = self.error_log.read_bytes()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


@atexit.register
def _kill_leftover_servers() -> None:
    # Standbys first: a primary's fast shutdown can wait on its WAL senders.
    for server in sorted(_LIVE_SERVERS, key=lambda s: s.primary is None):
        server.kill()
        if server._owns_base_dir:  # a standby's folder holds a password in clear text
            shutil.rmtree(server.base_dir, ignore_errors=True)
