"""Galera tests: a real 3-node MariaDB Galera cluster behind HAProxy, with node faults."""
