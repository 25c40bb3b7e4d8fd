"""The Flask-SQLAlchemy example, driven with Flask's test client on SQLite and on MariaDB.

The shop's writes are operations run by the runner that ``adapters.flask.Units`` built
on Flask-SQLAlchemy's engine; ``db.session`` used inside an operation is refused, where
before it silently lost the write at the end of the request.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adapters.flask import DirectSessionError, Units, units_for
from adapters.sqlalchemy import SqlAlchemyUnitOfWork, strict
from examples.flask_app.app import Order, Shop, Stock, create_app, db, units
from tests.integration.helpers import CONNECT_ARGS
from uow import UnitOfWorkError
from uow.testing import Fault, inject, set_testing

if TYPE_CHECKING:
    from pathlib import Path

    from flask.testing import FlaskClient


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/shop.db"})
    app.config["TESTING"] = True  # errors reach the test instead of a 500 page
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def stored(app: Flask) -> tuple[int, dict[str, int]]:
    """Orders stored and stock levels, read through db.session outside any operation."""
    with app.app_context(), strict(enabled=False):
        orders = db.session.scalar(select(func.count()).select_from(Order))
        rows = db.session.execute(select(Stock.sku, Stock.quantity)).all()
        return int(orders or 0), dict(rows)


def test_orders_take_stock(app: Flask, client: FlaskClient) -> None:
    """Each request is one operation: stock added, an order placed and read back."""
    assert client.post("/stock/apple", json={"quantity": 3}).json == {"sku": "apple", "quantity": 3}
    placed = client.post("/orders", json={"sku": "apple", "quantity": 2})
    assert placed.status_code == 201
    order = placed.json
    assert order is not None
    assert order == {"id": order["id"], "sku": "apple", "quantity": 2}
    assert client.get(f"/orders/{order['id']}").json == order
    assert client.get("/stock/apple").json == {"sku": "apple", "quantity": 1}
    assert stored(app) == (1, {"apple": 1})


def test_an_order_beyond_the_stock_is_refused_and_changes_nothing(
    app: Flask, client: FlaskClient
) -> None:
    """Not enough stock: 409, the operation rolled back, nothing written."""
    client.post("/stock/pear", json={"quantity": 1})
    refused = client.post("/orders", json={"sku": "pear", "quantity": 2})
    assert refused.status_code == 409
    assert refused.json == {"error": "out_of_stock", "detail": "pear: 1 in stock, 2 ordered"}
    assert client.post("/orders", json={"sku": "plum", "quantity": 1}).status_code == 409
    assert client.post("/orders", json={"sku": "pear", "quantity": 0}).status_code == 400
    assert client.get("/orders/1").status_code == 404
    assert client.get("/stock/plum").status_code == 404
    assert stored(app) == (0, {"pear": 1})


def test_an_order_is_rerun_whole_after_a_lost_connection(app: Flask, client: FlaskClient) -> None:
    """The connection dies under the order's second statement: placed once, stock taken once."""
    client.post("/stock/fig", json={"quantity": 5})
    with set_testing(True), inject(Fault.disconnect(at=2)) as injection:
        placed = client.post("/orders", json={"sku": "fig", "quantity": 2})
    assert placed.status_code == 201
    assert injection.attempts("place_order") == 2
    assert stored(app) == (1, {"fig": 3})


def test_the_runner_lives_on_app_extensions(app: Flask) -> None:
    """init_app keeps one runner per application, on the application's engine."""
    with app.app_context():
        runner = units.runner
        assert app.extensions["retrying_uow"][units] is runner
        assert runner.backend.database is db.engine
        assert units.run(type) is Shop
    other = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    with other.app_context():
        assert units.runner is not runner


def test_db_session_inside_an_operation_is_refused(app: Flask) -> None:
    """db.session (add, query, Model.query) inside an operation raises; nothing is written."""

    def add_through_db_session(uow: Shop) -> None:
        uow.stock.add(Stock(sku="kiwi", quantity=1))
        db.session.add(Order(sku="kiwi", quantity=1))

    def read_through_db_session(_uow: Shop) -> Any:
        return db.session.get(Order, 1)

    def model_query(_uow: Shop) -> Any:
        return Order.query.filter_by(sku="kiwi").all()

    with app.app_context():
        for operation in (add_through_db_session, read_through_db_session, model_query):
            with pytest.raises(DirectSessionError, match=r"db\.session\.") as caught:
                units.run(operation)
            assert isinstance(caught.value, UnitOfWorkError)
            assert f"{operation.__name__}'" in str(caught.value)
        # Outside operations db.session stays as Flask-SQLAlchemy made it (a direct use).
        with strict(enabled=False):
            assert db.session.scalars(select(Order)).all() == []
    assert stored(app) == (0, {})


def test_without_the_adapter_db_session_silently_lost_the_write(tmp_path: Path) -> None:
    """What happened before: the write is read back in the request, then rolled back."""

    class Base(DeclarativeBase):
        pass

    plain_db = SQLAlchemy(model_class=Base)

    class Note(plain_db.Model):  # type: ignore[name-defined, misc]
        id: Mapped[int] = mapped_column(primary_key=True)
        text: Mapped[str] = mapped_column(String(20))

    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/notes.db"
    plain_db.init_app(app)
    with strict(enabled=False), app.app_context():  # strict mode would refuse db.session
        plain_db.create_all()
        # Built straight from the engine: db.session is not watched.
        runner = SqlAlchemyUnitOfWork.factory(plain_db.engine)

        def write_both(uow: SqlAlchemyUnitOfWork) -> None:
            uow.session.add(Note(text="uow.session"))
            plain_db.session.add(Note(text="db.session"))

        runner.run(write_both)  # no error
        seen = plain_db.session.scalars(select(Note.text).order_by(Note.text)).all()
        assert seen == ["db.session", "uow.session"]  # its own uncommitted transaction
    with strict(enabled=False), app.app_context():  # the first context's teardown rolled back
        assert plain_db.session.scalars(select(Note.text)).all() == ["uow.session"]


def test_the_session_factory_is_refused_with_the_way_to_do_it(app: Flask) -> None:
    """db.session.session_factory is bound to no Engine: the error names units_for."""
    with app.app_context(), pytest.raises(TypeError, match=r"units_for\(db\)"):
        SqlAlchemyUnitOfWork.factory(db.session.session_factory)


def test_units_for_builds_a_runner_in_the_application_context(app: Flask) -> None:
    """units_for(db, Shop) in the app context: the engine of the app, the unit class given."""
    with app.app_context():
        runner = units_for(db, Shop)
        assert runner.backend.database is db.engine
        assert runner.run(lambda uow: uow.stock.all()) == []
    with pytest.raises(RuntimeError, match="application context"):
        units_for(db, Shop)


def test_init_app_before_db_init_app_is_refused() -> None:
    """The runner needs Flask-SQLAlchemy's engine: the order of the calls is named."""
    with pytest.raises(RuntimeError, match=r"db\.init_app\(app\) before units\.init_app"):
        Units(db, Shop, app=Flask(__name__))


@pytest.mark.integration
def test_concurrent_orders_on_mariadb_never_oversell(database_url: str) -> None:
    """On MariaDB, 8 clients race for 5 items: 5 orders placed, 3 refused, stock 0."""
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": CONNECT_ARGS, "pool_size": 8},
        }
    )
    client = app.test_client()
    assert client.post("/stock/lamp", json={"quantity": 5}).status_code == 200
    statuses: list[int] = []
    start = threading.Barrier(8)

    def order() -> None:
        start.wait()
        response = app.test_client().post("/orders", json={"sku": "lamp", "quantity": 1})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=order) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [201] * 5 + [409] * 3
    assert client.get("/stock/lamp").json == {"sku": "lamp", "quantity": 0}
    assert stored(app) == (5, {"lamp": 0})
    with app.app_context():
        db.engine.dispose()
