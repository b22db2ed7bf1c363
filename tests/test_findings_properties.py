"""Properties of findings over generated histories (backflush.testing.strategies)."""

from __future__ import annotations

from datetime import timedelta

from backflush.projections.engine import Replay
from backflush.projections.findings import findings, policy_overlaps
from backflush.projections.rules import default_rules
from hypothesis import assume, given
from hypothesis import strategies as st

from backflush.testing.strategies import BASE_TIME, histories, normalise, policies


@given(histories(parameters=False), policies())
def test_no_double_flush_without_policy_overlap(events, policy):
    assume(not policy_overlaps(policy))
    engine = Replay(policy=policy).apply_all(events)
    assert [f for f in findings(engine) if f.code == "DOUBLE_FLUSH"] == []


def _good_and_error(policy: dict) -> dict:
    rules = policy["rules"] if policy["rules"] is not None else default_rules()
    return dict(policy, rules=[dict(r, basis="good+error") for r in rules])


@given(histories(parameters=False), policies().map(_good_and_error))
def test_no_scrap_shortfall_when_every_rule_takes_error_units(events, policy):
    engine = Replay(policy=policy).apply_all(events)
    assert [f for f in findings(engine) if f.code == "SCRAP_SHORTFALL"] == []


@given(histories(parameters=False), policies())
def test_policy_equals_recorded_parameters(events, policy):
    """Findings under --policy P == findings of a ledger whose only parameters are P."""
    recorded = normalise({"type": "ProductionParametersSet", **policy})
    recorded.update(id="params", seq=0, at=BASE_TIME - timedelta(days=1))
    what_if = findings(Replay(policy=policy).apply_all(events))
    as_recorded = findings(Replay().apply_all([recorded, *events]))
    assert [f.as_dict() for f in what_if] == [f.as_dict() for f in as_recorded]


@given(st.lists(st.sampled_from(default_rules()), max_size=6))
def test_subsets_of_the_defaults_never_overlap(rules):
    assert policy_overlaps({"rules": rules}) == []


def test_always_overlaps_with_everything():
    rules = default_rules() + [{"trigger": "start", "device": "*", "flush": "always"}]
    found = policy_overlaps({"rules": rules})
    assert len(found) == 5
    for other in ("put/*", "operation/*", "finish/client", "finish/job_terminal",
                  "finish/mobile"):
        assert any(other in f.message and "start/* always" in f.message for f in found)


@given(histories(), st.one_of(st.none(), policies()))
def test_double_flush_quantity_as_defined_after_every_event(events, policy):
    """``_double_qty`` reads the rule kinds off ``by_trigger`` before it looks at the line's
    postings (an audit asks after every event, and a long order's lines have thousands):
    after every event, reversals included, that gives the quantity of its definition."""
    from decimal import Decimal

    from backflush.projections.findings import _RULE_TRIGGERS, _double_qty

    engine = Replay(policy=policy)
    for ev in events:
        engine.apply(ev)
        for order in engine.orders():
            for ln in engine.order_state(order).all_lines():
                kinds = {k for k, _, _ in ln.flush_events if k in _RULE_TRIGGERS}
                assert kinds <= set(ln.by_trigger or ())
                over = ln.posted - ln.expected
                want = over if len(kinds) >= 2 and over > 0 else Decimal(0)
                assert _double_qty(ln) == want


@given(st.lists(st.tuples(st.sampled_from(["e1", "e2", "e3", "e4"]),
                          st.sampled_from(["before release", "after end", "beyond order qty",
                                           "op not on route"]),
                          st.sampled_from([None, 10, 20])), max_size=12))
def test_out_of_sequence_groups_by_reason_and_operation(records):
    """One OUT_OF_SEQUENCE per (reason, operation), in first-seen order, each listing its
    distinct events in first-seen order."""
    from datetime import UTC, datetime
    from decimal import Decimal
    from types import SimpleNamespace

    from backflush.projections.findings import out_of_sequence
    from backflush.projections.records import OutOfSequence

    at = datetime(2026, 1, 5, tzinfo=UTC)
    o = SimpleNamespace(
        order="P1", item="FG", qty=Decimal(5), fin_good=Decimal(6), fin_error=Decimal(0),
        op_good={10: Decimal(7)}, op_error={}, out_of_sequence=[
            OutOfSequence(eid, at, reason, op) for eid, reason, op in records])
    want: dict = {}
    for eid, reason, op in records:
        want.setdefault((reason, op), []).append(eid)
    got = out_of_sequence(o)
    assert [f.where for f in got] == [f"{op} {reason}" for reason, op in want]
    assert [f.events for f in got] == [tuple(dict.fromkeys(ids)) for ids in want.values()]
    assert [f.qty for f in got] == [
        (Decimal(2) if op == 10 else Decimal(1) if op is None else Decimal(0))
        if reason == "beyond order qty" else Decimal(0) for reason, op in want]


class _RebuiltAfterEveryEvent:
    """The audit's OUT_OF_SEQUENCE as it was: built from all records after every event."""

    def after(self, o):
        from backflush.projections.findings import out_of_sequence

        self.found = out_of_sequence(o)
        return self.found

    def final(self, o):
        return self.found


def _audits(events, policy=None) -> list:
    import orjson
    from backflush.projections import audit as A

    orders = sorted({e["order"] for e in events if e["type"] == "OrderCreated"})
    return [orjson.dumps(A.audit_order(events, order, policy), default=str)
            for order in orders]


@given(histories(max_reports=6, faults=("reversal", "late", "over-report")),
       st.one_of(st.none(), policies()))
def test_audit_out_of_sequence_equals_rebuilt_after_every_event(events, policy):
    """The audit builds OUT_OF_SEQUENCE again only when a new (reason, operation) appears or
    a record goes (``audit._OutOfSequence``): the same timeline, arising events and final
    findings as building it from every record after every event, reversals included."""
    import pytest
    from backflush.projections import audit as A

    with pytest.MonkeyPatch.context() as mp:
        incremental = _audits(events, policy)
        mp.setattr(A, "_OutOfSequence", _RebuiltAfterEveryEvent)
        rebuilt = _audits(events, policy)
    assert incremental == rebuilt


def test_audit_of_many_out_of_sequence_reports_with_reversals(monkeypatch):
    """An order reported on long before its release, on operations off the route, some
    reports reversed (one the only report on its operation: its findings go), then released
    and over-reported: the findings of an audit that builds them after every event."""
    from datetime import UTC, datetime, timedelta

    from backflush.projections import audit as A

    from backflush.testing.strategies import normalise

    t0 = datetime(2026, 1, 5, 6, tzinfo=UTC)
    raw = [
        {"type": "ItemDefined", "item": "C1", "decimals": 0},
        {"type": "ItemDefined", "item": "FG", "decimals": 0},
        {"type": "ResourceDefined", "resource": "R1", "input_location": "L1",
         "output_location": "L1-OUT"},
        {"type": "RouteDefined", "route": "RT", "operations": [
            {"op": 10, "resource": "R1", "run_hours": "0.1"}]},
        {"type": "BomDefined", "bom": "B", "item": "FG", "lines": [
            {"line": 1, "item": "C1", "qty": "1", "operation": 10}]},
        {"type": "OrderCreated", "order": "P1", "item": "FG", "qty": "5", "bom": "B",
         "route": "RT"},
    ]
    for i in range(60):
        raw.append({"type": "OperationReported", "order": "P1", "op": 10 if i % 3 else 30,
                    "good": "1", "device": "job_terminal", "id": f"r{i}"})
    raw.append({"type": "OperationReported", "order": "P1", "op": 40, "good": "1",
                "device": "job_terminal", "id": "solo"})
    raw += [{"type": "Reversal", "reverses": f"r{i}", "reason": "typo", "id": f"x{i}"}
            for i in (1, 3, 59)]
    raw.append({"type": "Reversal", "reverses": "solo", "reason": "typo", "id": "xsolo"})
    raw.append({"type": "OrderReleased", "order": "P1"})
    raw += [{"type": "OperationReported", "order": "P1", "op": 10, "good": "1",
             "device": "job_terminal", "id": f"late{i}"} for i in range(3)]
    events = [normalise(dict(e, at=t0 + timedelta(minutes=k), seq=k + 1,
                             id=e.get("id", f"e{k}")))
              for k, e in enumerate(raw)]
    import orjson

    incremental = _audits(events)
    monkeypatch.setattr(A, "_OutOfSequence", _RebuiltAfterEveryEvent)
    assert incremental == _audits(events)

    final = orjson.loads(incremental[0])["findings"]
    # 40 reports on op 10 and 20 on op 30 before the release, r1 r3 r59 reversed, 3 after;
    # nothing of operation 40
    assert [(f["message"], f["arises_at"], len(f["events"])) for f in final
            if f["code"] == "OUT_OF_SEQUENCE"] == [
        ("19 events reported on operation 30 before the order was released", "r0", 19),
        ("19 events reported on operation 30, which is not on the route", "r0", 19),
        ("38 events reported on operation 10 before the order was released", "r1", 38),
        ("operation 10 reported 36 beyond the order quantity 5", "r8", 37),
        ("operation 30 reported 14 beyond the order quantity 5", "r15", 15),
    ]
