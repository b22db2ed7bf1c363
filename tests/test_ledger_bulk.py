"""Bulk loads build ``bf_events``' secondary indexes after the rows (``Ledger.indexes_deferred``).

An import into an empty ledger (and, on SQLite, one at least as large as what is stored)
drops the indexes that back no constraint, writes, and builds them again in the same
transaction. These tests pin that the ledger comes out with exactly the indexes it went in
with, also when the import is refused; that uniqueness holds in both stored layouts (the
inline ``UNIQUE (stream, version)`` of ledgers made before, the named index of new ones);
and that both layouts store the very same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from backflush.ledger import importer
from backflush.ledger.store import Ledger
from test_ledger_writer import _check_against_reference, _history, _stored, _write

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _indexes(url: str) -> list[tuple[str, str]]:
    with Ledger(url) as ledger, ledger.transaction(commit=False) as cur:
        return sorted(ledger._droppable_indexes(cur))  # noqa: SLF001 - the thing under test


def _spy(monkeypatch) -> list[bool]:
    """Record each ``indexes_deferred`` call's ``keep_heads`` (the real method still runs)."""
    calls: list[bool] = []
    real = Ledger.indexes_deferred

    def spy(self, cur, *, keep_heads):
        calls.append(keep_heads)
        return real(self, cur, keep_heads=keep_heads)

    monkeypatch.setattr(Ledger, "indexes_deferred", spy)
    return calls


@pytest.mark.parametrize("batch", [2, 1000])
def test_indexes_built_again_after_a_bulk_load(db_url, tmp_path, monkeypatch, batch):
    monkeypatch.setattr(importer, "BATCH", batch)
    calls = _spy(monkeypatch)
    evs = _history()
    with Ledger(db_url):
        pass
    before = _indexes(db_url)
    assert {n for n, _ in before} >= {
        "bf_events_sv", "bf_events_at", "bf_events_ord", "bf_events_rec", "bf_events_created"}
    # Refused (a bad last line): nothing written, every index back.
    bad = dict(evs[3], id="bad", item="NOPE")
    path = _write(tmp_path / "bad.jsonl", [*evs, bad])
    with Ledger(db_url) as ledger:
        res = importer.run_import(ledger, [path])
        assert [e.field for e in res.errors] == ["item"] and ledger.count() == 0
    assert _indexes(db_url) == before
    path = _write(tmp_path / "ok.jsonl", evs)
    with Ledger(db_url) as ledger:
        res = importer.run_import(ledger, [path])
        assert not res.errors and res.appended == len(evs)
    assert calls == [False, False]  # both into an empty ledger: the heads index went too
    assert _indexes(db_url) == before
    _check_against_reference(*_stored(db_url))


def test_large_import_into_a_stored_sqlite_ledger(sqlite_db, tmp_path, monkeypatch):
    """Into a ledger holding fewer events than the file: the heads index stays (they are
    read from it), the others are built after; a small file takes the row-by-row path."""
    calls = _spy(monkeypatch)
    evs = _history()
    with Ledger(sqlite_db) as ledger:
        assert not importer.run_import(ledger, [_write(tmp_path / "a.jsonl", evs[:5])]).errors
        before = _indexes(sqlite_db)
        res = importer.run_import(ledger, [_write(tmp_path / "b.jsonl", evs)])
        assert not res.errors and (res.appended, res.duplicates) == (len(evs) - 5, 5)
        assert calls == [False, True]
        tiny = _write(tmp_path / "c.jsonl", [dict(evs[-1], id="late-1")])
        assert not importer.run_import(ledger, [tiny]).errors
        assert calls == [False, True]  # 1 line against ~30 stored: no drop
    assert _indexes(sqlite_db) == before
    _check_against_reference(*_stored(sqlite_db))


def _old_layout(url: str) -> None:
    """A ledger in the layout of earlier versions: ``UNIQUE (stream, version)`` inline."""
    with Ledger(url) as ledger, ledger.transaction(commit=True) as cur:
        cur.execute("DROP INDEX bf_events_sv")
        if ledger.dialect == "postgres":
            cur.execute("ALTER TABLE bf_events ADD UNIQUE (stream, version)")
            return
        # SQLite cannot add a constraint: make the table again as it was declared.
        (sql,) = cur.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'bf_events'").fetchone()
        cur.execute("DROP VIEW stored_events")
        cur.execute("DROP TABLE bf_events")
        cur.execute(sql.rstrip().rstrip(")") + ", UNIQUE (stream, version))")
        for ddl in _ledger_ddl():
            if "bf_events" in ddl and "bf_events_sv" not in ddl and "CREATE TABLE" not in ddl:
                cur.execute(ddl)


def _ledger_ddl() -> list[str]:
    from backflush.ledger.store import _ddl

    return [d.replace("CREATE VIEW", "CREATE VIEW IF NOT EXISTS", 1) for d in _ddl("sqlite")]


@pytest.fixture
def old_url(db_url, request, tmp_path):
    """A second, empty ledger location on the same backend as ``db_url``."""
    if not db_url.startswith("postgres"):
        yield str(tmp_path / "old.db")
        return
    import uuid

    import psycopg
    from conftest import _with_database

    server, name = request.getfixturevalue("pg_url"), f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_old_layout_imports_the_same_rows(db_url, old_url, tmp_path):
    _old_layout(old_url)
    assert "bf_events_sv" not in {n for n, _ in _indexes(old_url)}
    evs = _history()
    path = _write(tmp_path / "h.jsonl", evs)
    for url in (db_url, old_url):
        with Ledger(url) as ledger:
            res = importer.run_import(ledger, [path], now=NOW)
            assert not res.errors and res.appended == len(evs)
    assert _stored(db_url) == _stored(old_url)
    # Both still refuse a second event at a taken stream position, and a taken id.
    copy = (
        "INSERT INTO bf_events SELECT seq + 1000, {id}, stream, {version}, type, at_us, rec_us,"
        " ord, hash, state FROM bf_events WHERE seq = 1"
    )
    for url in (db_url, old_url):
        for clash in (copy.format(id="id || 'x'", version="version"),
                      copy.format(id="id", version="version + 1000")):
            with Ledger(url) as ledger, pytest.raises(Exception, match="(?i)unique"):  # noqa: B017,PT011
                with ledger.writing(commit=False) as cur:  # rolled back
                    cur.execute(clash)
