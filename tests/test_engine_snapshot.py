"""Engine snapshots as data: a replay cut anywhere, saved, read back and continued gives what
the uninterrupted replay gives (reversals across the cut included); anything that is not this
version's data is refused, never evaluated."""

from __future__ import annotations

import zlib

import orjson
import pytest
from backflush.projections import snapshot
from backflush.projections.engine import Replay
from backflush.projections.findings import findings
from backflush.projections.strategies import histories
from hypothesis import given, settings
from hypothesis import strategies as st

V = "test"


def _answers(engine: Replay) -> tuple:
    return (engine.onhand(), engine.wip(), engine.consumption(), engine.hours(),
            engine.item_totals(), findings(engine), engine.reversed_ids())


def _logs(engine: Replay) -> tuple:
    out = (list(engine.balance_changes), list(engine.flushes))
    engine.balance_changes.clear()
    engine.flushes.clear()
    return out


@settings(deadline=None, max_examples=60)
@given(events=histories(max_orders=4), cut=st.floats(0, 1), twice=st.booleans())
def test_a_restored_snapshot_continues_exactly(events, cut, twice):
    k = int(len(events) * cut)
    whole = Replay().apply_all(events[:k])
    _logs(whole)  # a snapshot is taken with the change log drained
    resumed = Replay.restore(snapshot.loads(snapshot.dumps(whole.state(), V), V))
    if twice:  # a snapshot of a restored engine is as good
        resumed = Replay.restore(snapshot.loads(snapshot.dumps(resumed.state(), V), V))
    whole.apply_all(events[k:])
    resumed.apply_all(events[k:])
    assert _answers(resumed) == _answers(whole)
    assert _logs(resumed) == _logs(whole)


def _blob(doc) -> bytes:
    return zlib.compress(orjson.dumps(doc))


@pytest.mark.parametrize("state", [
    ["O", 0, "Popen", []],  # a class outside the engine's records
    ["O", 0, "OrderState", ["x"]],  # wrong shape
    ["Q", 1],  # unknown tag
    ["R", 5],  # reference to nothing
    ["M", 0, [[["L", 0, []], 1]]],  # an object number used twice
    ["D", "not a number"],
    ["T", "2026-01-01T00:00:00"],  # naive time
    "just a string",
])
def test_malformed_snapshots_are_refused(state):
    doc = {"format": snapshot.FORMAT, "version": snapshot.VERSION, "engine": V, "state": state}
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(_blob(doc), V)


def test_other_versions_and_non_snapshots_are_refused():
    engine = Replay()
    good = snapshot.dumps(engine.state(), V)
    assert snapshot.loads(good, V).keys() == engine.state().keys()
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(good, "another engine")
    doc = orjson.loads(zlib.decompress(good))
    doc["version"] = snapshot.VERSION + 1
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(_blob(doc), V)
    for junk in (b"", b"\x80\x04K\x01.", zlib.compress(b"\x80\x04K\x01."), _blob([1, 2])):
        with pytest.raises(snapshot.SnapshotError):
            snapshot.loads(junk, V)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(zlib.compress(b"[" * 5000 + b"]" * 5000), V)
