"""Run a throwaway 3-node MariaDB Galera cluster with HAProxy in front, for tests.

Everything lives in one temporary folder and listens on 127.0.0.1 only: three
``mariadbd`` processes (Debian's ``galera-4`` provider), each started from its own
``--defaults-file``, and one ``haproxy`` in single-writer mode whose external health
check asks each node whether it is really usable (see :data:`CHECK_SCRIPT`). Every
process is started with ``setsid`` and stopped by the pid this module started, never
by name. Tests drive faults through the nodes:

- :meth:`GaleraNode.kill` (``kill -9``) and :meth:`GaleraNode.restart`, which runs
  ``mariadbd --wsrep-recover`` first so the node catches up incrementally (IST)
  instead of copying everything again (SST);
- :meth:`GaleraNode.freeze` / :meth:`GaleraNode.thaw` (SIGSTOP / SIGCONT);
- :meth:`GaleraNode.isolate` / :meth:`GaleraNode.rejoin`: Galera's own
  ``gmcast.isolate=1`` provider option closes the node's replication links and
  refuses new ones, so it leaves the Primary component at once and answers 1047,
  while its client port keeps working (no firewall rules, nothing outside the node).

Needs root (the nodes run as the packaged ``mysql`` user, because rsync state
transfer fails for a server running as root), the standard library and PyMySQL.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pymysql  # type: ignore[import-untyped, unused-ignore]

from servers.mariadb import ServerNotAvailable, _find_binary, _free_port, _quote_ident, _run

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Self

__all__ = [
    "GaleraCluster",
    "GaleraNode",
    "HAProxy",
    "NodeState",
    "ensure_galera_installed",
]

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
PACKAGES = ("mariadb-server", "galera-4", "haproxy", "rsync")
CLUSTER_NAME = "uow_test"
SYNCED = 4
"""``wsrep_local_state`` of a node that is in sync and takes writes."""
_STOP_GRACE_SECONDS = 30.0
_RECOVERED = re.compile(r"WSREP: Recovered position: ([0-9a-f-]{36}:-?\d+)")
_LIVE: weakref.WeakSet[GaleraCluster] = weakref.WeakSet()

CHECK_INTERVAL_MS = 1000
CHECK_FALL = 2
CHECK_RISE = 8
"""Consecutive passing checks before HAProxy sends traffic to a node again.

A node thawed after SIGSTOP claims Synced for about 5 s while it still fails; eight
checks a second apart keep it out of rotation until it has really rejoined.
"""

CHECK_SCRIPT = """\
#!/bin/sh
# HAProxy external check: $3 and $4 are the server's address and port.
# A node is usable only when it is Synced (4), ready and in the Primary component;
# HAProxy's mysql-check only tests the handshake, which a non-Primary node passes.
out=$(/usr/bin/timeout 1.5 /usr/bin/mariadb --defaults-file={defaults} \\
  --protocol=TCP -h "$3" -P "$4" --connect-timeout=1 -N -B -e \\
  "SHOW GLOBAL STATUS WHERE Variable_name IN \\
   ('wsrep_local_state', 'wsrep_ready', 'wsrep_cluster_status')" 2>/dev/null) || exit 1
echo "$out" | grep -q '^wsrep_local_state[[:space:]]4$' || exit 1
echo "$out" | grep -q '^wsrep_ready[[:space:]]ON$' || exit 1
echo "$out" | grep -q '^wsrep_cluster_status[[:space:]]Primary$' || exit 1
exit 0
"""


def ensure_galera_installed() -> None:
    """Make sure ``mariadbd``, the Galera provider, ``haproxy`` and ``rsync`` are available.

    As root, installs what is missing of Debian's ``mariadb-server galera-4 haproxy
    rsync`` with apt-get; otherwise raises ServerNotAvailable saying what to install.
    """
    present = {
        "mariadb-server": bool(_find_binary("mariadbd") and _find_binary("mariadb-install-db")),
        "galera-4": Path(PROVIDER).is_file(),
        "haproxy": bool(_find_binary("haproxy")),
        "rsync": bool(_find_binary("rsync")),
    }
    missing = [name for name in PACKAGES if not present[name]]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ServerNotAvailable(
            f"missing {', '.join(missing)}: install them (Debian/Ubuntu: `apt-get install "
            f"{' '.join(PACKAGES)}`), or run as root to have them installed automatically"
        )
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
        code, output = _run(cmd)
        if code != 0:
            tail = "\n".join(output.splitlines()[-30:])
            raise ServerNotAvailable(f"`{' '.join(cmd)}` failed with exit code {code}:\n{tail}")
    if not Path(PROVIDER).is_file() or not _find_binary("haproxy"):
        raise ServerNotAvailable(f"{' '.join(missing)} installed, but still not found")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ServerNotAvailable(
            "the Galera cluster needs root: its nodes run as the `mysql` user "
            "(rsync state transfer fails for a server running as root)"
        )


def _signal(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals, grace: float) -> None:
    """Send ``sig`` to a child we started (thawing it first) and reap it; SIGKILL after grace."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class NodeState:
    """What a node says about itself (``SHOW GLOBAL STATUS``)."""

    local_state: int
    """``wsrep_local_state``: 4 is Synced, 2 Donor/Desynced, 1 Joining, 0 none."""
    ready: bool
    cluster_status: str
    """``Primary``, ``non-Primary`` or ``Disconnected``."""
    cluster_size: int

    @property
    def usable(self) -> bool:
        """Synced, ready and in the Primary component: what the HAProxy check requires."""
        return self.local_state == SYNCED and self.ready and self.cluster_status == "Primary"


class GaleraNode:
    """One ``mariadbd`` of the cluster: its own folder, config file, ports and process."""

    def __init__(self, cluster: GaleraCluster, index: int) -> None:
        """Lay out paths and pick ports; nothing runs until :meth:`start`."""
        self.cluster = cluster
        self.index = index
        self.name = f"n{index}"
        self.dir = cluster.base_dir / self.name
        self.data_dir = self.dir / "data"
        self.tmp_dir = self.dir / "tmp"
        self.socket_path = self.dir / "mysqld.sock"
        self.pid_file = self.dir / "mysqld.pid"
        self.error_log = self.dir / "error.log"
        self.config_file = self.dir / "my.cnf"
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.gcomm_port = _free_port()
        self.ist_port = _free_port()
        self.sst_port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed = False
        self._frozen = False
        self._isolated = False

    def __repr__(self) -> str:
        return f"GaleraNode({self.name}, port={self.port}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        """Pid of the running ``mariadbd``, or None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def frozen(self) -> bool:
        """Whether the node is stopped with SIGSTOP."""
        return self._frozen

    @property
    def isolated(self) -> bool:
        """Whether :meth:`isolate` cut the node off (until :meth:`rejoin` or a restart)."""
        return self._isolated

    def write_config(self) -> None:
        """Write this node's defaults file (never Debian's, which merges Galera settings)."""
        peers = ",".join(f"127.0.0.1:{node.gcomm_port}" for node in self.cluster.nodes)
        options = ";".join(
            [
                f"gmcast.listen_addr=tcp://127.0.0.1:{self.gcomm_port}",
                f"ist.recv_addr=127.0.0.1:{self.ist_port}",
                "gcache.size=64M",
                *self.cluster.provider_options,
            ]
        )
        config = f"""\
            [mariadbd]
            user = mysql
            datadir = {self.data_dir}
            tmpdir = {self.tmp_dir}
            socket = {self.socket_path}
            pid-file = {self.pid_file}
            log-error = {self.error_log}
            port = {self.port}
            bind-address = 127.0.0.1
            skip-name-resolve
            performance_schema = OFF
            innodb_buffer_pool_size = 64M
            innodb_log_file_size = 16M
            innodb_flush_log_at_trx_commit = 2
            binlog_format = ROW
            default_storage_engine = InnoDB
            innodb_autoinc_lock_mode = 2
            wsrep_on = ON
            wsrep_provider = {PROVIDER}
            wsrep_cluster_name = {CLUSTER_NAME}
            wsrep_cluster_address = gcomm://{peers}
            wsrep_node_name = {self.name}
            wsrep_node_address = 127.0.0.1:{self.gcomm_port}
            wsrep_provider_options = "{options}"
            wsrep_sst_method = rsync
            wsrep_sst_receive_address = 127.0.0.1:{self.sst_port}
            """
        self.config_file.write_text(textwrap.dedent(config), encoding="utf-8")

    def _prepare_dirs(self) -> None:
        for path in (self.dir, self.data_dir, self.tmp_dir):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "mysql", "mysql")

    def install_db(self, timeout: float = 60.0) -> None:
        """Create the system tables (the first node only; the others get a state transfer)."""
        install_db = _find_binary("mariadb-install-db")
        if install_db is None:
            raise ServerNotAvailable("mariadb-install-db not found")
        cmd = [
            install_db,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--tmpdir={self.tmp_dir}",
            "--user=mysql",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={pwd.getpwuid(os.geteuid()).pw_name}",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
        ]
        code, output = _run(cmd, timeout=timeout)
        if code != 0:
            raise ServerNotAvailable(f"mariadb-install-db failed ({code}):\n{output[-3000:]}")

    def _recover_position(self, timeout: float = 60.0) -> str | None:
        """Run ``mariadbd --wsrep-recover`` and return the recovered ``uuid:seqno``."""
        mariadbd = _find_binary("mariadbd")
        if mariadbd is None:
            raise ServerNotAvailable("mariadbd not found")
        log = self.dir / "recover.log"
        log.unlink(missing_ok=True)
        code, output = _run(
            [
                mariadbd,
                f"--defaults-file={self.config_file}",
                "--wsrep-recover",
                f"--log-error={log}",
            ],
            timeout=timeout,
        )
        text = output + (log.read_text(encoding="utf-8", errors="replace") if log.exists() else "")
        if code != 0:
            raise ServerNotAvailable(f"mariadbd --wsrep-recover failed ({code}):\n{text[-3000:]}")
        found = _RECOVERED.findall(text)
        return found[-1] if found else None

    def start(self, *, new_cluster: bool = False, timeout: float = 90.0) -> None:
        """Start the node and wait until it is Synced (a no-op if it runs).

        After a ``kill -9`` the recovered position is passed with
        ``--wsrep_start_position``, so the node catches up by IST, not a full copy.
        """
        if self.pid is not None:
            return
        _require_root()
        mariadbd = _find_binary("mariadbd")
        if mariadbd is None:
            raise ServerNotAvailable("mariadbd not found; call ensure_galera_installed()")
        self._prepare_dirs()
        self.write_config()
        args = [mariadbd, f"--defaults-file={self.config_file}"]
        if new_cluster:
            args.append("--wsrep-new-cluster")
        if self._killed:
            self.wait_evicted()
            position = self._recover_position()
            if position is not None:
                args.append(f"--wsrep_start_position={position}")
        self._killed = False
        self._frozen = False
        self._isolated = False
        with (self.dir / "stdout.log").open("ab") as out:
            # Own session (setsid): signals to the test's process group must not reach it.
            self._proc = subprocess.Popen(  # noqa: S603 - our own binary and paths
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_synced(timeout)
        except BaseException:
            self.kill()
            raise

    def wait_synced(self, timeout: float = 60.0) -> float:
        """Wait until the node is usable (Synced, ready, Primary); return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        last = ""
        with warnings.catch_warnings():
            # PyMySQL leaks the socket of each failed connect while the node boots.
            warnings.simplefilter("ignore", ResourceWarning)
            try:
                while True:
                    proc = self._proc
                    if proc is None or proc.poll() is not None:
                        code = None if proc is None else proc.returncode
                        raise self._failure(f"{self.name} exited ({code}) while starting")
                    try:
                        state = self.state()
                    except (pymysql.err.MySQLError, OSError) as error:
                        last = repr(error)
                    else:
                        if state.usable:
                            return time.monotonic() - started
                        last = repr(state)
                    if time.monotonic() > deadline:
                        raise self._failure(f"{self.name} not Synced after {timeout} s ({last})")
                    time.sleep(0.1)
            finally:
                gc.collect()

    def wait_evicted(self, timeout: float = 60.0) -> float:
        """Wait until the running peers have dropped this node from their view.

        A node restarted while the others still count its dead incarnation as a member
        waits out their view change (more than 20 s here) instead of joining in ~4 s.
        Return the seconds waited.
        """
        started = time.monotonic()
        peers = [n for n in self.cluster.nodes if n is not self and n.pid and not n.frozen]
        while True:
            sizes = []
            for peer in peers:
                with contextlib.suppress(pymysql.err.MySQLError, OSError):
                    sizes.append(peer.state().cluster_size)
            if all(size <= len(peers) for size in sizes):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise ServerNotAvailable(f"{self.name} still in its peers' view: {sizes}")
            time.sleep(0.1)

    def _failure(self, what: str) -> ServerNotAvailable:
        return ServerNotAvailable(f"{what}; error log {self.error_log}:\n{self.error_log_tail()}")

    def error_log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's error log."""
        try:
            data = self.error_log.read_bytes()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])

    def _connect(self, **kwargs: Any) -> Any:
        return pymysql.connect(
            unix_socket=str(self.socket_path),
            user=pwd.getpwuid(os.geteuid()).pw_name,
            autocommit=True,
            connect_timeout=5,
            read_timeout=30,
            **kwargs,
        )

    def admin(
        self, sql: str, params: Sequence[object] | None = None, *, causal: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run one statement as admin over this node's unix socket; return its rows.

        ``causal=True`` sets ``wsrep_sync_wait = 1`` first: the read waits until the node
        has applied every write the cluster committed before it.
        """
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                if causal:
                    cur.execute("SET SESSION wsrep_sync_wait = 1")
                cur.execute(sql, None if params is None else tuple(params))
                return [tuple(row) for row in cur.fetchall()]
        finally:
            conn.close()

    def state(self) -> NodeState:
        """Ask the node for its wsrep status (works outside the Primary component too)."""
        rows = self.admin(
            "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_ready',"
            " 'wsrep_cluster_status', 'wsrep_cluster_size')"
        )
        status = {str(name).lower(): str(value) for name, value in rows}
        return NodeState(
            local_state=int(status.get("wsrep_local_state", "0") or 0),
            ready=status.get("wsrep_ready") == "ON",
            cluster_status=status.get("wsrep_cluster_status", ""),
            cluster_size=int(status.get("wsrep_cluster_size", "0") or 0),
        )

    def url(self, database: str, *, driver: str = "mysql+pymysql") -> str:
        """SQLAlchemy URL of the app user straight to this node."""
        return self.cluster.url(database, host=self.host, port=self.port, driver=driver)

    def kill(self) -> None:
        """``kill -9`` the node and reap it; the next start recovers its position first."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            self._killed = True
        self._proc = None
        self._frozen = False
        self._isolated = False

    def stop(self) -> None:
        """Shut the node down gracefully (SIGTERM, SIGKILL after 30 s)."""
        _stop_process(self._proc, signal.SIGTERM, _STOP_GRACE_SECONDS)
        self._proc = None
        self._frozen = False

    def restart(self, timeout: float = 90.0) -> float:
        """Start a stopped or killed node again; it rejoins by IST. Return seconds to Synced."""
        started = time.monotonic()
        self.stop()
        self.start(timeout=timeout)
        return time.monotonic() - started

    def freeze(self) -> None:
        """SIGSTOP the node: it keeps its sockets but answers nothing."""
        _signal(self._proc, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen node; the cluster has evicted it meanwhile, it rejoins by itself."""
        _signal(self._proc, signal.SIGCONT)
        self._frozen = False

    def isolate(self, *, wait: float | None = 30.0) -> float:
        """Cut the node off the cluster (``gmcast.isolate=1``); it becomes non-Primary (1047).

        Galera closes the node's replication links at once, but both sides notice only
        after their failure detection (about 6 s by default). Waits up to ``wait`` s
        (None: no wait) until the node reports non-Primary; returns the seconds waited.
        """
        started = time.monotonic()
        self.admin("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'")
        self._isolated = True
        while wait is not None and self.state().cluster_status == "Primary":
            if time.monotonic() - started > wait:
                raise ServerNotAvailable(f"{self.name} still Primary {wait} s after isolation")
            time.sleep(0.05)
        return time.monotonic() - started

    def rejoin(self) -> None:
        """Undo :meth:`isolate`; wait for it with :meth:`wait_synced`."""
        self.admin("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'")
        self._isolated = False


class HAProxy:
    """An ``haproxy`` in front of the nodes: single writer (the others are backups)."""

    def __init__(self, cluster: GaleraCluster) -> None:
        """Lay out its files and pick its port; nothing runs until :meth:`start`."""
        self.cluster = cluster
        self.dir = cluster.base_dir / "haproxy"
        self.config_file = self.dir / "haproxy.cfg"
        self.stats_socket = self.dir / "stats.sock"
        self.check_script = self.dir / "check.sh"
        self.check_defaults = self.dir / "check.cnf"
        self.log = self.dir / "haproxy.log"
        self.host = "127.0.0.1"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the running ``haproxy``, or None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def write_config(self) -> None:
        """Write the configuration, the external check script and its client defaults."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.check_defaults.write_text(
            f"[client]\nuser = {self.cluster.monitor_user}\n"
            f"password = {self.cluster.monitor_password}\n",
            encoding="utf-8",
        )
        self.check_defaults.chmod(0o600)
        self.check_script.write_text(
            CHECK_SCRIPT.format(defaults=self.check_defaults), encoding="utf-8"
        )
        self.check_script.chmod(0o700)
        servers = "\n".join(
            f"    server {node.name} 127.0.0.1:{node.port} check"
            + ("" if node.index == 1 else " backup")
            for node in self.cluster.nodes
        )
        config = f"""\
global
    maxconn 1000
    external-check
    insecure-fork-wanted
    stats socket {self.stats_socket} mode 600 level admin

defaults
    mode tcp
    retries 3
    option redispatch
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout check 2s

listen galera
    bind 127.0.0.1:{self.port}
    option external-check
    external-check path "/usr/bin:/bin"
    external-check command {self.check_script}
    default-server inter {CHECK_INTERVAL_MS}ms fall {CHECK_FALL} rise {CHECK_RISE} \
on-marked-down shutdown-sessions
{servers}
"""
        self.config_file.write_text(config, encoding="utf-8")

    def start(self, timeout: float = 30.0) -> None:
        """Start haproxy and wait until it routes to a usable node."""
        if self.pid is not None:
            return
        haproxy = _find_binary("haproxy")
        if haproxy is None:
            raise ServerNotAvailable("haproxy not found; call ensure_galera_installed()")
        self.write_config()
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 - our own binary and paths
                [haproxy, "-db", "-f", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.stats_socket.exists() or self.routes_to() is None:
            if self._proc.poll() is not None:
                raise ServerNotAvailable(f"haproxy exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise ServerNotAvailable(f"haproxy routes nowhere after {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop haproxy (SIGTERM, SIGKILL after 10 s)."""
        _stop_process(self._proc, signal.SIGTERM, 10.0)
        self._proc = None

    def command(self, line: str) -> str:
        """Send one command to the stats socket and return the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """Each server's status as HAProxy sees it: ``UP``, ``DOWN``, ``UP 1/2``, ``DOWN 3/8``."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        states: dict[str, str] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "galera" and row.get("svname") not in {"FRONTEND", "BACKEND"}:
                states[row["svname"]] = row["status"]
        return states

    def routes_to(self) -> str | None:
        """The name of the node new connections go to, or None when every node is down.

        Single-writer mode: the first server is the writer while it is up (including
        "UP 1/2", going down); otherwise the first backup that is up, in order.
        """
        states = self.server_states()
        for node in self.cluster.nodes:
            if states.get(node.name, "").startswith("UP"):
                return node.name
        return None


class GaleraCluster:
    """Three Galera nodes on loopback and HAProxy in front; start, break and stop them.

    Tests connect as ``app`` over TCP, through HAProxy (:meth:`url`) or straight to a
    node (:meth:`GaleraNode.url`). Administration uses each node's unix socket as root.
    """

    user = "app"
    password = "app-secret-pw"  # noqa: S105 - throwaway cluster on 127.0.0.1
    monitor_user = "monitor"
    monitor_password = "monitor-pw"  # noqa: S105

    def __init__(self, size: int = 3, *, provider_options: Sequence[str] = ()) -> None:
        """Lay out a folder, ports and config for ``size`` nodes; nothing runs yet."""
        self.base_dir = Path(tempfile.mkdtemp(prefix="uow-galera-", dir="/tmp"))
        self.base_dir.chmod(0o755)  # the nodes run as mysql and must reach their folders
        self.provider_options = tuple(provider_options)
        self.nodes: tuple[GaleraNode, ...] = ()
        self.nodes = tuple(GaleraNode(self, index) for index in range(1, size + 1))
        self.haproxy = HAProxy(self)
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"GaleraCluster({self.base_dir}, nodes={self.nodes}, haproxy={self.haproxy.port})"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def node(self, name: str) -> GaleraNode:
        """The node called ``name`` (``n1``, ``n2``, ...)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def start(self) -> None:
        """Bootstrap the first node, join the others one after the other, start HAProxy."""
        _require_root()
        _LIVE.add(self)
        started = time.monotonic()
        first, *others = self.nodes
        first._prepare_dirs()
        first.install_db()
        first.start(new_cluster=True)
        self._provision(first)
        for node in others:
            node.start()
        self.timings["nodes"] = time.monotonic() - started
        self.haproxy.start()
        self.wait_haproxy_up()
        self.timings["start"] = time.monotonic() - started

    def _provision(self, node: GaleraNode) -> None:
        """Create the app and monitor users; Galera replicates them to joiners (SST)."""
        for host in ("127.0.0.1", "%"):
            node.admin(
                "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", [self.user, host, self.password]
            )
            node.admin(
                "CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s",
                [self.monitor_user, host, self.monitor_password],
            )

    def cleanup(self) -> None:
        """Stop HAProxy and every node (by their pids), then delete the folder."""
        self.haproxy.stop()
        for node in self.nodes:
            node.kill()  # nothing to keep: no need for a graceful, slower shutdown
        _LIVE.discard(self)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def url(
        self,
        database: str,
        *,
        host: str | None = None,
        port: int | None = None,
        driver: str = "mysql+pymysql",
    ) -> str:
        """SQLAlchemy URL of the app user through HAProxy (or to ``host:port``)."""
        return (
            f"{driver}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.haproxy.host}:{port or self.haproxy.port}/{quote(database, safe='')}"
        )

    def usable_node(self) -> GaleraNode:
        """A running, unfrozen node in the Primary component, for administration."""
        for node in self.nodes:
            if node.pid is not None and not node.frozen:
                with contextlib.suppress(pymysql.err.MySQLError, OSError):
                    if node.state().usable:
                        return node
        raise ServerNotAvailable("no usable node in the cluster")

    def admin(self, sql: str, params: Sequence[object] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as admin on a usable node (it replicates like any write)."""
        return self.usable_node().admin(sql, params)

    def create_database(self, name: str) -> str:
        """Create a database and grant the app user everything on it; return the name."""
        self.admin(f"CREATE DATABASE {_quote_ident(name)}")
        for host in ("127.0.0.1", "%"):
            self.admin(
                f"GRANT ALL PRIVILEGES ON {_quote_ident(name)}.* TO %s@%s", [self.user, host]
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database if it exists."""
        self.admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)}")

    def which_node_haproxy_routes_to(self) -> GaleraNode | None:
        """The node HAProxy sends new connections to, or None when it has none."""
        name = self.haproxy.routes_to()
        return None if name is None else self.node(name)

    def wait_haproxy_routes_to(
        self, nodes: Sequence[GaleraNode] | None = None, timeout: float = 60.0
    ) -> GaleraNode:
        """Wait until HAProxy routes to one of ``nodes`` (any node when None); return it."""
        deadline = time.monotonic() + timeout
        while True:
            routed = self.which_node_haproxy_routes_to()
            if routed is not None and (nodes is None or routed in nodes):
                return routed
            if time.monotonic() > deadline:
                states = self.haproxy.server_states()
                raise ServerNotAvailable(f"HAProxy routes to {routed} after {timeout} s: {states}")
            time.sleep(0.1)

    def wait_haproxy_up(self, timeout: float = 60.0) -> None:
        """Wait until HAProxy sees every server UP (after a node came back)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.haproxy.server_states()
            if all(states.get(node.name) == "UP" for node in self.nodes):
                return
            if time.monotonic() > deadline:
                raise ServerNotAvailable(f"HAProxy servers not all UP after {timeout} s: {states}")
            time.sleep(0.2)

    def wait_healthy(self, timeout: float = 90.0) -> None:
        """Wait until every node runs, is usable, and HAProxy sees them all UP."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.frozen:
                node.thaw()
            if node.isolated and node.pid is not None:
                node.rejoin()
            if node.pid is None:
                node.start(timeout=max(deadline - time.monotonic(), 1.0))
            node.wait_synced(max(deadline - time.monotonic(), 1.0))
        self.wait_haproxy_up(max(deadline - time.monotonic(), 1.0))

    @contextlib.contextmanager
    def frozen(self, node: GaleraNode) -> Iterator[GaleraNode]:
        """Keep ``node`` frozen for the block, thawed afterwards whatever happens."""
        node.freeze()
        try:
            yield node
        finally:
            node.thaw()


@atexit.register
def _kill_leftover_clusters() -> None:
    for cluster in list(_LIVE):
        cluster.cleanup()
