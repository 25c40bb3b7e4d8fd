"""Integration tests: the retrying unit of work against a real MariaDB server."""
