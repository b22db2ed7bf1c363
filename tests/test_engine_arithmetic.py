"""The engine computes in its own decimal context: exact for long quantities, whatever the
caller's context, and a quantity it cannot compute with is a clean error naming the event
(issue 11: one accepted line must not break every query with a traceback)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from backflush.projections.engine import Replay, UnreplayableEvent
from backflush.projections.strategies import History

from backflush.errors import BadInput


def _receipts(*qtys: str) -> list[dict]:
    h = History()
    h.add("ItemDefined", 0, item="C1")
    for i, q in enumerate(qtys):
        h.add("InventoryReceived", i + 1, item="C1", qty=Decimal(q), location="BULK")
    return h.events()


def test_forty_digit_quantities_stay_exact():
    big = "1234567890123456789012345678901234567890"
    engine = Replay().apply_all(_receipts(big, "1"))
    assert str(engine.onhand()[0]["qty"]) == "1234567890123456789012345678901234567891"


def test_tiny_receipts_are_not_lost_and_conservation_holds():
    engine = Replay().apply_all(_receipts("5", "1e-30"))
    assert engine.onhand()[0]["qty"] == Decimal("5.000000000000000000000000000001")
    totals = engine.item_totals()["C1"]
    assert totals["received"] == totals["onhand"]


def test_the_callers_context_does_not_matter():
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        engine = Replay()
        for ev in _receipts("1234.5", "0.25"):
            engine.apply(ev)
    assert engine.onhand()[0]["qty"] == Decimal("1234.75")


@pytest.mark.parametrize("huge", ["1e999999999", "9e999999"])
def test_an_overflowing_quantity_is_a_clean_error_naming_the_event(huge):
    events = _receipts("1", huge, huge)
    with pytest.raises(UnreplayableEvent) as err:
        Replay().apply_all(events)
    assert isinstance(err.value, BadInput)
    bad = err.value.event_id
    assert bad in {e["id"] for e in events[2:]}
    assert bad in str(err.value) and "out of range" in str(err.value)
    with pytest.raises(UnreplayableEvent):
        engine = Replay()
        for ev in events:
            engine.apply(ev)


@pytest.mark.parametrize("huge", ["1e999999999", "9e999999"])
def test_a_whole_history_replay_names_the_overflowing_event_too(huge):
    # The streaming replays (what-ifs, whole-history findings and hours) apply a run of
    # events in one context instead of one per event: the same error, the same event.
    events = _receipts("1", huge, huge)
    with pytest.raises(UnreplayableEvent) as err:
        Replay().apply_some(iter(events), 10)
    assert err.value.event_id in {e["id"] for e in events[2:]}


@pytest.mark.parametrize("huge", ["1e999999999", "9e999999"])
def test_a_rebuild_pass_names_the_overflowing_event_too(huge):
    # A rebuild's pass applies its pages through ``changelog.apply_rows`` (compiled, in the
    # pass's one context): the same error, the same event, whichever row of the run it is.
    from backflush.projections.changelog import apply_rows
    from backflush.projections.engine import ARITHMETIC

    events = _receipts("1", huge, huge)
    rows = [(ev["seq"], 0, ev) for ev in events]
    engine = Replay()
    with decimal.localcontext(ARITHMETIC), pytest.raises(UnreplayableEvent) as err:
        apply_rows(engine._apply, lambda state, seq: state, rows, 1, len(rows))
    assert err.value.event_id in {e["id"] for e in events[2:]}


def test_apply_some_applies_exactly_k_and_says_when_the_events_ran_out():
    events = _receipts("1", "2", "3", "4")  # an item and four receipts: five events
    engine, it = Replay(), iter(events)
    assert engine.apply_some(it, 2) is events[1]
    assert engine.onhand()[0]["qty"] == Decimal("1")
    assert engine.apply_some(it, 2) is events[3]
    assert engine.apply_some(it, 2) is None  # one left: applied, then the end
    assert engine.onhand()[0]["qty"] == Decimal("10")
    assert engine.apply_some(it, 2) is None


def test_a_streaming_replay_leaves_the_callers_context_alone_between_its_steps(db_url, tmp_path):
    # Each step is applied in the engine's context, left before the step is handed over:
    # what the caller computes with the engine in between is in the caller's own context.
    from datetime import UTC, datetime

    import orjson
    from backflush.ledger.importer import run_import
    from backflush.ledger.simulate import simulate
    from backflush.ledger.store import Ledger
    from backflush.projections import asof

    ledger = Ledger(db_url)
    src = tmp_path / "h.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in simulate(20, 3, ())))
    assert not run_import(ledger, [str(src)]).errors
    at = datetime(2099, 1, 1, tzinfo=UTC)
    steps = 0
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        for _engine, _done in asof._streaming_replay(ledger, at, None, None, 50,
                                                     keep_findings=False):
            assert decimal.getcontext().prec == 3
            steps += 1
    assert steps > 2


def test_exact_inside_exact_keeps_the_outer_context_and_resets_after_an_error():
    # Findings call many exact properties per line: nested calls run in the outer call's
    # context instead of entering one each, and the outer call still translates errors.
    from backflush.projections.exact import exact

    seen = []

    @exact
    def inner_():
        seen.append(decimal.getcontext())
        return Decimal(1) / Decimal(3)

    @exact
    def outer(fail=False):
        seen.append(decimal.getcontext())
        if fail:
            return Decimal("9e999999") * Decimal("9e999999")
        return inner_()

    with decimal.localcontext() as ctx:
        ctx.prec = 3
        assert len(str(outer())) > 60  # the engine's precision, not the caller's
        assert seen[0] is seen[1] and seen[0].prec != 3
        with pytest.raises(BadInput, match="outer: quantity out of range"):
            outer(fail=True)
        seen.clear()
        assert len(str(inner_())) > 60  # entered again after the error: the flag was reset
        assert seen[0].prec != 3
        assert decimal.getcontext().prec == 3
