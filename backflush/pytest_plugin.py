"""The backflush pytest plugin (registered by the ``pytest11`` entry point on install).

Fixtures:

``backflush_ledger``
    A fresh, empty ``backflush.Ledger`` for one test: a SQLite file in ``tmp_path``, or, when
    ``--backflush-pg URL`` (or env ``BACKFLUSH_TEST_PG``) names a PostgreSQL server, a
    database created on it for the test and dropped afterwards (needs ``backflush[postgres]``).
``backflush_replay``
    ``backflush.replay``: the pure in-memory replay (events in, the ledger's answers out).

It lives outside ``backflush.testing`` on purpose: it needs neither Hypothesis nor anything
else beyond the base install, so installing backflush never breaks a pytest run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_ENV = "BACKFLUSH_TEST_PG"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--backflush-pg URL``: run ``backflush_ledger`` on PostgreSQL instead of SQLite."""
    group = parser.getgroup("backflush")
    group.addoption(
        "--backflush-pg",
        default=None,
        metavar="URL",
        help=f"PostgreSQL server for the backflush_ledger fixture (else env {PG_ENV}; "
        "without either, a SQLite file)",
    )


def _pg_server(config: pytest.Config) -> str | None:
    return config.getoption("--backflush-pg", default=None) or os.environ.get(PG_ENV) or None


@pytest.fixture
def backflush_ledger(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    """A fresh ``backflush.Ledger``: SQLite in ``tmp_path``, or a throwaway PostgreSQL database."""
    import backflush

    server = _pg_server(request.config)
    if server is None:
        ledger = backflush.Ledger(str(tmp_path / "ledger.db"))
        try:
            yield ledger
        finally:
            ledger.close()
        return
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        pytest.fail("backflush_ledger on PostgreSQL needs psycopg: "
                    "pip install 'backflush[postgres]'", pytrace=False)
    name = f"bf_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    ledger = backflush.Ledger(urlunsplit(urlsplit(server)._replace(path="/" + name)))
    try:
        yield ledger
    finally:
        ledger.close()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backflush_replay() -> Callable[..., Any]:
    """``backflush.replay(events, policy=None, *, at=None)``: the in-memory replay."""
    from backflush.memory import replay

    return replay
