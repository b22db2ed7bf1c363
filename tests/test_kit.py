"""The in-memory replay (backflush.replay) and the property-testing kit (backflush.testing)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from backflush.ledger.importer import run_import
from backflush.ledger.store import Ledger as Store
from backflush.projections import asof
from backflush.projections.engine import Replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backflush.errors import BadInput
from backflush.memory import replay, to_jsonl
from backflush.policy import Policy
from backflush.testing.strategies import histories, plain, policies

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "events.jsonl").exists())


def _events(case: str) -> list[dict]:
    text = (EXAMPLES / case / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _policies(case: str) -> list[Path | None]:
    return [None, *sorted((EXAMPLES / case).glob("*policy.json"))]


# --- backflush.replay ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_replay_gives_the_rows_of_an_imported_ledger(case, tmp_path):
    store = Store(str(tmp_path / "l.db"))
    res = run_import(store, [str(EXAMPLES / case / "events.jsonl")])
    assert not res.errors
    for path in _policies(case):
        params = Policy.from_file(path).params if path else None
        mem = replay(_events(case), policy=Policy.from_file(path) if path else None)
        assert mem.onhand() == asof.onhand(store, None, None, params)
        assert mem.wip() == asof.wip(store, None, None, params)
        for order in mem.orders():
            assert mem.consumption(order) == asof.consumption(store, order, None, None, params)
            assert mem.hours(order=order) == asof.hours(store, order, None, None, None, params)
        ledger_findings = [f.as_dict() for f in asof.findings_replay(store, None, None, params)]
        assert mem.findings() == ledger_findings
    store.close()


def test_replay_takes_a_policy_as_object_dict_or_path():
    case = "001-terminals-and-scanner"
    path = EXAMPLES / case / "fix-policy.json"
    a = replay(_events(case), policy=Policy.from_file(path)).findings()
    b = replay(_events(case), policy=json.loads(path.read_text())).findings()
    c = replay(_events(case), policy=str(path)).findings()
    assert a == b == c
    assert [f for f in a if f["code"] == "DOUBLE_FLUSH"] == []
    assert [f for f in replay(_events(case)).findings() if f["code"] == "DOUBLE_FLUSH"]


def test_replay_at_is_the_replay_of_what_happened_by_then():
    events = _events("001-terminals-and-scanner")
    t = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    prefix = [e for e in events if datetime.fromisoformat(e["at"]) <= t]
    assert len(prefix) < len(events)
    a, b = replay(events, at=t), replay(prefix)
    assert (a.onhand(), a.wip(), a.consumption(), a.findings()) == (
        b.onhand(), b.wip(), b.consumption(), b.findings())
    assert [e["id"] for e in a.events] == [e["id"] for e in b.events]


def test_replay_validates_like_import():
    base = {"type": "ItemDefined", "at": "2026-11-21T08:00:00Z", "item": "C1"}
    with pytest.raises(BadInput) as exc:
        replay([
            base,
            {"type": "ItemDefined", "at": "2026-11-21T08:00:00", "item": "C2"},
            {"type": "InventoryReceived", "at": "2026-11-21T08:00:00Z", "item": "C1",
             "qty": "-1", "location": "A"},
            {"type": "OrderReleased", "at": "2026-11-21T08:00:00Z", "order": "NOPE"},
            {"type": "ItemDefined", "at": "2026-11-21T08:00:00Z", "item": "C3", "colour": "red"},
        ])
    text = "\n".join(exc.value.errors)
    assert "<events>:2: at:" in text
    assert "<events>:3: qty:" in text
    assert "<events>:4: order: unknown order 'NOPE'" in text
    assert "<events>:5: colour:" in text
    assert "<events>:1:" not in text


def test_replay_skips_duplicates_and_refuses_conflicting_ids():
    ev = {"type": "InventoryReceived", "at": "2026-11-21T08:00:00Z", "item": "C1", "qty": "2",
          "location": "A", "id": "r1"}
    item = {"type": "ItemDefined", "at": "2026-11-21T08:00:00Z", "item": "C1"}
    result = replay([item, ev, dict(ev), json.dumps(ev)])
    assert [r["qty"] for r in result.onhand()] == [2]
    # no id: the same line twice is two receipts (an import counts occurrences the same way)
    anon = {k: v for k, v in ev.items() if k != "id"}
    assert [r["qty"] for r in replay([item, anon, anon]).onhand()] == [4]
    with pytest.raises(BadInput, match=r"<events>:3: id: id 'r1' already recorded"):
        replay([item, ev, dict(ev, qty="3")])


def test_to_jsonl_round_trips_through_replay(tmp_path):
    events = _events("001-robot-packing")
    text = to_jsonl(replay(events).events)
    again = replay(text.splitlines())
    assert again.findings() == replay(events).findings()
    store = Store(str(tmp_path / "l.db"))
    (tmp_path / "x.jsonl").write_text(text)
    assert not run_import(store, [str(tmp_path / "x.jsonl")]).errors
    assert [f.as_dict() for f in asof.findings_replay(store)] == again.findings()
    store.close()


PROPS = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@PROPS
@given(histories(), st.one_of(st.none(), policies()))
def test_replay_of_plain_events_equals_the_engine(events, policy):
    engine = Replay(policy).apply_all(events)
    mem = replay(plain(events), policy=policy)
    assert mem.onhand() == engine.onhand()
    assert mem.wip() == engine.wip()
    assert mem.consumption() == engine.consumption()
    assert mem.hours() == engine.hours()
