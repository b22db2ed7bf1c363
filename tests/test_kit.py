"""The in-memory replay (backflush.replay) and the property-testing kit (backflush.testing)."""

from __future__ import annotations

import importlib.util
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


# --- backflush.testing: the state machine ---------------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402

from hypothesis.stateful import run_state_machine_as_test  # noqa: E402

from backflush.testing.machine import CheckFailed, PlantMachine  # noqa: E402
from backflush.testing.plant import Plant, plants  # noqa: E402

FIXED = [c for c in CASES if (EXAMPLES / c / "fix-policy.json").exists()]


def _budget(machine, **changes):
    """The machine's own default budget, without the example database (a clean search), and
    derandomised so that the test cannot flake."""
    return settings(machine.TestCase.settings, database=None, derandomize=True, **changes)


def _overlapping_policy() -> dict:
    """Seed 001's own setup: the job terminal flushes finish lines at the operation, while the
    mobile scanner's report as finished flushes them too."""
    recorded = [e for e in _events("001-terminals-and-scanner")
                if e["type"] == "ProductionParametersSet"][-1]
    return {k: recorded[k] for k in ("default_input_location", "tolerance_pct", "rules")}


def test_machine_finds_a_double_flush_within_its_default_budget(tmp_path):
    class Overlapping(PlantMachine):
        policy = _overlapping_policy()
        plant = Plant.from_jsonl(EXAMPLES / "001-terminals-and-scanner" / "events.jsonl")
        save_to = tmp_path / "found"

    assert Overlapping.TestCase.settings.max_examples == 100
    with pytest.raises(CheckFailed, match="DOUBLE_FLUSH"):
        run_state_machine_as_test(Overlapping, settings=_budget(Overlapping))
    # the saved history replays to the same finding, through the command line
    saved = tmp_path / "found" / "falsifying.jsonl"
    policy = tmp_path / "found" / "policy.json"
    db = str(tmp_path / "x.db")
    cli = [sys.executable, "-m", "backflush", "--db", db]
    subprocess.run([*cli, "import", str(saved)], check=True, capture_output=True)
    out = subprocess.run([*cli, "findings", "--code", "DOUBLE_FLUSH", "--policy", str(policy),
                          "--json"], check=True, capture_output=True, text=True).stdout
    assert json.loads(out), "the saved history shows the double flush"
    audit = subprocess.run([*cli, "audit", "P1", "--policy", str(policy)],
                           capture_output=True, text=True)
    assert audit.returncode == 0, audit.stderr
    # and under the example's fix there is none
    fix = str(EXAMPLES / "001-terminals-and-scanner" / "fix-policy.json")
    out = subprocess.run([*cli, "findings", "--code", "DOUBLE_FLUSH", "--policy", fix,
                          "--json"], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == []


@pytest.mark.parametrize("case", FIXED)
def test_machine_passes_on_the_fix_policy_of_each_example(case):
    class Fixed(PlantMachine):
        policy = Policy.from_file(EXAMPLES / case / "fix-policy.json")
        plant = Plant.from_jsonl(EXAMPLES / case / "events.jsonl")

    run_state_machine_as_test(Fixed, settings=_budget(Fixed))


def test_machine_ledger_checks_hold_on_drawn_plants():
    """Every example checked on a real SQLite ledger: catch-up == rebuild == memory, as-of."""

    class Anything(PlantMachine):
        forbidden = ()
        ledger_every = 1
        plant_options = {"items": 3, "resources": 2, "routes": 2}

    run_state_machine_as_test(Anything, settings=_budget(Anything, max_examples=15))


def test_plant_from_a_history_keeps_reporting_habits():
    plant = Plant.from_jsonl(EXAMPLES / "001-sfg-between-orders" / "events.jsonl")
    assert plant.devices_for("finish", "S-ROUTE-C") == ("mobile",)
    assert plant.devices_for("finish", "S-ROUTE-A") == ("job_terminal",)
    assert set(plant.devices_for("finish", "NEW-ROUTE")) == {"job_terminal", "mobile"}
    assert ("S-BOM-FG", "S-ROUTE-C") in plant.products
    assert "S-IN-10" in plant.locations


@settings(max_examples=20, deadline=None)
@given(plants(items=("A", "B"), resources=1, routes=1, devices={"finish": ["mobile"]}))
def test_drawn_plants_are_valid_master_data(plant):
    result = replay(list(plant.master))
    assert result.orders() == []
    assert plant.devices_for("finish", None) == ("mobile",)
    assert set(plant.components) <= {"A", "B"}


# --- strategies, from_type, plugin, install without hypothesis ----------------------------


@settings(max_examples=30, deadline=None)
@given(histories(items=("BOLT", "NUT"), resources=("SAW",), operations=(10,),
                 devices=("mobile",), faults=()))
def test_history_knobs(events):
    assert {e["item"] for e in events if e["type"] == "InventoryReceived"} <= {"BOLT", "NUT"}
    assert {e["device"] for e in events if "device" in e} <= {"mobile"}
    assert not [e for e in events if e["type"] in ("Reversal", "MaterialConsumed")]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs), "without 'late' the recording order follows the floor"
    for o in {e["order"] for e in events if e["type"] == "OrderCreated"}:
        qty = next(e["qty"] for e in events if e["type"] == "OrderCreated" and e["order"] == o)
        fin = sum(e["good"] + e["error"] for e in events
                  if e["type"] == "ReportedAsFinished" and e["order"] == o)
        assert fin <= qty, "without 'over-report' reports stay within the order quantity"


def _event_models():
    from backflush.ledger.events import EVENT_MODELS

    return EVENT_MODELS


@pytest.mark.parametrize("model", _event_models(), ids=lambda m: m.__name__)
def test_from_type_draws_every_event_model(model):
    from backflush.ledger.events import parse_event

    @settings(max_examples=5, deadline=None, database=None)
    @given(st.from_type(model))
    def check(ev):
        assert isinstance(ev, model)
        # valid on its own: its JSON line passes the interchange validation unchanged
        assert parse_event(ev.model_dump_json(exclude_none=True)) == ev

    check()


def test_plugin_replay_fixture(backflush_replay):
    result = backflush_replay(_events("002-staged-backflush"))
    assert result.onhand() == replay(_events("002-staged-backflush")).onhand()


@pytest.mark.skipif(importlib.util.find_spec("backflush.api") is None,
                    reason="backflush.Ledger comes from the api branch (not merged here yet)")
def test_plugin_ledger_fixture(backflush_ledger):
    backflush_ledger.import_files([EXAMPLES / "001-robot-packing" / "events.jsonl"])
    assert backflush_ledger.findings() == replay(_events("001-robot-packing")).findings()


def test_testing_without_hypothesis_says_what_to_install():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "try:\n    import backflush.testing\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'backflush[testing]'" in out.stdout, out.stderr
    # the base install (replay, the pytest plugin) does not need it
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "import backflush.memory, backflush.pytest_plugin\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_the_ledger_check_sees_a_wrong_answer(monkeypatch):
    """check_ledger is not vacuous: a ledger answer that differs is reported."""
    from backflush.projections import asof as asof_module

    from backflush.testing.machine import check_ledger

    events = _events("001-terminals-and-scanner")
    assert check_ledger(events) is None
    real = asof_module.onhand

    def short(store, at=None, *args, **kw):
        return real(store, at, *args, **kw)[1:]  # one row lost

    monkeypatch.setattr(asof_module, "onhand", short)
    problem = check_ledger(events)
    assert problem is not None and "onhand" in problem


def test_the_machine_checks_conservation(monkeypatch):
    """A replay that lost a unit of stock fails the machine's conservation invariant."""
    real = Replay.item_totals

    def leaky(self):
        out = real(self)
        for t in out.values():
            t["onhand"] -= 1
        return out

    monkeypatch.setattr(Replay, "item_totals", leaky)

    class Leaky(PlantMachine):
        forbidden = ()
        check_ledger = False

    with pytest.raises(CheckFailed, match="not conserved"):
        run_state_machine_as_test(Leaky, settings=_budget(Leaky, max_examples=10))


def test_machine_faults_knob_switches_rules_off():
    class Quiet(PlantMachine):
        faults = ()
        check_ledger = False
        forbidden = ()

        def teardown(self):
            kinds = {e["type"] for e in self.events}
            assert not kinds & {"Reversal", "MaterialConsumed"}, kinds
            times = [e["at"] for e in self.events]
            assert times == sorted(times), "no late arrivals without the 'late' fault"

    run_state_machine_as_test(Quiet, settings=_budget(Quiet, max_examples=20))
