"""Database fixtures: SQLite in a temporary directory, and PostgreSQL in a fresh schema per test."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy

from foodcal.store import Database

IN_CI = os.environ.get("CI") == "true"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _engine() -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))


def _postgres_or_skip() -> None:
    try:
        engine = _engine()
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # CI must exercise PostgreSQL: a skip there is a failure
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI ({POSTGRES_URL}): {error}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}")


def postgres_schema_url() -> tuple[str, str]:
    """A fresh schema in the test database, so tests never see each other's rows."""
    _postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    _execute(f"CREATE SCHEMA {schema}")
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", schema


def drop_postgres_schema(schema: str) -> None:
    _execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _execute(statement: str) -> None:
    engine = _engine()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(statement))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/foodcal.db"
        return
    url, schema = postgres_schema_url()
    yield url
    drop_postgres_schema(schema)


@pytest.fixture
def db(database_url) -> Database:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/foodcal.db")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def postgres_url():
    url, schema = postgres_schema_url()
    yield url
    drop_postgres_schema(schema)
