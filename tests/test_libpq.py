"""Read-only transactions through libpq (``ledger.libpq``) on a real PostgreSQL server.

The reader is a speed path for short query processes: every read must give what psycopg
gives, row for row and type for type; a write inside it must fail, not pass; a long read
moves to psycopg after ``LIBPQ_ROW_BUDGET`` rows.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from backflush.ledger import connect, libpq
from backflush.ledger.store import Ledger

FILE = Path(__file__).resolve().parents[1] / "examples" / "001-terminals-and-scanner" / \
    "events.jsonl"


def test_placeholders_are_numbered_as_psycopg_reads_them():
    assert libpq.numbered("SELECT 1") == "SELECT 1"
    assert libpq.numbered("a = %s AND b IN (%s, %s)") == "a = $1 AND b IN ($2, $3)"
    assert libpq.numbered("x LIKE 'P%%' AND y = %s") == "x LIKE 'P%' AND y = $1"
    assert libpq.numbered("%b %t %s") == "$1 $2 $3"


def test_parameters_are_sent_as_text():
    assert libpq._param(None) is None  # noqa: SLF001
    assert libpq._param(True) == b"true"  # noqa: SLF001
    assert libpq._param(12) == b"12"  # noqa: SLF001
    assert libpq._param(Decimal("-0.5")) == b"-0.5"  # noqa: SLF001
    assert libpq._param(b"\x00\xff") == b"\\x00ff"  # noqa: SLF001
    with pytest.raises(TypeError):
        libpq._param(object())  # noqa: SLF001


@pytest.fixture
def pg_ledger(pg_db):
    if libpq.load() is None:
        pytest.fail("no libpq could be loaded: psycopg[binary] bundles one, so this is a bug")
    p = subprocess.run([sys.executable, "-m", "backflush", "--db", pg_db, "import", str(FILE)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    led = Ledger(pg_db)
    yield led
    led.close()


QUERIES = [
    ("SELECT * FROM bf_events ORDER BY seq", ()),
    ("SELECT seq, state, hash FROM bf_events WHERE ord = %s ORDER BY seq", ("P-1001",)),
    ("SELECT * FROM bf_proj ORDER BY k", ()),
    ("SELECT * FROM bf_onhand_hist ORDER BY seq, key_id", ()),
    ("SELECT to_regclass(%s) AS t, to_regclass(%s) AS u", ("bf_verify", "no_such_table")),
    ("SELECT COUNT(*) AS n, MAX(at_us) AS m, BOOL_OR(ord IS NULL) AS b FROM bf_events", ()),
    ("SELECT CAST(%s AS NUMERIC) AS d, CAST(%s AS BYTEA) AS x, CAST(NULL AS TEXT) AS z,"
     " CAST(%s AS DOUBLE PRECISION) AS f", (Decimal("1.250"), b"\x00\x01\xfe", 0.5)),
]


def test_reads_match_psycopg_row_for_row(pg_ledger):
    pg = pg_ledger.connections
    assert isinstance(pg, connect.PostgresConnections)
    for sql, params in QUERIES:
        with pg.transaction(commit=False, read_only=True) as light:
            assert isinstance(light, libpq.Cursor)
            got = light.execute(sql, params).fetchall()
        with pg.transaction(commit=False) as heavy:  # read_only not promised: psycopg
            assert not isinstance(heavy, libpq.Cursor)
            want = heavy.execute(sql, params).fetchall()
        assert got == want, sql
        assert [{k: type(v) for k, v in r.items()} for r in got] == \
            [{k: type(v) for k, v in r.items()} for r in want], sql
    assert got[0] == {"d": Decimal("1.250"), "x": b"\x00\x01\xfe", "z": None, "f": 0.5}


def test_every_table_and_view_of_a_ledger_reads_as_through_psycopg(pg_ledger):
    # Every column type the ledger stores decodes: an unknown type would raise, and some
    # readers fall back on any error (a missing table), so it must not hide there.
    pg = pg_ledger.connections
    with pg.transaction(commit=False, read_only=True) as cur:
        names = [r["n"] for r in cur.execute(
            "SELECT tablename AS n FROM pg_tables WHERE schemaname = current_schema()"
            " UNION SELECT viewname FROM pg_views WHERE schemaname = current_schema()"
            " ORDER BY 1").fetchall()]
    assert {"bf_events", "stored_events", "bf_chain", "bf_proj", "bf_onhand_hist"} <= set(names)
    for name in names:
        sql = f"SELECT * FROM {name} ORDER BY 1"
        with pg.transaction(commit=False, read_only=True) as light:
            got = light.execute(sql).fetchall()
        with pg.transaction(commit=False) as heavy:
            want = heavy.execute(sql).fetchall()
        assert got == want, name


def test_a_write_in_a_read_only_transaction_fails(pg_ledger):
    with pytest.raises(libpq.DatabaseError) as e, \
            pg_ledger.transaction(commit=False) as cur:
        cur.execute("DELETE FROM bf_proj")
    assert e.value.sqlstate == "25006"  # read_only_sql_transaction
    with pg_ledger.transaction(commit=False) as cur:  # the connection is still usable
        assert cur.execute("SELECT COUNT(*) AS n FROM bf_proj").fetchone()["n"] > 0


def test_a_read_costs_one_round_trip_per_statement(pg_ledger, monkeypatch):
    # No BEGIN ... ROLLBACK around a read: each statement is its own read-only transaction.
    sent: list[str] = []
    real = libpq.Connection.run
    monkeypatch.setattr(libpq.Connection, "run",
                        lambda self, sql, params=(): sent.append(sql) or real(self, sql, params))
    with pg_ledger.connections.transaction(commit=False, read_only=True) as cur:
        assert isinstance(cur, libpq.Cursor)
        cur.execute("SELECT 1 AS x")
        row = cur.execute("SHOW transaction_read_only").fetchone()
    assert row == {"transaction_read_only": "on"}
    assert sent == ["SELECT 1 AS x", "SHOW transaction_read_only"]


def test_a_long_read_moves_to_psycopg(pg_ledger, monkeypatch):
    monkeypatch.setattr(connect, "LIBPQ_ROW_BUDGET", 5)
    pg = pg_ledger.connections
    pg.rows_via_libpq = 0  # opening the ledger read a few rows already
    kinds = []
    for _ in range(3):
        with pg_ledger.transaction(commit=False) as cur:
            kinds.append(isinstance(cur.raw, libpq.Cursor))
            cur.execute("SELECT seq FROM bf_events LIMIT 4").fetchall()
    assert kinds == [True, True, False]  # 4 rows, 8 rows read: then psycopg
    assert pg.rows_via_libpq == 8


def test_an_unreachable_server_is_an_operational_error(pg_url):
    """No server at the address: exit 3 ("database: ..."); a server without the database
    named: no ledger there, exit 2 (a mistyped ``--db``, as a SQLite path that does not
    exist). Both through a whole process, the query's short path included."""
    for args in (["onhand"], ["onhand", "--json"]):
        p = subprocess.run(
            [sys.executable, "-m", "backflush", "--db", "postgresql://postgres@127.0.0.1:1/x",
             *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 3, p.stderr
        assert p.stderr.startswith("Error: database:") and len(p.stderr.splitlines()) == 1
        led_url = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
        p = subprocess.run([sys.executable, "-m", "backflush", "--db", led_url, *args],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith(f"Error: no backflush ledger at {led_url}: the server has"
                                   " no database 'no_such_database_here'"), p.stderr
