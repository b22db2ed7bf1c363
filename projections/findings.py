"""Findings: what an auditor must look at, derived from the replay engine's state (DESIGN §5).

Pure functions: no I/O, no clock. ``findings(engine)`` reads a ``Replay`` after (part of) a
history was applied; ``policy_overlaps(policy)`` inspects flushing rules alone. Each code is one
small function in a registry (``LINE_CHECKS`` per order line, ``ORDER_CHECKS`` per order,
``GLOBAL_CHECKS``), so ``codes=`` runs only the checks asked for.

Severities (DESIGN is silent; chosen as a controller would rank them):

- ``error`` — the books are wrong now and need a correcting posting, or traceability is lost:
  DOUBLE_FLUSH, SCRAP_SHORTFALL, MANUAL_NOT_POSTED, NEGATIVE_ON_HAND, UNRESOLVED_BATCH.
- ``warning`` — a variance or loose end to explain, often legitimate on a real floor:
  OVER_CONSUMPTION, UNDER_CONSUMPTION, RESIDUAL_AT_INPUT, WIP_NOT_CLEARED, OUT_OF_SEQUENCE,
  POLICY_OVERLAP (a configuration that *can* double-flush; nothing posted wrong yet).

Decisions where DESIGN is silent:

- DOUBLE_FLUSH: a line with postings from two or more different trigger *kinds* (start,
  operation, finish, put; manual consumption is not a trigger) and posted > expected. Its
  quantity is posted − expected. It can arise while the order runs.
- SCRAP_SHORTFALL: a trigger with basis ``good`` flushed the line, error units were reported at
  the line's operation or any later operation (or on report as finished) — a unit scrapped at
  op 20 had consumed its op-10 material — and posted < expected. Its quantity is the
  consumption of the error units the good-only trigger left out (round(q(P)) − round(q(P − e))
  for P units processed and e unflushed error units), capped by expected − posted: while the
  order runs, units not yet finished are not a shortfall.
- OVER_/UNDER_CONSUMPTION (once ended): the variance not explained by DOUBLE_FLUSH (all of it)
  or SCRAP_SHORTFALL (its quantity), when beyond tolerance; a manual line with nothing posted
  is MANUAL_NOT_POSTED instead. Quantities are positive (the size of the variance).
- NEGATIVE_ON_HAND: one finding per order, item, location and batch (and one per key for
  takes outside any order, e.g. a put without a pick driving in-transit negative); its
  quantity is how far on-hand went below zero at the deepest point. An unresolved take of a
  tracked item is UNRESOLVED_BATCH only (see the engine's decisions).
- RESIDUAL_AT_INPUT: one finding per order, item, location and batch.
- WIP_NOT_CLEARED: per operation, good units at that operation not processed at the next one
  (or, after the last, not reported as finished), with DESIGN §5's fallback: an operation
  nobody reported on is deemed to have processed what was finished (so a robot cell outside
  MES leaves no WIP). Line is None, item is the order's item.
- OUT_OF_SEQUENCE: one finding per order, reason and operation; the quantity is the excess
  over the order quantity for "beyond order qty", else 0 (the message counts the events).
- POLICY_OVERLAP: see ``policy_overlaps``.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from itertools import combinations

from backflush.projections.common import fmt_qty
from backflush.projections.exact import exact
from backflush.projections.orderstate import NOTHING
from backflush.projections.records import _Frozen
from backflush.projections.rules import (
    DEVICES,
    PRINCIPLES,
    TRIGGER_KINDS,
    ZERO,
    Params,
    line_quantity,
    match_rule,
    rule_basis,
    tolerance,
)

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from typing import Any

SEVERITIES = ("info", "warning", "error")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

SEVERITY = {
    "DOUBLE_FLUSH": "error",
    "SCRAP_SHORTFALL": "error",
    "OVER_CONSUMPTION": "warning",
    "UNDER_CONSUMPTION": "warning",
    "MANUAL_NOT_POSTED": "error",
    "NEGATIVE_ON_HAND": "error",
    "UNRESOLVED_BATCH": "error",
    "RESIDUAL_AT_INPUT": "warning",
    "WIP_NOT_CLEARED": "warning",
    "OUT_OF_SEQUENCE": "warning",
    "POLICY_OVERLAP": "warning",
}
CODES = tuple(SEVERITY)

#: Codes whose truth depends on other orders' stock (not exact on an order-local replay).
GLOBAL_CODES = frozenset(("NEGATIVE_ON_HAND", "UNRESOLVED_BATCH"))

_RULE_TRIGGERS = frozenset(("start", "operation", "finish", "put"))
_KIND_NAMES = {
    "start": "start",
    "operation": "operation feedback",
    "finish": "report as finished",
    "put": "put",
    "manual": "manual consumption",
}


class Finding(_Frozen):
    """One finding: code, severity, where (order/line/item), how much, and which events.

    ``where`` (a location, an operation, a rule set) only tells findings of the same code
    apart (``key``): not compared, hashed or shown, as the other fields are (a value record,
    hand-written like ``projections.records``: no dataclasses import in a query process).
    """

    __slots__ = ("code", "severity", "order", "line", "item", "qty", "events", "message",
                 "where")

    def __init__(self, code: str, severity: str, order: str | None, line: int | None,
                 item: str | None, qty: Decimal, events: tuple[str, ...], message: str,
                 where: str = ""):
        self._init(code, severity, order, line, item, qty, events, message, where)

    def _values(self) -> tuple:
        return (self.code, self.severity, self.order, self.line, self.item, self.qty,
                self.events, self.message)

    def __repr__(self):
        names = self.__slots__[:-1]
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"Finding({fields})"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict with the JSON keys of DESIGN §7 (qty stays a Decimal)."""
        return {"code": self.code, "severity": self.severity, "order": self.order,
                "line": self.line, "item": self.item, "qty": self.qty,
                "events": list(self.events), "message": self.message}

    @property
    def key(self) -> tuple:
        """Identity of a finding across replays of a growing history (audit: where it arises)."""
        return (self.code, self.order, self.line, self.item, self.where)

    @property
    def rank(self) -> int:
        """Severity rank: info 0, warning 1, error 2."""
        return SEVERITY_RANK[self.severity]


def _sk(v):
    return (0, "") if v is None else (1, v)


def sort_key(f: Finding) -> tuple:
    """Deterministic order: order, line, code, then item and message."""
    return (_sk(f.order), _sk(f.line), f.code, _sk(f.item), f.message)


def _mk(code, order, line, item, qty, events, message, where="") -> Finding:
    ids = dict.fromkeys(events)  # distinct, in first-seen order, without a Python loop
    ids.pop(None, None)
    return Finding(code, SEVERITY[code], order, line, item, qty, tuple(ids), message, where)


def _line_label(ln) -> str:
    return f"line {ln.line} ({ln.item})" if ln.line is not None else f"unplanned {ln.item}"


def _describe_triggers(flush_events, op=None) -> str:
    """'operation 20 on job_terminal and report as finished on mobile' style text."""
    seen: dict = {}
    for kind, device, _eid in flush_events:
        if kind not in _RULE_TRIGGERS:
            continue
        seen.setdefault(kind, [])
        if device and device not in seen[kind]:
            seen[kind].append(device)
    def name(k):
        return f"operation {op}" if k == "operation" and op is not None else _KIND_NAMES[k]

    parts = [f"{name(k)} on {'/'.join(d) if d else '?'}" for k, d in seen.items()]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# --- per-line consumption findings: one small function per code ------------------------------
#
# Each takes (order state, line state) and returns a Finding or None. The quantities they share
# (what a double flush or a scrap shortfall explains of the variance) are the helpers below,
# so OVER/UNDER_CONSUMPTION covers exactly "any other variance" (DESIGN §5).


def _errors_downstream(o, op) -> Decimal:
    """Error units reported at ``op`` or any later operation, plus on report as finished."""
    total = o.fin_error
    for k, e in (o.op_error or NOTHING).items():
        if op is None or k >= op:
            total += e
    return total


def _double_qty(ln) -> Decimal:
    """posted − expected when two or more trigger kinds flushed the line and posted exceeds
    expected (DOUBLE_FLUSH), else 0."""
    # ``by_trigger`` has a key for every kind that ever flushed the line (a reversal leaves
    # it at 0): fewer than two rule kinds there settles it without a pass over the line's
    # postings, which grow with every report (an audit asks after each event: quadratic).
    if sum(k in _RULE_TRIGGERS for k in ln.by_trigger or ()) < 2:
        return ZERO
    over = ln.posted - ln.expected
    if over > 0 and len({k for k, _, _ in ln.flush_events if k in _RULE_TRIGGERS}) >= 2:
        return over
    return ZERO


def _short_qty(ln) -> Decimal:
    """Quantity missing because a good-only trigger left error units unflushed (0 if none,
    or when the line is a double flush: that explains its variance)."""
    if ln.line is None or not ln.good_basis_flushes or _double_qty(ln):
        return ZERO
    expected = ln.expected
    posted = ln.posted
    if posted >= expected:
        return ZERO
    errors = _errors_downstream(ln.order, ln.op)
    if errors <= 0:
        return ZERO
    processed = ln.units_processed
    unflushed = min(ln.good_basis_gap(), errors)
    if unflushed <= 0:
        return ZERO
    share = (line_quantity(ln.qty, ln.per, ln.scrap_pct, ln.scrap_const, processed, ln.decimals)
             - line_quantity(ln.qty, ln.per, ln.scrap_pct, ln.scrap_const,
                             processed - unflushed, ln.decimals))
    return max(ZERO, min(share, expected - posted))


def _not_posted(o, ln) -> bool:
    return (o.ended is not None and ln.manual and ln.line is not None and ln.expected > 0
            and ln.posted == 0)


def _rest(ln) -> Decimal:
    """The variance no double flush or scrap shortfall explains (signed)."""
    double = _double_qty(ln)
    explained = double if double else -_short_qty(ln)
    return (ln.posted - ln.expected) - explained


def double_flush(o, ln) -> Finding | None:
    """DOUBLE_FLUSH: two or more trigger kinds flushed the line and posted > expected."""
    qty = _double_qty(ln)
    if not qty:
        return None
    return _mk(
        "DOUBLE_FLUSH", o.order, ln.line, ln.item, qty,
        [e for k, _, e in ln.flush_events if k in _RULE_TRIGGERS],
        f"{_line_label(ln)} flushed {fmt_qty(ln.posted)} against {fmt_qty(ln.expected)} "
        f"expected: {_describe_triggers(ln.flush_events, ln.op)} both flushed it",
    )


def scrap_shortfall(o, ln) -> Finding | None:
    """SCRAP_SHORTFALL: error units reported, a good-only trigger left their share unflushed."""
    short = _short_qty(ln)
    if short <= 0:
        return None
    good_ids = [e for _, e in ln.good_basis_flushes]
    devices = sorted({d for k, d, _ in ln.flush_events
                      if any(k == gk for gk, _ in ln.good_basis_flushes) and d})
    return _mk(
        "SCRAP_SHORTFALL", o.order, ln.line, ln.item, short, good_ids,
        f"{_line_label(ln)} posted {fmt_qty(ln.posted)} against {fmt_qty(ln.expected)} "
        f"expected: error units were reported but {' and '.join(devices) or 'a trigger'} "
        f"flushed on good quantity only, so the scrap's {fmt_qty(short)} was never consumed",
    )


def manual_not_posted(o, ln) -> Finding | None:
    """MANUAL_NOT_POSTED: a manual line expected > 0 with nothing posted at the order's end."""
    if not _not_posted(o, ln):
        return None
    return _mk(
        "MANUAL_NOT_POSTED", o.order, ln.line, ln.item, ln.expected, [o.ended[0]],
        f"{_line_label(ln)} is a manual line with {fmt_qty(ln.expected)} expected, but nothing "
        "was consumed when the order ended",
    )


def _variance(o, ln, over: bool) -> Finding | None:
    if o.ended is None or _not_posted(o, ln):
        return None
    rest = _rest(ln)
    if not rest or (rest > 0) != over or abs(rest) <= tolerance(ln.expected, o.tolerance_pct):
        return None
    code, word = ("OVER_CONSUMPTION", "over") if over else ("UNDER_CONSUMPTION", "under")
    return _mk(
        code, o.order, ln.line, ln.item, abs(rest),
        [e for _, _, e in ln.flush_events] + [o.ended[0]],
        f"{_line_label(ln)} posted {fmt_qty(ln.posted)} against {fmt_qty(ln.expected)} "
        f"expected: {fmt_qty(abs(rest))} {word}"
        + (" (beyond the tolerance of " + fmt_qty(o.tolerance_pct) + " %)"
           if o.tolerance_pct else ""),
    )


def over_consumption(o, ln) -> Finding | None:
    """OVER_CONSUMPTION: any other variance above expected beyond tolerance, once ended."""
    return _variance(o, ln, True)


def under_consumption(o, ln) -> Finding | None:
    """UNDER_CONSUMPTION: any other variance below expected beyond tolerance, once ended."""
    return _variance(o, ln, False)


# --- order-level findings: one small function per code, (order state) -> findings -----------


def _line_for(o, item, location=None):
    """The order's BOM line of ``item`` (the one consuming at ``location`` first), or None."""
    cands = [ln for ln in o.line_list if ln.item == item]
    if location is not None:
        at = [ln for ln in cands if ln.location == location]
        if at:
            return at[0]
    return cands[0] if cands else None


def _wip_left(o) -> list[tuple]:
    """(op, info, units) left after each operation: the engine's ``waiting`` (DESIGN §5's
    fallback for unreported operations, never negative), so WIP and findings agree."""
    out = []
    for info in o.ops:
        left = o.waiting(info.op)
        if left > 0:
            out.append((info.op, info, left))
    return out


def unresolved_batch(o) -> list[Finding]:
    """UNRESOLVED_BATCH per line and location: tracked material taken with no batch."""
    groups: dict = {}
    for u in o.unresolved:
        g = groups.setdefault((u.line, u.item, u.location), [ZERO, []])
        g[0] += u.qty
        g[1].append(u.event_id)
    out = []
    for (line, item, loc), (qty, ids) in groups.items():
        if qty <= 0:
            continue
        label = f"line {line} ({item})" if line is not None else item
        out.append(_mk(
            "UNRESOLVED_BATCH", o.order, line, item, qty, ids,
            f"{label} is batch-tracked: {fmt_qty(qty)} flushed from {loc} with no batch "
            "on hand or put for the order to take it from", loc,
        ))
    return out


def residual_at_input(o) -> list[Finding]:
    """RESIDUAL_AT_INPUT per item, location and batch, once the order is ended."""
    if o.ended is None:
        return []
    out = []
    for r in o.residual_at_end:
        ln = _line_for(o, r.item, r.location)
        b = f" batch {r.batch}" if r.batch else ""
        out.append(_mk(
            "RESIDUAL_AT_INPUT", o.order, ln.line if ln else None, r.item, r.qty,
            list(r.put_events) + [r.end_event],
            f"{fmt_qty(r.qty)} {r.item}{b} put for the order was still at "
            f"{r.location} when the order ended", f"{r.location}\t{r.batch or ''}",
        ))
    return out


def wip_not_cleared(o) -> list[Finding]:
    """WIP_NOT_CLEARED per operation with units left after it, once the order is ended."""
    if o.ended is None:
        return []
    out = []
    for op, info, left in _wip_left(o):
        nxt = next((x.op for x in o.ops if x.op > op), None)
        where = (f"waiting for operation {nxt}" if nxt is not None
                 else "not reported as finished")
        at = f" at {info.output_location}" if info.output_location else ""
        out.append(_mk(
            "WIP_NOT_CLEARED", o.order, None, o.item, left, [o.ended[0]],
            f"{fmt_qty(left)} units good at operation {op} were still {where}{at} "
            "when the order ended", str(op),
        ))
    return out


def out_of_sequence(o) -> list[Finding]:
    """OUT_OF_SEQUENCE per reason and operation (qty: units beyond the order quantity)."""
    oos: dict = {}
    for r in o.out_of_sequence:
        oos.setdefault((r.reason, r.op), []).append(r.event_id)
    out = []
    for (reason, op), ids in oos.items():
        qty = ZERO
        if reason == "beyond order qty":
            if op is not None:
                done = (o.op_good or NOTHING).get(op, ZERO) + (o.op_error or NOTHING).get(
                    op, ZERO)
            else:
                done = o.fin_good + o.fin_error
            qty = max(ZERO, done - o.qty)
        what = f"operation {op}" if op is not None else "order"
        n = len(ids)
        times = f"{n} event{'s' if n != 1 else ''}"
        text = {
            "before release": f"{times} reported on {what} before the order was released",
            "after end": f"{times} posted on {what} after the order had ended",
            "op not on route": f"{times} reported on operation {op}, which is not on the route",
            "beyond order qty": f"{what} reported {fmt_qty(qty)} beyond the order quantity "
                                f"{fmt_qty(o.qty)}",
            "ended twice": "the order was ended again after it had ended",
        }.get(reason, f"{times} out of sequence on {what}: {reason}")
        out.append(_mk("OUT_OF_SEQUENCE", o.order, None, o.item, qty, ids, text,
                       f"{op} {reason}"))
    return out


def negative_on_hand(engine, orders: set | None) -> list[Finding]:
    """NEGATIVE_ON_HAND per order, item, location and batch (deepest point)."""
    groups: dict = {}
    for r in engine.negative_onhand:
        if orders is not None and r.order not in orders:
            continue
        item, loc, batch, _lp = r.key
        g = groups.setdefault((r.order, item, loc, batch), [ZERO, []])
        g[0] = max(g[0], -r.balance)
        g[1].append(r.event_id)
    out = []
    for (order, item, loc, batch), (depth, ids) in groups.items():
        o = engine.order_state(order) if order is not None else None
        ln = _line_for(o, item, loc) if o is not None else None
        b = f" batch {batch}" if batch else ""
        if loc == "IN_TRANSIT":
            why = "a put without a matching pick"
        elif o is not None:
            why = f"order {order} took more than was there"
        else:
            why = "a move took more than was there"
        out.append(_mk(
            "NEGATIVE_ON_HAND", order, ln.line if ln else None, item, depth, ids,
            f"on-hand of {item}{b} at {loc} went {fmt_qty(depth)} below zero: {why}",
            f"{loc} {batch}",
        ))
    return out


#: The registry: code -> check. POLICY_OVERLAP is ``policy_overlaps`` (rules, not history).
LINE_CHECKS = {
    "DOUBLE_FLUSH": double_flush,
    "SCRAP_SHORTFALL": scrap_shortfall,
    "MANUAL_NOT_POSTED": manual_not_posted,
    "OVER_CONSUMPTION": over_consumption,
    "UNDER_CONSUMPTION": under_consumption,
}
ORDER_CHECKS = {
    "UNRESOLVED_BATCH": unresolved_batch,
    "RESIDUAL_AT_INPUT": residual_at_input,
    "WIP_NOT_CLEARED": wip_not_cleared,
    "OUT_OF_SEQUENCE": out_of_sequence,
}
GLOBAL_CHECKS = {"NEGATIVE_ON_HAND": negative_on_hand}


def findings(engine, order: str | None = None, codes: Iterable[str] | None = None
             ) -> list[Finding]:
    """Every finding of DESIGN §5 (but POLICY_OVERLAP) in the engine's current state.

    ``order`` restricts to one order (cheap: only that order's state is read); ``codes``
    restricts the codes. Sorted by order, line, code.
    """
    return findings_of_orders(engine, None if order is None else {order}, codes)


@exact
def findings_of_orders(engine, orders: set | None, codes: Iterable[str] | None = None
                       ) -> list[Finding]:
    """Findings of the orders in ``orders`` (None: every order, and stock moves of none).

    Only the checks of ``codes`` run (all when None). Every check runs in the engine's
    arithmetic context (``exact``), as the state's own figures do.
    """
    keep = None if codes is None else set(codes)
    line_checks = [f for c, f in LINE_CHECKS.items() if keep is None or c in keep]
    order_checks = [f for c, f in ORDER_CHECKS.items() if keep is None or c in keep]
    out: list[Finding] = []
    names = engine.orders() if orders is None else sorted(orders)
    for k in names:
        o = engine.order_state(k)
        if o is None:
            continue
        if line_checks:
            for ln in o.all_lines():
                for check in line_checks:
                    f = check(o, ln)
                    if f is not None:
                        out.append(f)
        for check in order_checks:
            out.extend(check(o))
    for c, check in GLOBAL_CHECKS.items():
        if keep is None or c in keep:
            out.extend(check(engine, orders))
    out.sort(key=sort_key)
    return out


# --- policy check ------------------------------------------------------------------------------


def _rules_of(policy) -> tuple[list, str | None]:
    if policy is None:
        p = Params()
    elif isinstance(policy, Params):
        p = policy
    elif isinstance(policy, dict):
        p = Params.from_dict(policy, policy.get("id"))
    else:  # a list of rules
        return list(policy), None
    return list(p.rules.rules), p.source


def rule_name(rule: dict) -> str:
    """``trigger/device`` (``@resource`` when the rule is per resource)."""
    name = f"{rule.get('trigger')}/{rule.get('device') or '*'}"
    if rule.get("resource"):
        name += f"@{rule['resource']}"
    return name


def _flush_text(rule: dict) -> str:
    f = rule.get("flush")
    return "always" if f == "always" else "[" + ", ".join(f or ()) + "]"


def _flushed_principles(rule: dict) -> frozenset:
    f = rule.get("flush")
    if f == "always":
        return frozenset(PRINCIPLES)
    return frozenset(p for p in (f or ()) if p != "manual")


def policy_overlaps(policy) -> list[Finding]:
    """POLICY_OVERLAP: pairs of rules of different trigger kinds that can flush one principle.

    ``policy`` is a ProductionParametersSet-shaped dict, a ``Params``, a list of rules, or None
    (the D365 defaults). For every trigger kind, device and resource (every resource named in a
    rule, plus "any other") the rule that would apply is found as the engine finds it (the most
    specific; put triggers come from the mobile scanner). Two such effective rules of different
    kinds that list a common principle can flush the same line twice — every line belongs to
    an operation, is reached by report as finished, by the start and by a put — so they are
    reported, naming both rules. ``"always"`` lists every principle, manual included.
    One finding per pair of rules; qty is the number of principles they share.
    """
    rules, source = _rules_of(policy)
    resources = sorted({r["resource"] for r in rules if r.get("resource")})
    effective: dict = {}  # rule index -> (kind, rule)
    for kind in TRIGGER_KINDS:
        devices = ("mobile",) if kind == "put" else DEVICES
        for dev in devices:
            for res in [None, *resources]:
                rule = match_rule(rules, kind, dev, res)
                if rule is None or not _flushed_principles(rule):
                    continue
                idx = next(i for i, r in enumerate(rules) if r is rule)
                effective[idx] = (kind, rule)
    out = []
    for (ia, (ka, ra)), (ib, (kb, rb)) in combinations(sorted(effective.items()), 2):
        if ka == kb:
            continue  # one trigger kind shares its U counter: partial reports never double
        shared = _flushed_principles(ra) & _flushed_principles(rb)
        if not shared:
            continue
        names = ", ".join(sorted(shared))
        basis = ""
        if rule_basis(ra) != rule_basis(rb):
            basis = f" (on {rule_basis(ra)} and {rule_basis(rb)})"
        out.append(_mk(
            "POLICY_OVERLAP", None, None, None, Decimal(len(shared)),
            [source] if source else [],
            f"rules {rule_name(ra)} {_flush_text(ra)} and {rule_name(rb)} {_flush_text(rb)} "
            f"both flush {names}: an order reported through both consumes such lines "
            f"twice{basis}", f"{ia} {ib}",
        ))
    out.sort(key=lambda f: f.message)
    return out


def worst(found: Iterable[Finding]) -> int:
    """Highest severity rank among ``found`` (-1 when empty)."""
    return max((f.rank for f in found), default=-1)
