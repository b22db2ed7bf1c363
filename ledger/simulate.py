"""A deterministic plant simulator: JSONL histories with injected faults and their truth.

``simulate(orders=N, seed=S, faults=...)`` yields interchange-format event dicts of a small
plant: three resources on a 10/20/30 route (plus a robot cell R30R on route RT-ROBOT), finished
goods with 4-7 component lines, batch-tracked components, warehouse picking to the input
location of each line's operation. Orders run one after the other, so what is staged at an
input location always belongs to the order in progress.

**The clean plant** (no faults) has no finding at all under DESIGN §5: receipts cover
demand, every line is picked and put for exactly the quantity it will consume
(``round(q(order qty))``, scrap included), manual lines are consumed for their standard
quantity, the default rules do not overlap, reports come in sequence and add up.

**Faults** are injected per order: ``faults`` maps a fault name to the share of orders it
hits (``FAULTS`` lists the names and their default rates). Faults that cause findings are
exclusive within one order (their rates must add up to at most 1; an order lacking a line a
fault needs, e.g. a manual line, is left clean); harmless disturbances combine with
anything. Plant-level faults (``policy-overlap``, and the rules the double-flush faults
need) are recorded once, whatever the rate.

**Truth**: for every injected fault, ``truth`` (a list the caller passes in) receives
``{"fault", "order", "findings": [{"code", "order", "line", "item", "qty"}, ...]}`` with the
findings DESIGN §5 says the fault must cause, computed here from what was injected and the
formulas of DESIGN §4/§5 (``round(q(U))``, tolerance) — never by running the engine. Where a
fault causes several findings they are all listed: a double flush also leaves the input
location short (NEGATIVE_ON_HAND, or UNRESOLVED_BATCH for a batch-tracked item), material
never consumed stays at the input location (RESIDUAL_AT_INPUT, one per batch), and so on.
Harmless disturbances appear with an empty ``findings`` list.

Same arguments, same events and truth: it takes a ``random.Random(seed)`` and no clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
RESOURCES = [("R10", 10), ("R20", 20), ("R30", 30)]
ROBOT = "R30R"
TOLERANCE_PCT = Decimal(1)

#: Faults that cause findings (exclusive within an order), with their default rates.
FINDING_FAULTS: dict[str, float] = {
    "double-flush": 0.05,  # operation feedback on the scanner also flushes finish lines
    "double-flush-resource": 0.05,  # a per-resource rule of the robot cell flushes finish lines
    "scrap": 0.05,  # error units at the last operation, report as finished on the scanner
    "over-consumption": 0.05,  # more consumed by hand than the standard, beyond tolerance
    "under-consumption": 0.05,  # a manual line consumed short, beyond tolerance
    "manual-not-posted": 0.05,  # a manual line never consumed
    "no-stock": 0.05,  # a line picked from a location the books show empty
    "unresolved-batch": 0.05,  # a batch-tracked line put to the wrong input location
    "residual": 0.05,  # more put to the input location than the order consumes
    "wip-not-cleared": 0.05,  # fewer units reported as finished than the last operation made
    "before-release": 0.03,  # a setup confirmation booked before the order was released
    "after-end": 0.03,  # an operation confirmed after the order was ended
    "off-route": 0.03,  # a report on operation 40, which is not on the route
    "over-report": 0.03,  # started, reported and finished beyond the order quantity
}
#: Disturbances that must cause no finding, with their default rates.
HARMLESS_FAULTS: dict[str, float] = {
    "late": 0.05,  # reports sent late (recorded after later events), as a scanner syncing late
    "split": 0.1,  # report as finished and puts split into several partial events
    "reversal": 0.05,  # a report sent, reversed, and sent again
    "duplicate": 0.05,  # the same message delivered twice (same id and content)
    "within-tolerance": 0.05,  # a line consumed over its standard by up to the tolerance
}
#: Plant-level faults (on when named; the rate is ignored).
PLANT_FAULTS: dict[str, float] = {
    "policy-overlap": 1.0,  # a rule that can flush finish lines twice, used by no order
}
FAULTS: dict[str, float] = {**FINDING_FAULTS, **HARMLESS_FAULTS, **PLANT_FAULTS}

# Extra rules the double-flush faults record (the defaults of DESIGN §4 stay as they are).
SCANNER_RULE = {"trigger": "operation", "device": "mobile", "flush": ["finish"]}
ROBOT_RULE = {"trigger": "operation", "resource": ROBOT, "flush": ["finish"]}
DEFAULT_RULES = [
    {"trigger": "start", "device": "*", "flush": ["start"]},
    {"trigger": "put", "device": "*", "flush": ["available_at_location"]},
    {"trigger": "operation", "device": "*", "flush": ["operation_finish"]},
    {"trigger": "finish", "device": "client", "flush": ["finish", "production_finish"]},
    {"trigger": "finish", "device": "job_terminal", "flush": ["finish", "production_finish"]},
    {"trigger": "finish", "device": "mobile", "flush": ["finish", "production_finish"],
     "basis": "good"},
]
ALL_PRINCIPLES = ("start", "finish", "manual", "available_at_location", "operation_finish",
                  "production_finish")


def parse_faults(specs: Any) -> dict[str, float]:
    """``["scrap", "late:0.2"]`` (or a mapping) -> {name: rate}; ValueError on a bad spec."""
    if isinstance(specs, Mapping):
        items = [(k, v) for k, v in specs.items()]
    else:
        items = []
        for spec in specs or ():
            name, sep, rate = str(spec).partition(":")
            items.append((name.strip(), rate.strip() if sep else None))
    out: dict[str, float] = {}
    for name, rate in items:
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
        if rate is None:
            r = FAULTS[name]
        else:
            try:
                r = float(rate)
            except ValueError:
                raise ValueError(f"fault {name!r}: rate {rate!r} is not a number") from None
            if not 0 <= r <= 1:
                raise ValueError(f"fault {name!r}: rate {rate!r} is not between 0 and 1")
        out[name] = r
    total = sum(r for n, r in out.items() if n in FINDING_FAULTS)
    if total > 1 + 1e-9:
        raise ValueError(f"the rates of faults that cause findings add up to {total:g} > 1 "
                         "(they are exclusive within an order)")
    return out


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _round(q: Decimal, decimals: int) -> Decimal:
    return q.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def _s(q: Decimal) -> str:
    """Decimal as interchange text without exponent or needless trailing zeros."""
    s = format(q, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def _policy_overlaps(rules: list[dict]) -> int:
    """DESIGN §5 POLICY_OVERLAP for rules none of which shadows another: pairs of rules of
    different trigger kinds listing a common principle (``always`` lists them all)."""
    def principles(r):
        f = r["flush"]
        return set(ALL_PRINCIPLES) if f == "always" else {p for p in f if p != "manual"}

    n = 0
    for i, a in enumerate(rules):
        for b in rules[i + 1:]:
            if a["trigger"] != b["trigger"] and principles(a) & principles(b):
                n += 1
    return n


class _Line:
    """One BOM line as the planner sees it for one order."""

    __slots__ = ("line", "item", "qty", "scrap", "decimals", "tracked", "principle", "op", "loc")

    def __init__(self, ld, item, loc):
        self.line = ld["line"]
        self.item = ld["item"]
        self.qty = Decimal(ld["qty"])
        self.scrap = Decimal(ld.get("scrap_pct", "0"))
        self.decimals = item["decimals"]
        self.tracked = item["tracking"] == "batch"
        self.principle = ld.get("flushing") or item["flushing"]
        self.op = ld["operation"] or 10
        self.loc = loc

    def q(self, units) -> Decimal:
        """round(q(U)) of DESIGN §4 (per 1, no scrap constant in this plant)."""
        if units <= 0:
            return Decimal(0)
        return _round(self.qty * Decimal(units) * (100 + self.scrap) / 100, self.decimals)


def simulate(
    orders: int,
    seed: int = 0,
    faults: Any = (),
    products: int = 20,
    truth: list | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the events of a simulated plant history, in sending order.

    ``faults``: fault specs (``"name"`` or ``"name:rate"``) or a {name: rate} mapping.
    ``truth``: a list that receives one record per injected fault (see the module doc).
    """
    rates = parse_faults(faults)
    rnd = random.Random(seed)
    n = 0
    truth = truth if truth is not None else []

    def ev(type_: str, at: datetime, **fields: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {"type": type_, "at": _ts(at), "id": f"sim{seed}-{n:08d}", **fields}

    t = START
    comps = [f"C{i:03d}" for i in range(1, 41)]
    items: dict[str, dict[str, Any]] = {}
    for c in comps:
        items[c] = {
            "tracking": "batch" if int(c[1:]) % 4 == 0 else "none",
            "flushing": rnd.choice(["finish", "finish", "finish", "start",
                                    "available_at_location"]),
            "decimals": rnd.choice([0, 2, 3]),
        }
        yield ev("ItemDefined", t, item=c, **items[c])
    fgs = [f"FG{i:03d}" for i in range(1, products + 1)]
    for fg in fgs:
        yield ev("ItemDefined", t, item=fg, decimals=0)
    for res, _op in [*RESOURCES, (ROBOT, 30)]:
        yield ev("ResourceDefined", t, resource=res, input_location=f"{res}-IN",
                 output_location=f"{res}-OUT")
    routes = {"RT-STD": [r for r, _ in RESOURCES], "RT-ROBOT": ["R10", "R20", ROBOT]}
    for route, res_list in routes.items():
        yield ev("RouteDefined", t, route=route, operations=[
            {"op": op, "resource": res, "setup_hours": "0.5", "run_hours": "0.02"}
            for res, (_r, op) in zip(res_list, RESOURCES, strict=True)
        ])
    if "off-route" in rates:
        # A new route version with a rework operation 40, effective long after the last
        # order: orders keep the version in force when they were created, so a report on
        # op 40 is known to the ledger yet off their route.
        yield ev("RouteDefined", START.replace(year=START.year + 50), route="RT-STD",
                 operations=[{"op": op, "resource": res, "setup_hours": "0.5",
                              "run_hours": "0.02"} for res, op in [*RESOURCES, ("R30", 40)]])
    boms: dict[str, list[dict[str, Any]]] = {}
    for fg in fgs:
        lines = []
        for i, c in enumerate(rnd.sample(comps, rnd.randint(4, 7)), start=1):
            line = {"line": i * 10, "item": c, "qty": str(rnd.choice([1, 2, 3, "0.5", "1.25"])),
                    "operation": rnd.choice([10, 20, 30, None])}
            if rnd.random() < 0.2:
                line["scrap_pct"] = "2"
            if rnd.random() < 0.1:
                line["flushing"] = "manual"
            lines.append(line)
        boms[fg] = lines
        yield ev("BomDefined", t, bom=f"B-{fg}", item=fg, lines=lines)
    rules = [dict(r) for r in DEFAULT_RULES]
    if "double-flush" in rates or "policy-overlap" in rates:
        rules.append(SCANNER_RULE)
    if "double-flush-resource" in rates:
        rules.append(ROBOT_RULE)
    params: dict[str, Any] = {"default_input_location": "BACKFLUSH",
                              "tolerance_pct": _s(TOLERANCE_PCT), "rules": rules}
    yield ev("ProductionParametersSet", t, **params)
    overlaps = _policy_overlaps(rules)
    if overlaps:
        plant = [n_ for n_ in ("policy-overlap", "double-flush", "double-flush-resource")
                 if n_ in rates]
        truth.append({"fault": plant[0], "order": None, "findings": [
            {"code": "POLICY_OVERLAP", "order": None, "line": None, "item": None, "qty": "1"}
            for _ in range(overlaps)]})

    finding_faults = [(k, r) for k, r in rates.items() if k in FINDING_FAULTS]
    late: list[tuple[int, int, dict[str, Any]]] = []  # heap: (send after n, tiebreak, event)
    batch_no = 0
    bulk: dict[str, list[list[Any]]] = {}  # item -> FIFO [[batch, qty], ...] at BULK
    for o in range(1, orders + 1):
        t += timedelta(minutes=rnd.randint(5, 40))
        fg = rnd.choice(fgs)
        qty = rnd.choice([10, 20, 25, 50, 100])
        order = f"P{o:07d}"
        # Which fault hits this order (exclusive), and which disturbances.
        u = rnd.random()
        fault = None
        acc = 0.0
        for name, r in finding_faults:
            acc += r
            if u < acc:
                fault = name
                break
        harmless = {h for h in HARMLESS_FAULTS if h in rates and rnd.random() < rates[h]}
        route = "RT-ROBOT" if fault == "double-flush-resource" else "RT-STD"
        res_of = dict(zip((op for _, op in RESOURCES), routes[route], strict=True))
        lines = [_Line(ld, items[ld["item"]], f"{res_of[ld['operation'] or 10]}-IN")
                 for ld in boms[fg]]
        found: list[dict[str, Any]] = []

        def finding(code, line=None, item=None, q=Decimal(0), _order=order, _found=found):
            _found.append({"code": code, "order": _order, "line": line, "item": item,
                          "qty": _s(q)})

        # --- choose the fault's target and its parameters -------------------------------
        made = qty  # units started, made at every operation
        target: _Line | None = None
        finish_lines = [ln for ln in lines if ln.principle == "finish"]
        manual_lines = [ln for ln in lines if ln.principle == "manual"]
        extra = Decimal(0)
        error = wip = 0
        if fault == "double-flush":
            if not finish_lines:
                fault = None
        elif fault == "double-flush-resource":
            if not [ln for ln in finish_lines if ln.op == 30]:
                fault = None
        elif fault == "scrap":
            error = rnd.randint(1, max(1, qty // 10))
            if not any(ln.q(qty) != ln.q(qty - error) for ln in finish_lines):
                fault = None
        elif fault in ("over-consumption", "residual"):
            cands = [ln for ln in lines if ln.principle != "available_at_location"]
            target = rnd.choice(cands) if cands else None
        elif fault in ("under-consumption", "manual-not-posted"):
            target = rnd.choice(manual_lines) if manual_lines else None
        elif fault == "no-stock":
            cands = [ln for ln in lines if not ln.tracked]
            target = rnd.choice(cands) if cands else None
        elif fault == "unresolved-batch":
            cands = [ln for ln in lines if ln.tracked]
            target = rnd.choice(cands) if cands else None
        elif fault == "wip-not-cleared":
            wip = rnd.randint(1, max(1, qty // 5))
        elif fault == "over-report":
            made = qty + rnd.randint(1, max(1, qty // 10))
        if fault in ("over-consumption", "residual", "under-consumption", "manual-not-posted",
                     "no-stock", "unresolved-batch") and target is None:
            fault = None
        if target is not None and fault in ("over-consumption", "residual",
                                            "under-consumption"):
            full = target.q(made)
            extra = max(_round(full / 10, target.decimals),
                        Decimal(1).scaleb(-target.decimals))
            if fault == "under-consumption" and extra >= full:
                fault = None

        # A variance of exactly the tolerance (|variance| > tolerance is a finding), on an order
        # no other fault touches; the extra is put too, so nothing is left or short.
        tol_line, tol_extra = None, Decimal(0)
        if "within-tolerance" in harmless:
            cands = []
            for ln in lines:
                if fault is None and ln.principle != "available_at_location":
                    x = (ln.q(made) * TOLERANCE_PCT / 100).quantize(
                        Decimal(1).scaleb(-ln.decimals), rounding=ROUND_FLOOR)
                    if x > 0:
                        cands.append((ln, x))
            if cands:
                tol_line, tol_extra = rnd.choice(cands)
            else:
                harmless.discard("within-tolerance")

        # --- receive what the order needs --------------------------------------------------
        need = {ln.line: ln.q(made) + (extra if ln is target and fault in (
            "over-consumption", "residual") else 0) for ln in lines}
        if tol_line is not None:
            need[tol_line.line] += tol_extra
        for ln in lines:
            if fault == "no-stock" and ln is target:
                continue
            stock = bulk.setdefault(ln.item, [])
            have = sum((q for _, q in stock), Decimal(0))
            if have < need[ln.line]:
                batch_no += 1
                rq = (need[ln.line] * Decimal("1.2")).to_integral_value(ROUND_CEILING)
                fields = {"item": ln.item, "qty": _s(rq), "location": "BULK"}
                batch = None
                if ln.tracked:
                    batch = fields["batch"] = f"BT{batch_no:07d}"
                yield ev("InventoryReceived", t, **fields)
                stock.append([batch, rq])
        yield ev("OrderCreated", t, order=order, item=fg, qty=qty, bom=f"B-{fg}", route=route)
        order_events: list[dict[str, Any]] = []

        def send(e, _oe=order_events):
            _oe.append(e)
            return e

        t1 = t + timedelta(seconds=30)
        if fault == "before-release":
            yield send(ev("OperationReported", t1, order=order, op=10, good=0, hours="0.5"))
            finding("OUT_OF_SEQUENCE", None, fg)
        t1 = t + timedelta(minutes=1)
        yield ev("OrderReleased", t1, order=order)

        # --- pick and put each line's material to its input location ----------------------
        counts: set[tuple[str, str, str | None]] = set()  # buckets counted after the order
        staged: dict[int, list[tuple[str | None, Decimal]]] = {}
        for ln in lines:
            want = need[ln.line]
            parts: list[tuple[str | None, Decimal]] = []
            if fault == "no-stock" and ln is target:
                parts.append((None, want))
                src = "QC"
                counts.add((ln.item, "QC", None))
            else:
                src = "BULK"
                stock = bulk[ln.item]
                left = want
                while left > 0:
                    b, have = stock[0]
                    use = min(have, left)
                    parts.append((b, use))
                    left -= use
                    if use == have:
                        stock.pop(0)
                    else:
                        stock[0][1] = have - use
            if "split" in harmless and len(parts) == 1 and parts[0][1] > 1:
                b, pq = parts[0]
                half = (pq / 2).to_integral_value(ROUND_CEILING)
                parts = [(b, half), (b, pq - half)]
            put_loc = ln.loc
            if fault == "unresolved-batch" and ln is target:
                others = sorted({x.loc for x in lines if x.loc != ln.loc}
                                | {f"{r}-IN" for r in routes[route]} - {ln.loc})
                put_loc = rnd.choice(others)
            staged[ln.line] = parts
            for b, pq in parts:
                fields = {"item": ln.item, "qty": _s(pq), "order": order, "line": ln.line}
                if b:
                    fields["batch"] = b
                counts.add((ln.item, put_loc, b))
                t1 += timedelta(seconds=30)
                yield send(ev("Picked", t1, location=src, work=f"W{o}", **fields))
                t1 += timedelta(seconds=30)
                yield send(ev("Put", t1, location=put_loc, work=f"W{o}", **fields))
            if fault == "unresolved-batch" and ln is target:
                counts.add((ln.item, ln.loc, None))
                finding("UNRESOLVED_BATCH", ln.line, ln.item, want)
                misplaced: dict[str | None, Decimal] = {}
                for b, pq in parts:
                    misplaced[b] = misplaced.get(b, Decimal(0)) + pq
                for q in misplaced.values():
                    finding("RESIDUAL_AT_INPUT", ln.line, ln.item, q)
            if fault == "no-stock" and ln is target:
                finding("NEGATIVE_ON_HAND", ln.line, ln.item, want)

        def residual(ln, consumed, _staged=staged):
            """RESIDUAL_AT_INPUT per batch: the order's puts are consumed first in first out."""
            per: dict[str | None, Decimal] = {}
            left = consumed
            for b, pq in _staged[ln.line]:
                use = min(pq, left)
                left -= use
                if pq - use > 0:
                    per[b] = per.get(b, Decimal(0)) + pq - use
            for _b, q in per.items():
                finding("RESIDUAL_AT_INPUT", ln.line, ln.item, q)

        t1 += timedelta(minutes=2)
        yield send(ev("OrderStarted", t1, order=order, **({"qty": made} if made != qty else {})))

        # --- operations --------------------------------------------------------------------
        op_device = "mobile" if fault == "double-flush" else "job_terminal"
        reversal_done = False
        for _res, op in RESOURCES:
            err = error if op == 30 else 0
            good = made - err
            n_reports = rnd.choice([1, 2, 3])
            done_good = 0
            for p in range(n_reports):
                t1 += timedelta(minutes=rnd.randint(10, 60))
                g = good // n_reports if p < n_reports - 1 else good - done_good
                e = err if p == n_reports - 1 else 0
                done_good += g
                fields = {"order": order, "op": op, "good": g}
                if e:
                    fields["error"] = e
                if op_device != "job_terminal":
                    fields["device"] = op_device
                if "reversal" in harmless and not reversal_done and g >= 2:
                    # a typo (one unit short), reversed and sent again
                    wrong = ev("OperationReported", t1, **{**fields, "good": g - 1})
                    yield send(wrong)
                    t1 += timedelta(minutes=1)
                    yield ev("Reversal", t1, reverses=wrong["id"], reason="typo")
                    t1 += timedelta(minutes=1)
                    reversal_done = True
                e_rep = send(ev("OperationReported", t1, **fields))
                if "late" in harmless and rnd.random() < 0.5:
                    heapq.heappush(late, (n + rnd.randint(20, 200), n, e_rep))
                else:
                    yield e_rep
        if fault == "off-route":
            t1 += timedelta(minutes=5)
            yield send(ev("OperationReported", t1, order=order, op=40, good=qty))
            finding("OUT_OF_SEQUENCE", None, fg)

        # --- report as finished ------------------------------------------------------------
        fin = made - error - wip
        fin_device = "mobile" if fault == "scrap" else "client"
        n_fin = 2 if "split" in harmless and fin >= 2 else 1
        done = 0
        for p in range(n_fin):
            t1 += timedelta(minutes=5)
            g = fin // n_fin if p < n_fin - 1 else fin - done
            done += g
            fields = {"order": order, "good": g, "location": "FG-STOCK"}
            if fin_device != "client":
                fields["device"] = fin_device
            yield send(ev("ReportedAsFinished", t1, **fields))

        # --- manual lines ------------------------------------------------------------------
        for ln in lines:
            q = None
            if ln.principle == "manual":
                q = ln.q(made)
                if ln is target and fault == "manual-not-posted":
                    q = None
                elif ln is target and fault == "under-consumption":
                    q -= extra
                elif ln is target and fault == "over-consumption":
                    q += extra
            elif ln is target and fault == "over-consumption":
                q = extra
            if ln is tol_line:
                q = (q or 0) + tol_extra
            if q is not None:
                t1 += timedelta(seconds=10)
                yield send(ev("MaterialConsumed", t1, order=order, item=ln.item, qty=_s(q),
                              line=ln.line, location=ln.loc))
        t1 += timedelta(minutes=1)
        yield send(ev("OrderEnded", t1, order=order))
        if fault == "after-end":
            t1 += timedelta(minutes=3)
            yield send(ev("OperationReported", t1, order=order, op=30, good=0, hours="0.25"))
            finding("OUT_OF_SEQUENCE", None, fg)

        # --- the truth of the other faults (DESIGN §4/§5 formulas) -------------------------
        if fault in ("double-flush", "double-flush-resource"):
            for ln in finish_lines:
                if fault == "double-flush-resource" and ln.op != 30:
                    continue
                q = ln.q(made)
                finding("DOUBLE_FLUSH", ln.line, ln.item, q)
                # the second flush finds the input location empty
                finding("UNRESOLVED_BATCH" if ln.tracked else "NEGATIVE_ON_HAND",
                        ln.line, ln.item, q)
                counts.add((ln.item, ln.loc, None))
        elif fault == "scrap":
            for ln in finish_lines:
                short = ln.q(made) - ln.q(made - error)
                if short > 0:
                    finding("SCRAP_SHORTFALL", ln.line, ln.item, short)
                    residual(ln, ln.q(made - error))
        elif fault == "over-consumption":
            finding("OVER_CONSUMPTION", target.line, target.item, extra)
        elif fault == "under-consumption":
            finding("UNDER_CONSUMPTION", target.line, target.item, extra)
            residual(target, target.q(made) - extra)
        elif fault == "manual-not-posted":
            finding("MANUAL_NOT_POSTED", target.line, target.item, target.q(made))
            residual(target, Decimal(0))
        elif fault == "residual":
            residual(target, target.q(made))
        elif fault == "wip-not-cleared":
            finding("WIP_NOT_CLEARED", None, fg, Decimal(wip))
            for ln in finish_lines:
                expected = ln.q(made)
                short = expected - ln.q(fin)
                if short > expected * TOLERANCE_PCT / 100:
                    finding("UNDER_CONSUMPTION", ln.line, ln.item, short)
                if short > 0:
                    residual(ln, ln.q(fin))
        elif fault == "over-report":
            for _op in (10, 20, 30, None):
                finding("OUT_OF_SEQUENCE", None, fg, Decimal(made - qty))
        if fault is not None:
            truth.append({"fault": fault, "order": order, "findings": found})
        for h in sorted(harmless):
            truth.append({"fault": h, "order": order, "findings": []})
        if "duplicate" in harmless and order_events:
            yield dict(rnd.choice(order_events))

        # Count the staging at the end of the run (seed 002) where a fault left something:
        # the next order starts from clean input locations.
        if fault is not None:
            for c, loc, b in sorted(counts, key=lambda k: (k[0], k[1], k[2] or "")):
                t1 += timedelta(seconds=5)
                fields = {"item": c, "location": loc, "qty": 0}
                if b:
                    fields["batch"] = b
                yield ev("InventoryCounted", t1, **fields)
        t = t1
        while late and late[0][0] <= n:
            yield heapq.heappop(late)[2]
    while late:
        yield heapq.heappop(late)[2]
