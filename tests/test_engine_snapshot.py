"""Engine snapshots as data: a replay cut anywhere, saved, read back and continued gives what
the uninterrupted replay gives (reversals across the cut included); anything that is not this
version's data is refused, never evaluated."""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime
from decimal import Decimal

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


@settings(deadline=None, max_examples=60)
@given(events=histories(max_orders=4), cut=st.floats(0, 1), part=st.sampled_from([0, 1, 64]))
def test_a_checkpoint_written_piece_by_piece_is_the_same_document(events, cut, part):
    # (the engine's part written piece by piece, as a checkpoint is, then joined with another)
    engine = Replay().apply_all(events[:int(len(events) * cut)])
    _logs(engine)
    state = engine.state()
    as_json, nxt = snapshot.encode_part_json(state, 1, part)
    tree, nxt_tree = snapshot.encode_part(state, 1)
    assert orjson.loads(as_json) == tree  # the same JSON, in lines
    assert nxt == nxt_tree
    other = [["a", "b"], ["a", "c"]]
    joined = snapshot.dumps_parts(
        [("engine", as_json), ("open", snapshot.encode_part_json(other, nxt, part)[0])], V)
    assert joined == snapshot.dumps({"engine": state, "open": other}, V, part)
    restored = Replay.restore(snapshot.loads(joined, V)["engine"])
    assert _answers(restored) == _answers(engine)
    # As a checkpoint's engine part is made: compressed as it is written (a zlib stream
    # of its own in the document), whatever the amount held before compressing.
    spill = snapshot._SPILL
    try:
        for snapshot._SPILL in (1, 100, spill):
            part_z, nxt_z, size = snapshot.encode_part_compressed(state, 1, part)
            assert zlib.decompress(part_z) == bytes(as_json)
            assert (nxt_z, size) == (nxt, len(as_json))
            multi = snapshot.dumps_parts(
                [("engine", part_z), ("open", snapshot.encode_part_json(other, nxt, part)[0])],
                V)
            assert _inflate(multi) == zlib.decompress(joined)
            restored = Replay.restore(snapshot.loads(multi, V)["engine"])
            assert _answers(restored) == _answers(engine)
    finally:
        snapshot._SPILL = spill


def _inflate(blob: bytes) -> bytes:
    """The text of a document of one or more zlib streams one after the other."""
    out = []
    while blob:
        z = zlib.decompressobj()
        out.append(z.decompress(blob))
        assert z.eof
        blob = z.unused_data
    return b"".join(out)


def test_a_document_of_several_streams_cut_or_of_another_version_is_refused():
    engine = _small_engine()
    part_z, nxt, _ = snapshot.encode_part_compressed(engine.state(), 1, 0)
    multi = snapshot.dumps_parts([("engine", part_z), ("open", snapshot.encode_part_json(
        [["a"]], nxt, 0)[0])], V)
    assert snapshot.loads(multi, V)["open"] == [["a"]]
    for cut in range(1, len(multi), max(1, len(multi) // 40)):
        with pytest.raises(snapshot.SnapshotError):
            snapshot.loads(multi[:cut], V)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(multi + b"x", V)
    text = _inflate(multi)
    assert b'"version":4' in text
    # Versions 2 and 3 numbered every object (as the encoder still does where reference
    # counts cannot be had): such documents still read, in one stream (as stop 23 wrote
    # them) or several (stop 24); a later version does not.
    every = _numbering_every_object(lambda: snapshot.dumps(engine.state(), V, 0))
    assert not re.search(rb'\["[LMOP]",null', zlib.decompress(every))
    assert re.search(rb'\["[LMOP]",null', text)
    for old in (b'"version":2', b'"version":3'):
        older = zlib.compress(zlib.decompress(every).replace(b'"version":4', old))
        assert _answers(Replay.restore(snapshot.loads(older, V))) == _answers(engine)
    with pytest.raises(snapshot.SnapshotError, match="another version"):
        snapshot.loads(zlib.compress(text.replace(b'"version":4', b'"version":5')), V)


def _numbering_every_object(make):
    """``make()`` with the encoder numbering every object, as versions 2 and 3 did."""
    saved = list(snapshot._SINGLE)
    snapshot._SINGLE[:] = [None]
    try:
        return make()
    finally:
        snapshot._SINGLE[:] = saved


def _blob(doc) -> bytes:
    """``doc`` as a document in lines (its state on one line)."""
    head = {k: v for k, v in doc.items() if k != "state"}
    head["state"] = None
    return zlib.compress(orjson.dumps(head)[:-5] + b"\n" + orjson.dumps(doc["state"]) + b"\n}")


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
    for junk in (b"", b"\x80\x04K\x01.", zlib.compress(b"\x80\x04K\x01."),
                 zlib.compress(orjson.dumps([1, 2]))):
        with pytest.raises(snapshot.SnapshotError):
            snapshot.loads(junk, V)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(zlib.compress(b"[" * 5000 + b"]" * 5000), V)


def _small_engine() -> Replay:
    events = [
        {"type": "ItemDefined", "item": "C", "decimals": 0, "tracking": "none"},
        {"type": "ItemDefined", "item": "FG", "decimals": 0, "tracking": "none"},
        {"type": "BomDefined", "bom": "B", "item": "FG",
         "lines": [{"line": 10, "item": "C", "qty": Decimal(2)}]},
        {"type": "OrderCreated", "order": "P1", "item": "FG", "qty": Decimal(5), "bom": "B"},
        {"type": "ReportedAsFinished", "order": "P1", "good": Decimal(5)},
    ]
    at = datetime(2026, 11, 21, 8, tzinfo=UTC)
    for i, ev in enumerate(events):
        ev.update(at=at, seq=i + 1, id=f"e{i}")
    engine = Replay().apply_all(events)
    _logs(engine)
    return engine


def test_one_long_order_is_written_a_line_at_a_time_in_a_checkpoint():
    """A checkpoint's engine part is written a line per entry for large containers and long
    orders, also where they sit in a small one: the table of open orders with a single order
    of 200,000 events was built whole as a tree (~130 MB for its 32 MB of JSON)."""
    engine = _small_engine()
    at = datetime(2026, 11, 21, 9, tzinfo=UTC)
    n = 500
    engine.apply_all([
        {"type": "OrderCreated", "order": "P2", "item": "FG", "qty": Decimal(5), "bom": "B",
         "at": at, "seq": 100, "id": "c2"},
        *({"type": "OperationReported", "order": "P2", "op": 10, "good": Decimal(1),
           "at": at, "seq": 101 + i, "id": f"r{i}"} for i in range(n)),
    ])
    _logs(engine)
    o = engine.order_state("P2")
    assert len(o.events) > n and len(o.out_of_sequence) >= n  # (several a report)
    state = engine.state()
    as_json, _ = snapshot.encode_part_json(state, 1)
    # its event ids and its records a line each; every line short
    assert as_json.count(b"\n") > 2 * n
    assert max(map(len, bytes(as_json).split(b"\n"))) < 1000
    tree, _ = snapshot.encode_part(state, 1)
    assert orjson.loads(as_json) == tree
    restored = Replay.restore(snapshot.loads(snapshot.dumps_parts(
        [("engine", as_json), ("open", snapshot.encode_part_json([], _)[0])], V), V)["engine"])
    assert _answers(restored) == _answers(engine)


def _document_in_lines() -> list[bytes]:
    return zlib.decompress(snapshot.dumps(_small_engine().state(), V, part=0)).split(b"\n")


def test_a_document_in_lines_cut_or_unbalanced_is_refused():
    lines = _document_in_lines()
    assert snapshot.loads(zlib.compress(b"\n".join(lines)), V)["_orders"]["P1"].order == "P1"
    record = next(i for i, x in enumerate(lines) if x.lstrip(b",").startswith(b'["O",'))
    broken = {
        "cut": lines[:-3],
        "no end": lines[:-1],
        "a ]] too many": [*lines[:-1], b"]]", lines[-1]],
        "a ]] too few": [x for i, x in enumerate(lines) if i != len(lines) - 2],
        "a field too few": [x for i, x in enumerate(lines) if i != record + 1],
        "after the end": [*lines, b"{}"],
        "an entry in a list": [*lines[:record + 1], b'["k",', *lines[record + 1:]],
    }
    for why, doc in broken.items():
        with pytest.raises(snapshot.SnapshotError):
            snapshot.loads(zlib.compress(b"\n".join(doc)), V)
            pytest.fail(why)
    whole = snapshot.dumps(Replay().state(), V)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.loads(whole[:-4], V)  # the compressed stream cut


# --- version 4: only what is reachable by more than one path is numbered -------------------

_PLAIN_TYPES = (type(None), str, int, bool, Decimal, datetime)


def _sharing(root) -> list:
    """The shape of ``root``'s graph of objects, as a list of tokens that is the same for two
    graphs exactly when they are the same up to identity: each list, dict, record and
    parameter set is ``("new", type)`` where first met and ``("again", k)`` (the k-th met)
    wherever it is met after; values are themselves."""
    from backflush.projections.rules import Params

    met: dict[int, int] = {}
    keep = []
    out: list = []
    todo = [root]
    while todo:
        v = todo.pop()
        t = type(v)
        if t in _PLAIN_TYPES:
            out.append(v)
        elif t is tuple:
            out.append(("tuple", len(v)))
            todo.extend(reversed(v))
        elif t in (set, frozenset):
            out.append((t.__name__, sorted(map(repr, v))))
        elif id(v) in met:
            out.append(("again", met[id(v)]))
        else:
            met[id(v)] = len(met)
            keep.append(v)
            out.append(("new", t.__name__))
            if t is list:
                todo.extend(reversed(v))
            elif t is dict:
                out.append(len(v))
                todo.extend(reversed([x for kv in v.items() for x in kv]))
            elif t is Params:
                out.append((v.default_input_location, v.tolerance_pct, v.rules.rules, v.source))
            else:
                todo.extend(reversed([getattr(v, f) for f in snapshot._field_names(t)]))
    return out


@settings(deadline=None, max_examples=60)
@given(events=histories(max_orders=4), cut=st.floats(0, 1), undo_all=st.booleans())
def test_a_restored_state_shares_exactly_what_the_engine_shares(events, cut, undo_all):
    # The undo log of every event (``reversible=None``) points at the very counters and
    # lists of orders and lines: the most sharing a state has.
    engine = Replay(reversible=None if undo_all else set())
    engine.apply_all(events[:int(len(events) * cut)])
    _logs(engine)
    state = engine.state()
    doc = snapshot.dumps(state, V)
    assert _sharing(snapshot.loads(doc, V)) == _sharing(state)
    part, nxt, _ = snapshot.encode_part_compressed(state, 1, 0)
    joined = snapshot.dumps_parts([("engine", part), ("open", snapshot.encode_part_json(
        [], nxt)[0])], V)
    assert _sharing(snapshot.loads(joined, V)["engine"]) == _sharing(state)
    # an order is numbered (its lines point back to it); its dict of lines is not
    if engine._orders:  # noqa: SLF001
        assert re.search(rb'\["O",\d+,"OrderState"', zlib.decompress(doc))
        assert re.search(rb'\["M",null,', zlib.decompress(doc))


def _round_trip(state: dict) -> dict:
    return snapshot.loads(snapshot.dumps(state, V, part=0), V)


def test_what_a_tuple_met_twice_holds_stays_one_object():
    # A tuple is written in full wherever it is met: the list in it must still be one list.
    inner: list = [1]
    pair = (inner, "x")
    back = _round_trip({"a": pair, "b": [pair], "c": {"k": pair}})
    assert back["a"][0] is back["b"][0][0] is back["c"]["k"][0]
    back["a"][0].append(2)
    assert back["c"]["k"][0] == [1, 2]
    del inner, pair
    # a list held once, by a tuple held once, is written once and not numbered
    doc = zlib.decompress(snapshot.dumps({"a": ([5],)}, V, part=0))
    assert b'["L",null,[5]]' in doc
    # a list held by two containers, a dict by a list and a record, a record by two
    lone: list = []
    shared = {"n": Decimal("1.50")}
    back = _round_trip({"x": [lone, shared], "y": [shared], "z": lone})
    assert back["x"][0] is back["z"] and back["x"][1] is back["y"][0]
    assert back["x"][1]["n"] == Decimal("1.50")


def test_objects_referred_to_from_outside_the_state_are_numbered_needlessly_not_lost():
    # A caller's variable (or a cache) holding an object makes it look shared: it is then
    # numbered, which costs a number, never a wrong graph.
    state = {"a": [[1], [2]], "b": {"k": [3]}}
    held = state["a"][0]
    doc = zlib.decompress(snapshot.dumps(state, V))
    assert b'["L",null,[2]]' in doc and b'["L",null,[1]]' not in doc
    assert _round_trip(state) == {"a": [[1], [2]], "b": {"k": [3]}}
    del held


def test_reference_counts_are_measured_on_this_python():
    single = snapshot._single()
    assert single is not None  # CPython: the counts are there and behave
    x: list = []
    shared: dict[int, None] = {}
    snapshot._walk([[x], [x]], single, shared)  # (x also held here: numbered either way)
    assert id(x) in shared
    lone: dict[int, None] = {}
    snapshot._walk([[[]], [[]]], single, lone)
    assert len(lone) == 0
