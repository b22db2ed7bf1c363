"""Projections through the real store: incremental == rebuild, arrival order, as-of, known-at,
SQLite == PostgreSQL. Histories come from the shipped Hypothesis strategies, written out as
interchange JSONL and imported like any plant file."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.store import Ledger, to_us
from backflush.projections import asof, materialise
from backflush.projections.engine import Replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backflush.testing.strategies import histories, plain_event, policies

PROFILE = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
    max_examples=15,
)


def write_jsonl(path: Path, events: list[dict]) -> Path:
    """Engine-shaped events (strategies) as an interchange file, in the given order."""
    path.write_bytes(b"".join(orjson.dumps(plain_event(e)) + b"\n" for e in events))
    return path


def import_events(ledger: Ledger, path: Path, events: list[dict], now: datetime | None = None):
    res = run_import(ledger, [str(write_jsonl(path, events))], now=now)
    assert not res.errors, [str(e) for e in res.errors[:5]]
    return res


def answers(ledger: Ledger, at: datetime | None = None) -> dict:
    """Every materialised answer that must not depend on how the events arrived."""
    orders = _orders(ledger)
    return {
        "onhand": asof.onhand(ledger, at),
        "wip": asof.wip(ledger, at),
        "consumption": {o: asof.consumption(ledger, o, at) for o in orders},
        "hours": {o: asof.hours(ledger, o, at=at) for o in orders},
    }


def _orders(ledger: Ledger) -> list[str]:
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(
            "SELECT ord FROM bf_events WHERE type = 'OrderCreated' ORDER BY ord"
        ).fetchall()
    return [r["ord"] for r in rows]


def _tables(ledger: Ledger) -> dict:
    """Projection tables by content (key ids differ between runs: compare by key values)."""
    out = {}
    with ledger.transaction(commit=False) as cur:
        out["onhand"] = sorted(
            tuple(r.values()) if isinstance(r, dict) else tuple(r)
            for r in cur.execute(
                "SELECT k.item, k.location, COALESCE(k.batch, '') AS b,"
                " COALESCE(k.lp, '') AS l, h.at_us, h.seq, h.n, h.balance"
                " FROM bf_onhand_hist h JOIN bf_onhand_keys k"
                " ON k.key_id = h.key_id"
            ).fetchall()
        )
        out["flushes"] = sorted(
            tuple(r.values()) if isinstance(r, dict) else tuple(r)
            for r in cur.execute(
                "SELECT seq, n, ord, line, item, trig, qty, location, COALESCE(batch, '') AS b"
                " FROM bf_flushes"
            ).fetchall()
        )
    return out


@PROFILE
@given(events=histories(), cut=st.floats(0.1, 0.9))
def test_incremental_catch_up_equals_rebuild(tmp_path_factory, events, cut):
    tmp = tmp_path_factory.mktemp("inc")
    ledger = Ledger(str(tmp / "l.db"))
    k = max(1, int(len(events) * cut))
    import_events(ledger, tmp / "a.jsonl", events[:k])
    materialise.catch_up(ledger)
    import_events(ledger, tmp / "b.jsonl", events[k:])
    materialise.catch_up(ledger)
    incremental = (_tables(ledger), answers(ledger))
    materialise.rebuild(ledger)
    assert (_tables(ledger), answers(ledger)) == incremental
    ledger.close()


def _shuffled_arrival(events: list[dict], rnd: random.Random) -> list[dict]:
    """Another arrival order that still sends every referenced name before its use.

    Events with the same ``at`` keep their relative order: DESIGN breaks such ties by
    recording order, so only they may legitimately depend on arrival.
    """
    first = [e for e in events if e["type"] in (
        "ItemDefined", "ResourceDefined", "BomDefined", "RouteDefined", "OrderCreated")]
    last = [e for e in events if e["type"] == "Reversal"]
    middle = [e for e in events if e not in first and e not in last]
    slots = list(range(len(middle)))
    rnd.shuffle(slots)
    shuffled = [middle[i] for i in slots]
    by_at: dict = {}
    for e in middle:
        by_at.setdefault(e["at"], []).append(e)
    queues = {at: iter(group) for at, group in by_at.items()}
    middle = [next(queues[e["at"]]) for e in shuffled]
    return first + middle + last


@PROFILE
@given(events=histories(), seed=st.integers(0, 10_000))
def test_arrival_order_changes_no_answer(tmp_path_factory, events, seed):
    tmp = tmp_path_factory.mktemp("arr")
    a, b = Ledger(str(tmp / "a.db")), Ledger(str(tmp / "b.db"))
    import_events(a, tmp / "a.jsonl", events)
    import_events(b, tmp / "b.jsonl", _shuffled_arrival(events, random.Random(seed)))
    assert answers(a) == answers(b)
    a.close()
    b.close()


@PROFILE
@given(events=histories(), picks=st.lists(st.integers(0, 90), min_size=1, max_size=4))
def test_as_of_equals_replay_of_events_up_to_t(tmp_path_factory, events, picks):
    tmp = tmp_path_factory.mktemp("asof")
    ledger = Ledger(str(tmp / "l.db"))
    import_events(ledger, tmp / "h.jsonl", events)
    start = events[0]["at"]
    for minutes in picks:
        t = start + timedelta(minutes=minutes, seconds=30)
        prefix = Replay()
        for e in events:
            if e["at"] <= t:
                prefix.apply(e)
        assert asof.onhand(ledger, t) == prefix.onhand()
        assert asof.wip(ledger, t) == prefix.wip()
        for o in prefix.orders():
            assert asof.consumption(ledger, o, t) == prefix.consumption(o)
    ledger.close()


def test_known_at_answers_what_the_ledger_had_recorded(tmp_path):
    h = [
        {"type": "ItemDefined", "at": "2026-11-21T06:00:00Z", "id": "i", "item": "C1"},
        {"type": "InventoryReceived", "at": "2026-11-21T07:00:00Z", "id": "r1", "item": "C1",
         "qty": 10, "location": "BULK"},
    ]
    late = [
        # A scanner syncing late: it happened at 07:30, the ledger learnt it at 12:00.
        {"type": "InventoryTransferred", "at": "2026-11-21T07:30:00Z", "id": "t1",
         "item": "C1", "qty": 4, "from_location": "BULK", "to_location": "BACKFLUSH"},
    ]
    ledger = Ledger(str(tmp_path / "l.db"))
    for name, evs, now in (("a", h, "2026-11-21T08:00:00Z"), ("b", late, "2026-11-21T12:00:00Z")):
        p = tmp_path / f"{name}.jsonl"
        p.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in evs))
        res = run_import(ledger, [str(p)], now=datetime.fromisoformat(now))
        assert not res.errors
    at = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    known_before = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    bulk = lambda rows: [(r["location"], r["qty"]) for r in rows]  # noqa: E731
    assert bulk(asof.onhand(ledger, at, known_before)) == [("BULK", Decimal(10))]
    assert bulk(asof.onhand(ledger, at)) == [("BACKFLUSH", Decimal(4)), ("BULK", Decimal(6))]
    assert bulk(asof.onhand(ledger, at, datetime(2026, 11, 21, 13, 0, tzinfo=UTC))) == [
        ("BACKFLUSH", Decimal(4)), ("BULK", Decimal(6))]
    # Before 07:30 on the floor, the late transfer had not happened either way.
    early = datetime(2026, 11, 21, 7, 10, tzinfo=UTC)
    assert bulk(asof.onhand(ledger, early)) == [("BULK", Decimal(10))]
    ledger.close()


@pytest.mark.postgres
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
    max_examples=5,
)
@given(events=histories())
def test_sqlite_and_postgresql_give_the_same_answers(tmp_path_factory, pg_url, events):
    import uuid

    import psycopg

    tmp = tmp_path_factory.mktemp("pg")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    url = pg_url.rsplit("/", 1)[0] + "/" + name
    try:
        pg, lite = Ledger(url), Ledger(str(tmp / "l.db"))
        import_events(pg, tmp / "p.jsonl", events)
        import_events(lite, tmp / "s.jsonl", events)
        t = events[len(events) // 2]["at"]
        assert answers(pg) == answers(lite)
        assert answers(pg, t) == answers(lite, t)
        assert _tables(pg) == _tables(lite)
        pg.close()
        lite.close()
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_to_us_orders_like_at():
    a = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    b = datetime.fromisoformat("2026-11-21T09:00:00.000001+01:00")
    assert to_us(b) - to_us(a) == 1


@PROFILE
@given(events=histories(max_orders=4), policy=st.none() | policies())
def test_streaming_findings_equal_findings_of_a_full_replay(tmp_path_factory, events, policy):
    from backflush.projections.findings import findings

    tmp = tmp_path_factory.mktemp("fnd")
    ledger = Ledger(str(tmp / "l.db"))
    import_events(ledger, tmp / "h.jsonl", events)
    full = findings(asof.replay(ledger, policy=policy))
    # Checking after every event retires each order as early as possible. Under a policy
    # the stream runs in name order when no take is outside every order (a finding of no
    # order would come after names already out: an error, not a wrong list).
    assert asof.findings_replay(ledger, policy=policy, retire_every=1) == full
    assert asof.findings_replay(ledger, policy=policy) == full
    ledger.close()


@PROFILE
@given(events=histories(max_orders=4))
def test_hours_by_order_equal_hours_of_a_full_replay(tmp_path_factory, events):
    tmp = tmp_path_factory.mktemp("hrs")
    ledger = Ledger(str(tmp / "l.db"))
    import_events(ledger, tmp / "h.jsonl", events)
    full = asof.replay(ledger).hours()
    assert list(asof.iter_hours_by_order(ledger, retire_every=1)) == full
    assert asof.hours(ledger) == full
    ledger.close()


@PROFILE
@given(events=histories(max_orders=4), policy=st.none() | policies(), cut=st.floats(0, 1))
def test_stock_answers_of_a_replay_that_forgets_orders_equal_a_full_replay(
    tmp_path_factory, events, policy, cut
):
    """``onhand``/``wip`` under ``--policy`` (or a ``--known-at`` the projections cannot
    answer) replay everything in memory: forgetting each order past its last event (bounded
    memory) must leave every on-hand and WIP row as a replay that keeps them all."""
    from backflush.ledger.codec import replay_policy

    tmp = tmp_path_factory.mktemp("stk")
    ledger = Ledger(str(tmp / "l.db"))
    import_events(ledger, tmp / "h.jsonl", events)
    pol = replay_policy(policy) if policy is not None else None
    ats = sorted(e["at"] for e in events)
    for at in (None, ats[int(cut * (len(ats) - 1))]):
        full = asof.replay(ledger, at, None, pol)
        forgetting = asof._stock_replay(ledger, at, None, pol, retire_every=1)
        assert forgetting.onhand() == full.onhand()
        assert forgetting.wip() == full.wip()
    ledger.close()


def test_name_order_yields_each_order_once_every_earlier_name_is_final():
    out: list = []

    def pieces():
        yield {"B": ["b1", "b2"]}
        assert out == []  # A is not final yet: nothing may go out before it
        yield {"A": ["a1"], "D": []}
        assert out == ["a1", "b1", "b2"]  # C still runs: D and what follows wait
        yield {"C": ["c1"], "E": ["e1"]}

    out.extend(asof._name_order(pieces(), ["A", "B", "C", "D", "E"]))  # noqa: SLF001
    assert out == ["a1", "b1", "b2", "c1", "e1"]


def test_name_order_holds_everything_without_names_and_refuses_a_late_earlier_name():
    # No names in advance (rows of no order may come last, yet sort first): all held, sorted.
    held = iter([{"B": [2]}, {None: [0], "A": [1]}])
    assert list(asof._name_order(held, [])) == [0, 1, 2]  # noqa: SLF001
    late = iter([{"B": [2]}, {None: [0], "A": [1]}])
    with pytest.raises(RuntimeError, match="out of order"):
        list(asof._name_order(late, ["A", "B"]))  # noqa: SLF001


def test_rows_held_back_past_the_limit_go_to_disk_and_come_back_the_same():
    from decimal import Decimal

    from backflush.projections.findings import Finding
    from backflush.projections.records import FlushRecord, NegativeOnHand

    rows = {o: [Finding("DOUBLE_FLUSH", "ERROR", o, 10, "X", Decimal("1.50"), ("e1", "e2"),
                        f"m {o}", "where"), NegativeOnHand("e3", None, ("X", "L", None, None),
                                                           Decimal("-2"), o, 7)]
            for o in ("P3", "P1", "P2", "P4")}
    rows[None] = [{"hours": Decimal("0.5")}]
    flush = FlushRecord("e", None, 1, "P1", 10, "X", "finish", None, Decimal(1), "L", None,
                        None, None, None, None, None)

    def pieces(names):
        yield {"P3": rows["P3"], "P1": rows["P1"]}
        yield {"P2": rows["P2"]}
        last = {"P4": rows["P4"] + [flush]}
        if not names:  # rows of no order: only where nothing streams
            last[None] = rows[None]
        yield last

    spilled = asof._Held(limit=1)  # noqa: SLF001
    for names in ([], ["P1", "P2", "P3", "P4"]):
        with pytest.MonkeyPatch.context() as m:
            kept = list(asof._name_order(pieces(names), names))  # noqa: SLF001
            m.setattr(asof, "_Held", lambda: spilled)
            out = list(asof._name_order(pieces(names), names))  # noqa: SLF001
        assert out == kept and len(out) == 9 + (not names)
        assert spilled.file is None  # closed at the end
    # They did go through the file (equal, not the same objects), ``where`` included.
    back = [r for r in out if isinstance(r, Finding)]
    assert back and all(r is not x for r, x in zip(back, rows["P1"], strict=False))
    assert {r.where for r in back} == {"where"}


@PROFILE
@given(events=histories(max_orders=4), policy=st.none() | policies())
def test_what_if_findings_spilled_to_disk_equal_those_kept_in_memory(
    tmp_path_factory, events, policy
):
    tmp = tmp_path_factory.mktemp("spl")
    ledger = Ledger(str(tmp / "l.db"))
    import_events(ledger, tmp / "h.jsonl", events)
    kept = asof.findings_replay(ledger, policy=policy, retire_every=1)
    hours = list(asof.iter_hours_by_order(ledger, policy=policy, retire_every=1))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(asof, "SPILL_ROWS", 0)
        assert asof.findings_replay(ledger, policy=policy, retire_every=1) == kept
        assert list(asof.iter_hours_by_order(ledger, policy=policy, retire_every=1)) == hours
    ledger.close()


def test_findings_of_a_read_only_ledger_behind_its_events_still_answer_by_replay(tmp_path):
    import gzip

    from backflush.projections.findings import findings

    golden = Path(__file__).parent / "golden" / "sim-120-s2-all-faults.jsonl.gz"
    lines = [x for x in gzip.decompress(golden.read_bytes()).splitlines() if x.strip()]
    (tmp_path / "h.jsonl").write_bytes(b"\n".join(lines[:600]) + b"\n")
    db = str(tmp_path / "l.db")
    with Ledger(db) as ledger:
        assert not run_import(ledger, [str(tmp_path / "h.jsonl")]).errors  # no catch-up
        full = findings(asof.replay(ledger))
    assert full
    with Ledger(db, readonly=True) as ledger:
        assert asof.findings_replay(ledger, retire_every=1) == full


def test_a_bulk_import_and_a_rebuild_refresh_postgresql_planner_statistics(pg_db, monkeypatch):
    # Without statistics PostgreSQL planned a 1,000-event catch-up on a 1M-event ledger as a
    # scan of every event (seconds); a bulk write must leave them behind (Ledger.analyze).
    import psycopg

    import backflush
    from backflush import api

    monkeypatch.setattr(api, "ANALYZE_AFTER", 1)
    monkeypatch.setattr(materialise, "ANALYZE_AFTER", 1)

    def analysed() -> set[str]:
        with psycopg.connect(pg_db) as con:
            rows = con.execute("SELECT relname FROM pg_stat_user_tables"
                               " WHERE last_analyze IS NOT NULL").fetchall()
        return {r[0] for r in rows}

    assert "bf_events" not in analysed()
    with backflush.Ledger(pg_db) as led:
        led.import_files([Path(__file__).resolve().parents[1] / "examples"
                          / "002-staged-backflush" / "events.jsonl"])
    assert {"bf_events", "bf_chain", "bf_onhand_hist", "bf_flushes"} <= analysed()
    with Ledger(":memory:") as mem:
        mem.analyze(["bf_events"])  # on SQLite a no-op, not an error
