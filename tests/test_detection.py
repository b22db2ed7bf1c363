"""Detection quality: the simulator's truth against the findings (issue 10).

The truth is computed by the simulator from what it injected and DESIGN's formulas; these
tests only compare it with what ``findings`` (and ``policy check``) report.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from decimal import Decimal as D
from pathlib import Path

import pytest
from backflush.cli.main import cli
from backflush.ledger.simulate import FAULTS, FINDING_FAULTS, HARMLESS_FAULTS, simulate
from backflush.projections.findings import CODES
from click.testing import CliRunner
from test_findings import Hist

_spec = importlib.util.spec_from_file_location(
    "detection_bench", Path(__file__).resolve().parent.parent / "bench" / "detection.py")
detection = importlib.util.module_from_spec(_spec)
sys.modules["detection_bench"] = detection
_spec.loader.exec_module(detection)


def test_every_fault_mixed_is_found_exactly(tmp_path, db_url):
    s, fig = detection.run(300, 11, list(FAULTS), tmp_path, db_url)
    report = detection.report(s, fig)
    assert s.perfect(), report
    # every code of DESIGN §5 was exercised, and every fault was injected
    assert {c for c in CODES if s.tp.get(c)} == set(CODES), report
    truth: list = []
    for _ in simulate(300, 11, list(FAULTS), truth=truth):
        pass
    assert {t["fault"] for t in truth} == set(FAULTS)


@pytest.mark.parametrize(("orders", "seed"), [(150, 4), (250, 5), (60, 123)])
def test_clean_plant_has_no_findings(tmp_path, orders, seed):
    s, fig = detection.run(orders, seed, {}, tmp_path)
    assert fig["expected findings"] == 0
    assert fig["found"] == 0, detection.report(s, fig)


@pytest.mark.parametrize("fault", sorted(HARMLESS_FAULTS))
def test_harmless_disturbances_cause_no_finding(tmp_path, fault):
    s, fig = detection.run(80, 2, {fault: 1.0}, tmp_path)
    assert fig["faults injected"] == 80
    assert fig["found"] == 0, detection.report(s, fig)


def test_scorer_counts_false_positives_negatives_and_wrong_quantities():
    truth = [{"fault": "scrap", "order": "P1", "findings": [
        {"code": "SCRAP_SHORTFALL", "order": "P1", "line": 10, "item": "C", "qty": "2"},
        {"code": "RESIDUAL_AT_INPUT", "order": "P1", "line": 10, "item": "C", "qty": "2"},
    ]}]
    found = [
        {"code": "SCRAP_SHORTFALL", "order": "P1", "line": 10, "item": "C", "qty": "3",
         "events": ["e1"]},
        {"code": "NEGATIVE_ON_HAND", "order": "P1", "line": 20, "item": "D", "qty": "1",
         "events": ["e2"]},
    ]
    s = detection.score(truth, found)
    assert not s.perfect()
    assert s.precision("NEGATIVE_ON_HAND") == 0 and s.recall("RESIDUAL_AT_INPUT") == 0
    assert s.exact_share("SCRAP_SHORTFALL") == 0
    text = detection.report(s, {"events": 2})
    assert "e2" in text and "fault scrap" in text


# --- the simulator's clean baseline, one test per cause of the old noise -----------------------


def _events(orders=40, seed=4, faults=()):
    return list(simulate(orders, seed, faults))


def test_puts_cover_scrap_and_rounding_exactly():
    """Old cause: puts of qty x U without scrap_pct nor rounding left the input location short
    (NEGATIVE_ON_HAND, UNRESOLVED_BATCH) or over (RESIDUAL_AT_INPUT)."""
    evs = _events()
    items = {e["item"]: e for e in evs if e["type"] == "ItemDefined"}
    boms = {e["bom"]: e for e in evs if e["type"] == "BomDefined"}
    orders = {e["order"]: e for e in evs if e["type"] == "OrderCreated"}
    put: dict = {}
    for e in evs:
        if e["type"] == "Put":
            put[(e["order"], e["line"])] = put.get((e["order"], e["line"]), D(0)) + D(e["qty"])
    checked = 0
    for o in orders.values():
        for ln in boms[o["bom"]]["lines"]:
            dec = items[ln["item"]]["decimals"]
            raw = D(ln["qty"]) * o["qty"] * (100 + D(ln.get("scrap_pct", "0"))) / 100
            assert put[(o["order"], ln["line"])] == raw.quantize(D(1).scaleb(-dec),
                                                                  rounding="ROUND_HALF_UP")
            checked += 1
    assert checked > 100


def test_manual_lines_are_consumed_for_their_standard_with_scrap():
    """Old cause: manual consumption of qty x good without scrap_pct (UNDER_CONSUMPTION)."""
    evs = _events()
    consumed = {(e["order"], e["line"]): D(e["qty"]) for e in evs
                if e["type"] == "MaterialConsumed"}
    put = {}
    for e in evs:
        if e["type"] == "Put":
            put[(e["order"], e["line"])] = put.get((e["order"], e["line"]), D(0)) + D(e["qty"])
    assert consumed and all(put[k] == q for k, q in consumed.items())


def test_orders_run_one_after_the_other():
    """Staging belongs to the order in progress: a flush never takes another order's stock."""
    evs = _events()
    span: dict = {}
    for e in evs:
        if "order" in e and e["type"] not in ("Picked", "Put"):
            a, b = span.get(e["order"], (e["at"], e["at"]))
            span[e["order"]] = (min(a, e["at"]), max(b, e["at"]))
    spans = sorted(span.values())
    assert all(prev[1] < nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))


def test_fault_rates_and_names():
    truth: list = []
    for _ in simulate(400, 3, ["scrap:0.5", "late:0"], truth=truth):
        pass
    hits = [t for t in truth if t["fault"] == "scrap"]
    assert 150 < len(hits) < 250  # about half the orders (some lack a finish line)
    assert not [t for t in truth if t["fault"] == "late"]
    with pytest.raises(ValueError, match="add up to"):
        list(simulate(1, 0, [f"{f}:0.5" for f in FINDING_FAULTS]))
    r = CliRunner().invoke(cli, ["simulate", "--orders", "1", "--fault", "scrap:2"])
    assert r.exit_code == 2 and "between 0 and 1" in r.output


def test_truth_file_from_the_cli(tmp_path):
    out, tr = tmp_path / "h.jsonl", tmp_path / "t.jsonl"
    r = CliRunner().invoke(cli, ["simulate", "--orders", "30", "--seed", "2", "--fault",
                                 "manual-not-posted:1", "--truth", str(tr), "-o", str(out)])
    assert r.exit_code == 0, r.output
    recs = [json.loads(x) for x in tr.read_text().splitlines()]
    assert recs and all(t["fault"] == "manual-not-posted" for t in recs)
    codes = {f["code"] for t in recs for f in t["findings"]}
    assert codes == {"MANUAL_NOT_POSTED", "RESIDUAL_AT_INPUT"}


# --- issue 10 item 4: a residual hidden by another batch below zero ----------------------------


def _residual_history(with_u: bool) -> Hist:
    h = Hist()
    h.add("ProductionParametersSet", 0, default_input_location="IN1", tolerance_pct="0")
    h.add("ItemDefined", 0, item="FG", decimals=0)
    h.add("ItemDefined", 0, item="CB", decimals=0, tracking="batch", flushing="start")
    h.add("ItemDefined", 0, item="CU", decimals=0, tracking="batch", flushing="manual")
    h.add("BomDefined", 0, bom="BA", item="FG", lines=[{"line": 10, "item": "CB", "qty": 1}])
    h.add("BomDefined", 0, bom="BU", item="FG", lines=[{"line": 10, "item": "CB", "qty": 1,
                                                         "flushing": "manual"}])
    h.add("InventoryReceived", 1, item="CB", qty=12, location="BULK", batch="B1")
    if with_u:
        h.add("OrderCreated", 2, order="U", item="FG", qty=25, bom="BU")
        h.add("OrderReleased", 3, order="U")
        h.add("MaterialConsumed", 4, order="U", item="CB", qty=25, batch="B9", location="IN1",
              line=10)
    h.add("OrderCreated", 5, order="A", item="FG", qty=10, bom="BA")
    h.add("OrderReleased", 6, order="A")
    h.add("Picked", 7, order="A", item="CB", qty=12, location="BULK", batch="B1", line=10)
    h.add("Put", 8, order="A", item="CB", qty=12, location="IN1", batch="B1", line=10)
    h.add("OrderStarted", 9, order="A")
    h.add("ReportedAsFinished", 10, order="A", good=10)
    h.add("OrderEnded", 11, order="A")
    return h


@pytest.mark.parametrize("with_u", [False, True])
def test_residual_is_per_batch_not_netted_against_another_batch(tmp_path, with_u):
    db = str(tmp_path / "l.db")
    run = CliRunner()
    r = run.invoke(cli, ["--db", db, "import", _residual_history(with_u).dump(tmp_path / "h")])
    assert r.exit_code == 0, r.output
    rows = json.loads(run.invoke(cli, ["--db", db, "findings", "--order", "A", "--json"]).output)
    res = [(f["line"], f["item"], D(f["qty"])) for f in rows if f["code"] == "RESIDUAL_AT_INPUT"]
    assert res == [(10, "CB", 2)]
    # the fast audit path (materialised on-hand) agrees
    audit = json.loads(run.invoke(cli, ["--db", db, "audit", "A", "--json"]).output)
    assert [(f["code"], D(f["qty"])) for f in audit["findings"]] == [("RESIDUAL_AT_INPUT", 2)]
    if with_u:
        rows = json.loads(run.invoke(cli, ["--db", db, "findings", "--order", "U",
                                           "--json"]).output)
        assert ("NEGATIVE_ON_HAND", D(25)) in [(f["code"], D(f["qty"])) for f in rows]


def test_unresolved_take_is_not_also_negative_on_hand(tmp_path):
    """The engine's documented decision, through findings and the fast audit path."""
    h = Hist()
    h.add("ItemDefined", 0, item="FG", decimals=0)
    h.add("ItemDefined", 0, item="CB", decimals=0, tracking="batch", flushing="finish")
    h.add("ItemDefined", 0, item="CN", decimals=0, flushing="finish")
    h.add("BomDefined", 0, bom="B", item="FG", lines=[{"line": 10, "item": "CB", "qty": 1},
                                                       {"line": 20, "item": "CN", "qty": 1}])
    h.add("OrderCreated", 1, order="A", item="FG", qty=4, bom="B")
    h.add("OrderReleased", 2, order="A")
    h.add("ReportedAsFinished", 3, order="A", good=4)
    db = str(tmp_path / "l.db")
    run = CliRunner()
    assert run.invoke(cli, ["--db", db, "import", h.dump(tmp_path / "h")]).exit_code == 0
    rows = json.loads(run.invoke(cli, ["--db", db, "findings", "--json"]).output)
    got = sorted((f["code"], f["item"], D(f["qty"])) for f in rows)
    # the untracked item's shortage is NEGATIVE_ON_HAND; the tracked one's is UNRESOLVED only
    assert got == [("NEGATIVE_ON_HAND", "CN", 4), ("UNRESOLVED_BATCH", "CB", 4)]
    audit = json.loads(run.invoke(cli, ["--db", db, "audit", "A", "--json"]).output)
    assert sorted((f["code"], f["item"]) for f in audit["findings"]) == [
        ("NEGATIVE_ON_HAND", "CN"), ("UNRESOLVED_BATCH", "CB")]


def test_fast_audit_path_agrees_with_findings(tmp_path):
    """``audit ORDER`` (order-local replay + materialised history) reports what ``findings``
    (one global replay) reports, on every fault: residual per batch, unresolved manual takes."""
    s, fig = detection.run(150, 8, list(FAULTS), tmp_path)
    assert s.perfect(), detection.report(s, fig)
    db = str(tmp_path / "ledger-150-8.db")
    run = CliRunner()
    every = json.loads(run.invoke(cli, ["--db", db, "findings", "--json"]).output)
    orders = sorted({f["order"] for f in every if f["order"]})
    assert len(orders) > 20

    def key(f):
        return (f["code"], f["line"], f["item"], D(str(f["qty"])))

    for o in orders:
        audit = json.loads(run.invoke(cli, ["--db", db, "audit", o, "--json"]).output)
        assert sorted(map(key, audit["findings"])) == sorted(
            key(f) for f in every if f["order"] == o), o
