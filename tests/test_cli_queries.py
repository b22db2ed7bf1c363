"""Every projection command through click's CliRunner, in every output format."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from backflush.cli.main import cli
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STAGED = EXAMPLES / "002-staged-backflush" / "events.jsonl"
TERMINALS = EXAMPLES / "001-terminals-and-scanner"


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "l.db")
    runner = CliRunner()
    for f in (STAGED, TERMINALS / "events.jsonl"):
        r = runner.invoke(cli, ["--db", path, "import", str(f)])
        assert r.exit_code == 0, r.output
    return path


def run(db, *args, code=0):
    r = CliRunner().invoke(cli, ["--db", db, *args])
    assert r.exit_code == code, (r.output, r.exception)
    return r.output


def test_onhand_formats_and_filters(db):
    rows = json.loads(run(db, "onhand", "--item", "WHS6", "--location", "BACKFLUSH", "--json"))
    # Seed 002: after the end-of-run count, one of batch B1 is left at BACKFLUSH.
    assert rows == [
        {"item": "WHS6", "location": "BACKFLUSH", "batch": "B1", "lp": None, "qty": "1"}
    ]
    out = run(db, "onhand", "--item", "WHS6", "--csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert list(parsed[0]) == ["item", "location", "batch", "lp", "qty"]
    assert {r["location"] for r in parsed} >= {"BACKFLUSH", "BULK-01"}
    table = run(db, "onhand", "--item", "WHS6")
    assert table.splitlines()[0].split() == ["item", "location", "batch", "lp", "qty"]


def test_onhand_as_of_before_the_count(db):
    rows = json.loads(
        run(db, "onhand", "--item", "WHS6", "--location", "BACKFLUSH", "--json",
            "--at", "2026-11-02T13:29:00Z")
    )
    # Seed 002 expected: 2 of B1 in the books just before the count found 1.
    assert [(r["batch"], Decimal(r["qty"])) for r in rows] == [("B1", Decimal(2))]


def test_bare_date_means_end_of_that_day(db):
    end_of_day = json.loads(run(db, "onhand", "--item", "WHS6", "--json", "--at", "2026-11-02"))
    latest = json.loads(run(db, "onhand", "--item", "WHS6", "--json"))
    assert end_of_day == latest
    before = json.loads(run(db, "onhand", "--item", "WHS6", "--json", "--at", "2026-11-01"))
    assert before == []


def test_wip_staged_and_waiting(db):
    rows = json.loads(run(db, "wip", "--json", "--at", "2026-11-03T09:30:00Z"))
    assert set(rows[0]) == {"resource", "location", "kind", "order", "op", "item", "batch",
                            "qty"}
    waiting = [r for r in rows if r["kind"] == "waiting" and r["order"] == "P001T-1"]
    # Op 20 reported 98 good by 09:00; op 30 has not reported yet: 98 wait at op 20's output.
    assert [(r["op"], r["location"], r["qty"]) for r in waiting] == [(20, "T-OUT-20", "98")]
    staged = [r for r in rows if r["kind"] == "staged" and r["resource"] == "T-PAINTLINE"]
    assert staged and all(r["location"] == "T-IN-20" for r in staged)
    only = json.loads(run(db, "wip", "--resource", "T-CUT", "--json"))
    assert all(r["resource"] == "T-CUT" for r in only)
    assert run(db, "wip", "--csv").startswith("resource,location,kind,order,op,item,batch,qty")


def test_consumption_double_flush_and_policy(db):
    rows = json.loads(run(db, "consumption", "--order", "P001T-2", "--json"))
    by_line = {r["line"]: r for r in rows}
    assert by_line[10]["expected"] == "200"
    assert by_line[10]["posted"] == "396"
    assert by_line[10]["variance"] == "196"
    assert set(by_line[10]["by_trigger"]) == {"operation", "finish"}
    fixed = json.loads(
        run(db, "consumption", "--order", "P001T-2", "--json",
            "--policy", str(TERMINALS / "fix-policy.json"))
    )
    assert all(r["posted"] == r["expected"] for r in fixed)
    assert "by_trigger" in run(db, "consumption", "--order", "P001T-2")
    assert run(db, "consumption", "--order", "P001T-2", "--csv").startswith(
        "order,line,item,principle,expected,posted,variance,by_trigger"
    )


def test_consumption_as_of_a_time_before_the_scanner(db):
    rows = json.loads(
        run(db, "consumption", "--order", "P001T-2", "--json", "--at", "2026-11-03T15:10:00Z")
    )
    assert {r["line"]: r["posted"] for r in rows} == {10: "200", 20: "25", 30: "98"}


def test_hours(db):
    rows = json.loads(run(db, "hours", "--order", "P001T-1", "--json"))
    assert [(r["op"], r["resource"]) for r in rows] == [
        (10, "T-CUT"), (20, "T-PAINTLINE"), (30, "T-PACK")
    ]
    # run_hours 0.02 per unit at op 10, 100 units processed, no setup.
    assert Decimal(rows[0]["standard"]) == Decimal("2")
    by_res = json.loads(run(db, "hours", "--resource", "T-PACK", "--json"))
    assert by_res and all(r["resource"] == "T-PACK" for r in by_res)
    assert run(db, "hours", "--csv").startswith("order,op,resource,standard,reported")


def test_rebuild_gives_the_same_answers(db):
    before = run(db, "onhand", "--json"), run(db, "wip", "--json")
    assert "rebuilt:" in run(db, "rebuild")
    assert (run(db, "onhand", "--json"), run(db, "wip", "--json")) == before


def test_bad_usage_exits_2(db):
    assert "unknown order" in run(db, "consumption", "--order", "NOPE", code=2)
    assert "--at" in run(db, "onhand", "--at", "yesterday", code=2)
    assert "mutually exclusive" in run(db, "onhand", "--json", "--csv", code=2)


def test_bad_policy_file_names_file_and_field(db, tmp_path):
    p = tmp_path / "p.json"
    p.write_text('{"rules": [{"trigger": "finish", "flush": ["finish"], "devcie": "mobile"}]}')
    out = run(db, "consumption", "--order", "P001T-2", "--policy", str(p), code=2)
    assert f"{p}:1: rules[0].devcie: unknown field" in out


# --- short processes and streaming (issue 7 items 4 and 5) ----------------------------------

def test_version_loads_no_ledger_module():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "backflush", "--version"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "backflush, version" in p.stdout
    loaded = {line.split("|")[-1].strip() for line in p.stderr.splitlines()}
    assert not {m for m in loaded if m.startswith(("backflush.ledger", "backflush.projections",
                                                   "eventsourcing", "pydantic"))}


def test_events_stream_in_every_format(db):
    rows = json.loads(run(db, "events", "--json"))
    assert len(rows) > 50 and rows == sorted(rows, key=lambda r: (r["at"], r["seq"]))
    assert json.loads(run(db, "events", "--json", "--type", "Reversal")) == []
    csv_rows = list(csv.DictReader(io.StringIO(run(db, "events", "--csv"))))
    assert [r["id"] for r in csv_rows] == [r["id"] for r in rows]
    table = run(db, "events").splitlines()
    # header (2 lines), one line per event, then one provenance footer after "--"
    assert table.count("--") == 1
    body = table[: table.index("--")]
    assert table[0].split()[:3] == ["seq", "stream", "version"] and len(body) == len(rows) + 2
    assert any(line.startswith("# ") for line in table[table.index("--"):])


def test_events_and_export_are_iterators_not_lists(db):
    import backflush

    with backflush.Ledger(db) as ledger:
        events, lines = ledger.events(), ledger.export()
        assert iter(events) is events and iter(lines) is lines
        first = next(events)
        assert first["seq"] and json.loads(next(lines))["id"]


def test_events_streams_past_the_chunk_size(tmp_path, monkeypatch):
    from backflush.cli import ledger_cmds

    monkeypatch.setattr(ledger_cmds, "STREAM_CHUNK", 7)
    path = str(tmp_path / "l.db")
    assert CliRunner().invoke(cli, ["--db", path, "import", str(STAGED)]).exit_code == 0
    table = run(path, "events").splitlines()
    assert table[0].startswith(" seq") or table[0].lstrip().startswith("seq")
    assert sum(1 for line in table if line.lstrip().startswith("seq")) == 1  # one header
    assert table.count("--") == 1  # one provenance footer, at the end
    body = table[: table.index("--")]
    assert len(body) == len(json.loads(run(path, "events", "--json"))) + 2
    assert len(list(csv.DictReader(io.StringIO(run(path, "events", "--csv"))))) == len(body) - 2
    meta = json.loads(run(path, "events", "--json", "--meta"))
    assert meta["meta"]["backflush"] and len(meta["rows"]) == len(body) - 2
    nl = run(path, "events", "--nl", "--meta").splitlines()
    assert "meta" in json.loads(nl[0]) and len(nl) == len(body) - 1


def test_a_command_moved_to_another_module_still_runs(db):
    """main() loads only the mapped module, but everything when the map is out of date."""
    code = ("import sys; import backflush.cli.main as m; m.COMMAND_HOME['verify'] = 'tools'; "
            f"sys.argv = ['backflush', '--db', {db!r}, 'verify']; m.main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("ok:"), p.stderr
