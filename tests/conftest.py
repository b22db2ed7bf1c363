"""Shared pytest fixtures: ledger databases on SQLite and PostgreSQL, Hypothesis profiles.

Fixtures
--------
``sqlite_db``  (function)  path string of a fresh SQLite ledger file in ``tmp_path``.
``pg_url``     (session)   URL of the PostgreSQL test server (env ``BACKFLUSH_TEST_PG``),
                           e.g. ``postgresql://postgres@127.0.0.1:PORT/backflush``.
``pg_db``      (function)  URL of a fresh, empty database on that server, dropped afterwards.
``db_url``     (function)  parametrized ``sqlite`` / ``postgres``: the ``sqlite_db`` path or
                           the ``pg_db`` URL, so one test checks both backends. Pass it as
                           ``--db`` / to the store factory.

``make test`` (``scripts/test.sh``) starts a throwaway PostgreSQL 15 cluster and sets
``BACKFLUSH_TEST_PG``. Without it, PostgreSQL tests skip -- unless ``CI=true``, where they fail,
so CI can never go green without actually running them. Tests that need PostgreSQL carry the
``postgres`` marker (``pytest -m "not postgres"`` deselects them).

Hypothesis: profile ``ci`` (CI=true) or ``dev`` is loaded; override with
``HYPOTHESIS_PROFILE=<name>``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import settings

IN_CI = os.environ.get("CI") == "true"
PG_ENV = "BACKFLUSH_TEST_PG"

def compiled_in_tree() -> dict[str, tuple[str, str]]:
    """{module name: (its compiled file, its .py)} for each module compiled beside its
    source in this checkout (``setup.py``; an editable install puts them there)."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = {}
    for folder, package in (("projections", "backflush.projections"),
                            ("ledger", "backflush.ledger")):
        for suffix in EXTENSION_SUFFIXES:
            for so in (repo / folder).glob(f"*{suffix}"):
                py = so.with_name(so.name[: -len(suffix)] + ".py")
                if py.exists():
                    out[f"{package}.{py.stem}"] = (str(so), str(py))
    return out


def _stale_compiled() -> list[str]:
    """The ``.py`` of each compiled module (``compiled_in_tree``) older than its source.

    Python imports a module's compiled file before its source, so after an edit the tests
    would run the old code without a word: refuse instead.
    """
    return sorted(py for so, py in compiled_in_tree().values()
                  if os.stat(py).st_mtime > os.stat(so).st_mtime)


def pytest_configure(config: pytest.Config) -> None:
    stale = _stale_compiled()
    if stale:
        pytest.exit(
            f"{', '.join(stale)} changed after it was compiled: run `make venv` to compile it "
            "again (or delete the .so beside it to test it as Python)",
            returncode=4,
        )


settings.register_profile("ci", deadline=None, max_examples=50, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if IN_CI else "dev"))


def _with_database(url: str, dbname: str) -> str:
    """Return ``url`` with its database (path) replaced by ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the PostgreSQL test server, from env ``BACKFLUSH_TEST_PG``.

    Points at the ``backflush`` maintenance database; do not store test data there, use
    ``pg_db`` for a private database. Skips the test when the variable is unset (fails
    instead when ``CI=true``). Fails if the server is set but unreachable.
    """
    url = os.environ.get(PG_ENV)
    if not url:
        msg = f"PostgreSQL: {PG_ENV} not set and no server started (run make test)"
        if IN_CI:
            pytest.fail(msg + " [CI=true: PostgreSQL tests must run]", pytrace=False)
        pytest.skip(msg)
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL: cannot connect to {PG_ENV}={url}: {exc}", pytrace=False)
    return url


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; yields its URL.

    Named ``t_<12 hex>`` (``postgresql://postgres@127.0.0.1:PORT/t_…``), created on the
    ``pg_url`` server and dropped with ``WITH (FORCE)`` after the test, so connections the
    test leaves open do not block cleanup.
    """
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(pg_url, name)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_db(tmp_path) -> str:
    """Path (a ``str``) of a not-yet-existing SQLite ledger file in the test's ``tmp_path``."""
    return str(tmp_path / "ledger.db")


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """Ledger location for both backends: runs the test once per backend.

    ``[sqlite]``: the ``sqlite_db`` file path. ``[postgres]``: a fresh ``pg_db`` URL
    (skips/fails like ``pg_url`` when no server is available).
    Use ``request.node.callspec.params["db_url"]`` if a test needs to know which one it got.
    """
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_db")
    return request.getfixturevalue("pg_db")


def replay_steps(monkeypatch, *, page: int, every: int, near_every: int, near_span: int) -> None:
    """Make the replay's pages and checkpoints (``projections.materialise``) this short, so
    a short history crosses many of both."""
    from backflush.projections import materialise

    monkeypatch.setattr(materialise, "PAGE", page)
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", every)
    # Denser near the head, over a window (events) that catch-ups thin again.
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_EVERY", near_every)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_SPAN", near_span)
