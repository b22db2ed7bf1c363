"""What a replay leaves behind is freed by reference counting alone.

Long replays switch the cyclic collector off (``materialise.no_gc``: its passes over millions
of live objects cost more than the replay). Anything they drop inside a reference cycle then
stays until the replay ends: a stream of findings that answers hundreds of orders alone kept
every one of those engines (162 MB at 3M events, against 85 MB without).
"""

from __future__ import annotations

import gc
import weakref
from datetime import datetime, timedelta

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import simulate
from backflush.ledger.store import Ledger
from backflush.projections import asof, materialise
from backflush.projections.engine import Replay


@pytest.fixture
def no_collector():
    """The cyclic collector off, as in a long replay; what it would have found is counted
    by the test's own ``gc.collect()``."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Ledger:
    tmp = tmp_path_factory.mktemp("mem")
    path = tmp / "h.jsonl"
    faults = ("scrap", "late", "double-flush", "reversal", "unresolved-batch")
    events = list(simulate(30, 9, faults))
    # A report on the first order after everything else: every order named after it waits,
    # so a stream answers them alone (``asof._name_order``).
    first = next(e for e in events if e["type"] == "OperationReported")
    last_at = max(datetime.fromisoformat(e["at"]) for e in events if "at" in e)
    events.append({**first, "id": "late-report",
                   "at": (last_at + timedelta(hours=1)).isoformat()})
    path.write_bytes(b"".join(orjson.dumps(ev) + b"\n" for ev in events))
    led = Ledger(str(tmp / "l.db"))
    assert not run_import(led, [str(path)]).errors
    materialise.catch_up(led)
    yield led
    led.close()


def _orders(ledger: Ledger) -> list[str]:
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute("SELECT DISTINCT ord FROM bf_events WHERE ord IS NOT NULL"
                           " ORDER BY ord").fetchall()
    return [r["ord"] for r in rows]


def test_an_engine_dropped_is_freed_at_once(ledger, no_collector):
    engine = Replay()
    engine.apply_all(materialise.events_for_replay(ledger))
    assert engine.orders()
    gone = weakref.ref(engine)
    del engine
    assert gone() is None


def test_one_orders_findings_leave_nothing_for_the_collector(ledger):
    orders = _orders(ledger)
    assert len(orders) > 10
    # Once per process: the JSON scanner of a short query (its defaults are a class).
    asof.order_findings(ledger, orders[0])
    gc.collect()
    gc.disable()
    try:
        found = [asof.order_findings(ledger, o) for o in orders]
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert any(found)  # (orders with findings among them: their records were built too)
    assert unreachable == 0


@pytest.mark.parametrize("stream", ["findings", "hours"])
def test_whole_ledger_streams_leave_nothing_for_the_collector(ledger, monkeypatch, stream):
    """Every order answered alone as soon as one waits (``PATIENCE`` 1): the most engines
    a stream can make and drop, with the collector off as the stream has it."""
    monkeypatch.setattr(asof, "PATIENCE", 1)
    calls = []
    real = asof.order_replay if stream == "hours" else asof.order_findings

    def counted(*a, **kw):
        calls.append(a[1])
        return real(*a, **kw)

    monkeypatch.setattr(asof, "order_replay" if stream == "hours" else "order_findings",
                        counted)
    rows = asof.iter_findings if stream == "findings" else asof.iter_hours_by_order
    list(rows(ledger, retire_every=50))  # once: what a process builds once (JSON scanner)
    calls.clear()
    gc.collect()
    gc.disable()
    try:
        out = list(rows(ledger, retire_every=50))
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert out and len(calls) > 3
    assert unreachable == 0


def test_a_streaming_replay_keeps_no_change_log(ledger):
    """The change log is the materialiser's (``changelog.changes`` drains it): a replay
    that reads only the state empties it, all of it (the residuals of every ended order
    were kept: 94,000 entries at 3M events)."""
    steps = 0
    for engine, _done in asof._streaming_replay(ledger, None, None, None, 50,
                                                 keep_findings=True):
        steps += 1
        assert not (engine.balance_changes or engine.flushes or engine.staging_changes
                    or engine.unresolved_log or engine.residual_log)
    assert steps > 3
