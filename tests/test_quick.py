"""The click-free path (``backflush.cli.quick``) answers exactly what the click command does.

Every case is run both ways on the same ledger, on SQLite and PostgreSQL: ``quick.run`` (what
``backflush`` does first) against click's command through CliRunner, byte for byte and exit
code; and the command lines it must leave to click are checked to be left alone.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from backflush.cli import quick
from backflush.cli.main import cli
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FILES = [EXAMPLES / "002-staged-backflush" / "events.jsonl",
         EXAMPLES / "001-terminals-and-scanner" / "events.jsonl"]

CASES = [
    ["onhand"],
    ["onhand", "--item", "WHS6"],
    ["onhand", "--item=WHS6", "--location", "BACKFLUSH"],
    ["onhand", "--at", "2026-11-02T13:29:00Z"],
    ["onhand", "--at", "2026-11-02"],
    ["onhand", "--at", "2026-11-03T12:00:00+01:00", "--known-at", "2026-11-02T12:00Z"],
    ["onhand", "--location", "T-STORE"],
    ["wip"],
    ["wip", "--resource", "T-CUT"],
    ["wip", "--at", "2026-11-02T10:00:00Z"],
    ["consumption", "--order", "P002-1"],
    ["consumption", "--order", "P001T-1", "--at", "2026-11-02T10:00:00Z"],
    ["consumption", "--order=P001T-2", "--known-at", "2026-11-02T08:00:00Z"],
    ["findings", "--order", "P001T-1"],
    ["findings", "--order", "P001T-2", "--code", "DOUBLE_FLUSH"],
    ["findings", "--order", "P001T-1", "--fail-on", "error"],
    ["findings", "--order", "P001T-1", "--fail-on", "info"],
    ["findings", "--order", "P002-2", "--fail-on", "warning", "--at", "2026-11-02"],
    ["hours", "--order", "P002-1"],
    ["hours", "--order", "P001T-2", "--resource", "T-CUT", "--at", "2026-11-03T12:00:00Z"],
]
FORMATS = ["--json", "--nl", "--csv", "--tsv", None]  # None: the default, a table
# A table's footer says when it was generated (and "at now (...)" then): the one thing two
# runs of the same query differ in.
GENERATED = re.compile(r"(generated |now \()\d{4}-\d\d-\d\dT[\d:.]+\+00:00")


def _same_run(out: str) -> str:
    return GENERATED.sub(r"\1<time>", out)


@pytest.fixture
def ledger_db(db_url):
    runner = CliRunner()
    for f in FILES:
        r = runner.invoke(cli, ["--db", db_url, "import", str(f)])
        assert r.exit_code == 0, r.output
    return db_url


def both(db: str, args: list[str], capsys) -> tuple[tuple[int | None, str], tuple[int, str]]:
    argv = ["--db", db, *args]
    capsys.readouterr()
    code = quick.run(argv)
    fast = (code, capsys.readouterr().out)
    r = CliRunner().invoke(cli, argv)
    return fast, (r.exit_code, r.stdout)


def test_same_bytes_and_exit_code_as_click(ledger_db, capsys):
    codes = set()
    for case in CASES:
        for i, fmt in enumerate(FORMATS):
            # the format flag first, last, or among the options: click takes any order
            flag = [] if fmt is None else [fmt]
            args = [case[0], *flag, *case[1:]] if i % 2 else [*case, *flag]
            fast, slow = both(ledger_db, args, capsys)
            assert fast[0] is not None, args  # served here, not handed to click
            if fmt is None:
                assert "\n--\n# ledger " in fast[1] and "chain link" in fast[1], args
                fast, slow = (fast[0], _same_run(fast[1])), (slow[0], _same_run(slow[1]))
            assert fast == slow, args
            codes.add(fast[0])
    assert codes == {0, 1}  # --fail-on both ways


@pytest.mark.parametrize("args", [
    ["onhand", "--item", "NOSUCH", "--json"],            # did-you-mean: click words it
    ["consumption", "--order", "P002-9", "--json"],      # unknown order
    ["findings", "--order", "P002-1", "--code", "DOUBLE_FLOSH", "--json"],
    ["onhand", "--at", "yesterday", "--json"],            # bad date
    ["findings", "--order", "P002-1", "--fail-on", "fatal", "--json"],
])
def test_errors_are_left_to_click(ledger_db, capsys, args):
    fast, slow = both(ledger_db, args, capsys)
    assert fast == (None, "")  # nothing printed, click runs the command line again
    assert slow[0] == 2


def test_a_missing_ledger_is_left_to_click(tmp_path, capsys):
    assert quick.run(["--db", str(tmp_path / "nope.db"), "onhand", "--json"]) is None
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "nope.db").exists()


@pytest.mark.parametrize("argv", [
    ["onhand", "--meta"],                          # provenance asked for: click's
    ["onhand", "--json", "--meta"],
    ["onhand", "--json", "--csv"],                 # two formats: click's error
    ["onhand", "--json", "--json"],
    ["onhand", "--json", "--item", "A", "--item", "B"],   # repeated
    ["onhand", "--json", "--item"],                # value missing
    ["onhand", "--json", "--item", "--at"],        # option where a value should be
    ["onhand", "--json", "--resource", "R"],       # another command's option
    ["onhand", "--json", "--policy", "p.json"],
    ["onhand", "--json", "--help"],
    ["onhand", "--json", "extra"],
    ["consumption", "--json"],                     # --order required: click says so
    ["findings", "--json"],                        # the whole ledger, streamed
    ["findings", "--order", "O", "--summary", "--json"],
    ["hours", "--json"],                           # every order: a replay, streamed
    ["events", "--json"],
    ["--db", "a", "--db", "b", "onhand", "--json"],
    ["--dbx", "a", "onhand", "--json"],
    ["--version"],
    [],
])
def test_what_it_leaves_to_click(argv):
    assert quick.parse(argv) is None


def test_parse_reads_what_click_reads():
    assert quick.parse(["--db=x.db", "wip", "--resource", "R", "--tsv"]) == (
        "x.db", "wip", {"--resource": "R"}, "tsv")
    assert quick.parse(["onhand", "--json", "--at=2026-11-02"]) == (
        None, "onhand", {"--at": "2026-11-02"}, "json")
    assert quick.parse(["findings", "--order", "O"]) == (
        None, "findings", {"--order": "O"}, "table")


def test_the_console_entry_point_takes_it_without_click(ledger_db):
    probe = ("import sys; sys.argv = ['backflush', *sys.argv[1:]]\n"
             "from backflush.cli.main import main\n"
             "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
             "print('EXIT', code, 'CLICK', 'click' in sys.modules, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", probe, "--db", ledger_db, "consumption",
                        "--order", "P002-1", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert "EXIT 0 CLICK False" in p.stderr, p.stderr
    assert '"order": "P002-1"' in p.stdout
    # What a planner types: a table with its footer, still without click.
    p = subprocess.run([sys.executable, "-c", probe, "--db", ledger_db, "consumption",
                        "--order", "P002-1"], capture_output=True, text=True, timeout=120)
    assert "EXIT 0 CLICK False" in p.stderr, p.stderr
    assert "P002-1" in p.stdout and "\n# ledger " in p.stdout and "chain link" in p.stdout
    # A mistyped order: click's one-line error, exit 2.
    p = subprocess.run([sys.executable, "-m", "backflush", "--db", ledger_db, "consumption",
                        "--order", "P002-9", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and p.stdout == "", p
    assert p.stderr.startswith("Error:") and "P002-1" in p.stderr, p.stderr
    # BACKFLUSH_QUICK=0 turns the path off: the same answer through click.
    import os

    env = {**os.environ, "BACKFLUSH_QUICK": "0"}
    p = subprocess.run([sys.executable, "-c", probe, "--db", ledger_db, "consumption",
                        "--order", "P002-1", "--json"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert "EXIT 0 CLICK True" in p.stderr, p.stderr


def test_a_ledger_locked_too_long_is_said_once_not_waited_for_twice(tmp_path, monkeypatch):
    # A first bulk import writes with a rollback journal (``Ledger.bulk_load``) and holds
    # the database's exclusive lock: a query waits BACKFLUSH_LOCK_TIMEOUT, then says so
    # (exit 3), itself, instead of leaving the error to click's run, which would wait again.

    db = str(tmp_path / "l.db")
    r = CliRunner().invoke(cli, ["--db", db, "import", str(FILES[0])])
    assert r.exit_code == 0, r.output
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        assert holder.execute("PRAGMA journal_mode=DELETE").fetchone() == ("delete",)
        holder.execute("BEGIN EXCLUSIVE")
        env = {**os.environ, "BACKFLUSH_LOCK_TIMEOUT": "0.3"}
        for args in (["onhand", "--json"], ["onhand", "--json", "--meta"]):  # quick, click
            p = subprocess.run([sys.executable, "-m", "backflush", "--db", db, *args],
                               capture_output=True, text=True, timeout=120, env=env)
            assert p.returncode == 3, p.stderr
            assert p.stdout == ""
            lines = p.stderr.splitlines()
            assert len(lines) == 1 and "locked" in lines[0], lines
            assert "BACKFLUSH_LOCK_TIMEOUT" in lines[0]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
