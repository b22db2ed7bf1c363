"""Checks that the test infrastructure itself works (and that PostgreSQL tests really run)."""

import os

import psycopg
import pytest


@pytest.mark.postgres
def test_pg_db_is_postgres_15(pg_db: str) -> None:
    assert pg_db.startswith("postgresql://")
    assert pg_db.rsplit("/", 1)[1].startswith("t_")
    with psycopg.connect(pg_db) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
    assert "PostgreSQL 15" in version
    assert dbname == pg_db.rsplit("/", 1)[1]


def test_sqlite_db_is_a_path_string(sqlite_db: str) -> None:
    assert isinstance(sqlite_db, str)
    assert sqlite_db.endswith("ledger.db")
    assert os.path.isdir(os.path.dirname(sqlite_db))
    assert not os.path.exists(sqlite_db)


def test_db_url_covers_both_backends(db_url: str, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["db_url"]
    if backend == "postgres":
        assert db_url.startswith("postgresql://")
    else:
        assert db_url.endswith("ledger.db")
