"""Benchmarks of retrying-uow against hand-written SQLAlchemy code and raw PyMySQL.

Run ``python -m benchmarks --help``; BENCHMARKS.md has the commands and the figures.
"""
