"""PyMySQL's TLS settings, and a throwaway server that offers TLS.

PyMySQL's default mode (TLS if the server offers it) with its context built once per
process is the library's own connection: ``storm_runner.connect_preferred_tls``.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

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
