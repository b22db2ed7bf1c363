"""Incremental, late-tolerant catch-up: whatever the arrival order, the split into imports, the
reversals and late events, the projections equal those of a full rebuild, on SQLite and
PostgreSQL; and a late event re-replays from a checkpoint, not from the start."""

from __future__ import annotations

import gzip
import random
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.store import Ledger, to_us
from backflush.projections import asof, materialise, snapshot
from conftest import replay_steps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backflush.testing.strategies import histories, plain_event

PROFILE = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
    max_examples=int(__import__("os").environ.get("INC_EXAMPLES", "20")),
)
GOLDEN = Path(__file__).parent / "golden"


def _import(ledger: Ledger, path: Path, events: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(plain_event(e)) + b"\n" for e in events))
    res = run_import(ledger, [str(path)])
    assert not res.errors, [str(e) for e in res.errors[:5]]


_DEFINES = {"ItemDefined": "item", "ResourceDefined": "resource", "BomDefined": "bom",
            "RouteDefined": "route", "OrderCreated": "order"}


def _refs(e: dict) -> set[tuple[str, str]]:
    """Names an event refers to (the importer wants each defined before, by arrival)."""
    out = set()
    for kind in ("item", "bom", "route", "order"):
        if e.get(kind) is not None and not (_DEFINES.get(e["type"]) == kind):
            out.add((kind, e[kind]))
    for line in e.get("lines") or ():
        out.add(("item", line["item"]))
    for op in e.get("operations") or ():
        if op.get("resource") is not None:
            out.add(("resource", op["resource"]))
    if e["type"] == "Reversal":
        out.add(("event", e["reverses"]))
    return out


def random_arrival(events: list[dict], rnd: random.Random) -> list[dict]:
    """A random arrival order in which every referenced name or event comes before its use."""
    first: dict[tuple[str, str], int] = {}
    for i, e in enumerate(events):
        first.setdefault(("event", e["id"]), i)
        kind = _DEFINES.get(e["type"])
        if kind is not None:
            first.setdefault((kind, e[kind]), i)
    deps = [{first[r] for r in _refs(e) if r in first and first[r] != i}
            for i, e in enumerate(events)]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    out = []
    while ready:
        i = ready.pop(rnd.randrange(len(ready)))
        out.append(events[i])
        for u in users.get(i, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    assert len(out) == len(events)
    return out


def projection(ledger: Ledger) -> dict:
    """The materialised tables by content, and the answers read from them."""
    out = {}
    with ledger.transaction(commit=False) as cur:
        out["onhand"] = sorted(tuple(r.values()) if isinstance(r, dict) else tuple(r)
                               for r in cur.execute(
            "SELECT k.item, k.location, COALESCE(k.batch, '') AS b, COALESCE(k.lp, '') AS l,"
            " h.at_us, h.seq, h.n, h.balance FROM bf_onhand_hist h JOIN bf_onhand_keys k"
            " ON k.key_id = h.key_id").fetchall())
        out["wip"] = sorted(tuple(r.values()) if isinstance(r, dict) else tuple(r)
                            for r in cur.execute(
            "SELECT COALESCE(k.resource, '') AS r, COALESCE(k.location, '') AS l, k.kind,"
            " COALESCE(k.ord, '') AS o, COALESCE(k.op, -1) AS op, COALESCE(k.item, '') AS i,"
            " COALESCE(k.batch, '') AS b, h.at_us, h.seq, h.n, h.balance FROM bf_wip_hist h"
            " JOIN bf_wip_keys k ON k.key_id = h.key_id").fetchall())
        out["flushes"] = sorted(tuple(r.values()) if isinstance(r, dict) else tuple(r)
                                for r in cur.execute(
            "SELECT event_id, at_us, seq, n, ord, line, item, trig, device, qty, location,"
            " COALESCE(batch, '') AS b, COALESCE(lp, '') AS l FROM bf_flushes").fetchall())
        for t in ("bf_unresolved", "bf_negative", "bf_residual", "bf_staging"):
            out[t] = sorted(tuple("" if v is None else v for v in (
                r.values() if isinstance(r, dict) else r))
                for r in cur.execute(f"SELECT * FROM {t}").fetchall())
        ats = sorted({r[4] for r in out["onhand"]} | {r[7] for r in out["wip"]})
    out["now"] = (asof.onhand(ledger), asof.wip(ledger))
    for at_us in ats[:: max(1, len(ats) // 6)]:
        out[at_us] = (materialise.onhand_asof(ledger, at_us),
                      materialise.wip_asof(ledger, at_us))
    return out


@pytest.fixture
def small_steps(monkeypatch):
    """Checkpoints and pages of a few events, so short histories cross many of both."""
    replay_steps(monkeypatch, page=4, every=3, near_every=1, near_span=5)


def _check(tmp: Path, url_a: str, url_b: str, events, seed: int, cuts: list[int],
           skip: list[bool]) -> None:
    rnd = random.Random(seed)
    arrival = random_arrival(events, rnd)
    inc, ref = Ledger(url_a), Ledger(url_b)
    try:
        bounds = sorted({0, len(arrival), *(c % (len(arrival) + 1) for c in cuts)})
        for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            _import(inc, tmp / f"part{k}.jsonl", arrival[a:b])
            if not skip[k % len(skip)]:
                materialise.catch_up(inc)
        materialise.catch_up(inc)
        # The same recording order in one import: events with equal ``at`` are ordered by
        # recording (DESIGN), so only the split and the catch-ups differ.
        _import(ref, tmp / "all.jsonl", arrival)
        materialise.rebuild(ref)
        assert projection(inc) == projection(ref)
    finally:
        inc.close()
        ref.close()


@PROFILE
@given(events=histories(max_orders=4), seed=st.integers(0, 10_000),
       cuts=st.lists(st.integers(0, 500), max_size=5),
       skip=st.lists(st.booleans(), min_size=1, max_size=4))
def test_any_arrival_and_split_equals_a_full_rebuild(tmp_path_factory, small_steps, events,
                                                      seed, cuts, skip):
    tmp = tmp_path_factory.mktemp("inc")
    _check(tmp, str(tmp / "a.db"), str(tmp / "b.db"), events, seed, cuts, skip)


@PROFILE
@given(events=histories(max_orders=4), seed=st.integers(0, 10_000),
       cuts=st.lists(st.integers(0, 500), min_size=1, max_size=5),
       skip=st.lists(st.booleans(), min_size=1, max_size=4))
def test_taking_retired_orders_back_equals_a_full_rebuild(tmp_path_factory, small_steps,
                                                          monkeypatch, events, seed, cuts, skip):
    # Whenever a new event names an order a checkpoint retired, take it back (``_revive``)
    # instead of replaying from before its last event, however cheap that would be.
    monkeypatch.setattr(materialise, "REVIVE_COST", -(10**9))
    tmp = tmp_path_factory.mktemp("rev")
    _check(tmp, str(tmp / "a.db"), str(tmp / "b.db"), events, seed, cuts, skip)


@pytest.mark.postgres
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None, max_examples=5)
@given(events=histories(max_orders=3), seed=st.integers(0, 10_000),
       cuts=st.lists(st.integers(0, 500), min_size=1, max_size=4))
def test_any_arrival_and_split_equals_a_full_rebuild_on_postgresql(
        tmp_path_factory, pg_url, small_steps, events, seed, cuts):
    import uuid

    import psycopg

    tmp = tmp_path_factory.mktemp("incpg")
    names = ["t_" + uuid.uuid4().hex[:12] for _ in range(2)]
    with psycopg.connect(pg_url, autocommit=True) as con:
        for n in names:
            con.execute(f"CREATE DATABASE {n}")
    base = pg_url.rsplit("/", 1)[0]
    try:
        _check(tmp, f"{base}/{names[0]}", f"{base}/{names[1]}", events, seed, cuts, [False])
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            for n in names:
                con.execute(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")


def _sim_events() -> list[bytes]:
    data = gzip.decompress((GOLDEN / "sim-120-s2-all-faults.jsonl.gz").read_bytes())
    return [line for line in data.splitlines() if line.strip()]


def test_a_late_event_replays_from_a_checkpoint_not_from_the_start(tmp_path, monkeypatch,
                                                                    db_url):
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", 200)
    lines = _sim_events()
    at = [orjson.loads(x)["at"] for x in lines]
    # Hold back a few stock moves from the last tenth of the floor's time: they arrive late.
    order = sorted(range(len(lines)), key=lambda i: at[i])
    tail = order[int(len(order) * 0.9):]
    late = [i for i in tail if orjson.loads(lines[i])["type"] == "InventoryCounted"][:3]
    assert late
    first = [x for i, x in enumerate(lines) if i not in set(late)]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(first) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(lines[i] for i in late) + b"\n")
    inc = Ledger(db_url)
    try:
        assert not run_import(inc, [str(tmp_path / "a.jsonl")]).errors
        assert materialise.catch_up(inc) == len(first)
        assert not run_import(inc, [str(tmp_path / "b.jsonl")]).errors
        applied = materialise.catch_up(inc)
        # Re-replayed: the late events and what follows them, not the whole history.
        assert len(late) <= applied < len(lines) // 5
        got = projection(inc)
        materialise.rebuild(inc)
        assert got == projection(inc)
    finally:
        inc.close()


def test_a_correction_to_an_old_order_replays_from_itself_not_from_the_order(
        tmp_path, monkeypatch, db_url):
    """A manual consumption posted to the first order at the end of the history: the
    order is taken back from its own past, and the catch-up replays what follows the
    correction, not the whole history since the order's last event."""
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", 200)
    lines = _sim_events()
    events = [orjson.loads(x) for x in lines]
    first = min(e["order"] for e in events if e["type"] == "OrderCreated")
    take = next(e for e in events if e["type"] == "Put" and e.get("order") == first)
    end = max(e["at"] for e in events)
    fix = {"type": "MaterialConsumed", "at": end, "id": "fix-1", "order": first,
           "item": take["item"], "qty": "1", "line": take["line"],
           "location": take["location"]}
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(orjson.dumps(fix) + b"\n")
    # Then a late stock count of the middle of the history: replayed from a checkpoint
    # taken before the correction was recorded, which does not hold the first order: it
    # is taken back again. And a second correction.
    mid = sorted(e["at"] for e in events)[len(events) // 2]
    count = next(e for e in events if e["type"] == "InventoryCounted")
    late = {**count, "id": "late-1", "at": mid}
    (tmp_path / "c.jsonl").write_bytes(orjson.dumps(late) + b"\n")
    (tmp_path / "d.jsonl").write_bytes(orjson.dumps({**fix, "id": "fix-2"}) + b"\n")
    inc = Ledger(db_url)
    try:
        assert not run_import(inc, [str(tmp_path / "a.jsonl")]).errors
        materialise.catch_up(inc)
        assert not run_import(inc, [str(tmp_path / "b.jsonl")]).errors
        assert materialise.catch_up(inc) < 200
        got = projection(inc)
        found = asof.order_findings(inc, first)
        assert "fix-1" in {i for f in found for i in f.events}
        materialise.rebuild(inc)
        assert got == projection(inc)
        assert asof.order_findings(inc, first) == found
        for name in ("c", "d"):
            assert not run_import(inc, [str(tmp_path / f"{name}.jsonl")]).errors
            materialise.catch_up(inc)
            got = projection(inc)
            materialise.rebuild(inc)
            assert got == projection(inc)
    finally:
        inc.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None, max_examples=int(__import__("os").environ.get("INC_EXAMPLES", "20")) // 2)
@given(picks=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
           ["consume", "return", "report", "finish", "reverse"]), st.integers(0, 10**6),
           st.integers(0, 10**6)), min_size=1, max_size=6),
       cuts=st.lists(st.integers(1, 5), max_size=2), late=st.integers(0, 10**6))
def test_corrections_to_retired_orders_equal_a_full_rebuild(tmp_path_factory, monkeypatch,
                                                            picks, cuts, late):
    """Events posted, late in the history, to orders that ended long before (manual
    consumptions and returns, operation reports, reports as finished, reversals of their
    old events), in one or more imports, then a late stock count: each catch-up takes the
    orders back (forced, whatever it costs) and the projections equal a full rebuild.
    Corrections dated before other orders' last events make the replay of an order's past
    start from a checkpoint that lacks another corrected order (taken back in turn)."""
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", 60)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_EVERY", 10)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_SPAN", 100)
    monkeypatch.setattr(materialise, "REVIVE_COST", -(10**9))
    events = sorted((orjson.loads(x) for x in _sim_events()), key=lambda e: e["at"])[:1500]
    orders = sorted({e["order"] for e in events if e["type"] == "OrderEnded"})
    end = events[-1]["at"]
    extra = []
    for k, (o_pick, what, e_pick, t_pick) in enumerate(picks):
        order = orders[o_pick % (len(orders) // 2)]  # the older half: retired by the end
        own = [e for e in events if e.get("order") == order]
        put = next((e for e in own if e["type"] == "Put"), None)
        # At the end, or anywhere after the order's own events.
        later = [e["at"] for e in events if e["at"] > own[-1]["at"]]
        at = end if t_pick % 2 or not later else later[t_pick % len(later)]
        base = {"at": at, "id": f"x-{k}", "order": order}
        if what in ("consume", "return") and put is not None:
            extra.append({**base, "type": "MaterialConsumed", "item": put["item"],
                          "qty": "1" if what == "consume" else "-1", "line": put["line"],
                          "location": put["location"]})
        elif what == "report":
            op = next((e["op"] for e in own if e["type"] == "OperationReported"), 10)
            extra.append({**base, "type": "OperationReported", "op": op, "good": 1})
        elif what == "finish":
            extra.append({**base, "type": "ReportedAsFinished", "good": 1})
        else:
            target = own[e_pick % len(own)]
            if target["type"] not in ("OrderCreated",) and target["id"] not in {
                    x.get("reverses") for x in extra}:
                extra.append({"type": "Reversal", "at": at, "id": f"x-{k}",
                              "reverses": target["id"]})
    count = next(e for e in events if e["type"] == "InventoryCounted")
    mid = events[len(events) // 4 + late % (len(events) // 2)]["at"]
    tail = [{**count, "id": "late-count", "at": mid}]
    tmp = tmp_path_factory.mktemp("fix")
    inc, ref = Ledger(str(tmp / "a.db")), Ledger(str(tmp / "b.db"))
    try:
        _import(inc, tmp / "base.jsonl", events)
        materialise.catch_up(inc)
        bounds = sorted({0, len(extra), *(c % (len(extra) + 1) for c in cuts)})
        for k, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
            _import(inc, tmp / f"fix{k}.jsonl", extra[a:b])
            materialise.catch_up(inc)
        _import(inc, tmp / "late.jsonl", tail)
        materialise.catch_up(inc)
        _import(ref, tmp / "all.jsonl", events + extra + tail)
        materialise.rebuild(ref)
        assert projection(inc) == projection(ref)
    finally:
        inc.close()
        ref.close()


def _held_at_head(ledger: Ledger, order: str) -> object:
    """The head checkpoint's state of ``order``, encoded (``snapshot``): data to compare."""
    from backflush.projections.engine import Replay

    with ledger.transaction(commit=False) as cur:
        blob = cur.execute("SELECT v FROM bf_proj_ckpt WHERE head = 1").fetchone()["v"]
    engine = Replay.restore(snapshot.loads(bytes(blob), materialise.ENGINE_VERSION)["engine"])
    o = engine.order_state(order)
    assert o is not None
    return snapshot.encode_part(o, 1)[0]


def test_an_orders_past_is_replayed_with_the_orders_it_needs_taken_back(tmp_path, monkeypatch):
    """Order B is corrected at the end: its past is replayed from the checkpoint before its
    last event. Order A was corrected before (at a time between that checkpoint and B's
    last event, on the same stock): that checkpoint, taken before A's correction was
    recorded, lacks A, so replaying B's past takes A back first. B's state (which batches
    its flushes took) is then the full replay's."""
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", 60)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_EVERY", 60)
    monkeypatch.setattr(materialise, "REVIVE_COST", -(10**9))
    events = sorted((orjson.loads(x) for x in _sim_events()), key=lambda e: e["at"])[:1500]
    inc, ref = Ledger(str(tmp_path / "a.db")), Ledger(str(tmp_path / "b.db"))
    try:
        _import(inc, tmp_path / "base.jsonl", events)
        materialise.catch_up(inc)
        with inc.transaction(commit=False) as cur:
            cks = [(r["at_us"], r["seq"]) for r in cur.execute(
                "SELECT at_us, seq FROM bf_proj_ckpt WHERE head = 0").fetchall()]
        by_us = {to_us(datetime.fromisoformat(e["at"])): e for e in events}
        ends = [e for e in events if e["type"] == "OrderEnded"]
        first = ends[0]["order"]
        # B: an order ending after a checkpoint later than A's end, whose past between
        # that checkpoint and its end has an event time A's correction can take.
        for end in ends[len(ends) // 3:]:
            end_us = to_us(datetime.fromisoformat(end["at"]))
            before = [c for c in cks if c[0] < end_us]
            if not before:
                continue
            ck_us = max(before)[0]
            between = sorted(u for u in by_us if ck_us < u < end_us)
            if between:
                b_order, t2 = end["order"], by_us[between[0]]["at"]
                break
        else:
            pytest.fail("no order to correct")
        put_b = next(e for e in events if e["type"] == "Put" and e.get("order") == b_order)
        # A takes what was put for B, before B ends: what B finds at its input changes.
        fix_a = {"type": "MaterialConsumed", "at": t2, "id": "fix-a", "order": first,
                 "item": put_b["item"], "qty": put_b["qty"], "location": put_b["location"]}
        fix_b = {"type": "MaterialConsumed", "at": events[-1]["at"], "id": "fix-b",
                 "order": b_order, "item": put_b["item"], "qty": "1",
                 "line": put_b["line"], "location": put_b["location"]}
        _import(inc, tmp_path / "a.jsonl", [fix_a])
        materialise.catch_up(inc)
        _import(inc, tmp_path / "b.jsonl", [fix_b])
        revive, depth, taken = materialise._revive, [0], []  # noqa: SLF001

        def nested(cur, engine, order, last, reversible):
            taken.append((depth[0], order))
            depth[0] += 1
            try:
                return revive(cur, engine, order, last, reversible)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(materialise, "_revive", nested)
        materialise.catch_up(inc)
        assert taken == [(0, b_order), (1, first)]
        _import(ref, tmp_path / "all.jsonl", [*events, fix_a, fix_b])
        materialise.rebuild(ref)
        assert projection(inc) == projection(ref)
        assert _held_at_head(inc, b_order) == _held_at_head(ref, b_order)
    finally:
        inc.close()
        ref.close()


def _checkpoint_counts(ledger: Ledger) -> list[int]:
    with ledger.transaction(commit=False) as cur:
        return [r["n"] for r in cur.execute(
            "SELECT n FROM bf_proj_ckpt WHERE head = 0 ORDER BY n").fetchall()]


def test_checkpoints_are_dense_near_the_head_and_thinned_once_it_moves_on(tmp_path, monkeypatch,
                                                                         db_url):
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", 200)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_EVERY", 20)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_SPAN", 100)
    lines = _sim_events()[:1000]
    at = [orjson.loads(x)["at"] for x in lines]
    # In ``at`` order, so that every import continues from the head.
    lines = [lines[i] for i in sorted(range(len(lines)), key=lambda i: at[i])]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines[:600]) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(lines[600:]) + b"\n")
    ledger = Ledger(db_url)
    try:
        assert not run_import(ledger, [str(tmp_path / "a.jsonl")]).errors
        materialise.rebuild(ledger)
        assert _checkpoint_counts(ledger) == [200, 400, 500, 520, 540, 560, 580, 600]
        assert not run_import(ledger, [str(tmp_path / "b.jsonl")]).errors
        # From the dense checkpoint before the earliest change (a new event's order must be
        # held by it), not from the one 200 events back.
        assert 400 <= materialise.catch_up(ledger) < 520
        counts = _checkpoint_counts(ledger)
        # The dense run near the old head is thinned to the first of its span of 200 ...
        old = [n for n in counts if n < 900]
        assert old[:2] == [200, 400] and len({n // 200 for n in old}) == len(old)
        assert max(b - a for a, b in zip([0, *old], [*old, 900], strict=True)) <= 2 * 200
        # ... and the new head has its own.
        near = [n for n in counts if n >= 900]
        assert len(near) >= 3 and {b - a for a, b in zip(near, near[1:], strict=False)} == {20}
        got = projection(ledger)
        materialise.rebuild(ledger)
        assert got == projection(ledger)
    finally:
        ledger.close()


def test_a_large_state_spaces_its_checkpoints_by_its_size(tmp_path, monkeypatch, db_url):
    """One long-running order keeps a state that grows with its events (its event ids): its
    checkpoints are spaced in proportion to their size (each costs as much to write), so a
    pass takes a few instead of one per CHECKPOINT_EVERY events; and a late event still
    replays from one of them to the answer of a full rebuild."""
    monkeypatch.setattr(materialise, "CHECKPOINT_EVERY", 100)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_EVERY", 50)
    monkeypatch.setattr(materialise, "CHECKPOINT_NEAR_SPAN", 200)
    monkeypatch.setattr(materialise, "CHECKPOINT_LARGE_BYTES", 5000)
    monkeypatch.setattr(materialise, "CHECKPOINT_BYTES_PER_EVENT", 80)
    setup = [
        {"type": "ItemDefined", "at": "2026-07-01T06:00:00Z", "id": "s-1", "item": "FG"},
        {"type": "ItemDefined", "at": "2026-07-01T06:00:00Z", "id": "s-2", "item": "RAW",
         "flushing": "start"},
        {"type": "ResourceDefined", "at": "2026-07-01T06:00:00Z", "id": "s-3",
         "resource": "M1", "input_location": "M1-IN", "output_location": "M1-OUT"},
        {"type": "BomDefined", "at": "2026-07-01T06:01:00Z", "id": "s-4", "bom": "B",
         "item": "FG", "lines": [{"line": 10, "item": "RAW", "qty": 1}]},
        {"type": "RouteDefined", "at": "2026-07-01T06:01:00Z", "id": "s-5", "route": "R",
         "operations": [{"op": 10, "resource": "M1"}, {"op": 20, "resource": "M1"}]},
        {"type": "InventoryReceived", "at": "2026-07-01T06:30:00Z", "id": "s-6",
         "item": "RAW", "qty": 100000, "location": "M1-IN"},
        {"type": "OrderCreated", "at": "2026-07-01T07:00:00Z", "id": "s-7", "order": "P1",
         "item": "FG", "qty": 100000, "bom": "B", "route": "R"},
    ]
    reports = [
        {"type": "OperationReported", "at": f"2026-07-{2 + i // 1440:02d}T{i // 60 % 24:02d}:"
         f"{i % 60:02d}:00Z", "id": f"r-{i}", "order": "P1", "op": 10 if i % 2 == 0 else 20,
         "good": "1", "device": "job_terminal"}
        for i in range(3000)
    ]
    late = dict(reports.pop(1500), id="r-late")
    with Ledger(db_url) as ledger:
        _import(ledger, tmp_path / "a.jsonl", setup + reports)
        materialise.rebuild(ledger)
        counts = _checkpoint_counts(ledger)
        # Without the rule: one every 100 events and every 50 near the head, ~33.
        assert 3 <= len(counts) <= 8, counts
        gaps = [b - a for a, b in zip(counts, counts[1:], strict=False)]
        assert gaps == sorted(gaps) and gaps[-1] > 500, counts  # growing with the state
        _import(ledger, tmp_path / "b.jsonl", [late])
        applied = materialise.catch_up(ledger)
        assert 0 < applied < len(reports)  # from a checkpoint, not from the start
        got = projection(ledger)
        materialise.rebuild(ledger)
        assert got == projection(ledger)


def test_an_unreadable_snapshot_means_a_rebuild_never_a_load(tmp_path):
    lines = _sim_events()[:400]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    ledger = Ledger(str(tmp_path / "l.db"))
    try:
        assert not run_import(ledger, [str(tmp_path / "a.jsonl")]).errors
        materialise.catch_up(ledger)
        import pickle
        import zlib

        # A forged head: a pickle, which would run code if anything unpickled it.
        forged = zlib.compress(pickle.dumps({"engine": None}))
        with ledger.writing() as cur:
            cur.execute("UPDATE bf_proj_ckpt SET v = ?", (forged,))
        with pytest.raises(snapshot.SnapshotError):
            snapshot.loads(forged, materialise.ENGINE_VERSION)
        (tmp_path / "b.jsonl").write_bytes(_sim_events()[400] + b"\n")
        assert not run_import(ledger, [str(tmp_path / "b.jsonl")]).errors
        assert materialise.catch_up(ledger) == 401  # rebuilt from the events
        got = projection(ledger)
        materialise.rebuild(ledger)
        assert got == projection(ledger)
    finally:
        ledger.close()


def test_import_brings_the_projections_up_to_date_in_the_same_command(tmp_path, db_url):
    from ledger_cli import run

    lines = _sim_events()
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines[:300]) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(lines[300:600]) + b"\n")
    for name in ("a", "b"):
        r = run(db_url, "import", str(tmp_path / f"{name}.jsonl"))
        assert r.exit_code == 0, r.output
        with Ledger(db_url) as ledger:
            # Nothing left for the next query to catch up.
            assert materialise.catch_up(ledger) == 0
            with ledger.transaction(commit=False) as cur:
                tracked = int(materialise._get(cur, "last_seq"))  # noqa: SLF001
            assert tracked == ledger.max_seq()
