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
