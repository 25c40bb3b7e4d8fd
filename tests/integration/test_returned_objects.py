"""What an operation returns stays readable after its session is gone: server-filled columns too."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy import DateTime, Integer, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from adapters.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork, repository
from tests.integration.helpers import CONNECT_ARGS, FAST_POLICY

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.engine import Engine

    from tests.integration.helpers import Database

pytestmark = pytest.mark.integration


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, server_default=func.now())
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, onupdate=func.now())


class Documents(SqlAlchemyRepository[Document]):
    model = Document


class Library(SqlAlchemyUnitOfWork):
    documents = repository(Documents)


@pytest.fixture
def library(db: Database, make_engine: Callable[..., Engine]) -> Any:
    schema = sa.create_engine(db.url, poolclass=NullPool, connect_args=CONNECT_ARGS)
    try:
        Base.metadata.create_all(schema)
    finally:
        schema.dispose()
    return Library.factory(make_engine(db.url), policy=FAST_POLICY)


def test_server_defaults_of_a_returned_insert_are_readable(library: Any) -> None:
    """server_default columns, filled by the INSERT, are loaded before the session closes."""
    document = library.run(lambda uow: uow.documents.add(Document(title="draft")))
    assert document.revision == 1
    assert isinstance(document.created_at, dt.datetime)


def test_onupdate_columns_of_a_returned_update_are_readable(library: Any) -> None:
    """onupdate=func.now() expires the column at the flush; it is reloaded before COMMIT."""
    created = library.run(lambda uow: uow.documents.add(Document(title="draft")))

    def rename(uow: Any, ident: int) -> Document:
        document: Document = uow.documents.get(ident)
        document.title = "final"
        return document

    renamed = library.run(rename, created.id)
    assert renamed.title == "final"
    assert isinstance(renamed.updated_at, dt.datetime)
    assert renamed.created_at == created.created_at


def test_objects_kept_from_the_block_form_are_readable(library: Any) -> None:
    """The block form keeps no result of its own: every flushed object is loaded the same way."""
    for attempt in library.attempts("draft"):
        with attempt as uow:
            kept = uow.documents.add(Document(title="kept"))
    assert kept.revision == 1
    assert kept.updated_at is None
