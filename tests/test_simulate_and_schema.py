"""The plant simulator (deterministic, importable, faults show as findings) and schema upkeep."""

from __future__ import annotations

import json

from backflush.cli.main import cli
from backflush.ledger.store import Ledger
from backflush.projections import materialise
from click.testing import CliRunner


def _simulate(tmp_path, name, *args):
    path = tmp_path / name
    r = CliRunner().invoke(cli, ["simulate", *args, "-o", str(path)])
    assert r.exit_code == 0, r.output
    return path


def test_same_seed_same_history_other_seed_other_history(tmp_path):
    a = _simulate(tmp_path, "a.jsonl", "--orders", "5", "--seed", "3")
    b = _simulate(tmp_path, "b.jsonl", "--orders", "5", "--seed", "3")
    c = _simulate(tmp_path, "c.jsonl", "--orders", "5", "--seed", "4")
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_simulated_history_imports_and_its_faults_are_found(tmp_path):
    hist = _simulate(
        tmp_path, "h.jsonl", "--orders", "6", "--seed", "1", "--fault", "double-flush:1"
    )
    db = str(tmp_path / "l.db")
    runner = CliRunner()
    r = runner.invoke(cli, ["--db", db, "import", str(hist)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["--db", db, "findings", "--code", "DOUBLE_FLUSH", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output), "terminals and scanner both flushing must double-flush"
    r = runner.invoke(cli, ["--db", db, "verify"])
    assert r.exit_code == 0, r.output


def test_unknown_fault_is_a_usage_error():
    r = CliRunner().invoke(cli, ["simulate", "--orders", "1", "--fault", "gremlins"])
    assert r.exit_code == 2
    assert "unknown fault" in r.output


def test_rebuild_brings_projection_schema_up_to_date(tmp_path):
    hist = _simulate(tmp_path, "h.jsonl", "--orders", "2", "--seed", "1")
    db = str(tmp_path / "l.db")
    assert CliRunner().invoke(cli, ["--db", db, "import", str(hist)]).exit_code == 0
    ledger = Ledger(db)
    materialise.catch_up(ledger)
    with ledger.transaction(commit=True) as cur:
        cur.execute("DROP INDEX bf_onhand_hist_seq")
    materialise.rebuild(ledger)
    with ledger.transaction(commit=False) as cur:
        row = cur.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'bf_onhand_hist_seq'"
        ).fetchone()
    assert row is not None
    ledger.close()
