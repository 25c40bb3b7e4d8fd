"""PyMySQL's default TLS context, built once per process instead of on every connect."""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl


def connect_sharing_tls_context(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    """Connect with PyMySQL, building its default TLS context once per process.

    With no TLS option, PyMySQL 1.2 builds a TLS context from the system's CA store
    on every connect (tens of milliseconds), to use TLS if the server offers it. The
    context for that mode never differs, so it is built once and shared; the mode
    itself (TLS when offered, plain otherwise) is unchanged. Used as a ``do_connect``
    listener; returns ``None`` (SQLAlchemy connects as usual) for other drivers.
    """
    if dialect.driver != "pymysql":
        return None
    return shared_tls_connection_class()(*cargs, **cparams)


@functools.cache
def shared_tls_connection_class() -> type:
    """PyMySQL's ``Connection`` whose default TLS context is shared by all connections."""
    import pymysql  # type: ignore[import-untyped, unused-ignore]  # noqa: PLC0415 -- optional

    lock = threading.Lock()
    shared: list[ssl.SSLContext] = []

    class SharedTlsContextConnection(pymysql.connections.Connection):  # type: ignore[misc, unused-ignore]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if not (isinstance(sslp, dict) and not sslp):
                return super()._create_ssl_ctx(sslp)
            with lock:
                if not shared:
                    shared.append(super()._create_ssl_ctx(sslp))
            return shared[0]

    return SharedTlsContextConnection
