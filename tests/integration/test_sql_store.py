"""The SQL store's errors against a real network: a PostgreSQL URL whose port nothing listens on
is a StoreUnavailable that names the database without its password, never a SQLAlchemy error."""

from __future__ import annotations

import socket

import pytest

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.errors import StoreUnavailable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connecting is refused at once


def test_an_unreachable_postgresql_is_unavailable() -> None:
    port = closed_port()
    store = SqlStore(f"postgresql+psycopg://oa:pg-secret@127.0.0.1:{port}/oa")
    try:
        with pytest.raises(StoreUnavailable, match="Connection refused") as caught:
            store.list()
        message = str(caught.value)
        assert f"postgresql+psycopg://oa:***@127.0.0.1:{port}/oa" in message
        assert "pg-secret" not in message and caught.value.store == "database"
        with pytest.raises(StoreUnavailable):
            store.advance("p", 60)
    finally:
        store.close()
