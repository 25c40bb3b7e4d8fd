"""MySQL and MariaDB: what their errors mean, and what differs between their drivers.

Errors are classified by error number (``ERRNO_KINDS``), for PyMySQL, mysqlclient,
mysql-connector-python, MariaDB Connector/Python, asyncmy and aiomysql alike. The SQLAlchemy adapter
finds [`SUPPORT`][adapters.mysql.SUPPORT] by the engine's dialect; nothing here needs to be called
by hand, but ``classify`` serves a ``classifier=`` of your own.
"""

from adapters.mysql._drivers import DRIVERS, Driver, driver
from adapters.mysql._errors import ERRNO_KINDS, classify, driver_error, errno_of
from adapters.mysql._support import MESSAGES, SUPPORT, MySQLSupport
from adapters.mysql._tls import connect_sharing_tls_context, shared_tls_connection_class

__all__ = [
    "DRIVERS",
    "ERRNO_KINDS",
    "MESSAGES",
    "SUPPORT",
    "Driver",
    "MySQLSupport",
    "classify",
    "connect_sharing_tls_context",
    "driver",
    "driver_error",
    "errno_of",
    "shared_tls_connection_class",
]


def _public_module() -> None:
    """Show public names as this package's (tracebacks, reprs, logs), not a private module's."""
    for name in __all__:
        value = globals()[name]
        if getattr(value, "__module__", "").startswith("adapters.mysql._"):
            value.__module__ = __name__


_public_module()
