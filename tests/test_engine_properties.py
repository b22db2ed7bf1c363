"""Hypothesis properties of the replay engine, on histories from backflush.testing.strategies."""

from collections import defaultdict
from decimal import Decimal

from backflush.projections.engine import Replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backflush.testing.strategies import histories, policies, split_histories

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def snapshot(r: Replay):
    return (r.onhand(), r.wip(), r.consumption(), r.hours(), r.flushes, r.balance_changes,
            [(a.event_id, a.reason) for a in r.anomalies])


@SETTINGS
@given(histories(), st.one_of(st.none(), policies()))
def test_deterministic(events, policy):
    assert snapshot(Replay(policy).apply_all(events)) == snapshot(Replay(policy).apply_all(events))


@SETTINGS
@given(histories())
def test_reversible_set_gives_the_same_answers(events):
    targets = {e["reverses"] for e in events if e["type"] == "Reversal"}
    assert snapshot(Replay(reversible=targets).apply_all(events)) == snapshot(
        Replay().apply_all(events))


@SETTINGS
@given(split_histories(), st.one_of(st.none(), policies()))
def test_split_report_posts_the_same_total(pair, policy):
    whole, split = pair
    a, b = Replay(policy).apply_all(whole), Replay(policy).apply_all(split)

    def posted(r):
        return {(x["order"], x["line"], x["item"]): (x["posted"], x["expected"])
                for x in r.consumption()}

    assert posted(a) == posted(b)
    assert a.onhand() == b.onhand()
    assert a.wip() == b.wip()


@SETTINGS
@given(histories(), st.one_of(st.none(), policies()))
def test_conservation_after_every_event(events, policy):
    r = Replay(policy)
    for ev in events:
        r.apply(ev)
        for item, t in r.item_totals().items():
            assert t["received"] + t["produced"] - t["consumed"] + t["adjusted"] == t["onhand"], (
                item, ev)
    # the flush log and the consumption figures agree
    by_item = defaultdict(Decimal)
    for f in r.flushes:
        by_item[f.item] += f.qty
    for item, t in r.item_totals().items():
        assert by_item.get(item, Decimal(0)) == t["consumed"]


def _as_of(changes, kind, t):
    last = {}
    for c in changes:
        if c[0] == kind and c[4] <= t:
            last[c[1]] = c[2]
    return {k: v for k, v in last.items() if v}


@SETTINGS
@given(histories(), st.data())
def test_prefix_replay_equals_as_of_state(events, data):
    t = data.draw(st.sampled_from([e["at"] for e in events]))
    full = Replay().apply_all(events)
    prefix = Replay().apply_all([e for e in events if e["at"] <= t])
    onhand = {(x["item"], x["location"], x["batch"], x["lp"]): x["qty"] for x in prefix.onhand()}
    assert _as_of(full.balance_changes, "onhand", t) == onhand
    wip = {(x["resource"], x["location"], x["kind"], x["order"], x["op"], x["item"],
            x["batch"]): x["qty"] for x in prefix.wip()}
    assert _as_of(full.balance_changes, "wip", t) == wip
    posted = defaultdict(Decimal)
    for f in full.flushes:
        if f.at <= t:
            posted[(f.order, f.line, f.item)] += f.qty
    prefix_posted = {(x["order"], x["line"], x["item"]): x["posted"]
                     for x in prefix.consumption()}
    assert {k: v for k, v in posted.items() if v} == {k: v for k, v in prefix_posted.items()
                                                      if v}
