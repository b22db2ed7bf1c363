"""Every finding code of DESIGN §5, provoked by a small JSONL history, and absent when the same
history is done right. Through the CLI: ``import`` then ``findings --json``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import orjson
import pytest
from backflush.cli.main import cli
from click.testing import CliRunner

T0 = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
DEFAULT_RULES = [
    {"trigger": "start", "device": "*", "flush": ["start"]},
    {"trigger": "put", "device": "*", "flush": ["available_at_location"]},
    {"trigger": "operation", "device": "*", "flush": ["operation_finish"]},
    {"trigger": "finish", "device": "client", "flush": ["finish", "production_finish"]},
    {"trigger": "finish", "device": "job_terminal", "flush": ["finish", "production_finish"]},
    {"trigger": "finish", "device": "mobile", "flush": ["finish", "production_finish"],
     "basis": "good"},
]
SEED001_RULES = DEFAULT_RULES + [
    {"trigger": "operation", "device": "job_terminal", "flush": ["operation_finish", "finish"]},
]


class Hist:
    """A JSONL history under construction: ``add(type, minute, **fields)``."""

    def __init__(self):
        self.events: list[dict] = []

    def add(self, type_: str, minute: float = 0, **fields) -> dict:
        ev = {"type": type_, "at": (T0 + timedelta(minutes=minute)).isoformat(),
              "id": f"ev-{len(self.events) + 1:03d}", **fields}
        self.events.append(ev)
        return ev

    def dump(self, path) -> str:
        path.write_bytes(b"\n".join(orjson.dumps(e) for e in self.events) + b"\n")
        return str(path)


def master(h: Hist, rules=None, stock="1000", bat_stock=None, manual_line=False) -> None:
    """FG made of 2 C1 at op 10 (finish) [and 1 C2, manual, at op 20]; route 10 → 20."""
    params = {"default_input_location": "BACKFLUSH", "tolerance_pct": "0"}
    if rules is not None:
        params["rules"] = rules
    h.add("ProductionParametersSet", 0, **params)
    h.add("ItemDefined", 0, item="FG", decimals=0)
    h.add("ItemDefined", 0, item="C1", decimals=2, flushing="finish")
    h.add("ItemDefined", 0, item="C2", decimals=0, flushing="manual")
    h.add("ItemDefined", 0, item="BAT", decimals=0, tracking="batch", flushing="finish")
    h.add("ResourceDefined", 0, resource="R10", input_location="IN10", output_location="OUT10")
    h.add("ResourceDefined", 0, resource="R20", input_location="IN20", output_location="OUT20")
    h.add("RouteDefined", 0, route="RT", operations=[{"op": 10, "resource": "R10"},
                                                      {"op": 20, "resource": "R20"}])
    lines = [{"line": 10, "item": "C1", "qty": 2, "operation": 10}]
    if manual_line:
        lines.append({"line": 20, "item": "C2", "qty": 1, "operation": 20})
    h.add("BomDefined", 0, bom="B", item="FG", lines=lines)
    h.add("BomDefined", 0, bom="BB", item="FG", lines=[{"line": 10, "item": "BAT", "qty": 1}])
    if stock is not None:
        h.add("InventoryReceived", 1, item="C1", qty=stock, location="IN10")
        h.add("InventoryReceived", 1, item="C2", qty=stock, location="IN20")
    if bat_stock is not None:
        h.add("InventoryReceived", 1, item="BAT", qty=bat_stock, location="IN10", batch="L1")


def order(h: Hist, qty=10, bom="B", release=True, t=10) -> None:
    h.add("OrderCreated", t, order="P1", item="FG", qty=qty, bom=bom, route="RT")
    if release:
        h.add("OrderReleased", t + 1, order="P1")
        h.add("OrderStarted", t + 2, order="P1")


def run(tmp_path, h: Hist, *args: str):
    db = str(tmp_path / "l.db")
    r = CliRunner().invoke(cli, ["--db", db, "import", h.dump(tmp_path / "h.jsonl")])
    assert r.exit_code == 0, r.output
    return CliRunner().invoke(cli, ["--db", db, "findings", *args])


def found(tmp_path, h: Hist, *args: str) -> list[dict]:
    r = run(tmp_path, h, "--json", *args)
    assert r.exit_code == 0, r.output
    return orjson.loads(r.output)


def codes(rows) -> list[str]:
    return [r["code"] for r in rows]


def one(rows, code) -> dict:
    hits = [r for r in rows if r["code"] == code]
    assert len(hits) == 1, rows
    return hits[0]


# --- the histories: (provoking, clean) per code ------------------------------------------


def h_double(clean: bool) -> Hist:
    h = Hist()
    master(h, rules=DEFAULT_RULES if clean else SEED001_RULES)
    order(h)
    h.add("OperationReported", 20, order="P1", op=10, good=10, device="job_terminal")
    h.add("OperationReported", 21, order="P1", op=20, good=10, device="job_terminal")
    h.add("ReportedAsFinished", 30, order="P1", good=10, device="mobile")
    h.add("OrderEnded", 40, order="P1")
    return h


def h_scrap(clean: bool) -> Hist:
    h = Hist()
    master(h, rules=DEFAULT_RULES)
    order(h)
    h.add("OperationReported", 20, order="P1", op=10, good=8, error=2)
    h.add("OperationReported", 21, order="P1", op=20, good=8)
    if clean:
        h.add("ReportedAsFinished", 30, order="P1", good=8, error=2, device="client")
    else:
        h.add("ReportedAsFinished", 30, order="P1", good=8, device="mobile")
    h.add("OrderEnded", 40, order="P1")
    return h


def h_simple(extra=None, end=True, **kw) -> Hist:
    h = Hist()
    master(h, **kw)
    order(h)
    h.add("OperationReported", 20, order="P1", op=10, good=10)
    h.add("OperationReported", 21, order="P1", op=20, good=10)
    h.add("ReportedAsFinished", 30, order="P1", good=10)
    if extra:
        extra(h)
    if end:
        h.add("OrderEnded", 40, order="P1")
    return h


def test_clean_history_has_no_findings(tmp_path):
    assert found(tmp_path, h_simple()) == []


def test_double_flush(tmp_path):
    rows = found(tmp_path, h_double(False))
    f = one(rows, "DOUBLE_FLUSH")
    assert (f["severity"], f["order"], f["line"], f["item"]) == ("error", "P1", 10, "C1")
    assert D(f["qty"]) == 20  # 20 at op-10 feedback + 20 at mobile RaF − 20 expected
    assert "operation 10 on job_terminal" in f["message"] and "mobile" in f["message"]
    assert f["events"] == ["ev-016", "ev-018"]  # op-10 feedback, mobile RaF
    assert "OVER_CONSUMPTION" not in codes(rows)  # explained by the double flush


def test_double_flush_absent_under_defaults(tmp_path):
    assert "DOUBLE_FLUSH" not in codes(found(tmp_path, h_double(True)))


def test_scrap_shortfall(tmp_path):
    rows = found(tmp_path, h_scrap(False))
    f = one(rows, "SCRAP_SHORTFALL")
    assert (f["line"], f["item"], D(f["qty"])) == (10, "C1", 4)
    assert "UNDER_CONSUMPTION" not in codes(rows)  # explained by the shortfall


def test_scrap_shortfall_absent_when_error_is_reported(tmp_path):
    assert found(tmp_path, h_scrap(True)) == []


def test_over_consumption(tmp_path):
    def extra(h):
        h.add("MaterialConsumed", 35, order="P1", item="C1", qty="3", line=10)

    rows = found(tmp_path, h_simple(extra))
    f = one(rows, "OVER_CONSUMPTION")
    assert (f["line"], D(f["qty"]), f["severity"]) == (10, 3, "warning")


def test_over_consumption_only_once_ended(tmp_path):
    def extra(h):
        h.add("MaterialConsumed", 35, order="P1", item="C1", qty="3", line=10)

    assert "OVER_CONSUMPTION" not in codes(found(tmp_path, h_simple(extra, end=False)))


def test_under_consumption(tmp_path):
    def extra(h):
        h.add("MaterialConsumed", 35, order="P1", item="C1", qty="-3", line=10)

    f = one(found(tmp_path, h_simple(extra)), "UNDER_CONSUMPTION")
    assert (f["line"], D(f["qty"])) == (10, 3)


def test_under_consumption_within_tolerance_is_no_finding(tmp_path):
    def extra(h):
        h.add("MaterialConsumed", 35, order="P1", item="C1", qty="-0.5", line=10)

    h = h_simple(extra)
    h.events[0]["tolerance_pct"] = "5"  # 5 % of 20 = 1 ≥ 0.5
    assert found(tmp_path, h) == []


def test_manual_not_posted(tmp_path):
    f = one(found(tmp_path, h_simple(manual_line=True)), "MANUAL_NOT_POSTED")
    assert (f["line"], f["item"], D(f["qty"]), f["severity"]) == (20, "C2", 10, "error")


def test_manual_not_posted_absent_when_consumed(tmp_path):
    def extra(h):
        h.add("MaterialConsumed", 35, order="P1", item="C2", qty="10", line=20)

    assert found(tmp_path, h_simple(extra, manual_line=True)) == []


def test_negative_on_hand(tmp_path):
    f = one(found(tmp_path, h_simple(stock="5")), "NEGATIVE_ON_HAND")
    assert (f["order"], f["line"], f["item"], D(f["qty"])) == ("P1", 10, "C1", 15)
    assert "IN10" in f["message"]


def test_negative_on_hand_absent_with_stock(tmp_path):
    assert "NEGATIVE_ON_HAND" not in codes(found(tmp_path, h_simple(stock="20")))


def test_put_without_pick_is_negative_in_transit(tmp_path):
    def extra(h):
        h.add("Put", 32, item="C1", qty="5", location="BULK")

    f = one(found(tmp_path, h_simple(extra)), "NEGATIVE_ON_HAND")
    assert f["order"] is None and "IN_TRANSIT" in f["message"] and D(f["qty"]) == 5


def _batch_history(bat_stock):
    h = Hist()
    master(h, bat_stock=bat_stock)
    order(h, bom="BB")
    h.add("OperationReported", 20, order="P1", op=10, good=10)
    h.add("OperationReported", 21, order="P1", op=20, good=10)
    h.add("ReportedAsFinished", 30, order="P1", good=10)
    h.add("OrderEnded", 40, order="P1")
    return h


def test_unresolved_batch(tmp_path):
    rows = found(tmp_path, _batch_history(None))
    f = one(rows, "UNRESOLVED_BATCH")
    assert (f["line"], f["item"], D(f["qty"])) == (10, "BAT", 10)
    # the engine's documented decision: the unresolved take is not also NEGATIVE_ON_HAND
    assert codes(rows) == ["UNRESOLVED_BATCH"]


def test_unresolved_batch_absent_with_batch_on_hand(tmp_path):
    assert found(tmp_path, _batch_history("10")) == []


def _residual(put_qty):
    def extra(h):
        h.add("Picked", 12, item="C1", qty=put_qty, location="STORE", order="P1", line=10)
        h.add("Put", 13, item="C1", qty=put_qty, location="IN10", order="P1", line=10)

    h = h_simple(extra)
    h.events.insert(10, {"type": "InventoryReceived", "at": T0.isoformat(), "id": "store",
                         "item": "C1", "qty": "100", "location": "STORE"})
    return h


def test_residual_at_input(tmp_path):
    f = one(found(tmp_path, _residual("30")), "RESIDUAL_AT_INPUT")
    assert (f["line"], f["item"], D(f["qty"])) == (10, "C1", 10)
    assert "IN10" in f["message"]


def test_residual_absent_when_all_consumed(tmp_path):
    assert found(tmp_path, _residual("20")) == []


def test_wip_not_cleared(tmp_path):
    h = Hist()
    master(h)
    order(h)
    h.add("OperationReported", 20, order="P1", op=10, good=10)
    h.add("OperationReported", 21, order="P1", op=20, good=6)
    h.add("ReportedAsFinished", 30, order="P1", good=6)
    h.add("OrderEnded", 40, order="P1")
    f = one(found(tmp_path, h), "WIP_NOT_CLEARED")
    assert (f["order"], f["line"], f["item"], D(f["qty"])) == ("P1", None, "FG", 4)
    assert "operation 10" in f["message"]


def test_wip_absent_when_an_op_is_not_reported(tmp_path):
    # op 20 outside MES: its units fall back to what was finished (DESIGN §5)
    h = Hist()
    master(h)
    order(h)
    h.add("OperationReported", 20, order="P1", op=10, good=10)
    h.add("ReportedAsFinished", 30, order="P1", good=10)
    h.add("OrderEnded", 40, order="P1")
    assert found(tmp_path, h) == []


def test_out_of_sequence(tmp_path):
    h = Hist()
    master(h)
    order(h, release=False)
    h.add("OperationReported", 20, order="P1", op=10, good=10)
    h.add("OperationReported", 21, order="P1", op=20, good=12)
    rows = [r for r in found(tmp_path, h) if r["code"] == "OUT_OF_SEQUENCE"]
    msgs = " | ".join(r["message"] for r in rows)
    assert "before the order was released" in msgs and "beyond the order quantity" in msgs
    beyond = next(r for r in rows if "beyond" in r["message"])
    assert D(beyond["qty"]) == 2


def test_out_of_sequence_absent_in_order(tmp_path):
    assert "OUT_OF_SEQUENCE" not in codes(found(tmp_path, h_simple()))


def test_after_end_is_out_of_sequence(tmp_path):
    def extra(h):
        h.add("OrderEnded", 36, order="P1")
        h.add("MaterialConsumed", 38, order="P1", item="C1", qty="0", line=10)

    rows = found(tmp_path, h_simple(extra, end=False))
    assert any("after the order had ended" in r["message"] for r in rows)


# --- CLI behaviour -------------------------------------------------------------------------


def test_code_and_order_filters(tmp_path):
    h = h_double(False)
    assert codes(found(tmp_path, h, "--code", "double_flush")) == ["DOUBLE_FLUSH"]
    (tmp_path / "b").mkdir()
    r = run(tmp_path / "b", h, "--json", "--order", "NOPE")  # issue 9: never a clean bill
    assert r.exit_code == 2 and "unknown order 'NOPE'" in r.output


def test_unknown_code_is_bad_input(tmp_path):
    r = run(tmp_path, h_simple(), "--code", "NOT_A_CODE")
    assert r.exit_code == 2 and "unknown finding code" in r.output


@pytest.mark.parametrize("fmt", ["--csv", ""])
def test_formats(tmp_path, fmt):
    r = run(tmp_path, h_double(False), *([fmt] if fmt else []))
    assert r.exit_code == 0 and "DOUBLE_FLUSH" in r.output


def test_json_keys_and_decimal_strings(tmp_path):
    f = found(tmp_path, h_scrap(False))[0]
    assert list(f) == ["code", "severity", "order", "line", "item", "qty", "events", "message"]
    assert isinstance(f["qty"], str)
