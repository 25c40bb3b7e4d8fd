"""PyMySQL's TLS settings, and a throwaway server that offers TLS."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql

from benchmarks.server import throwaway_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from servers.mariadb import MariaDBServer


def shared_context() -> ssl.SSLContext:
    """A context built once and passed as ``ssl=``: PyMySQL then requires TLS."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class ReusedContextConnection(pymysql.connections.Connection):
    """PREFERRED mode as PyMySQL does it, with the default context built once per process.

    PyMySQL builds ``ssl.create_default_context()`` (loading the system's CA store)
    on every connect when no TLS option is given, even if the server offers no TLS.
    The context it builds for ``{}`` is always the same, so one can be shared.
    """

    _preferred: ssl.SSLContext | None = None

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if isinstance(sslp, dict) and not sslp:
            cls = type(self)
            if cls._preferred is None:
                cls._preferred = super()._create_ssl_ctx(sslp)
            return cls._preferred
        return super()._create_ssl_ctx(sslp)


@contextlib.contextmanager
def tls_server() -> Iterator[MariaDBServer | None]:
    """A throwaway server with a self-signed certificate (None without the openssl tool)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="uow-tls-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        subprocess.run(  # noqa: S603 -- a fixed command line
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        with throwaway_server([f"--ssl-cert={cert}", f"--ssl-key={key}"]) as server:
            yield server
