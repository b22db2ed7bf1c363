"""``PlantMachine``: a Hypothesis state machine of a shop floor, to subclass with your policy.

Each step is one thing that happens on the floor: a receipt, a pick and put for an order, an
order created, released, started, an operation report, a report as finished, a manual
consumption, an order ended, a reversal, a scanner syncing late. After every step the machine
replays the history so far (in memory, under ``policy``) and checks:

- stock is conserved: per item, received + produced - consumed + adjusted = on-hand summed
  over every location and transit;
- no finding with a code in ``forbidden`` (default ``DOUBLE_FLUSH``) appears.

At the end of each example (``teardown``), with ``check_ledger`` (default on), the history is
imported into a temporary SQLite ledger in two parts, arrival order kept, the projections
caught up after the first part: the ledger's answers after the second part (incremental
catch-up) must equal those after ``rebuild`` and those of the in-memory replay, its as-of
answers at every point in time T must equal the in-memory replay of what had happened by T,
and its findings under ``policy`` must equal the in-memory ones. That is the real store at
work (materialised history, snapshots, late events), not a model of it.

When a check fails, the history is written with Hypothesis's ``note()`` as JSON Lines (and to
``save_to``/``falsifying.jsonl`` when set), with the policy and the commands to replay it::

    backflush --db falsifying.db import falsifying.jsonl
    backflush --db falsifying.db findings --policy policy.json

Use::

    from backflush.testing import PlantMachine, Plant

    class MyPlant(PlantMachine):
        policy = backflush.Policy.from_file("my-policy.json")
        plant = Plant.from_jsonl("my-master-data.jsonl")   # or None: a made-up plant

    TestMyPlant = MyPlant.TestCase      # collected by pytest / unittest
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import orjson
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from backflush.memory import policy_params, to_jsonl
from backflush.testing.plant import Plant, plants
from backflush.testing.strategies import FAULTS

START = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)
REVERSIBLE = frozenset({
    "InventoryReceived", "InventoryTransferred", "InventoryCounted", "Picked", "Put",
    "OrderReleased", "OrderStarted", "OperationReported", "ReportedAsFinished",
    "MaterialConsumed", "OrderEnded",
})
DEFAULT_SETTINGS = settings(max_examples=100, stateful_step_count=20, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
"""The kit's default budget: 100 histories of up to 20 steps each."""


IDX = st.integers(0, 7)
MINUTES = st.integers(0, 30)
UNITS = st.integers(0, 12)
ERRORS = st.integers(0, 2)


def _pick(seq: Any, k: int) -> Any:
    return seq[k % len(seq)]


@lru_cache(maxsize=8192)
def _validated(raw: bytes) -> dict[str, Any]:
    """The engine's dict of one event line, validated by the interchange models (cached: the
    same master data and many of the same events come back in every example)."""
    from backflush.ledger.codec import replay_dict
    from backflush.ledger.events import normalise, parse_event

    event = parse_event(raw)
    payload = normalise(event)
    payload["id"] = event.id
    return replay_dict(payload, 0)


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class CheckFailed(AssertionError):
    """A property of the ledger did not hold for the generated history."""


class PlantMachine(RuleBasedStateMachine):
    """A shop floor under a flushing policy; subclass it and set the class attributes.

    ``policy``: a `backflush.Policy`, a policy dict, a policy file path, or None (the
    parameters recorded in ``plant``'s master data, D365 defaults without any).
    ``plant``: a `Plant` (its master data and reporting habits), or None to draw one with
    ``plants(**plant_options)``. ``forbidden``: finding codes that must never appear.
    ``faults``: which of `backflush.testing.strategies.FAULTS` the machine may commit.
    ``check_ledger``: also check the real SQLite ledger at the end of each example.
    ``save_to``: a directory where a failing history is written as ``falsifying.jsonl``
    (with ``policy.json``). ``max_orders`` / ``max_order_qty``: the size of the floor.
    """

    policy: ClassVar[Any] = None
    plant: ClassVar[Plant | None] = None
    plant_options: ClassVar[dict[str, Any]] = {}
    forbidden: ClassVar[tuple[str, ...]] = ("DOUBLE_FLUSH",)
    faults: ClassVar[tuple[str, ...]] = FAULTS
    check_ledger: ClassVar[bool] = True
    ledger_every: ClassVar[int] = 4
    save_to: ClassVar[str | Path | None] = None
    max_orders: ClassVar[int] = 4
    max_order_qty: ClassVar[int] = 10

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # Every subclass starts from the kit's budget (a @settings decorator on the subclass,
        # applied after this, still wins).
        cls.TestCase.settings = DEFAULT_SETTINGS

    def __init__(self) -> None:
        super().__init__()
        self.params = policy_params(type(self).policy)
        self.events: list[dict[str, Any]] = []  # interchange dicts, in arrival order
        self._applied: list[dict[str, Any]] = []  # the engine's dicts, same order
        self.clock = START
        self.world: Plant | None = None
        self.orders: dict[str, dict[str, Any]] = {}
        self.reversed: set[str] = set()
        self._live: tuple[Any, int] | None = None
        self._failed = False
        self._ledger_now = False

    # --- recording ------------------------------------------------------------------------

    def emit(self, type_: str, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
        """Record one event (validated as an import validates it); returns the dict."""
        ev = {"type": type_, "at": _ts(at or self.clock), "id": f"k{len(self.events) + 1}"}
        ev.update((k, v) for k, v in fields.items() if v is not None)
        self.events.append(ev)
        self._applied.append(dict(_validated(orjson.dumps(ev)), seq=len(self._applied) + 1))
        return ev

    def replayed(self) -> Any:
        """The in-memory replay (engine) of the history so far under ``policy``.

        Kept live: an event that comes in (at, arrival) order is applied to it; a late one
        (a scanner syncing late) makes it start again from the sorted history.
        """
        from backflush.projections.engine import Replay

        engine, done = self._live if self._live is not None else (None, 0)
        new = self._applied[done:]
        if engine is not None and new:
            last = engine._last  # noqa: SLF001 - the position the engine has reached
            if (last is not None and any((e["at"], e["seq"]) < last for e in new)) or any(
                    (a["at"], a["seq"]) > (b["at"], b["seq"]) for a, b in pairwise(new)):
                engine = None
        if engine is None:
            ordered = sorted(self._applied, key=lambda e: (e["at"], e["seq"]))
            engine = Replay(policy=self.params).apply_all(ordered)
        else:
            engine.apply_all(new)
        # The change logs are only for the materialiser: do not let them grow.
        engine.discard_changes()
        self._live = (engine, len(self._applied))
        return engine

    def jsonl(self) -> str:
        """The history so far as JSON Lines, in arrival order (``backflush import`` it)."""
        return to_jsonl(self.events)

    def fail(self, message: str) -> None:
        """Note the history (JSONL), the policy and how to replay them; then fail."""
        policy = None if self.params is None else json.dumps(
            self.params, default=str, indent=None)
        text = self.jsonl()
        note("falsifying history (save as falsifying.jsonl):\n" + text)
        if policy is not None:
            note("policy (save as policy.json):\n" + policy)
        note("replay it: backflush --db falsifying.db import falsifying.jsonl && "
             "backflush --db falsifying.db findings"
             + (" --policy policy.json" if policy is not None else ""))
        if self.save_to is not None:
            out = Path(self.save_to)
            out.mkdir(parents=True, exist_ok=True)
            (out / "falsifying.jsonl").write_text(text, encoding="utf-8")
            if policy is not None:
                (out / "policy.json").write_text(policy + "\n", encoding="utf-8")
        self._failed = True  # teardown then skips the (slower) ledger check
        raise CheckFailed(message)

    # --- rules ----------------------------------------------------------------------------
    # Rules take small integers and pick from what exists by index (modulo the count): fixed
    # strategies draw and shrink far faster than ``st.data()`` draws (a failure shrinks
    # toward the first order, the first line, no delay).

    @initialize(data=st.data(), check=st.integers(0, 63))
    def set_up_plant(self, data: Any, check: int) -> None:
        """Master data: the class's ``plant``, or one drawn by ``plants(**plant_options)``."""
        plant = type(self).plant
        if plant is None:
            plant = data.draw(plants(**type(self).plant_options), label="plant")
        self.world = plant
        # One example in ``ledger_every`` is also checked on a real ledger (the slow part).
        # Drawn, so that shrinking a failure that does not need it switches it off (draws
        # shrink toward 0), and keeps it on for a failure of the ledger itself.
        n = max(1, type(self).ledger_every)
        self._ledger_now = bool(type(self).check_ledger) and check % n == n - 1
        for ev in self.world.master:
            self.emit(ev["type"], **{k: v for k, v in ev.items() if k not in ("type", "at")})

    def _open(self) -> list[dict[str, Any]]:
        return [self.orders[k] for k in sorted(self.orders) if not self.orders[k]["ended"]]

    def _has_open_order(self) -> bool:
        return any(not o["ended"] for o in self.orders.values())

    def _batch(self, item: str) -> str | None:
        tracking = (self.world.items.get(item) or {}).get("tracking", "none")
        return f"{item}-L1" if tracking in ("batch", "serial") else None

    def _after(self, minutes: int) -> datetime:
        self.clock += timedelta(minutes=minutes)
        return self.clock

    @rule(item=IDX, qty=st.sampled_from(("5", "10", "40")), location=IDX, minutes=MINUTES)
    def receive(self, item: int, qty: str, location: int, minutes: int) -> None:
        """Goods received at a location."""
        name = _pick(self.world.components, item)
        self.emit("InventoryReceived", self._after(minutes), item=name, qty=qty,
                  location=_pick(self.world.locations, location), batch=self._batch(name))

    @precondition(lambda self: len(self.orders) < self.max_orders)
    @rule(product=IDX, qty=st.integers(1, 100), minutes=MINUTES)
    def create_order(self, product: int, qty: int, minutes: int) -> None:
        """A production order for one of the plant's products."""
        bom, route = _pick(self.world.products, product)
        qty = 1 + (qty - 1) % self.max_order_qty
        name = f"P{len(self.orders) + 1}"
        ev = self.emit("OrderCreated", self._after(minutes), order=name,
                       item=self.world.boms[bom]["item"], qty=qty, bom=bom, route=route)
        ops = self.world.ops(route)
        self.orders[name] = {"order": name, "qty": qty, "bom": bom, "route": route,
                             "ops": ops, "created": self.clock, "ended": False,
                             "left": {**{op: qty for op in ops}, None: qty},
                             "lines": self.world.boms[bom]["lines"], "event": ev["id"]}

    @precondition(lambda self: self._has_open_order())
    @rule(order=IDX, minutes=MINUTES)
    def release(self, order: int, minutes: int) -> None:
        """An order released to the floor."""
        o = _pick(self._open(), order)
        self.emit("OrderReleased", self._after(minutes), order=o["order"])

    @precondition(lambda self: self._has_open_order())
    @rule(order=IDX, line=IDX, qty=st.sampled_from(("1", "2", "5")), source=IDX, to=IDX,
          skip_pick=st.integers(0, 4), minutes=MINUTES)
    def pick_and_put(self, order: int, line: int, qty: str, source: int, to: int,
                     skip_pick: int, minutes: int) -> None:
        """Warehouse work: a component picked and put for an order line."""
        o = _pick(self._open(), order)
        ln = _pick(o["lines"], line)
        item, batch = ln["item"], self._batch(ln["item"])
        if not ("put-without-pick" in self.faults and skip_pick == 4):
            self.emit("Picked", self._after(minutes), item=item, qty=qty,
                      location=_pick(self.world.locations, source), order=o["order"],
                      line=ln["line"], batch=batch)
        self.emit("Put", self._after(minutes // 2), item=item, qty=qty,
                  location=_pick(self.world.locations, to), order=o["order"], line=ln["line"],
                  batch=batch)

    @precondition(lambda self: self._has_open_order())
    @rule(order=IDX, device=IDX, minutes=MINUTES)
    def start(self, order: int, device: int, minutes: int) -> None:
        """An order started (on one of the plant's start devices)."""
        o = _pick(self._open(), order)
        self.emit("OrderStarted", self._after(minutes), order=o["order"],
                  device=_pick(self.world.devices_for("start", o["route"]), device))

    def _units(self, o: dict[str, Any], where: int | None, good: int, error: int,
               over: int) -> tuple[int, int]:
        if "over-report" in self.faults and over == 5:
            return good, error  # beyond the order quantity, maybe
        left = o["left"][where]
        good = min(good, left)
        error = min(error, left - good)
        o["left"][where] = left - good - error
        return good, error

    def _when(self, o: dict[str, Any], late: int, ago: int, minutes: int) -> datetime:
        """Now, or (fault "late") a moment in the past: a scanner syncing late."""
        if "late" in self.faults and late == 4:
            span = int((self.clock - o["created"]).total_seconds() // 60)
            return self.clock - timedelta(minutes=min(ago, span))
        return self._after(minutes)

    @precondition(lambda self: any(o["ops"] for o in self._open()))
    @rule(order=IDX, op=IDX, good=UNITS, error=ERRORS, device=IDX, over=st.integers(0, 5),
          late=st.integers(0, 4), ago=st.integers(0, 240), minutes=MINUTES)
    def report_operation(self, order: int, op: int, good: int, error: int, device: int,
                         over: int, late: int, ago: int, minutes: int) -> None:
        """Good and error quantity reported at an operation (job terminal, route card...)."""
        o = _pick([x for x in self._open() if x["ops"]], order)
        opno = _pick(o["ops"], op)
        good, error = self._units(o, opno, good, error, over)
        self.emit("OperationReported", self._when(o, late, ago, minutes), order=o["order"],
                  op=opno, good=good, error=error,
                  device=_pick(self.world.devices_for("operation", o["route"]), device))

    @precondition(lambda self: self._has_open_order())
    @rule(order=IDX, good=UNITS, error=ERRORS, device=IDX, over=st.integers(0, 5),
          late=st.integers(0, 4), ago=st.integers(0, 240), minutes=MINUTES)
    def report_finished(self, order: int, good: int, error: int, device: int, over: int,
                        late: int, ago: int, minutes: int) -> None:
        """Finished goods reported (client, job terminal or mobile scanner)."""
        o = _pick(self._open(), order)
        good, error = self._units(o, None, good, error, over)
        self.emit("ReportedAsFinished", self._when(o, late, ago, minutes), order=o["order"],
                  good=good, error=error,
                  device=_pick(self.world.devices_for("finish", o["route"]), device))

    @precondition(lambda self: self._has_open_order())
    @rule(order=IDX, good=UNITS, error=ERRORS, devices=st.lists(IDX, min_size=4, max_size=4),
          minutes=MINUTES)
    def run_order(self, order: int, good: int, error: int, devices: list[int],
                  minutes: int) -> None:
        """The usual day of an order: started, reported at each operation, then finished."""
        o = _pick(self._open(), order)
        route = o["route"]
        self.emit("OrderStarted", self._after(minutes), order=o["order"],
                  device=_pick(self.world.devices_for("start", route), devices[0]))
        for i, opno in enumerate(o["ops"]):
            g, e = self._units(o, opno, good, error, 0)
            self.emit("OperationReported", self._after(minutes), order=o["order"], op=opno,
                      good=g, error=e,
                      device=_pick(self.world.devices_for("operation", route), devices[1] + i))
        g, e = self._units(o, None, good, error, 0)
        self.emit("ReportedAsFinished", self._after(minutes), order=o["order"], good=g, error=e,
                  device=_pick(self.world.devices_for("finish", route), devices[2]))

    @precondition(lambda self: "manual" in self.faults and self._has_open_order())
    @rule(order=IDX, line=IDX, qty=st.sampled_from(("1", "0.5", "-1")), minutes=MINUTES)
    def consume_manually(self, order: int, line: int, qty: str, minutes: int) -> None:
        """A manual consumption (or a return, negative) on an order line."""
        o = _pick(self._open(), order)
        ln = _pick(o["lines"], line)
        self.emit("MaterialConsumed", self._after(minutes), order=o["order"], item=ln["item"],
                  qty=qty, line=ln["line"], batch=self._batch(ln["item"]))

    @precondition(lambda self: self._has_open_order())
    @rule(order=IDX, minutes=MINUTES)
    def end(self, order: int, minutes: int) -> None:
        """An order ended (costed)."""
        o = _pick(self._open(), order)
        o["ended"] = True
        self.emit("OrderEnded", self._after(minutes), order=o["order"])

    def _reversible(self) -> list[str]:
        return [e["id"] for e in self.events
                if e["type"] in REVERSIBLE and e["id"] not in self.reversed]

    @precondition(lambda self: "reversal" in self.faults and self._reversible())
    @rule(which=st.integers(0, 500), minutes=MINUTES)
    def reverse(self, which: int, minutes: int) -> None:
        """A correction: an earlier inventory or order event reversed."""
        eid = _pick(self._reversible()[::-1], which)  # 0 = the latest: shrinks to "undo"
        self.reversed.add(eid)
        self.emit("Reversal", self._after(minutes), reverses=eid)

    # --- properties -------------------------------------------------------------------------

    @invariant()
    def stock_is_conserved(self) -> None:
        """received + produced - consumed + adjusted == on-hand, per item, at every step."""
        for item, t in self.replayed().item_totals().items():
            if t["received"] + t["produced"] - t["consumed"] + t["adjusted"] != t["onhand"]:
                self.fail(f"stock of {item} not conserved: {t}")

    @invariant()
    def no_forbidden_findings(self) -> None:
        """No finding with a code in ``forbidden`` under ``policy``."""
        if not self.forbidden:
            return
        from backflush.projections.findings import findings

        found = findings(self.replayed(), codes=self.forbidden)
        if found:
            lines = "\n".join(f"  {f.code} {f.order}/{f.line} {f.item}: {f.message}"
                              for f in found)
            self.fail(f"{len(found)} forbidden finding(s) under the policy:\n{lines}")

    def teardown(self) -> None:
        """The real ledger: incremental == rebuild == memory; as-of T == prefix replay."""
        if self._failed or not self._ledger_now or len(self.events) < 2:
            return
        problem = check_ledger(self.events, self.params)
        if problem:
            self.fail(problem)


# --- the ledger check ------------------------------------------------------------------------


def _answers(store: Any, at: datetime | None, orders: list[str]) -> dict[str, Any]:
    from backflush.projections import asof

    return {
        "onhand": asof.onhand(store, at),
        "wip": asof.wip(store, at),
        "consumption": {o: asof.consumption(store, o, at) for o in orders},
        "hours": {o: asof.hours(store, o, at=at) for o in orders},
    }


def _memory_answers(result: Any, orders: list[str]) -> dict[str, Any]:
    known = set(result.orders())
    return {
        "onhand": result.onhand(),
        "wip": result.wip(),
        "consumption": {o: result.consumption(o) if o in known else [] for o in orders},
        "hours": {o: result.hours(order=o) if o in known else [] for o in orders},
    }


def _diff(what: str, a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for k in a:
        if a[k] != b[k]:
            return f"{what}: {k} differs:\n  {a[k]!r}\n  {b[k]!r}"
    return None


def check_ledger(events: list[dict[str, Any]], policy: dict[str, Any] | None = None,
                 url: str | None = None) -> str | None:
    """Import ``events`` into a temporary ledger and compare it with the in-memory replay.

    The events go in two imports (arrival order kept, the projections caught up between
    them). Returns None when incremental catch-up == rebuild == in-memory replay, the as-of
    answers at each event time equal the replay of what had happened by then, and findings
    under ``policy`` agree; else a description of the first difference. ``url``: a ledger to
    use instead of a temporary SQLite file (it must be empty).
    """
    from backflush.ledger.importer import run_import
    from backflush.ledger.store import Ledger as Store
    from backflush.memory import replay
    from backflush.projections import asof, materialise

    with tempfile.TemporaryDirectory(prefix="backflush-kit-") as tmp:
        store = Store(url or str(Path(tmp) / "ledger.db"))
        try:
            half = len(events) // 2
            for i, part in enumerate((events[:half], events[half:])):
                path = Path(tmp) / f"part{i}.jsonl"
                path.write_text(to_jsonl(part), encoding="utf-8")
                res = run_import(store, [str(path)])
                if res.errors:
                    return "import refused the history: " + "; ".join(map(str, res.errors[:3]))
                materialise.catch_up(store)
            mem = replay(events)
            orders = mem.orders()
            incremental = _answers(store, None, orders)
            expected = _memory_answers(mem, orders)
            problem = _diff("incremental catch-up vs in-memory replay", incremental, expected)
            if problem:
                return problem
            times = sorted({datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
                            for e in events})
            for t in times[:: max(1, len(times) // 4)]:
                problem = _diff(f"as of {_ts(t)}: ledger vs replay of what happened by then",
                                _answers(store, t, orders),
                                _memory_answers(replay(events, at=t), orders))
                if problem:
                    return problem
            ledger_findings = [f.as_dict() for f in asof.findings_replay(store, None, None,
                                                                          policy)]
            mem_findings = replay(events, policy=policy).findings() if policy is not None \
                else mem.findings()
            if ledger_findings != mem_findings:
                return f"findings: ledger {ledger_findings!r} != replay {mem_findings!r}"
            materialise.rebuild(store)
            problem = _diff("rebuild vs incremental catch-up", _answers(store, None, orders),
                            incremental)
            if problem:
                return problem
        finally:
            store.close()
    return None

