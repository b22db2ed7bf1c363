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
