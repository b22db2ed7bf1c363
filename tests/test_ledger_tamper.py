"""``backflush verify`` proves no stored event was altered, removed or reordered (DESIGN §8).

The store is tampered with behind the ledger's back (sqlite3 / psycopg on the tables
themselves); verify must exit non-zero and name the stream and position.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import orjson
import pytest
from ledger_cli import run

ORDER = "order:P1"
HISTORY = [
    {"type": "ItemDefined", "at": "2026-06-01T06:00:00Z", "id": "t-01", "item": "FG"},
    {"type": "ItemDefined", "at": "2026-06-01T06:00:00Z", "id": "t-02", "item": "RAW"},
    {"type": "BomDefined", "at": "2026-06-01T06:01:00Z", "id": "t-03", "bom": "B", "item": "FG",
     "lines": [{"line": 10, "item": "RAW", "qty": 2}]},
    {"type": "InventoryReceived", "at": "2026-06-01T06:30:00Z", "id": "t-04", "item": "RAW",
     "qty": 50, "location": "BULK"},
    # order:P1 positions 1..6
    {"type": "OrderCreated", "at": "2026-06-01T07:00:00Z", "id": "t-05", "order": "P1",
     "item": "FG", "qty": 10, "bom": "B"},
    {"type": "OrderReleased", "at": "2026-06-01T07:01:00Z", "id": "t-06", "order": "P1"},
    {"type": "OrderStarted", "at": "2026-06-01T07:02:00Z", "id": "t-07", "order": "P1"},
    {"type": "ReportedAsFinished", "at": "2026-06-01T09:00:00Z", "id": "t-08", "order": "P1",
     "good": 3},
    {"type": "ReportedAsFinished", "at": "2026-06-01T10:00:00Z", "id": "t-09", "order": "P1",
     "good": 7},
    {"type": "OrderEnded", "at": "2026-06-01T10:05:00Z", "id": "t-10", "order": "P1"},
]


def imported(db: str, tmp_path: Path) -> str:
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in HISTORY), encoding="utf-8")
    r = run(db, "import", str(path))
    assert r.exit_code == 0, r.output
    return db


def state_of(con: sqlite3.Connection, stream: str, version: int) -> bytes:
    row = con.execute(
        "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
        (stream, version),
    ).fetchone()
    assert row is not None
    return bytes(row[0])


def with_good(state: bytes, good: str) -> bytes:
    d = orjson.loads(state)
    assert d["e"]["type"] == "ReportedAsFinished"
    d["e"]["good"] = good
    return orjson.dumps(d)


def set_state(con: sqlite3.Connection, stream: str, version: int, state: bytes) -> None:
    con.execute(
        "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
        (state, stream, version),
    )


def delete(con: sqlite3.Connection, stream: str, version: int) -> None:
    # One table holds the events since stored layout 2 (stored_events is a view on it).
    n = con.execute(
        "DELETE FROM bf_events WHERE stream = ? AND version = ?", (stream, version)
    ).rowcount
    assert n == 1


def assert_tampered(db: str, *where: str) -> str:
    r = run(db, "verify")
    assert r.exit_code != 0, r.output
    assert "integrity problem" in r.stderr
    for w in where:
        assert any(line.startswith(f"TAMPERED {w}") for line in r.stderr.splitlines()), (
            w, r.stderr
        )
    return r.stderr


def test_untouched_ledger_verifies(db_url, tmp_path):
    db = imported(db_url, tmp_path)
    r = run(db, "verify")
    assert r.exit_code == 0, r.output
    assert f"ok: {len(HISTORY)} events" in r.stdout


def test_altered_quantity_is_found(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        set_state(con, ORDER, 4, with_good(state_of(con, ORDER, 4), "30"))
    err = assert_tampered(db, f"{ORDER}@4 (event t-08)")
    assert "altered" in err


def test_event_removed_from_the_middle_of_a_stream_is_found(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        delete(con, ORDER, 3)
    err = assert_tampered(db, f"{ORDER}@4")
    assert "position 3" in err
    assert "removed" in err or "missing" in err


def test_last_event_of_a_stream_removed_is_found(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        delete(con, ORDER, 6)
    # No gap is left behind: its ledger-wide chain row (bf_chain) gives it away.
    err = assert_tampered(db, f"{ORDER}@6 (event t-10)")
    assert "removed" in err


def test_swapped_events_are_found(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        a, b = state_of(con, ORDER, 4), state_of(con, ORDER, 5)
        set_state(con, ORDER, 4, b)
        set_state(con, ORDER, 5, a)
    assert_tampered(db, f"{ORDER}@4", f"{ORDER}@5")


def test_altered_master_data_is_found(sqlite_db, tmp_path):
    """Not only order streams: master data is chained the same way."""
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        d = orjson.loads(state_of(con, "master", 3))
        d["e"]["lines"][0]["qty"] = "1"
        set_state(con, "master", 3, orjson.dumps(d))
    assert_tampered(db, "master@3 (event t-03)")


def test_state_that_is_not_an_event_is_found(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        set_state(con, ORDER, 2, b"garbage")
    assert_tampered(db, f"{ORDER}@2")


@pytest.mark.postgres
def test_altered_quantity_is_found_on_postgres(pg_db, tmp_path):
    import psycopg

    db = imported(pg_db, tmp_path)
    with psycopg.connect(db) as con:
        row = con.execute(
            "SELECT state FROM stored_events WHERE originator_id = %s"
            " AND originator_version = 4",
            (ORDER,),
        ).fetchone()
        con.execute(
            "UPDATE stored_events SET state = %s WHERE originator_id = %s"
            " AND originator_version = 4",
            (with_good(bytes(row[0]), "30"), ORDER),
        )
    err = assert_tampered(db, f"{ORDER}@4 (event t-08)")
    assert "altered" in err


# --- provenance, anchors, read-only media, the write lock ------------------------------------


def _last_verify(db: str) -> tuple:
    from backflush.ledger.store import Ledger

    with Ledger(db) as ledger, ledger.transaction(commit=False) as cur:
        row = cur.execute(
            "SELECT verified_at, events, ok, heads FROM bf_verify ORDER BY verified_at DESC"
            " LIMIT 1"
        ).fetchone()
    return tuple(row[k] for k in ("verified_at", "events", "ok", "heads"))


def test_verify_records_its_result_with_the_heads_digest(db_url, tmp_path):
    from backflush.ledger.integrity import heads_digest
    from backflush.ledger.store import Ledger

    db = imported(db_url, tmp_path)
    assert run(db, "verify").exit_code == 0
    _, events, ok, heads = _last_verify(db)
    with Ledger(db) as ledger:
        assert (events, ok, heads) == (len(HISTORY), 1, heads_digest(ledger))
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"type": "OrderCreated", "at": "2026-06-02T07:00:00Z",
                                "id": "t-11", "order": "P2", "item": "FG", "qty": 1,
                                "bom": "B"}) + "\n")
    assert run(db, "import", str(more)).exit_code == 0
    with Ledger(db) as ledger:
        assert heads_digest(ledger) != heads  # a new stream head moves the digest


def test_failed_verify_is_recorded_as_not_ok(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE bf_events SET rec_us = 0 WHERE id = 't-08'")
    err = assert_tampered(db, f"{ORDER}@4 (event t-08)")
    assert "[rec_us]" in err
    assert _last_verify(db)[2] == 0


def test_import_anchor_appends_one_line_per_import_and_verify_uses_them(db_url, tmp_path):
    anchors = tmp_path / "anchors.jsonl"
    for n, part in enumerate((HISTORY[:4], HISTORY[4:])):
        path = tmp_path / f"part{n}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in part), encoding="utf-8")
        assert run(db_url, "import", str(path), "--anchor", str(anchors)).exit_code == 0
    lines = [json.loads(x) for x in anchors.read_text().splitlines()]
    assert [a["events"] for a in lines] == [4, len(HISTORY)]
    assert lines[0]["last_seq"] < lines[1]["last_seq"]
    r = run(db_url, "verify", "--anchor", str(anchors), "--strict")
    assert r.exit_code == 0, r.output
    assert "2 anchors hold" in r.stdout


def test_signed_anchor_checks_against_the_public_key(sqlite_db, tmp_path):
    pytest.importorskip("cryptography")
    db = imported(sqlite_db, tmp_path)
    key, other = tmp_path / "auditor.pem", tmp_path / "other.pem"
    assert run(db, "anchor", "--generate-key", str(key)).exit_code == 0
    assert run(db, "anchor", "--generate-key", str(other)).exit_code == 0
    r = run(db, "anchor", "--key", str(key))
    assert r.exit_code == 0, r.output
    signed = tmp_path / "signed.jsonl"
    signed.write_text(r.stdout)
    a = json.loads(r.stdout)
    assert a["sig"] and a["events"] == len(HISTORY)
    ok = run(db, "verify", "--anchor", str(signed), "--pubkey", f"{key}.pub")
    assert ok.exit_code == 0, ok.output
    wrong = run(db, "verify", "--anchor", str(signed), "--pubkey", f"{other}.pub")
    assert wrong.exit_code == 2 and f"anchor {signed}:1 seq" in wrong.stderr
    assert "[sig]" in wrong.stderr
    # An anchor edited to match a shortened ledger no longer carries a valid signature.
    a["events"] -= 1
    edited = tmp_path / "edited.jsonl"
    edited.write_text(json.dumps(a) + "\n")
    r = run(db, "verify", "--anchor", str(edited), "--pubkey", f"{key}.pub")
    assert r.exit_code == 2 and "[sig]" in r.stderr
    unsigned = tmp_path / "unsigned.jsonl"
    unsigned.write_text(run(db, "anchor").stdout)
    r = run(db, "verify", "--anchor", str(unsigned), "--pubkey", f"{key}.pub")
    assert r.exit_code == 2 and "not signed" in r.stderr


def test_bad_anchor_file_is_a_clear_error(sqlite_db, tmp_path):
    db = imported(sqlite_db, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": 1, "events": "x"}\n')
    r = run(db, "verify", "--anchor", str(bad))
    assert r.exit_code == 2
    assert f"{bad}:1: events:" in r.stderr


def test_removed_chain_table_is_found_and_the_rest_still_checked(sqlite_db, tmp_path):
    """Every ledger this version opens is made with bf_chain: a missing one was dropped."""
    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE bf_chain")
        con.execute("UPDATE bf_events SET at_us = 0 WHERE id = 't-05'")
    err = assert_tampered(db, "ledger [link]", f"{ORDER}@1 (event t-05)")
    assert "bf_chain" in err and "[at_us]" in err


def _as_nobody() -> list[str] | None:
    """A command prefix running as an unprivileged user (root ignores file modes); None when
    no such user can run this checkout."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # A checkout inside a folder only root may enter (``mktemp -d`` makes them 0700): the
    # unprivileged user cannot even import backflush there, so nothing could be tested.
    import subprocess
    import sys

    probe = subprocess.run([*prefix, sys.executable, "-c", "import backflush"],
                           capture_output=True, timeout=60)
    return prefix if probe.returncode == 0 else None


def test_verify_and_anchor_work_on_read_only_media(sqlite_db, tmp_path):
    """A ledger copied to a folder nobody may write (as on read-only media) still verifies."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("running as root with no unprivileged user that can run this checkout"
                    " (no setpriv, or a checkout it may not read): file modes cannot be tested")
    db = imported(sqlite_db, tmp_path)
    assert run(db, "onhand").exit_code == 0  # projections caught up, for --deep
    media = Path(tempfile.mkdtemp(prefix="bf-ro-"))
    try:
        shutil.copy(db, media / "ledger.db")
        os.chmod(media / "ledger.db", 0o444)
        os.chmod(media, 0o555)
        for args in (["verify"], ["verify", "--deep"], ["anchor"]):
            r = subprocess.run(
                [*prefix, sys.executable, "-m", "backflush", "--db", str(media / "ledger.db"),
                 *args],
                capture_output=True, text=True, timeout=120,
            )
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert sorted(p.name for p in media.iterdir()) == ["ledger.db"]  # nothing written
    finally:
        os.chmod(media, 0o755)
        shutil.rmtree(media)


def test_queries_and_export_work_on_read_only_media(sqlite_db, tmp_path):
    """Issue 11.11: on read-only media every reading command answers and writes nothing; a
    copy whose projections are behind says so (exit 3) instead of answering stale."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("running as root with no unprivileged user that can run this checkout"
                    " (no setpriv, or a checkout it may not read): file modes cannot be tested")
    db = imported(sqlite_db, tmp_path)
    media = Path(tempfile.mkdtemp(prefix="bf-ro-"))

    def as_nobody(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "backflush", "--db", str(media / "ledger.db"),
             *args], capture_output=True, text=True, timeout=120)

    try:
        shutil.copy(db, media / "ledger.db")
        os.chmod(media / "ledger.db", 0o444)
        os.chmod(media, 0o555)
        for args in (["onhand", "--json"], ["wip"], ["findings"], ["events", "--nl"],
                     ["export"], ["hours"]):
            r = as_nobody(*args)
            assert r.returncode in (0, 1), (args, r.stdout, r.stderr)  # 1: findings found
            assert r.stdout.strip(), args
        assert sorted(p.name for p in media.iterdir()) == ["ledger.db"]  # nothing written
        os.chmod(media, 0o755)
        os.chmod(media / "ledger.db", 0o644)
        with sqlite3.connect(media / "ledger.db") as con:  # as if the import's catch-up died
            con.execute("UPDATE bf_proj SET v = '0' WHERE k = 'last_seq'")
        os.chmod(media / "ledger.db", 0o444)
        os.chmod(media, 0o555)
        r = as_nobody("onhand")
        assert r.returncode == 3 and "behind" in r.stderr and "Traceback" not in r.stderr
    finally:
        os.chmod(media, 0o755)
        shutil.rmtree(media)


def _hold_write_lock(db: str):
    if db.startswith("postgresql://"):
        import psycopg

        con = psycopg.connect(db)
        con.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
        return con
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    return con


def test_write_lock_wait_is_bounded_and_said(db_url, tmp_path, capsys, monkeypatch):
    import time

    from backflush.ledger.store import Ledger

    from backflush.errors import OperationalError

    db = imported(db_url, tmp_path)
    monkeypatch.setenv("BACKFLUSH_LOCK_TIMEOUT", "1.6")
    holder = _hold_write_lock(db)
    try:
        with Ledger(db) as ledger:
            assert ledger.lock_timeout == 1.6
            t0 = time.monotonic()
            with pytest.raises(OperationalError, match="write lock was not free within 1.6 s"):
                with ledger.writing():
                    pass
            waited = time.monotonic() - t0
    finally:
        holder.rollback()
        holder.close()
    assert 1.4 < waited < 10
    err = capsys.readouterr().err
    assert err.count("waiting for the ledger's write lock") == 1
    with Ledger(db, lock_timeout=5) as ledger, ledger.writing():
        pass  # free again: no wait, no notice
    assert "waiting" not in capsys.readouterr().err


def test_empty_ledger_verifies_and_anchors(db_url, tmp_path):
    from backflush.ledger.store import Ledger

    Ledger(db_url).close()
    r = run(db_url, "anchor")
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)
    assert (a["events"], a["last_seq"]) == (0, 0)
    path = tmp_path / "empty.jsonl"
    path.write_text(r.stdout)
    r = run(db_url, "verify", "--anchor", str(path))
    assert r.exit_code == 0, r.output
    assert "ok: 0 events" in r.stdout


def test_deep_on_a_read_only_ledger_behind_its_events_says_it_compared_nothing(
    sqlite_db, tmp_path
):
    from backflush.ledger.integrity import deep_check
    from backflush.ledger.store import Ledger

    db = imported(sqlite_db, tmp_path)
    with Ledger(db) as ledger, ledger.transaction(commit=True) as cur:
        # as if the import's catch-up had not run (a crash between the two)
        cur.execute("UPDATE bf_proj SET v = '0' WHERE k = 'last_seq'")
    with Ledger(db, readonly=True) as ledger:
        problems, notes = deep_check(ledger, None)
    assert problems == [] and "compared nothing" in notes[0]


def test_older_layout_opened_read_only_is_refused_with_the_way_out(sqlite_db, tmp_path):
    """A ledger of the old two-table layout (no version row) is not read, even read-only."""
    from backflush.ledger.store import Ledger, SchemaTooOld

    db = imported(sqlite_db, tmp_path)
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM bf_lock WHERE k = 2")
    with pytest.raises(SchemaTooOld, match="import the export into a new ledger"):
        Ledger(db, readonly=True)
    r = run(db, "verify")
    assert r.exit_code == 2, r.output
    assert "older backflush" in r.stderr


def test_deep_forgets_ended_orders_as_it_replays_and_still_finds_tampering(db_url, tmp_path,
                                                                          monkeypatch):
    """``verify --deep`` replays the whole history in one process: like a rebuild, it must
    forget each order once past its last event, or its memory grows with the history
    (~0.5 GB at 179k events, before). Forgetting must not hide a tampered history row."""
    from backflush.ledger import integrity
    from backflush.ledger.store import Ledger

    history = tmp_path / "sim.jsonl"
    assert run(db_url, "simulate", "--orders", "40", "--seed", "3", "-o",
               str(history)).exit_code == 0
    assert run(db_url, "import", str(history)).exit_code == 0
    engines = []
    real = integrity._new_engine

    def spy(reversible=None):
        engines.append(real(reversible))
        return engines[-1]

    monkeypatch.setattr(integrity, "_new_engine", spy)
    with Ledger(db_url) as ledger:
        problems, notes = integrity.deep_check(ledger, ledger)
        with ledger.transaction(commit=False) as cur:
            rows = cur.execute("SELECT ord, MAX(at_us) AS last FROM bf_events"
                               " WHERE ord IS NOT NULL GROUP BY ord").fetchall()
            end = cur.execute("SELECT MAX(at_us) AS m FROM bf_events").fetchone()["m"]
    assert problems == [] and notes == []
    ended_before = [r["ord"] for r in rows if r["last"] < end]
    assert len(ended_before) >= 30
    assert [o for o in ended_before if engines[0].order_state(o) is not None] == []
    # A history row of the first day altered: the replay that forgot the orders sees it.
    with Ledger(db_url) as ledger, ledger.transaction(commit=True) as cur:
        first = cur.execute("SELECT key_id, at_us, seq, n FROM bf_onhand_hist"
                            " ORDER BY at_us, seq, n LIMIT 1").fetchone()
        cur.execute("UPDATE bf_onhand_hist SET balance = '987654' WHERE key_id = ? AND"
                    " at_us = ? AND seq = ? AND n = ?",
                    (first["key_id"], first["at_us"], first["seq"], first["n"]))
    r = run(db_url, "verify", "--deep")
    assert r.exit_code == 2 and "projection onhand" in r.output and "stored 987654" in r.output


def test_deep_that_compared_nothing_is_not_all_clear(sqlite_db, tmp_path, monkeypatch):
    """The command line on the read-only case above: the chains are fine, but what was asked
    (--deep) was not done. Not "projections agree", not exit 0: a gate must not pass."""
    from backflush.cli import integrity_cmds
    from backflush.ledger.store import Ledger

    db = imported(sqlite_db, tmp_path)
    with Ledger(db) as ledger, ledger.transaction(commit=True) as cur:
        cur.execute("UPDATE bf_proj SET v = '0' WHERE k = 'last_seq'")
    monkeypatch.setattr(integrity_cmds, "_writable", lambda ledger: False)
    r = run(db, "verify", "--deep")
    assert r.exit_code == 3, r.output
    assert "agree" not in r.output and "Error: --deep: projections are behind" in r.stderr
    assert r.stdout.startswith("ok: 10 events")  # what was checked, said as checked


def test_deep_while_an_import_records_events_is_inconclusive_not_tampered(db_url, tmp_path,
                                                                        monkeypatch):
    """An import beside a long --deep (scanners sync all day) changes the stored answers
    under the comparison: that must not read as tampering."""
    from backflush.ledger import integrity

    import backflush

    history = tmp_path / "sim.jsonl"
    assert run(db_url, "simulate", "--orders", "12", "--seed", "5", "-o",
               str(history)).exit_code == 0
    assert run(db_url, "import", str(history)).exit_code == 0
    first = json.loads(history.read_text().splitlines()[0])
    receipt = {"type": "InventoryReceived", "at": "2026-01-05T06:30:00Z", "id": "late-1",
               "item": first["item"], "qty": "1000", "location": "BULK"}
    late = tmp_path / "late.jsonl"
    late.write_text(json.dumps(receipt) + "\n")
    real, calls = integrity._compare, []

    def compare_then_import(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # mid-check: a scanner's late receipt for the first day
            with backflush.Ledger(db_url) as other:
                assert other.import_files([late]).appended == 1
        return real(*a, **k)

    monkeypatch.setattr(integrity, "_compare", compare_then_import)
    r = run(db_url, "verify", "--deep")
    assert len(calls) > 2
    assert r.exit_code == 3, r.output
    assert "TAMPERED" not in r.output and "1 event was recorded while --deep ran" in r.stderr
    monkeypatch.setattr(integrity, "_compare", real)
    r = run(db_url, "verify", "--deep")  # run again, nothing beside it: all clear
    assert r.exit_code == 0 and "projections agree with a replay" in r.stdout, r.output


def test_index_columns_of_another_type_are_found_not_a_traceback(sqlite_db, tmp_path):
    """SQLite keeps a value of another type in a column when it cannot convert it: a text
    position, a blob for a stream, a text time. Each is named (exit 2); verify used to stop
    with a TypeError."""
    db = imported(sqlite_db, tmp_path)
    con = sqlite3.connect(db)
    seq = {eid: s for s, eid in con.execute("SELECT seq, id FROM bf_events")}
    con.execute("UPDATE bf_events SET version = 'x' WHERE id = 't-06'")
    con.execute("UPDATE bf_events SET stream = X'35' WHERE id = 't-02'")
    con.execute("UPDATE bf_events SET at_us = 'y' WHERE id = 't-08'")
    con.commit()
    con.close()
    r = run(db, "verify")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for place in (f"seq {seq['t-06']} [version]: position 'x' is not a number",
                  f"seq {seq['t-02']} [stream]: stream b'5' is not text",
                  f"seq {seq['t-08']} [at_us]: index says 'y'"):
        assert place in r.stderr, r.stderr
    # The rest of order:P1 is still checked as if t-06 were in place.
    assert f"seq {seq['t-07']} [version]" not in r.stderr
