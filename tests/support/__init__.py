"""Helpers that run real services (such as a throwaway MariaDB) for the test suite."""
