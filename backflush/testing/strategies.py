"""Hypothesis strategies for valid event histories, and a small history builder.

For property tests on flushing rules (the third group DESIGN writes for). Events are produced
in the engine's input shape: normalised dicts with every field of DESIGN §2 filled in,
quantities as ``Decimal``, ``at`` timezone-aware, unique ``id`` and ``seq`` (the recording
order), and the list sorted by (at, seq) -- ready for ``Replay.apply_all``. ``plain(events)``
turns them into interchange dicts (what a JSONL file holds, what ``backflush.replay`` and
``Ledger.import_events`` take), ``to_jsonl(events)`` into the text of a file.

Typical use::

    from hypothesis import given
    import backflush
    from backflush.testing import histories, plain

    @given(histories(items=4, devices=("job_terminal", "mobile"), faults=("late",)))
    def test_my_policy(events):
        result = backflush.replay(plain(events), policy=MY_POLICY)
        assert result.findings(code="DOUBLE_FLUSH") == []

Knobs of ``histories``: ``items`` / ``resources`` / ``operations`` / ``routes`` (a count or
the names), ``devices`` (the devices that report), ``faults`` (which of `FAULTS` may occur),
and the size (``max_orders``, ``max_reports``).

``History`` builds the same dicts by hand (tests, examples)::

    h = History()
    h.add("ItemDefined", 0, item="WHS6", tracking="batch")
    events = h.events()
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from backflush.projections.rules import BASES, DEVICES, PRINCIPLES, TRIGGER_KINDS

BASE_TIME = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
SEQ_STEP = 1000  # room to split an event into up to 999 parts with their own seq

_QTY_FIELDS = frozenset(("qty", "good", "error", "hours", "per", "scrap_pct", "scrap_const",
                         "setup_hours", "run_hours", "tolerance_pct"))

# Defaults of DESIGN §2, per event type (fields absent from an event take these).
_DEFAULTS = {
    "ItemDefined": {"unit": "ea", "decimals": 6, "tracking": "none", "flushing": "finish"},
    "ResourceDefined": {"input_location": None, "output_location": None},
    "BomDefined": {},
    "RouteDefined": {},
    "ProductionParametersSet": {"default_input_location": "BACKFLUSH", "tolerance_pct": 0,
                                "rules": None},
    "InventoryReceived": {"batch": None, "lp": None},
    "InventoryTransferred": {"batch": None, "lp": None},
    "InventoryCounted": {"batch": None},
    "Picked": {"order": None, "line": None, "work": None, "batch": None, "lp": None},
    "Put": {"order": None, "line": None, "work": None, "batch": None, "lp": None},
    "OrderCreated": {"route": None},
    "OrderReleased": {},
    "OrderStarted": {"qty": None, "device": "client"},
    "OperationReported": {"good": 0, "error": 0, "device": "job_terminal", "hours": None},
    "ReportedAsFinished": {"error": 0, "device": "client", "location": None, "batch": None,
                           "lp": None},
    "MaterialConsumed": {"location": None, "batch": None, "line": None, "device": "client"},
    "OrderEnded": {},
    "Reversal": {"reason": None},
}
_LINE_DEFAULTS = {"per": 1, "scrap_pct": 0, "scrap_const": 0, "flushing": None,
                  "operation": None, "location": None}
_OP_DEFAULTS = {"setup_hours": 0, "run_hours": 0}
_RULE_DEFAULTS = {"device": "*", "resource": None, "basis": "good+error"}


def dec(v) -> Decimal | None:
    """Exact Decimal of a number or decimal string (str() first: never binary float)."""
    if v is None or isinstance(v, Decimal):
        return v
    return Decimal(str(v))


def _norm_fields(d: dict, defaults: dict) -> dict:
    out = dict(defaults)
    out.update(d)
    for k in _QTY_FIELDS.intersection(out):
        out[k] = dec(out[k])
    return out


def normalise(ev: dict) -> dict:
    """Fill DESIGN §2 defaults and turn quantities into Decimal (a new dict; ``ev`` untouched)."""
    typ = ev["type"]
    out = _norm_fields(ev, _DEFAULTS.get(typ, {}))
    if typ == "BomDefined":
        out["lines"] = [_norm_fields(ln, _LINE_DEFAULTS) for ln in ev.get("lines", ())]
    elif typ == "RouteDefined":
        out["operations"] = [_norm_fields(o, _OP_DEFAULTS) for o in ev.get("operations", ())]
    elif typ == "ProductionParametersSet" and out.get("rules") is not None:
        out["rules"] = [dict(_RULE_DEFAULTS, **r) for r in out["rules"]]
    return out


class History:
    """Builds a normalised event history; ``at`` is given in minutes after ``start``.

    ``seq`` follows the order of ``add`` calls (recording order), spaced by SEQ_STEP; ``id`` is
    ``e<n>`` unless given. ``events()`` returns the apply order, sorted by (at, seq).
    """

    def __init__(self, start: datetime = BASE_TIME):
        self.start = start
        self._events: list = []

    def add(self, type: str, minutes=0, **fields) -> dict:
        """Append an event of ``type`` at ``start + minutes``; returns the normalised dict."""
        n = len(self._events) + 1
        ev = normalise({"type": type, **fields})
        ev["at"] = self.start + timedelta(minutes=float(minutes))
        ev["seq"] = n * SEQ_STEP
        ev.setdefault("id", f"e{n}")
        self._events.append(ev)
        return ev

    def events(self) -> list[dict]:
        """The events in apply order (at, seq)."""
        return sorted(self._events, key=lambda e: (e["at"], e["seq"]))


def split_event(events: list[dict], event_id: str, parts: list[tuple]) -> list[dict]:
    """Replace report ``event_id`` by partial reports with (good, error) from ``parts``.

    The parts keep the report's ``at`` and take consecutive ``seq`` numbers, so nothing else
    can come between them. Hours (if any) go to the first part.
    """
    out = []
    for ev in events:
        if ev["id"] != event_id:
            out.append(ev)
            continue
        for i, (good, error) in enumerate(parts):
            p = dict(ev)
            p["id"] = f"{event_id}.{i}"
            p["seq"] = ev["seq"] + i
            p["good"], p["error"] = dec(good), dec(error)
            if i and "hours" in p and p["hours"] is not None:
                p["hours"] = Decimal(0)
            out.append(p)
    return out


# --- strategies ---------------------------------------------------------------------------

QTYS = ("1", "2", "0.5", "0.25", "1.5", "0.333", "3")
PERS = ("1", "2", "3")
SCRAP_PCTS = ("0", "0", "5", "12.5")
SCRAP_CONSTS = ("0", "0", "1", "0.5")


def rules(resources=("R1", "R2", "R3"), devices=DEVICES):
    """A strategy for one flushing rule (DESIGN §4) naming ``resources`` and ``devices``."""
    principles = st.lists(st.sampled_from(PRINCIPLES), unique=True, max_size=3)
    return st.builds(
        lambda t, d, r, f, b: {"trigger": t, "device": d, "resource": r, "flush": f, "basis": b},
        st.sampled_from(TRIGGER_KINDS),
        st.sampled_from(("*", *devices)),
        st.one_of(st.none(), st.sampled_from(resources)),
        st.one_of(principles, st.just("always")),
        st.sampled_from(BASES),
    )


def rule_sets(resources=("R1", "R2", "R3"), devices=DEVICES):
    """A strategy for a rule list: None (= D365 defaults) or the defaults plus extra rules."""
    from backflush.projections.rules import default_rules

    return st.one_of(
        st.none(),
        st.lists(rules(resources, devices), max_size=4).map(
            lambda extra: default_rules() + extra),
        st.lists(rules(resources, devices), max_size=6),
    )


def policies(resources=("R1", "R2", "R3"), devices=DEVICES):
    """A strategy for a what-if policy (ProductionParametersSet-shaped dict)."""
    return st.builds(
        lambda loc, tol, r: {"default_input_location": loc, "tolerance_pct": tol, "rules": r},
        st.sampled_from(("BACKFLUSH", "IN1")),
        st.sampled_from((Decimal(0), Decimal(5))),
        rule_sets(resources, devices),
    )


FAULTS = ("reversal", "late", "put-without-pick", "over-report", "no-stock", "manual")
"""What may go wrong on a generated floor (the ``faults`` knob of ``histories``):

- ``reversal``: reversals of earlier inventory and order events;
- ``late``: events recorded after later ones (a scanner syncing late): recording order (seq)
  differs from floor order (at); without it the two agree;
- ``put-without-pick``: now and then a put with no pick before it;
- ``over-report``: reports beyond the order quantity; without it every operation and the
  report as finished stay within it;
- ``no-stock``: components need not be received (stock may go negative); without it every
  component is received in plenty at every location first;
- ``manual``: manual consumption (and returns) besides the flushing rules.
"""


def _names(spec, prefix: str) -> tuple:
    """A count (``3`` -> ``C1, C2, C3``) or the names themselves."""
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"need at least one {prefix!r} name, got {spec}")
        return tuple(f"{prefix}{i}" for i in range(1, spec + 1))
    names = tuple(spec)
    if not names:
        raise ValueError(f"need at least one {prefix!r} name")
    return names


def _input_location(i: int, resource: str) -> str:
    # Every second resource consumes from the default BACKFLUSH location, the others from
    # their own input location: both ways of DESIGN §2 occur.
    return "BACKFLUSH" if i % 2 == 1 else "IN" + _suffix(resource)


def _suffix(resource: str) -> str:
    return resource[1:] if resource[1:].isdigit() else "-" + resource


@st.composite
def histories(draw, max_orders: int = 3, max_reports: int = 4, reversals: bool = True,
              parameters: bool = True, *, items=3, resources=3, operations=3, routes=1,
              devices=DEVICES, faults=FAULTS):
    """A strategy for a valid, normalised event history sorted by (at, seq).

    Master data at minute 0 (``items`` components C1.. and a finished good FG,
    ``resources`` R1.., ``routes`` routes of up to ``operations`` operations 10, 20..., one
    BOM); receipts, picks and puts; per order a lifecycle (create, maybe release, maybe start,
    operation reports, reports as finished, manual consumption, maybe end) at increasing
    minutes, interleaved across orders, reported on ``devices``; the ``faults`` of `FAULTS`
    that may occur. ``parameters`` may record a ProductionParametersSet; ``reversals=False``
    is the same as leaving "reversal" out of ``faults``.
    """
    faults = frozenset(faults)
    unknown = faults - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)} (known: {', '.join(FAULTS)})")
    devices = tuple(devices)
    h = History()
    comps = _names(items, "C")
    res_names = _names(resources, "R")
    op_pool = _names(operations, "") if not isinstance(operations, int) else tuple(
        10 * (i + 1) for i in range(operations))
    tracked = {}
    for c in comps:
        tracked[c] = draw(st.sampled_from(("none", "batch")))
        h.add("ItemDefined", 0, item=c, decimals=draw(st.sampled_from((0, 2, 6))),
              tracking=tracked[c], flushing=draw(st.sampled_from(PRINCIPLES)))
    h.add("ItemDefined", 0, item="FG", decimals=0)
    inputs = {}
    for i, r in enumerate(res_names):
        inputs[r] = _input_location(i, r)
        h.add("ResourceDefined", 0, resource=r, input_location=inputs[r],
              output_location="OUT" + _suffix(r))
    route_names = (("RT",) + tuple(f"RT{i}" for i in range(2, routes + 1))
                   if isinstance(routes, int) else _names(routes, "RT"))
    route_ops = {}
    for rt in route_names:
        op_nos = draw(st.lists(st.sampled_from(op_pool), min_size=1, max_size=len(op_pool),
                               unique=True))
        op_nos.sort()
        ops = [{"op": n, "resource": draw(st.sampled_from(res_names)),
                "setup_hours": draw(st.sampled_from(("0", "0.5"))),
                "run_hours": draw(st.sampled_from(("0", "0.1", "0.25")))} for n in op_nos]
        route_ops[rt] = op_nos
        h.add("RouteDefined", 0, route=rt, operations=ops)
    all_ops = sorted({op for ops in route_ops.values() for op in ops})
    n_lines = draw(st.integers(1, 3))
    lines = []
    for i in range(n_lines):
        lines.append({
            "line": (i + 1) * 10,
            "item": draw(st.sampled_from(comps)),
            "qty": draw(st.sampled_from(QTYS)),
            "per": draw(st.sampled_from(PERS)),
            "scrap_pct": draw(st.sampled_from(SCRAP_PCTS)),
            "scrap_const": draw(st.sampled_from(SCRAP_CONSTS)),
            "flushing": draw(st.one_of(st.none(), st.sampled_from(PRINCIPLES))),
            "operation": draw(st.one_of(st.none(), st.sampled_from(all_ops))),
            "location": draw(st.sampled_from((None, None, "BACKFLUSH"))),
        })
    h.add("BomDefined", 0, bom="B", item="FG", lines=lines)
    if parameters and draw(st.booleans()):
        h.add("ProductionParametersSet", 0, tolerance_pct=draw(st.sampled_from(("0", "5"))),
              rules=draw(rule_sets(res_names)))

    # inventory
    locations = ("BULK", "BACKFLUSH", *sorted({v for v in inputs.values()} - {"BACKFLUSH"}))
    for c in comps:
        if "no-stock" not in faults:
            for loc in locations:
                h.add("InventoryReceived", 0, item=c, qty="1000", location=loc,
                      batch=f"{c}-B0" if tracked[c] == "batch" else None)
        for j in range(draw(st.integers(0, 2))):
            h.add("InventoryReceived", draw(st.integers(1, 30)), item=c,
                  qty=draw(st.sampled_from(("5", "10", "2.5", "40"))),
                  location=draw(st.sampled_from(locations)),
                  batch=f"{c}-B{j}" if tracked[c] == "batch" else None)
    n_orders = draw(st.integers(1, max_orders))
    for k in range(n_orders):
        order = f"P{k + 1}"
        qty = draw(st.integers(1, 12))
        t = draw(st.integers(1, 40))
        route = draw(st.sampled_from(sorted(route_ops)))
        op_nos = route_ops[route]
        h.add("OrderCreated", t, order=order, item="FG", qty=qty, bom="B", route=route)
        left = {op: qty for op in op_nos}
        left[None] = qty  # report as finished

        def step(lo=0, hi=6):
            nonlocal t
            t += draw(st.integers(lo, hi))
            return t

        def units(where, qty=qty, left=left):
            """(good, error) for one report at ``where`` (an op, None = as finished)."""
            if "over-report" in faults:
                return draw(st.integers(0, qty)), draw(st.integers(0, 2))
            good = draw(st.integers(0, left[where]))
            error = draw(st.integers(0, min(2, left[where] - good)))
            left[where] -= good + error
            return good, error

        if draw(st.booleans()):
            h.add("OrderReleased", step(), order=order)
        for ln in draw(st.lists(st.sampled_from(lines), max_size=2)):
            batch = f"{ln['item']}-B0" if tracked[ln["item"]] == "batch" else None
            q = draw(st.sampled_from(("1", "3", "10")))
            src = draw(st.sampled_from(("BULK", "BACKFLUSH")))
            dest = draw(st.sampled_from(locations[1:]))
            line_no = draw(st.one_of(st.none(), st.just(ln["line"])))
            if "put-without-pick" not in faults or draw(st.integers(0, 4)):
                h.add("Picked", step(), item=ln["item"], qty=q, location=src, order=order,
                      line=line_no, batch=batch)
            h.add("Put", step(), item=ln["item"], qty=q, location=dest, order=order,
                  line=line_no, batch=batch)
        if draw(st.booleans()):
            h.add("OrderStarted", step(), order=order,
                  qty=draw(st.one_of(st.none(), st.integers(1, qty))),
                  device=draw(st.sampled_from(devices)))
        kinds = ("op", "op", "fin", "man") if "manual" in faults else ("op", "op", "fin")
        for _ in range(draw(st.integers(0, max_reports))):
            kind = draw(st.sampled_from(kinds))
            if kind == "op":
                op = draw(st.sampled_from(op_nos))
                good, error = units(op)
                h.add("OperationReported", step(), order=order, op=op, good=good, error=error,
                      device=draw(st.sampled_from(devices)),
                      hours=draw(st.one_of(st.none(), st.sampled_from(("0.5", "2")))))
            elif kind == "fin":
                good, error = units(None)
                h.add("ReportedAsFinished", step(), order=order, good=good, error=error,
                      device=draw(st.sampled_from(devices)))
            else:
                ln = draw(st.sampled_from(lines))
                h.add("MaterialConsumed", step(), order=order, item=ln["item"],
                      qty=draw(st.sampled_from(("1", "0.5", "-1"))),
                      line=draw(st.one_of(st.none(), st.just(ln["line"]))))
        if draw(st.booleans()):
            h.add("OrderEnded", step(), order=order)
    for c in comps:
        if draw(st.integers(0, 3)) == 0:
            h.add("InventoryCounted", draw(st.integers(0, 60)), item=c, location="BACKFLUSH",
                  qty=draw(st.sampled_from(("0", "4"))),
                  batch=f"{c}-B0" if tracked[c] == "batch" else None)
        if draw(st.integers(0, 3)) == 0:
            h.add("InventoryTransferred", draw(st.integers(0, 60)), item=c, qty="2",
                  from_location="BULK", to_location="BACKFLUSH",
                  batch=f"{c}-B0" if tracked[c] == "batch" else None)

    if reversals and "reversal" in faults:
        candidates = [e for e in h.events()
                      if e["type"] not in ("OrderCreated", "ItemDefined", "ResourceDefined",
                                           "BomDefined", "RouteDefined",
                                           "ProductionParametersSet")]
        if candidates:
            targets = draw(st.lists(st.sampled_from(candidates), max_size=2,
                                    unique_by=lambda e: e["id"]))
            for target in targets:
                minutes = (target["at"] - h.start).total_seconds() / 60
                h.add("Reversal", minutes + draw(st.integers(0, 20)), reverses=target["id"])
    events = h.events()
    if "late" not in faults:
        # Recorded as it happened: the recording order follows the floor.
        for i, ev in enumerate(events, start=1):
            ev["seq"] = i * SEQ_STEP
    return events


@st.composite
def split_histories(draw, max_parts: int = 4):
    """A strategy for (history, same history with one report split into partial reports).

    The split report is a ReportedAsFinished or OperationReported not targeted by a reversal;
    its good and error units are cut into up to ``max_parts`` whole-unit parts.
    """
    events = draw(histories())
    reversed_ids = {e["reverses"] for e in events if e["type"] == "Reversal"}
    reports = [e for e in events
               if e["type"] in ("ReportedAsFinished", "OperationReported")
               and e["id"] not in reversed_ids and e["good"] + e["error"] > 0]
    if not reports:
        return events, events
    target = draw(st.sampled_from(reports))
    n = draw(st.integers(2, max_parts))

    def cut(total: Decimal) -> list:
        whole = int(total)
        cuts = sorted(draw(st.lists(st.integers(0, whole), min_size=n - 1, max_size=n - 1)))
        bounds = [0, *cuts, whole]
        parts = [Decimal(bounds[i + 1] - bounds[i]) for i in range(n)]
        parts[-1] += total - whole  # keep any fractional remainder exact
        return parts

    goods, errors = cut(target["good"]), cut(target["error"])
    return events, split_event(events, target["id"], list(zip(goods, errors, strict=True)))


def plain_event(v):
    """One engine-shaped event (or value) as interchange data: ``seq`` and None fields
    dropped, quantities as decimal strings, ``at`` as ISO 8601 text."""
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: plain_event(x) for k, x in v.items() if x is not None and k != "seq"}
    if isinstance(v, list):
        return [plain_event(x) for x in v]
    return v


def plain(events: list[dict]) -> list[dict]:
    """Engine-shaped events as interchange dicts (a JSONL file's lines), in recording order.

    ``seq`` and None fields are dropped, quantities become decimal strings and ``at`` ISO
    8601 text. ``backflush.replay(plain(events))`` gives what ``Replay().apply_all(events)``
    gives; ``to_jsonl`` writes the same as a file ``backflush import`` reads.
    """
    return [plain_event(e) for e in sorted(events, key=lambda e: e.get("seq", 0))]
