"""Nothing destroyed or invented by accident (issue 9 item 1), outputs never touch the ledger,
operational errors exit 3 as one line, default ``--at`` is now (issue 11 items 6, 8, 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STAGED = EXAMPLES / "002-staged-backflush" / "events.jsonl"
TERMINALS = EXAMPLES / "001-terminals-and-scanner" / "events.jsonl"


def run(db: str, *args: str):
    return CliRunner().invoke(cli, ["--db", db, *args])


@pytest.fixture
def ledger(db_url):
    for f in (STAGED, TERMINALS):
        r = run(db_url, "import", str(f))
        assert r.exit_code == 0, r.output
    return db_url


# --- reads never create a ledger -------------------------------------------------------------

READS = [
    ["onhand"], ["wip"], ["hours"], ["findings", "--fail-on", "error"], ["events"], ["export"],
    ["verify"], ["audit", "P1"], ["consumption", "--order", "P1"], ["policy", "check"],
    ["rebuild"],
]


@pytest.mark.parametrize("args", READS, ids=lambda a: a[0])
def test_read_on_a_missing_path_is_an_error_and_creates_nothing(tmp_path, args):
    db = tmp_path / "typo.db"
    r = run(str(db), *args)
    assert r.exit_code == 2, r.output
    assert "import first or pass --db" in r.stderr
    assert "Traceback" not in r.output
    assert sorted(os.listdir(tmp_path)) == []


def test_failed_import_leaves_no_new_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "ItemDefined", "at": "2026-01-01T00:00:00Z", "item": "A"}\n'
                   '{"type": "Nope", "at": "2026-01-01T00:00:00Z"}\n')
    db = tmp_path / "new.db"
    r = run(str(db), "import", str(bad))
    assert r.exit_code == 2 and f"{bad}:2: type" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]
    # A dry run on a new path leaves nothing either; a good import then creates the ledger.
    good = tmp_path / "good.jsonl"
    good.write_text('{"type": "ItemDefined", "at": "2026-01-01T00:00:00Z", "item": "A"}\n')
    assert run(str(db), "import", "--dry-run", str(good)).exit_code == 0
    assert not db.exists()
    assert run(str(db), "import", str(good)).exit_code == 0 and db.exists()


def test_failed_import_keeps_an_existing_ledger(tmp_path):
    db = tmp_path / "l.db"
    assert run(str(db), "import", str(STAGED)).exit_code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    assert run(str(db), "import", str(bad)).exit_code == 2
    assert db.exists() and run(str(db), "onhand", "--item", "WHS6").exit_code == 0


# --- every filter value the ledger never saw: exit 2 with a did-you-mean ---------------------

UNKNOWN = [
    (["findings", "--order", "p001t-2"], "unknown order 'p001t-2'", "P001T-2"),
    (["findings", "--order", "P001T-3"], "unknown order 'P001T-3'", "P001T-2"),
    (["findings", "--code", "dubble_flush"], "unknown finding code", "DOUBLE_FLUSH"),
    (["events", "--order", "P002-9"], "unknown order 'P002-9'", "P002-1"),
    (["events", "--type", "orderreleased"], "--type: unknown event type", "OrderReleased"),
    (["export", "--order", "p002-1"], "unknown order 'p002-1'", "P002-1"),
    (["onhand", "--item", "whs6"], "--item: unknown item 'whs6'", "WHS6"),
    (["onhand", "--location", "BULK-1"], "--location: unknown location", "BULK-01"),
    (["wip", "--resource", "assy-002"], "--resource: unknown resource", "ASSY-002"),
    (["consumption", "--order", "P002-3"], "unknown order", "P002-"),
    (["hours", "--order", "P002-3"], "unknown order", "P002-"),
    (["hours", "--resource", "T-CUTT"], "--resource: unknown resource", "T-CUT"),
    (["audit", "p002-2"], "unknown order 'p002-2'", "P002-2"),
]


@pytest.mark.parametrize("args,message,hint", UNKNOWN, ids=lambda v: str(v))
def test_unknown_filter_value_is_an_error_with_did_you_mean(ledger, args, message, hint):
    r = run(ledger, *args, *(["--fail-on", "error"] if args[0] == "findings" else []))
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "did you mean" in r.stderr and hint in r.stderr
    assert r.stdout == ""


def test_known_filter_values_with_no_rows_are_fine(ledger):
    # A real item at a time before anything was received: no rows, not an error.
    r = run(ledger, "onhand", "--item", "WHS6", "--at", "2026-01-01T00:00:00Z", "--json")
    assert r.exit_code == 0 and orjson.loads(r.stdout) == []
    r = run(ledger, "events", "--order", "P002-1", "--type", "Reversal", "--json")
    assert r.exit_code == 0 and orjson.loads(r.stdout) == []


def test_never_seen_name_without_a_close_one(ledger):
    r = run(ledger, "onhand", "--item", "ZZZZZZZZZZ")
    assert r.exit_code == 2 and "never seen" in r.stderr


# --- outputs never touch the ledger ---------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_outputs_refuse_the_ledger_files(tmp_path, suffix):
    db = tmp_path / "l.db"
    assert run(str(db), "import", str(STAGED)).exit_code == 0
    before = run(str(db), "export").stdout_bytes
    target = str(db) + suffix
    for args in (["audit", "P002-1", "--html", target], ["export", "-o", target],
                 ["simulate", "--orders", "1", "-o", target]):
        r = run(str(db), *args)
        assert r.exit_code == 2, (args, r.output)
        assert "refusing to overwrite" in r.stderr
        assert db.read_bytes().startswith(b"SQLite format 3\x00")
    # The same file through another spelling of its path is refused too.
    other = os.path.join(str(tmp_path), ".", "l.db")
    assert run(str(db), "export", "-o", other).exit_code == 2
    assert run(str(db), "export").stdout_bytes == before


def test_outputs_are_written_whole_through_a_temporary_file(tmp_path):
    db = tmp_path / "l.db"
    assert run(str(db), "import", str(STAGED)).exit_code == 0
    out = tmp_path / "out.jsonl"
    assert run(str(db), "export", "-o", str(out)).exit_code == 0
    assert out.read_bytes() == run(str(db), "export").stdout_bytes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- operational errors: one line, exit 3 ---------------------------------------------------


def _cli(*args: str, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "backflush", *args], timeout=120, **kw)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_on_output_exits_3_with_one_line(tmp_path):
    db = str(tmp_path / "l.db")
    assert run(db, "import", str(STAGED)).exit_code == 0
    for args in (["export", "-o", "/dev/full"], ["simulate", "--orders", "3", "-o", "/dev/full"]):
        p = _cli("--db", db, *args)
        err = p.stderr.decode()
        assert p.returncode == 3, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "No space left on device" in err
    with open("/dev/full", "wb") as full:  # stdout itself is the full disk
        p = _cli("--db", db, "events", "--json", stdout=full)
    assert p.returncode == 3 and b"Traceback" not in p.stderr


def test_closed_pipe_exits_3_without_traceback(tmp_path):
    db = str(tmp_path / "l.db")
    big = tmp_path / "sim.jsonl"
    assert run(db, "simulate", "--orders", "30", "-o", str(big)).exit_code == 0
    assert run(db, "import", str(big)).exit_code == 0
    p = subprocess.Popen([sys.executable, "-m", "backflush", "--db", db, "events", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline()  # the first row arrives...
    p.stdout.close()  # ...and the reader goes away, like `| head -1`
    err = p.stderr.read().decode() if p.stderr else ""
    assert p.wait(timeout=120) == 3
    assert "Traceback" not in err and "broken pipe" in err


def test_database_unavailable_exits_3(tmp_path):  # one plain connection: fails at once
    p = _cli("--db", "postgresql://postgres@127.0.0.1:1/nothing", "onhand")
    err = p.stderr.decode()
    assert p.returncode == 3, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_not_a_database_is_bad_input(tmp_path):
    notes = tmp_path / "notes.db"
    notes.write_text("my notes, not a ledger\n" * 100)
    r = run(str(notes), "onhand")
    assert r.exit_code == 2 and "not a backflush ledger" in r.stderr
    assert notes.read_text().startswith("my notes")


# --- default --at is now; events far ahead of their recording are flagged -------------------


def test_future_event_is_flagged_at_import_and_hidden_until_its_time(db_url, tmp_path):
    soon = datetime.now(UTC) + timedelta(hours=2)  # inside the margin: no warning
    later = datetime(2030, 6, 1, 8, tzinfo=UTC)
    lines = [
        {"type": "ItemDefined", "at": "2026-01-01T00:00:00Z", "id": "f1", "item": "A"},
        {"type": "InventoryReceived", "at": "2026-01-02T00:00:00Z", "id": "f2", "item": "A",
         "qty": 5, "location": "L"},
        {"type": "InventoryReceived", "at": soon.isoformat(), "id": "f3", "item": "A",
         "qty": 1, "location": "L"},
        {"type": "InventoryReceived", "at": later.isoformat(), "id": "f4", "item": "A",
         "qty": 100, "location": "L"},
    ]
    src = tmp_path / "future.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    r = run(db_url, "import", str(src))
    assert r.exit_code == 0, r.output
    warnings = [w for w in r.stderr.splitlines() if w.startswith("warning:")]
    assert len(warnings) == 1 and f"{src}:4: at:" in warnings[0]
    now_rows = orjson.loads(run(db_url, "onhand", "--item", "A", "--json").stdout)
    assert [r["qty"] for r in now_rows] == ["5"]
    then = orjson.loads(run(db_url, "onhand", "--item", "A", "--json", "--at", "2030-06-02")
                        .stdout)
    assert [r["qty"] for r in then] == ["106"]
    assert [e["id"] for e in orjson.loads(run(db_url, "events", "--json").stdout)] == \
        ["f1", "f2"]
    # Re-importing the same file appends nothing, and says so without a warning flood.
    assert run(db_url, "import", str(src)).exit_code == 0


def test_help_documents_exit_codes():
    r = CliRunner().invoke(cli, ["--help"])
    assert "Exit codes" in r.output and "3  operational error" in r.output


def test_many_future_events_give_a_bounded_warning(tmp_path):
    lines = [{"type": "ItemDefined", "at": "2026-01-01T00:00:00Z", "id": "g0", "item": "A"}]
    lines += [{"type": "InventoryReceived", "at": f"2031-01-{d:02d}T00:00:00Z", "id": f"g{d}",
               "item": "A", "qty": 1, "location": "L"} for d in range(1, 26)]
    src = tmp_path / "f.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    for args in (["import", "--dry-run", str(src)], ["import", str(src)]):
        r = run(str(tmp_path / "l.db"), *args)
        assert r.exit_code == 0, r.output
        warnings = [w for w in r.stderr.splitlines() if w.startswith("warning:")]
        assert len(warnings) == 11 and f"{src}:2: at:" in warnings[0]
        assert "15 more events dated more than 24 h ahead" in warnings[-1]


def test_error_classification_is_in_one_place():
    import errno
    import sqlite3

    from backflush.cli.app import classify
    from eventsourcing.persistence import OperationalError as ESOperationalError

    import backflush

    assert classify(sqlite3.OperationalError("database is locked"))[1] == 3
    assert classify(sqlite3.OperationalError("database or disk is full"))[1] == 3
    assert classify(sqlite3.OperationalError("attempt to write a readonly database"))[1] == 3
    assert classify(ESOperationalError("database is locked"))[1] == 3
    assert classify(sqlite3.DatabaseError("file is not a database"))[1] == 2
    assert classify(OSError(errno.ENOSPC, "No space left on device", "/x"))[1] == 3
    assert classify(BrokenPipeError(errno.EPIPE, "Broken pipe"))[1] == 3
    lines, code = classify(backflush.BadInput(["f:1: qty: bad", "f:2: at: bad"], summary="2"))
    assert code == 2 and lines == ["f:1: qty: bad", "f:2: at: bad", "Error: 2"]
    assert classify(backflush.OperationalError("gone"))[1] == 3
    assert classify(ValueError("a bug")) is None  # a real bug keeps its traceback


def test_operational_error_in_a_command_is_one_line_exit_3(tmp_path, monkeypatch):
    import sqlite3

    import backflush.api

    db = str(tmp_path / "l.db")
    assert run(db, "import", str(STAGED)).exit_code == 0

    def full(*a, **k):  # what SQLite raises when the disk fills during catch-up
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(backflush.api.Ledger, "onhand", full)
    r = run(db, "onhand")
    assert r.exit_code == 3 and r.stderr == "Error: database: database or disk is full\n"


def test_demo_against_an_existing_ledger_changes_nothing(db_url):
    assert run(db_url, "import", str(STAGED)).exit_code == 0
    before = run(db_url, "export").stdout_bytes
    r = run(db_url, "demo")
    assert r.exit_code == 2 and "--force" in r.stderr
    assert run(db_url, "export").stdout_bytes == before


# --- Ctrl-C: exit 130, and an import says whether its events were recorded --------------------

def test_import_interrupted_before_its_commit_records_nothing(tmp_path, monkeypatch):
    import backflush.ledger.importer as importer

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(importer, "run_import", interrupted)
    db = tmp_path / "new.db"
    r = run(str(db), "import", str(STAGED))
    assert r.exit_code == 130, r.output
    assert "interrupted: nothing was imported" in r.stderr and "Traceback" not in r.output
    assert sorted(os.listdir(tmp_path)) == []  # the ledger it created is gone again


def test_import_interrupted_in_its_catch_up_says_the_events_are_recorded(db_url, tmp_path,
                                                                          monkeypatch):
    import backflush.projections.materialise as materialise

    real = materialise.catch_up
    calls = []

    def interrupted(ledger):
        calls.append(1)
        if len(calls) == 1:  # the import's own catch-up; the next command's runs for real
            raise KeyboardInterrupt
        return real(ledger)

    monkeypatch.setattr(materialise, "catch_up", interrupted)
    anchors = tmp_path / "anchors.jsonl"
    r = run(db_url, "import", str(STAGED), "--anchor", str(anchors))
    assert r.exit_code == 130, r.output
    assert "interrupted: " in r.stderr and " appended, 0 duplicates (recorded)" in r.stderr
    appended = int(r.stderr.split("interrupted: ")[1].split()[0])
    assert appended > 0 and "Aborted" not in r.output
    # The anchor asked for was written all the same, and it verifies.
    assert len(anchors.read_text().splitlines()) == 1
    v = run(db_url, "verify", "--anchor", str(anchors))
    assert v.exit_code == 0, v.output
    # The events are there; the next import of the same file finds them all recorded.
    again = run(db_url, "import", str(STAGED))
    assert again.exit_code == 0 and again.stdout.strip() == f"0 appended, {appended} duplicates"
    # ... and the next query answers as after an uninterrupted import.
    monkeypatch.setattr(materialise, "catch_up", real)
    assert run(db_url, "onhand", "--json").stdout == _fresh_onhand(tmp_path)


def test_import_whose_catch_up_fails_says_the_events_are_recorded(db_url, tmp_path,
                                                                    monkeypatch):
    """The events committed, then the catch-up failed (here the disk filled): exit 3 as for
    any operational error, but saying what was recorded, not a bare database error that reads
    as "nothing imported"."""
    import sqlite3

    import backflush.projections.materialise as materialise

    real = materialise.catch_up

    def full(ledger):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(materialise, "catch_up", full)
    anchors = tmp_path / "anchors.jsonl"
    r = run(db_url, "import", str(STAGED), "--anchor", str(anchors))
    assert r.exit_code == 3, r.output
    appended = len(STAGED.read_text().splitlines())
    assert r.stderr == (
        f"Error: {appended} appended, 0 duplicates (recorded); bringing the projections up to"
        " date then failed: database: database or disk is full; the next command catches up\n")
    assert r.stdout == ""
    assert len(anchors.read_text().splitlines()) == 1  # owed: it covers the events
    assert run(db_url, "verify", "--anchor", str(anchors)).exit_code == 0
    monkeypatch.setattr(materialise, "catch_up", real)
    assert run(db_url, "onhand", "--json").stdout == _fresh_onhand(tmp_path)


def test_a_failed_catch_up_in_the_api_is_catch_up_failed_and_a_bug_stays_a_bug(
        tmp_path, monkeypatch):
    import sqlite3

    import backflush.projections.materialise as materialise

    import backflush

    def locked(ledger):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(materialise, "catch_up", locked)
    with backflush.Ledger(str(tmp_path / "a.db")) as ledger:
        with pytest.raises(backflush.CatchUpFailed) as failed:
            ledger.import_files([STAGED])
        assert isinstance(failed.value, backflush.OperationalError)
        assert failed.value.appended == len(STAGED.read_text().splitlines())
        assert isinstance(failed.value.cause, sqlite3.OperationalError)

    def bug(ledger):
        raise ValueError("a bug in the catch-up")

    monkeypatch.setattr(materialise, "catch_up", bug)
    with backflush.Ledger(str(tmp_path / "b.db")) as ledger:
        with pytest.raises(ValueError, match="a bug"):  # its traceback, not a one-liner
            ledger.import_files([STAGED])


def _fresh_onhand(tmp_path) -> str:
    db = str(tmp_path / "fresh.db")
    assert run(db, "import", str(STAGED)).exit_code == 0
    return run(db, "onhand", "--json").stdout


def test_interrupted_query_exits_130_not_1(ledger, monkeypatch):
    import backflush.api

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(backflush.api.Ledger, "__init__", interrupted)
    r = run(ledger, "findings", "--fail-on", "error")
    # 1 would read as "findings at or above --fail-on" to a gate.
    assert r.exit_code == 130 and r.stderr.strip() == "Error: interrupted", r.output


def test_a_replay_never_sees_an_import_in_part(db_url, tmp_path, monkeypatch):
    """A whole-history replay (here on-hand under --policy) reads the events a page at a
    time. An import committed meanwhile must be seen whole or not at all: its receipt on the
    first day (behind the page reached) and its transfer on the last (ahead of it) together,
    or neither, never the transfer alone (a stock that never was)."""
    from backflush.projections import materialise

    import backflush

    item, late = _history_with_a_late_file(db_url, tmp_path)
    policy = str(EXAMPLES / "001-terminals-and-scanner" / "fix-policy.json")
    args = ("onhand", "--item", item, "--policy", policy, "--at", "2100-01-01", "--json")
    before = run(db_url, *args).stdout
    real = materialise.events_for_replay

    def import_after_the_first_page(ledger, **kw):
        for n, ev in enumerate(real(ledger, **kw)):
            if n == 1:  # the first page is read: the scanner syncs now
                with backflush.Ledger(db_url) as other:
                    assert other.import_files([late]).appended == 2
            yield ev

    monkeypatch.setattr(materialise, "events_for_replay", import_after_the_first_page)
    during = run(db_url, *args)
    assert during.exit_code == 0, during.output
    assert during.stdout == before  # the import committed after the replay began: not seen
    monkeypatch.setattr(materialise, "events_for_replay", real)
    after = orjson.loads(run(db_url, *args).stdout)  # ... and whole the next time
    assert {r["location"]: r["qty"] for r in after if r["location"].startswith("LATE")} == \
        {"LATE-OUT": "1000"}


def _history_with_a_late_file(db_url, tmp_path):
    """A simulated history of more than one replay page, imported; and a late file: a
    receipt on the first day and a transfer of it on the last (item, path)."""
    history = tmp_path / "sim.jsonl"
    assert run(db_url, "simulate", "--orders", "200", "--seed", "4", "-o",
               str(history)).exit_code == 0
    lines = history.read_text().splitlines()
    assert len(lines) > 6000  # more than one page of the replay (5000)
    item = next(e["item"] for e in map(orjson.loads, lines) if e["type"] == "ItemDefined")
    last_at = max(orjson.loads(x)["at"] for x in lines)
    late = tmp_path / "late.jsonl"
    late.write_text(
        orjson.dumps({"type": "InventoryReceived", "at": "2026-01-05T06:00:01Z", "id": "lt-1",
                      "item": item, "qty": "1000", "location": "LATE-IN"}).decode() + "\n"
        + orjson.dumps({"type": "InventoryTransferred", "at": last_at, "id": "lt-2",
                        "item": item, "qty": "1000", "from_location": "LATE-IN",
                        "to_location": "LATE-OUT"}).decode() + "\n")
    assert run(db_url, "import", str(history)).exit_code == 0
    return item, late


def test_events_never_show_an_import_in_part(db_url, tmp_path, monkeypatch):
    from backflush.ledger.store import Ledger

    import backflush

    _item, late = _history_with_a_late_file(db_url, tmp_path)
    args = ("events", "--at", "2100-01-01", "--nl")
    before = run(db_url, *args).stdout
    real, pages = Ledger.iter_rows, []

    def import_after_the_first_page(self, **kw):
        for n, row in enumerate(real(self, **kw)):
            if n == 1:
                pages.append(1)
                with backflush.Ledger(db_url) as other:
                    assert other.import_files([late]).appended == 2
            yield row

    monkeypatch.setattr(Ledger, "iter_rows", import_after_the_first_page)
    during = run(db_url, *args)
    assert pages and during.exit_code == 0 and during.stdout == before
    monkeypatch.setattr(Ledger, "iter_rows", real)
    assert '"id":"lt-1"' in run(db_url, *args).stdout


def test_verify_never_reads_an_import_committed_meanwhile_as_a_broken_chain(db_url, tmp_path,
                                                                             monkeypatch):
    """verify reads the events and the ledger-wide chain a page at a time, side by side. An
    import committed after the events' last page and before the chain's must not read as
    "chain link for an event the ledger does not hold" (exit 2, TAMPERED): a false alarm in
    a nightly gate while scanners sync."""
    from backflush.ledger import integrity

    import backflush

    _item, late = _history_with_a_late_file(db_url, tmp_path)
    real, done = integrity._by_seq, []

    def import_between_the_last_pages(ledger, sql, page=5000):
        for n, row in enumerate(real(ledger, sql, page)):
            if "FROM bf_events" in sql and n == page and not done:
                # The events' second (last) page is read; the chain's is not yet.
                done.append(1)
                with backflush.Ledger(db_url) as other:
                    assert other.import_files([late]).appended == 2
            yield row

    monkeypatch.setattr(integrity, "_by_seq", import_between_the_last_pages)
    r = run(db_url, "verify")
    assert done and r.exit_code == 0, r.output
    assert "TAMPERED" not in r.output
    monkeypatch.setattr(integrity, "_by_seq", real)
    n = int(r.stdout.split()[1])
    again = run(db_url, "verify")
    assert again.exit_code == 0 and again.stdout.startswith(f"ok: {n + 2} events")


def test_an_anchor_taken_while_an_import_commits_still_holds(db_url, tmp_path, monkeypatch):
    """anchor reads the count, the last link and the streams' heads: from one snapshot, or
    an import committed between two reads (PostgreSQL: each statement its own snapshot)
    makes an anchor that no state of the ledger ever matched."""
    from backflush.ledger import store

    import backflush

    _item, late = _history_with_a_late_file(db_url, tmp_path)
    real, calls = store.Cursor.execute, []

    def execute_then_import(self, sql, params=()):
        out = real(self, sql, params)
        if "FROM bf_events" in sql and "bf_chain" in sql or "COUNT(*)" in sql:
            if not calls:  # the anchor's first read is done: a scanner syncs now
                calls.append(1)
                with backflush.Ledger(db_url) as other:
                    assert other.import_files([late]).appended == 2
        return out

    monkeypatch.setattr(store.Cursor, "execute", execute_then_import)
    r = run(db_url, "anchor")
    monkeypatch.setattr(store.Cursor, "execute", real)
    assert calls and r.exit_code == 0, r.output
    path = tmp_path / "anchors.jsonl"
    path.write_text(r.stdout)
    v = run(db_url, "verify", "--anchor", str(path))
    assert v.exit_code == 0 and "1 anchor holds" in v.stdout, v.output


# --- SIGTERM: handled as Ctrl-C is, exit 143 ------------------------------------------------

# The command line in a process of its own, with a function of the ledger wrapped so that
# the process sends itself SIGTERM there (as a supervisor or `timeout` would, mid-command).
_TERM_SCRIPT = """
import os, signal, sys
from backflush.projections import materialise
{patch}
sys.argv = ["backflush", *sys.argv[1:]]
from backflush.cli.main import main
main()
"""
_TERM_IN_CATCH_UP = """
real = materialise.catch_up
def catch_up(ledger):
    os.kill(os.getpid(), signal.SIGTERM)
    return real(ledger)
materialise.catch_up = catch_up
"""
_TERM_IN_A_PASS = """
materialise.PAGE, materialise.CHECKPOINT_EVERY = 100, 200
materialise.CHECKPOINT_NEAR_EVERY, materialise.CHECKPOINT_NEAR_SPAN = 50, 300
real, seen = materialise._Run.changes, [0]
def changes(self, ch):
    seen[0] += 1
    if seen[0] == 9:
        os.kill(os.getpid(), signal.SIGTERM)
    real(self, ch)
materialise._Run.changes = changes
"""


def _terminated(patch: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _TERM_SCRIPT.format(patch=patch), *args],
                          capture_output=True, text=True, timeout=300)


def test_sigterm_during_an_imports_catch_up_is_reported_like_ctrl_c(tmp_path):
    db = str(tmp_path / "l.db")
    r = _terminated(_TERM_IN_CATCH_UP, "--db", db, "import", str(STAGED))
    # Without the handler the process died by the signal (-15), saying nothing.
    assert r.returncode == 143, (r.returncode, r.stderr)
    assert r.stderr.startswith("terminated: ") and " appended, 0 duplicates (recorded)" \
        in r.stderr and "Traceback" not in r.stderr, r.stderr
    # A query, on the short path and through click, the same way.
    for args in (("onhand", "--json"), ("findings",)):
        q = _terminated(_TERM_IN_CATCH_UP, "--db", db, *args)
        assert (q.returncode, q.stderr) == (143, "Error: terminated\n"), (args, q.stderr)
    assert run(db, "onhand", "--json").stdout == _fresh_onhand(tmp_path)


def test_sigterm_during_a_long_catch_up_keeps_its_progress(tmp_path):
    from backflush.ledger.simulate import simulate
    from backflush.ledger.store import Ledger
    from backflush.projections import materialise

    src = tmp_path / "sim.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in simulate(30, 2, ())))
    db = str(tmp_path / "l.db")
    env_off = {**os.environ, "BACKFLUSH_REPLAY_WORKERS": "0"}
    r = subprocess.run([sys.executable, "-c", _TERM_SCRIPT.format(patch=_TERM_IN_A_PASS),
                        "--db", db, "import", str(src)],
                       capture_output=True, text=True, timeout=300, env=env_off)
    assert r.returncode == 143 and "terminated: " in r.stderr, r.stderr
    ledger = Ledger(db)
    try:
        with ledger.transaction(commit=False) as cur:
            assert materialise._get(cur, "resume") is not None  # kept where it stopped
    finally:
        ledger.close()
    fresh = str(tmp_path / "fresh.db")
    assert run(fresh, "import", str(src)).exit_code == 0
    assert run(db, "onhand", "--json").stdout == run(fresh, "onhand", "--json").stdout


def test_import_into_a_folder_that_does_not_exist_names_it(tmp_path):
    db = tmp_path / "no-such-folder" / "l.db"
    r = run(str(db), "import", str(STAGED))
    # sqlite3 said only "unable to open database file", as an operational error (exit 3).
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == (f"Error: cannot create a ledger at {db}: the folder "
                                f"{db.parent} does not exist (check --db or BACKFLUSH_DB)")
    assert not db.parent.exists()


def test_a_did_you_mean_prefers_the_id_that_starts_the_same():
    """``P000500`` (a zero short) is as close to ``P0020500`` as to ``P0005000`` by
    difflib's ratio, which then prefers the larger string: a planner who dropped a digit
    was offered three other orders. Equally close, the longest shared start goes first."""
    from backflush.errors import close_names

    known = ["P0009500", "P0010500", "P0020500", "P0005000", None]
    assert close_names("P000500", known)[0] == "P0005000"
    assert close_names("p0005000", known) == ["P0005000"]  # case only: that one
    assert close_names("X", known) == []
    assert close_names("t-blank", ["T-BLANK", "t-Blank", "T-BOLT"]) == ["T-BLANK", "t-Blank"]
