"""Throwaway database servers and fault-injecting proxies, for the tests and the benchmarks.

Nothing here is part of the library: ``servers`` runs real MariaDB servers, a Galera
cluster and protocol proxies as plain child processes in private temporary folders,
so that the test suite and the benchmarks can kill, freeze and restart them.
"""
