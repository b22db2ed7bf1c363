"""Unit tests of the flushing rules (projections/rules.py) and standards (standard.py)."""

from decimal import Decimal as D

from backflush.projections import rules as R
from backflush.projections import standard as S


def rule(trigger, device="*", resource=None, flush=(), basis="good+error"):
    return {"trigger": trigger, "device": device, "resource": resource,
            "flush": flush if flush == "always" else list(flush), "basis": basis}


def test_default_rules_are_d365_out_of_the_box():
    rs = R.RuleSet(None)
    assert rs.match("start", "client", None)["flush"] == ["start"]
    assert rs.match("put", "mobile", "R1")["flush"] == ["available_at_location"]
    assert rs.match("operation", "job_terminal", "R1")["flush"] == ["operation_finish"]
    for dev in ("client", "job_terminal"):
        r = rs.match("finish", dev, None)
        assert r["flush"] == ["finish", "production_finish"] and r["basis"] == "good+error"
    mobile = rs.match("finish", "mobile", None)
    assert mobile["flush"] == ["finish", "production_finish"] and mobile["basis"] == "good"
    # no finish rule for the route card journal: nothing is flushed
    assert rs.match("finish", "route_card", None) is None


def test_default_rules_are_fresh_copies():
    a = R.default_rules()
    a[0]["flush"].append("finish")
    assert R.default_rules()[0]["flush"] == ["start"]


def test_most_specific_rule_wins():
    rs = [
        rule("operation", "*", None, ["operation_finish"]),
        rule("operation", "job_terminal", None, ["finish"]),
        rule("operation", "*", "R1", []),
        rule("operation", "job_terminal", "R1", ["start"]),
    ]
    assert R.match_rule(rs, "operation", "client", "R9")["flush"] == ["operation_finish"]
    assert R.match_rule(rs, "operation", "job_terminal", "R9")["flush"] == ["finish"]
    # resource beats device
    assert R.match_rule(rs[:3], "operation", "job_terminal", "R1")["flush"] == []
    assert R.match_rule(rs, "operation", "job_terminal", "R1")["flush"] == ["start"]
    assert R.match_rule(rs, "finish", "client", None) is None


def test_equal_specificity_last_listed_wins():
    rs = [rule("finish", "client", None, ["finish"]), rule("finish", "client", None, [])]
    assert R.match_rule(rs, "finish", "client", None)["flush"] == []


def test_manual_lines_only_flushed_by_always():
    assert not R.rule_flushes(rule("finish", flush=["manual", "finish"]), "manual")
    assert R.rule_flushes(rule("finish", flush="always"), "manual")
    assert R.rule_flushes(rule("finish", flush="always"), "start")
    assert not R.rule_flushes(rule("finish", flush=[]), "finish")
    assert not R.rule_flushes(None, "finish")


def test_line_resolution():
    assert R.resolve_principle(None, "start") == "start"
    assert R.resolve_principle("manual", "start") == "manual"
    assert R.resolve_principle(None, None) == "finish"
    ops = [{"op": 20}, {"op": 10}, {"op": 30}]
    assert R.resolve_operation(None, ops) == 10
    assert R.resolve_operation(30, ops) == 30
    assert R.resolve_operation(None, None) is None
    assert R.resolve_location("L", "IN", "BACKFLUSH") == "L"
    assert R.resolve_location(None, "IN", "BACKFLUSH") == "IN"
    assert R.resolve_location(None, None, "BACKFLUSH") == "BACKFLUSH"
    assert R.resolve_location(None, None, None) == "BACKFLUSH"


def test_quantity_formula_scrap_and_rounding():
    # 2 per 1, 10 % scrap, 1 constant, 10 units: 2*10*1.1 + 1 = 23
    assert R.line_quantity(D(2), D(1), D(10), D(1), D(10), 6) == D("23.000000")
    assert R.line_quantity(D(2), D(1), D(10), D(1), D(0), 6) == 0
    # 1 per 3 with 0 decimals: half-up
    assert R.line_quantity(D(1), D(3), D(0), D(0), D(1), 0) == 0
    assert R.line_quantity(D(1), D(3), D(0), D(0), D(2), 0) == 1
    assert R.round_half_up(D("2.5"), 0) == 3
    assert R.round_half_up(D("-2.5"), 0) == -3
    assert R.round_half_up(D("0.125"), 2) == D("0.13")


def test_cumulative_flush_never_drifts():
    args = (D(1), D(3), D(0), D(0))
    total = sum(R.flush_delta(*args, D(u), D(u + 1), 0) for u in range(7))
    assert total == R.flush_delta(*args, D(0), D(7), 0) == 2


def test_trigger_units_and_transferred():
    assert R.trigger_units("good", D(8), D(2)) == 8
    assert R.trigger_units("good+error", D(8), D(2)) == 10
    assert R.trigger_units("transferred", D(8), D(2)) == 10
    assert R.transferred_target(D(12), D(5), D(10), 0) == 6
    assert R.transferred_target(D(12), D(10), D(10), 0) == 12
    assert R.transferred_target(D(12), D(11), D(10), 0) == 12
    assert R.transferred_target(D(12), D(0), D(10), 0) == 0


def test_params_from_dict():
    p = R.Params.from_dict({"default_input_location": "IN", "tolerance_pct": D(5),
                            "rules": None})
    assert p.default_input_location == "IN" and p.tolerance_pct == 5
    assert p.rules.match("start", "client", None)["flush"] == ["start"]
    p2 = R.Params.from_dict({"default_input_location": None, "tolerance_pct": None,
                             "rules": []})
    assert p2.default_input_location == "BACKFLUSH"
    assert p2.rules.match("start", "client", None) is None


def test_standard_units_expected_hours():
    op_units = {10: D(10), 20: D(8)}
    reports = {10: 2, 20: 1}
    assert S.units_processed(10, op_units, reports, D(7)) == 10
    assert S.units_processed(30, op_units, reports, D(7)) == 7
    assert S.units_processed(None, op_units, reports, D(7)) == 7
    assert S.expected_consumption(D(2), D(1), D(0), D(1), D(0), 6) == 0
    assert S.expected_consumption(D(2), D(1), D(0), D(1), D(5), 6) == 11
    assert S.variance(D(12), D(10)) == 2
    assert S.within_tolerance(D("10.4"), D(10), D(5))
    assert not S.within_tolerance(D("10.6"), D(10), D(5))
    assert S.standard_hours(D(1), D("0.1"), D(10)) == 2
    assert S.standard_hours(D(1), D("0.1"), D(0)) == 0
    shares = [S.standard_share(D(1), D("0.1"), D(u), D(5)) for u in (0, 5)]
    assert shares == [D("1.5"), D("0.5")]


# --- the flusher's decisions: how much a trigger takes, which line a put feeds, which batch ---


def test_trigger_quantity_follows_the_bom_or_the_quantity_put():
    # BOM basis: round(q(U_after)) - round(q(U_before)); 1/3 per unit, 2 decimals
    args = (D(1), D(3), D(0), D(0), 2)
    assert R.trigger_quantity("good+error", *args, D(0), D(1), D(9), D(10), D(0)) == D("0.33")
    assert R.trigger_quantity("good", *args, D(1), D(3), D(9), D(10), D(0)) == D("0.67")
    # transferred: the put quantity prorated by units over order qty, less what was taken
    assert R.trigger_quantity("transferred", *args, D(0), D(5), D(9), D(10), D(0)) == D("4.50")
    assert R.trigger_quantity("transferred", *args, D(5), D(10), D(9), D(10), D("4.50")) == \
        D("4.50")  # the report reaching the order quantity takes what is left


class _Line:
    def __init__(self, line, resource, principle):
        self.line, self.resource, self.principle = line, resource, principle


def test_put_target_is_the_first_line_the_put_rule_lists():
    rs = R.RuleSet([rule("put", "*", None, ["available_at_location"]),
                    rule("put", "mobile", "R2", ["start"])])
    a = _Line(10, "R1", "finish")
    b = _Line(20, "R1", "available_at_location")
    c = _Line(30, "R2", "start")
    assert R.put_target(rs, [a, b, c])[0] is b  # once, on the first line listed
    assert R.put_target(rs, [c, b])[0] is c  # the rule is matched per line's resource
    assert R.put_target(rs, [a]) is None
    assert R.put_target(rs, [_Line(10, "R1", "manual")]) is None  # manual never by rules
    assert R.put_target(R.RuleSet([rule("put", "*", None, "always")]),
                        [_Line(10, "R1", "manual")])[0].line == 10


def test_flushed_lines_are_the_lines_rule_flushes_accepts_in_order():
    lines = [_Line(n, "R1", p) for n, p in enumerate(
        ("finish", "manual", "start", "finish", "available_at_location", "production_finish"))]
    for flush in (["finish", "production_finish"], ["manual", "start"], [], "always"):
        r = rule("finish", flush=flush)
        want = [ln for ln in lines if R.rule_flushes(r, ln.principle)]
        assert R.flushed_lines(r, lines) == want
        assert R.flushed_lines(r, tuple(lines)) == want
    assert [ln.line for ln in R.flushed_lines(rule("finish", flush=["finish"]), lines)] == [0, 3]


def _entry(loc, line, batch, lp, remaining):
    return {"location": loc, "line": line, "batch": batch, "lp": lp, "remaining": D(remaining)}


def test_allocate_takes_put_entries_first_then_fifo_then_unresolved():
    bins = {("B1", None): D(5), ("B2", "LP1"): D(4), ("B3", None): D(10)}
    entries = [
        _entry("IN", 10, "B3", None, 6),  # put for this line: first, capped by remaining
        _entry("OUT", 10, "B2", "LP1", 9),  # another location: ignored
        _entry("IN", 20, "B1", None, 9),  # another line: ignored
    ]
    used, taken, left = R.allocate(entries, bins, 10, "IN", D(13))
    assert list(used.items()) == [(("B3", None), D(6)), (("B1", None), D(5)),
                                  (("B2", "LP1"), D(2))]
    assert [(e["batch"], t) for e, t in taken] == [("B3", D(6))] and left == 0
    assert entries[0]["remaining"] == D(6)  # reads only: the caller applies the take
    # FIFO on hand never takes more of a batch than is left after the put entries took theirs
    used, _, left = R.allocate(entries, bins, 10, "IN", D(25))
    assert used[("B3", None)] == D(10) and used[(None, None)] == D(6) and left == D(6)


def test_allocate_restricted_to_a_batch_and_capped_by_what_is_on_hand():
    bins = {("B1", None): D(2), ("B2", None): D(8)}
    entries = [_entry("IN", None, "B1", None, 5)]  # a put for no line serves every line
    used, taken, left = R.allocate(entries, bins, 10, "IN", D(4))
    assert list(used.items()) == [(("B1", None), D(2)), (("B2", None), D(2))]
    assert [t for _, t in taken] == [D(2)] and left == 0
    used, taken, left = R.allocate(entries, bins, 10, "IN", D(12), batch="B2")
    assert used == {("B2", None): D(12)} and taken == [] and left == D(4)
    assert R.allocate(None, {}, 10, "IN", D(3)) == ({(None, None): D(3)}, [], D(3))
