"""A first bulk import into an empty SQLite ledger writes with a rollback journal, not the WAL
(``Ledger.bulk_load``): each page once instead of into the log and again at the checkpoint.

Pinned here: the ledger it leaves is byte for byte the one a WAL import leaves, and in WAL
mode again; a reader holding the database open keeps the WAL (SQLite refuses the switch)
and the import still succeeds; and an import killed while writing (SIGKILL, a hot journal
left behind) leaves an empty ledger that verifies and takes the same import again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from backflush.ledger import importer
from backflush.ledger.integrity import verify
from backflush.ledger.simulate import FAULTS, simulate
from backflush.ledger.store import Ledger
from test_ledger_atomicity import count_and_verify, export, import_process, write_plant_file

ROOT = Path(__file__).resolve().parents[1]


def _mode(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
    finally:
        conn.close()


@pytest.fixture
def history(tmp_path) -> str:
    path = tmp_path / "plant.jsonl"
    events = simulate(30, 3, {**FAULTS, "reversal": 0.3})
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return str(path)


@pytest.fixture
def switches(monkeypatch) -> list[bool]:
    """Treat every file as bulk; record whether each bulk load switched the journal."""
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 0)
    seen: list[bool] = []
    real = Ledger.bulk_load

    @contextlib.contextmanager
    def spy(self):
        with real(self) as switched:
            seen.append(switched)
            yield switched

    monkeypatch.setattr(Ledger, "bulk_load", spy)
    return seen


def _import(db: str, path: str) -> importer.ImportResult:
    with Ledger(db) as ledger:
        result = importer.run_import(ledger, [path])
    assert not result.errors, [str(e) for e in result.errors[:3]]
    return result


def test_same_ledger_as_a_wal_import_and_wal_again(tmp_path, history, switches, monkeypatch):
    journal = str(tmp_path / "journal.db")
    a = _import(journal, history)
    assert switches == [True]
    assert _mode(journal) == "wal"
    assert not Path(journal + "-journal").exists()

    monkeypatch.setattr(Ledger, "bulk_load", lambda self: contextlib.nullcontext(False))
    wal = str(tmp_path / "wal.db")
    b = _import(wal, history)
    assert (a.appended, a.duplicates) == (b.appended, b.duplicates)
    assert export(journal) == export(wal)
    with Ledger(journal) as ledger:
        assert verify(ledger)[1] == []


def test_not_into_a_ledger_that_holds_events(tmp_path, history, switches):
    db = str(tmp_path / "l.db")
    first = tmp_path / "first.jsonl"
    first.write_bytes(Path(history).read_bytes().splitlines(keepends=True)[0])
    _import(db, str(first))
    switches.clear()
    _import(db, history)
    assert switches == []  # not empty: the WAL stays, nothing is asked


def test_a_reader_holding_the_ledger_keeps_the_wal(tmp_path, history, switches):
    db = str(tmp_path / "l.db")
    Ledger(db).close()
    reader = sqlite3.connect(db)
    try:
        assert reader.execute("SELECT COUNT(*) FROM bf_events").fetchone() == (0,)
        result = _import(db, history)
        assert switches == [False]
        assert _mode(db) == "wal"
        assert reader.execute("SELECT COUNT(*) FROM bf_events").fetchone() == (result.appended,)
    finally:
        reader.close()


def _killed_while_writing(db: str, path: Path) -> None:
    """Start an import and SIGKILL it once its rollback journal exists (it is writing)."""
    p = import_process(db, path)
    journal = Path(db + "-journal")
    deadline = time.monotonic() + 120
    try:
        while not journal.exists():
            assert p.poll() is None, p.communicate()[1].decode()
            assert time.monotonic() < deadline, "the import never wrote with a rollback journal"
            time.sleep(0.002)
    finally:
        p.kill()
        p.communicate()


@pytest.mark.slow
def test_killed_first_import_leaves_an_empty_ledger(tmp_path):
    big = tmp_path / "plant.jsonl"
    total = write_plant_file(big, 60_000)
    assert big.stat().st_size >= importer.PIPELINE_MIN_BYTES
    db = str(tmp_path / "l.db")
    Ledger(db).close()
    _killed_while_writing(db, big)
    assert Path(db + "-journal").exists()  # hot: the next opening rolls it back
    assert count_and_verify(db) == 0
    assert _mode(db) == "wal"
    out, err = import_process(db, big).communicate(timeout=300)
    assert f"{total} appended, 0 duplicates" in out.decode(), err.decode()
    assert count_and_verify(db) == total
    assert _mode(db) == "wal"
    assert subprocess.run(
        [sys.executable, "-c", "from backflush.cli.main import main; main()", "--db", db,
         "verify"], cwd=ROOT, capture_output=True,
    ).returncode == 0
