"""A Flask-SQLAlchemy shop: orders take stock, each request's write is one unit of work.

The models are ordinary Flask-SQLAlchemy models (``db.Model``); the application's
engine is Flask-SQLAlchemy's. What changes is who holds the session: each write is an
operation run by the runner (``units.run(place_order, ...)``), on a fresh session of its
own, committed when the operation returns and rerun whole after a lost connection, a
deadlock or a failover. ``db.session`` is never used inside an operation (it raises
``DirectSessionError``: its writes would be rolled back at the end of the request).

``POST /stock/<sku>`` with ``{"quantity": n}`` adds stock; ``POST /orders`` with
``{"sku": ..., "quantity": n}`` places an order, taking the stock under a row lock
(409 when there is not enough); ``GET /orders/<id>`` and ``GET /stock/<sku>`` read.

    flask --app examples.flask_app.app run
    DATABASE_URL=mysql+pymysql://app:pw@127.0.0.1:3306/app flask --app examples.flask_app.app run

``DATABASE_URL`` defaults to an SQLite file in the temporary folder.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.exceptions import BadRequest

from adapters.flask import Units
from adapters.sqlalchemy import SqlAlchemyRepository, SqlAlchemyUnitOfWork, repository
from uow import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from flask.typing import ResponseReturnValue


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Stock(db.Model):  # type: ignore[name-defined, misc]  # db.Model is made at run time
    __tablename__ = "flask_app_stock"
    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    quantity: Mapped[int]


class Order(db.Model):  # type: ignore[name-defined, misc]  # db.Model is made at run time
    __tablename__ = "flask_app_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(ForeignKey(Stock.sku))
    quantity: Mapped[int]


class StockRepository(SqlAlchemyRepository[Stock]):
    model = Stock

    def for_update(self, sku: str) -> Stock | None:
        """The stock row, locked until the operation commits: two orders never both take it."""
        query = select(Stock).where(Stock.sku == sku).with_for_update()
        return self.session.scalars(query).first()


class OrderRepository(SqlAlchemyRepository[Order]):
    model = Order


class Shop(SqlAlchemyUnitOfWork):
    stock = repository(StockRepository)
    orders = repository(OrderRepository)


class OutOfStock(Exception):
    """Not enough stock for an order: permanent, never retried."""


# --- The operations: plain functions of a unit of work ----------------------------------


def restock(uow: Shop, sku: str, quantity: int) -> int:
    stock = uow.stock.for_update(sku)
    if stock is None:
        stock = uow.stock.add(Stock(sku=sku, quantity=0))
    stock.quantity += quantity
    return stock.quantity


def place_order(uow: Shop, sku: str, quantity: int) -> Order:
    stock = uow.stock.for_update(sku)
    available = 0 if stock is None else stock.quantity
    if stock is None or available < quantity:
        raise OutOfStock(f"{sku}: {available} in stock, {quantity} ordered")
    stock.quantity -= quantity
    order = uow.orders.add(Order(sku=sku, quantity=quantity))
    uow.flush()  # its id, for the response
    return order


def find_order(uow: Shop, order_id: int) -> Order | None:
    return uow.orders.get(order_id)


def stock_level(uow: Shop, sku: str) -> int | None:
    stock = uow.stock.get(sku)
    return None if stock is None else stock.quantity


# --- The web layer: one operation per request ---------------------------------------------

units = Units(db, Shop, policy=RetryPolicy(timeout=10))


def quantity_of(body: Mapping[str, Any]) -> int:
    quantity = body.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        raise BadRequest("quantity must be a whole number above 0")
    return quantity


def add_routes(app: Flask) -> None:
    @app.post("/stock/<sku>")
    def add_stock(sku: str) -> ResponseReturnValue:
        quantity = quantity_of(request.get_json(force=True))
        return {"sku": sku, "quantity": units.run(restock, sku, quantity)}

    @app.get("/stock/<sku>")
    def get_stock(sku: str) -> ResponseReturnValue:
        quantity = units.run(stock_level, sku)
        if quantity is None:
            return {"error": f"no stock {sku}"}, 404
        return {"sku": sku, "quantity": quantity}

    @app.post("/orders")
    def create_order() -> ResponseReturnValue:
        body = request.get_json(force=True)
        order = units.run(place_order, str(body.get("sku")), quantity_of(body))
        return {"id": order.id, "sku": order.sku, "quantity": order.quantity}, 201

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int) -> ResponseReturnValue:
        order = units.run(find_order, order_id)
        if order is None:
            return {"error": f"no order {order_id}"}, 404
        return {"id": order.id, "sku": order.sku, "quantity": order.quantity}

    @app.errorhandler(OutOfStock)
    def out_of_stock(error: OutOfStock) -> ResponseReturnValue:
        return jsonify(error="out_of_stock", detail=str(error)), 409


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: Flask-SQLAlchemy's engine, then the runner on it."""
    app = Flask(__name__)
    default_url = f"sqlite:///{tempfile.gettempdir()}/retrying_uow_flask_app.db"
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("DATABASE_URL") or default_url
    app.config.update(config or {})
    db.init_app(app)
    with app.app_context():
        db.create_all()  # a real application runs its migrations instead
    units.init_app(app)
    add_routes(app)
    return app
