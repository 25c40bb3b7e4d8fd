"""Adapters of retrying-uow: SQLAlchemy, MySQL/MariaDB error classification, in-memory fakes.

Import the one you need: ``adapters.sqlalchemy``, ``adapters.mysql``, ``adapters.memory``.
"""
