"""Streamed findings and hours: an order that holds the others back is answered alone.

`findings` and `hours` of a whole ledger print by order name, each order once every order
named before it is final. A plant numbers its orders as it opens them, so that is early,
unless an order named first is touched again late (a correction posted to it after it
ended): then every later name waited for the end of the replay, and so did the first
output byte. Such an order is now answered from its own events (the ``--order`` paths)
once enough orders wait behind it. These tests hold the streamed answers to what they
were, with the names of a simulated history reversed (so nearly every order is blocked
and answered alone) and with a late correction, on SQLite and PostgreSQL, and check that
the first rows come before the replay has read the history.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger, to_us
from backflush.projections import asof
from backflush.projections import materialise as mat

# Faults that give findings of every kind an order can have, negative on-hand and takes
# with no batch (which depend on other orders' stock) among them, and harmless
# disturbances (reversals, late and split reports).
FAULTS = ("double-flush:0.1", "scrap:0.1", "no-stock:0.15", "unresolved-batch:0.1",
          "residual:0.1", "over-report:0.05", "after-end:0.05", "wip-not-cleared:0.05",
          "reversal", "late", "split")
NEVER = 10**9  # a patience no history reaches: the replay's own rows, as before


def _history(orders: int, seed: int, *, reverse_names: bool = False,
             correct_first: bool = False) -> list[dict[str, Any]]:
    events = list(simulate(orders, seed, FAULTS))
    if reverse_names:
        names = sorted({e["order"] for e in events if "order" in e})
        flip = dict(zip(names, [f"Q{len(names) - i:05d}" for i in range(len(names))],
                        strict=True))
        for e in events:
            if "order" in e:
                e["order"] = flip[e["order"]]
    if correct_first:
        # A manual consumption posted to the first order long after it ended.
        first = min(e["order"] for e in events if e["type"] == "OrderCreated")
        take = next(e for e in events if e["type"] == "Put" and e.get("order") == first)
        last = max(e["at"] for e in events)
        events.append({"type": "MaterialConsumed", "at": last, "id": "late-correction",
                       "order": first, "item": take["item"], "qty": "1",
                       "line": take["line"], "location": take["location"]})
    return events


def _ledger(db: str, tmp_path: Path, events: list[dict[str, Any]]) -> Ledger:
    src = tmp_path / "h.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    ledger = Ledger(db)
    result = run_import(ledger, [str(src)])
    assert not result.errors, result.errors[:3]
    return ledger


def _count_reads(monkeypatch: Any) -> list[int]:
    """A counter (``[n]``) of the events the replays read from now on (``monkeypatch``'s
    scope)."""
    read = [0]
    events_for_replay = mat.events_for_replay

    def counting(*a: Any, **k: Any) -> Any:
        for ev in events_for_replay(*a, **k):
            read[0] += 1
            yield ev

    monkeypatch.setattr(mat, "events_for_replay", counting)
    return read


def _streams(ledger: Ledger, **kw: Any) -> tuple[list[Any], list[Any]]:
    found = [f.as_dict() for f in asof.iter_findings(ledger, retire_every=1, **kw)]
    hours = list(asof.iter_hours_by_order(ledger, retire_every=1, **kw))
    return found, hours


@pytest.mark.parametrize("seed", [1, 5])
def test_orders_answered_alone_give_the_replays_rows(db_url, tmp_path, monkeypatch, seed):
    ledger = _ledger(db_url, tmp_path, _history(40, seed, reverse_names=True))
    try:
        monkeypatch.setattr(asof, "PATIENCE", NEVER)
        before = _streams(ledger)
        assert before[0] and before[1]
        codes = {f["code"] for f in before[0]}
        assert {"NEGATIVE_ON_HAND", "UNRESOLVED_BATCH", "SCRAP_SHORTFALL"} <= codes, codes

        alone: list[str] = []
        order_findings, order_replay = asof.order_findings, asof.order_replay

        def counted_findings(ledger: Ledger, order: str, *a: Any) -> list[Any]:
            alone.append(order)
            return order_findings(ledger, order, *a)

        def counted_replay(ledger: Ledger, order: str, *a: Any) -> Any:
            alone.append(order)
            return order_replay(ledger, order, *a)

        monkeypatch.setattr(asof, "order_findings", counted_findings)
        monkeypatch.setattr(asof, "order_replay", counted_replay)
        monkeypatch.setattr(asof, "PATIENCE", 1)
        assert _streams(ledger) == before
        # Reversed names: the first name ends last. One order answered alone per order
        # that became final: the two meet halfway, for findings and for hours.
        assert len(alone) >= 30
        # Also with an --at in the middle and one code asked for.
        times = sorted(e["at"] for e in _history(40, seed))
        kw = {"at": datetime.fromisoformat(times[len(times) // 2])}
        monkeypatch.setattr(asof, "PATIENCE", NEVER)
        expected = _streams(ledger, **kw)
        monkeypatch.setattr(asof, "PATIENCE", 1)
        assert _streams(ledger, **kw) == expected
        found = [f.as_dict() for f in asof.iter_findings(ledger, codes=["NEGATIVE_ON_HAND"])]
        assert found == [f for f in before[0] if f["code"] == "NEGATIVE_ON_HAND"]
    finally:
        ledger.close()


def test_a_late_correction_to_the_first_order_does_not_hold_the_stream(
        sqlite_db, tmp_path, monkeypatch):
    events = _history(60, 3, correct_first=True)
    ledger = _ledger(sqlite_db, tmp_path, events)
    try:
        read = _count_reads(monkeypatch)

        def first_after(patience: int) -> tuple[int, int, list[Any], list[Any]]:
            monkeypatch.setattr(asof, "PATIENCE", patience)
            read[0] = 0
            it = asof.iter_hours_by_order(ledger, retire_every=1)
            hours = [next(it)]
            at_first_hours = read[0]
            hours += it
            read[0] = 0
            it2 = asof.iter_findings(ledger, retire_every=1)
            found = [next(it2)]
            at_first_finding = read[0]
            found += it2
            return at_first_hours, at_first_finding, hours, [f.as_dict() for f in found]

        held_h, held_f, hours, found = first_after(NEVER)
        # Without answering alone, the first rows waited for the whole replay.
        assert held_h >= len(events) - 1 and held_f >= len(events) - 1
        early_h, early_f, hours2, found2 = first_after(5)
        assert (hours2, found2) == (hours, found)
        assert early_h < len(events) // 2 and early_f < len(events) // 2
        # The correction is in the first order's answer.
        first = min(e["order"] for e in events if e["type"] == "OrderCreated")
        assert found[0]["order"] == first
        assert "late-correction" in {i for f in found for i in f["events"]}
    finally:
        ledger.close()


def _fix_policy() -> dict[str, Any]:
    from backflush.ledger.codec import replay_policy

    path = Path(__file__).resolve().parents[1] / "examples" / "001-terminals-and-scanner" \
        / "fix-policy.json"
    return replay_policy(orjson.loads(path.read_bytes()))


def _first_finding_after(ledger: Ledger, monkeypatch, **kw: Any) -> tuple[int, list[Any]]:
    """(events read when the first finding came, every finding) of a streamed findings."""
    with monkeypatch.context() as m:
        read = _count_reads(m)
        it = asof.iter_findings(ledger, retire_every=1, **kw)
        found = [next(it)]
        at_first = read[0]
        found += it
    return at_first, [f.as_dict() for f in found]


def test_what_if_findings_stream_unless_a_take_is_outside_every_order(db_url, tmp_path,
                                                                    monkeypatch):
    """Under --policy the recorded negatives say nothing of the what-if's, so findings of
    no order (which sort first) could only be known at the end; but only a take outside
    every order makes one, and the events say whether there is any: if not, the what-if
    streams like the recorded findings."""
    from backflush.projections.findings import findings, sort_key

    policy = _fix_policy()
    events = _history(60, 2)
    ledger = _ledger(db_url, tmp_path, events)
    try:
        assert not mat.orderless_takes_possible(ledger, None, ledger.max_seq())
        full = sorted(findings(asof.replay(ledger, policy=policy)), key=sort_key)
        at_first, found = _first_finding_after(ledger, monkeypatch, policy=policy)
        assert found == [f.as_dict() for f in full] and found
        assert at_first < len(events) // 2
    finally:
        ledger.close()
    # A transfer out of a location that holds nothing: a take of no order, negative on-hand
    # of no order, first in the list: held to the end, and there.
    item = next(e["item"] for e in events if e["type"] == "ItemDefined")
    transfer = {"type": "InventoryTransferred", "at": max(e["at"] for e in events),
                "id": "t-out", "item": item, "qty": "5", "from_location": "NOWHERE",
                "to_location": "BULK"}
    src = tmp_path / "t.jsonl"
    src.write_bytes(orjson.dumps(transfer) + b"\n")
    ledger = Ledger(db_url)
    assert not run_import(ledger, [str(src)]).errors
    try:
        assert mat.orderless_takes_possible(ledger, None, ledger.max_seq())
        full = sorted(findings(asof.replay(ledger, policy=policy)), key=sort_key)
        at_first, found = _first_finding_after(ledger, monkeypatch, policy=policy)
        assert found == [f.as_dict() for f in full]
        assert found[0]["order"] is None and found[0]["code"] == "NEGATIVE_ON_HAND"
        assert at_first >= len(events)
    finally:
        ledger.close()


def test_a_pick_before_its_order_is_created_is_a_take_of_no_order(sqlite_db, tmp_path):
    events = _history(10, 4)
    first = min(e["order"] for e in events if e["type"] == "OrderCreated")
    created = next(e for e in events if e["type"] == "OrderCreated" and e["order"] == first)
    pick = next(e for e in events if e["type"] == "Picked" and e.get("order") == first)
    early = {**pick, "id": "early-pick", "at": created["at"][:10] + "T00:00:00Z"}
    assert early["at"] < created["at"]
    ledger = _ledger(sqlite_db, tmp_path, [*events, early])
    try:
        assert mat.orderless_takes_possible(ledger, None, ledger.max_seq())
        # ... but not as of before it, nor among the events up to the one before it.
        at = to_us(datetime.fromisoformat(early["at"].replace("Z", "+00:00")))
        assert not mat.orderless_takes_possible(ledger, at - 1, ledger.max_seq())
        assert not mat.orderless_takes_possible(ledger, None, ledger.max_seq() - 1)
    finally:
        ledger.close()


# --- a ledger written while a stream reads it ------------------------------------------------


def _import_events(db: str, tmp_path: Path, name: str, events: list[dict[str, Any]]) -> None:
    """Import ``events`` through a ledger of its own, as another process would."""
    src = tmp_path / f"{name}.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    other = Ledger(db)
    try:
        result = run_import(other, [str(src)])
        assert not result.errors and result.appended == len(events), result.errors[:3]
    finally:
        other.close()


def _late_for(events: list[dict[str, Any]], order: str, tag: str) -> list[dict[str, Any]]:
    """A late manual consumption and a late operation report (with hours) for ``order``."""
    put = next(e for e in events if e["type"] == "Put" and e.get("order") == order)
    last = max(e["at"] for e in events)
    return [
        {"type": "MaterialConsumed", "at": last, "id": f"{tag}-mc", "order": order,
         "item": put["item"], "qty": "1", "line": put["line"], "location": put["location"]},
        {"type": "OperationReported", "at": last, "id": f"{tag}-op", "order": order,
         "op": 10, "good": "0", "hours": "7.5"},
    ]


def test_an_order_answered_alone_sees_no_import_made_after_the_stream_began(
        db_url, tmp_path, monkeypatch):
    """Answering an order alone reads its events and the projections as they are now. An
    import committed after the stream began must not show there when the replay's rows
    (pinned at the start) do not have it: the stream gives the answer of one moment."""
    events = _history(40, 1, reverse_names=True)
    ledger = _ledger(db_url, tmp_path, events)
    try:
        monkeypatch.setattr(asof, "PATIENCE", NEVER)
        found_before = [f.as_dict() for f in asof.iter_findings(ledger, retire_every=1)]
        hours_before = list(asof.iter_hours_by_order(ledger, retire_every=1))
        asked: list[str] = []
        order_findings, order_replay = asof.order_findings, asof.order_replay

        def import_then(real: Any, tag: str) -> Any:
            def answer(ledger: Ledger, order: str, *a: Any) -> Any:
                if not asked:  # the first order answered alone: a scanner syncs now
                    asked.append(order)
                    _import_events(db_url, tmp_path, tag, _late_for(events, order, tag))
                return real(ledger, order, *a)
            return answer

        monkeypatch.setattr(asof, "order_findings", import_then(order_findings, "f"))
        monkeypatch.setattr(asof, "PATIENCE", 1)
        found = [f.as_dict() for f in asof.iter_findings(ledger, retire_every=1)]
        assert asked, "no order was answered alone"
        assert found == found_before
        # The import changed that order's findings: a stream begun now has them.
        monkeypatch.setattr(asof, "PATIENCE", NEVER)
        found_now = [f.as_dict() for f in asof.iter_findings(ledger, retire_every=1)]
        assert found_now != found_before
        assert "f-mc" in {i for f in found_now for i in f["events"]}

        hours_before = list(asof.iter_hours_by_order(ledger, retire_every=1))
        asked.clear()
        monkeypatch.setattr(asof, "order_replay", import_then(order_replay, "h"))
        monkeypatch.setattr(asof, "PATIENCE", 1)
        hours = list(asof.iter_hours_by_order(ledger, retire_every=1))
        assert asked
        assert hours == hours_before
        monkeypatch.setattr(asof, "order_replay", order_replay)
        monkeypatch.setattr(asof, "PATIENCE", NEVER)
        assert list(asof.iter_hours_by_order(ledger, retire_every=1)) != hours_before
    finally:
        ledger.close()


def test_findings_of_no_order_are_not_lost_to_an_import_during_the_check(
        db_url, tmp_path, monkeypatch):
    """Whether findings can stream by order name is read from the projections, caught up
    as they are now. A late receipt imported meanwhile can cover the only take of no order
    there, while the replay (pinned before it) still finds that take's negative on-hand:
    its finding, which sorts first, must still be in the answer, in place."""
    from backflush.projections.findings import findings, sort_key

    events = _history(30, 6)
    item = next(e["item"] for e in events if e["type"] == "ItemDefined")
    last = max(e["at"] for e in events)
    out = {"type": "InventoryTransferred", "at": last, "id": "t-out", "item": item,
           "qty": "5", "from_location": "NOWHERE", "to_location": "BULK"}
    ledger = _ledger(db_url, tmp_path, [*events, out])
    try:
        expected = [f.as_dict() for f in sorted(findings(asof.replay(ledger)), key=sort_key)]
        assert expected[0]["order"] is None and expected[0]["code"] == "NEGATIVE_ON_HAND"
        catch_up = mat.catch_up
        done: list[bool] = []

        def import_then_catch_up(ledger: Ledger) -> int:
            if not done:
                done.append(True)
                _import_events(db_url, tmp_path, "r", [
                    {"type": "InventoryReceived", "at": events[0]["at"], "id": "late-in",
                     "item": item, "qty": "5", "location": "NOWHERE"}])
            return catch_up(ledger)

        monkeypatch.setattr(mat, "catch_up", import_then_catch_up)
        found = [f.as_dict() for f in asof.iter_findings(ledger, retire_every=1)]
        assert done
        assert found == expected
        assert not mat.orderless_negative(ledger)  # as the ledger is now: covered
    finally:
        ledger.close()


def test_hours_plan_and_replay_are_of_the_same_events(db_url, tmp_path, monkeypatch):
    """The stream's plan (every order and when its last event is) must be of the events
    the replay reads. Read before an import and replayed after it, an order the import
    added came from the replay unplanned, at the end, after orders named behind it."""
    events = _history(30, 8)
    first = min(e["order"] for e in events if e["type"] == "OrderCreated")
    lifecycle = ("OrderCreated", "OrderReleased", "OrderStarted", "OperationReported",
                 "ReportedAsFinished", "OrderEnded")
    # A copy of the first order's life, named before every other order.
    added = [{**e, "order": "A0000001", "id": f"added-{n}"}
             for n, e in enumerate(e for e in events
                                   if e.get("order") == first and e["type"] in lifecycle)]
    ledger = _ledger(db_url, tmp_path, events)
    try:
        before = list(asof.iter_hours_by_order(ledger, retire_every=1))
        plan_of = mat.last_event_of_orders
        done: list[bool] = []

        def plan_then_import(ledger: Ledger) -> list[tuple[int, str]]:
            plan = plan_of(ledger)
            if not done:
                done.append(True)
                _import_events(db_url, tmp_path, "p", added)
            return plan

        monkeypatch.setattr(mat, "last_event_of_orders", plan_then_import)
        during = list(asof.iter_hours_by_order(ledger, retire_every=1))
        assert done
        assert during == before
        monkeypatch.setattr(mat, "last_event_of_orders", plan_of)
        now = list(asof.iter_hours_by_order(ledger, retire_every=1))
        assert now[0]["order"] == "A0000001" and now[len(now) - len(before):] == before
    finally:
        ledger.close()
