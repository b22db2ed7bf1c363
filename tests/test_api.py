"""The public Python API (``backflush.Ledger``): same answers as the CLI, plain rows with
Decimals, the documented errors; and every snippet of docs/python-api.md runs."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from click.testing import CliRunner

import backflush

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STAGED = EXAMPLES / "002-staged-backflush" / "events.jsonl"
TERMINALS = EXAMPLES / "001-terminals-and-scanner"


def cli_json(db: str, *args: str):
    r = CliRunner().invoke(cli, ["--db", db, *args, "--json"])
    assert r.exit_code == 0, r.output
    return orjson.loads(r.output)


def plain(rows):
    """Rows as the JSON output carries them (Decimals as normalised strings)."""
    return orjson.loads(orjson.dumps(rows, default=lambda d: str(d.normalize())))


@pytest.fixture
def ledger(db_url):
    led = backflush.Ledger(db_url)
    rep = led.import_files([STAGED, TERMINALS / "events.jsonl"])
    assert rep.appended > 0 and rep.warnings == []
    yield led
    led.close()


def test_public_names_are_lazy_and_complete():
    code = ("import sys, backflush; assert 'backflush.api' not in sys.modules; "
            "assert backflush.Ledger.__module__ == 'backflush.api'; "
            "assert backflush.Policy.__module__ == 'backflush.policy'; "
            "assert issubclass(backflush.UnknownOrder, backflush.BackflushError); "
            "assert 'pydantic' not in sys.modules and 'eventsourcing' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(backflush.__all__) >= {"Ledger", "Policy", "replay", "BackflushError"}


def test_queries_equal_the_command_line(ledger, db_url):
    def norm(rows):
        return [{k: (str(Decimal(v).normalize()) if k in ("qty", "expected", "posted",
                 "variance", "standard", "reported") and v is not None else v)
                 for k, v in r.items() if k != "by_trigger"} for r in rows]

    assert norm(plain(ledger.onhand())) == norm(cli_json(db_url, "onhand"))
    assert norm(plain(ledger.wip())) == norm(cli_json(db_url, "wip"))
    assert norm(plain(ledger.consumption("P001T-2"))) == \
        norm(cli_json(db_url, "consumption", "--order", "P001T-2"))
    assert norm(plain(ledger.hours(order="P002-1"))) == \
        norm(cli_json(db_url, "hours", "--order", "P002-1"))
    assert norm(plain(ledger.findings())) == norm(cli_json(db_url, "findings"))
    events = list(ledger.events(order="P002-1"))
    assert [e["id"] for e in events] == \
        [e["id"] for e in cli_json(db_url, "events", "--order", "P002-1")]


def test_rows_carry_decimals_and_audit_is_a_dict(ledger):
    rows = ledger.onhand(item="WHS6", location="BACKFLUSH")
    assert rows and all(isinstance(r["qty"], Decimal) for r in rows)
    a = ledger.audit("P001T-2")
    assert a["order"] == "P001T-2" and a["timeline"]
    assert {f["code"] for f in a["findings"]} == \
        {f["code"] for f in ledger.findings(order="P001T-2")}


def test_as_of_and_known_at(ledger):
    at = datetime(2026, 11, 2, 13, 29, tzinfo=UTC)
    rows = ledger.onhand(item="WHS6", location="BACKFLUSH", at=at)
    assert [(r["batch"], r["qty"]) for r in rows] == [("B1", Decimal(2))]
    assert ledger.onhand(known_at=datetime(2000, 1, 1, tzinfo=UTC)) == []
    # Text and dates follow the CLI's rule (a bare date is the end of that day, UTC).
    assert ledger.onhand(item="WHS6", location="BACKFLUSH", at="2026-11-02T13:29:00Z") == rows
    assert ledger.onhand(item="WHS6", at="2026-11-02") == \
        ledger.onhand(item="WHS6", at=datetime(2026, 11, 2, 23, 59, 59, 999999, tzinfo=UTC))
    with pytest.raises(backflush.BadInput):
        ledger.onhand(at=datetime(2026, 11, 2, 13, 29))  # naive: no time zone guessed


def test_policy_as_object_path_or_dict_gives_the_same_answer(ledger):
    fix = TERMINALS / "fix-policy.json"
    by_obj = ledger.findings(order="P001T-2", policy=backflush.Policy.from_file(fix))
    by_path = ledger.findings(order="P001T-2", policy=str(fix))
    by_dict = ledger.findings(order="P001T-2", policy=orjson.loads(fix.read_bytes()))
    assert by_obj == by_path == by_dict
    assert "DOUBLE_FLUSH" in {f["code"] for f in ledger.findings(order="P001T-2")}
    assert "DOUBLE_FLUSH" not in {f["code"] for f in by_obj}


def test_errors_are_backflush_errors(ledger, tmp_path):
    with pytest.raises(backflush.UnknownOrder) as e:
        ledger.consumption("p001t-2")
    assert e.value.suggestions == ["P001T-2"]
    with pytest.raises(backflush.UnknownName) as e:
        ledger.onhand(item="whs6")
    assert e.value.kind == "item" and e.value.suggestions == ["WHS6"]
    with pytest.raises(backflush.BadInput):
        ledger.findings(code="NOT_A_CODE")
    bad = tmp_path / "bad-policy.json"
    bad.write_text('{"rules": [{"trigger": "sometimes"}]}')
    with pytest.raises(backflush.BadInput) as e:
        ledger.findings(policy=bad)
    assert str(bad) in e.value.errors[0]
    missing = tmp_path / "missing.db"
    with pytest.raises(backflush.LedgerNotFound):
        backflush.Ledger(missing).wip()
    assert not missing.exists()


def test_import_events_dicts_and_lines(db_url):
    led = backflush.Ledger(db_url)
    lines = [orjson.dumps({"type": "ItemDefined", "at": "2026-01-01T00:00:00Z",
                           "id": "x1", "item": "A"}).decode(),
             {"type": "InventoryReceived", "at": "2026-01-02T00:00:00Z", "id": "x2",
              "item": "A", "qty": Decimal("2.5"), "location": "L"}]
    rep = led.import_events(lines)
    assert (rep.appended, rep.duplicates) == (2, 0)
    assert led.onhand(item="A") == [{"item": "A", "location": "L", "batch": None, "lp": None,
                                     "qty": Decimal("2.5")}]
    with pytest.raises(backflush.BadInput) as e:
        led.import_events(['{"type": "Nope", "at": "2026-01-01T00:00:00Z"}'], source="feed")
    assert e.value.errors[0].startswith("feed:1: type")
    assert led.verify().ok and led.verify().checked == 2
    assert led.rebuild() == 2
    led.close()


def _python_blocks(md: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", md.read_text(), flags=re.S | re.M)


def test_every_snippet_of_the_python_api_page_runs(tmp_path):
    blocks = _python_blocks(ROOT / "docs" / "python-api.md")
    assert len(blocks) >= 6
    script = tmp_path / "snippets.py"
    script.write_text("\n\n".join(blocks))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout + p.stderr
