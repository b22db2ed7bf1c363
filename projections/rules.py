"""Flushing rules: every decision about *what* a trigger consumes, in one module (DESIGN §3, §4).

Pure functions and small immutable-ish helpers, no I/O, no clock. Quantities are ``Decimal``.

Vocabulary (D365 / AX):

- *flushing principle* of a BOM line: ``start``, ``finish``, ``manual``,
  ``available_at_location``, plus the split ``operation_finish`` / ``production_finish``
  asked for by seed 001. A BOM line without a principle ("<None>") falls back to the item's.
- *trigger kind*: ``start`` (OrderStarted), ``operation`` (OperationReported), ``finish``
  (ReportedAsFinished), ``put`` (Put naming an order).
- *rule*: ``{"trigger", "device", "resource", "flush", "basis"}``; the most specific rule that
  matches a trigger applies (resource match beats no resource, device match beats ``"*"``).

Decisions where DESIGN is silent (documented so auditors can follow the numbers):

- Two rules of equal specificity for the same trigger: the one listed *last* wins, as a later
  definition replaces an earlier one everywhere else in the ledger (``policy check`` reports
  the overlap).
- A rule that lists ``manual`` in ``flush`` still never consumes manual lines; only
  ``"always"`` does (DESIGN §4: "manual lines are never flushed by rules").
- Route operations are ordered by operation number; "first operation" is the lowest number.
- Rounding is half-up (away from zero on the half) to the component item's ``decimals``;
  expected consumption (DESIGN §5) is rounded the same way, so a line flushed once by one
  trigger kind shows exactly zero variance.
- Basis ``transferred`` ignores scrap: it consumes what was actually put for the order and
  line, prorated by units over order quantity; the report that reaches the order quantity
  takes what is left.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)

PRINCIPLES = (
    "start",
    "finish",
    "manual",
    "available_at_location",
    "operation_finish",
    "production_finish",
)
TRIGGER_KINDS = ("start", "operation", "finish", "put")
DEVICES = ("client", "job_terminal", "mobile", "route_card")
BASES = ("good", "good+error", "transferred")
DEFAULT_BASIS = "good+error"
DEFAULT_INPUT_LOCATION = "BACKFLUSH"
DEFAULT_DECIMALS = 6
DEFAULT_ITEM_PRINCIPLE = "finish"

# D365 out of the box (DESIGN §4). Tuples of fresh dicts are built by default_rules() so callers
# can never mutate a shared default.
_DEFAULT_RULE_SPECS = (
    ("start", "*", ("start",), "good+error"),
    ("put", "*", ("available_at_location",), "good+error"),
    ("operation", "*", ("operation_finish",), "good+error"),
    ("finish", "client", ("finish", "production_finish"), "good+error"),
    ("finish", "job_terminal", ("finish", "production_finish"), "good+error"),
    # The mobile scanner takes no error quantity: it flushes on good only (seed 001).
    ("finish", "mobile", ("finish", "production_finish"), "good"),
)


def default_rules() -> list[dict]:
    """Return a fresh list of the D365 default flushing rules (DESIGN §4)."""
    return [
        {"trigger": t, "device": d, "resource": None, "flush": list(f), "basis": b}
        for t, d, f, b in _DEFAULT_RULE_SPECS
    ]


def rule_specificity(rule: dict, trigger: str, device: str, resource: str | None) -> int | None:
    """Score how specifically ``rule`` matches a trigger; None when it does not match.

    Resource match weighs more than device match, so a per-resource rule for any device beats a
    device rule for every resource (DESIGN §4: "resource beats none, device beats *").
    """
    if rule.get("trigger") != trigger:
        return None
    score = 0
    r = rule.get("resource")
    if r is not None:
        if r != resource:
            return None
        score += 2
    d = rule.get("device", "*")
    if d != "*":
        if d != device:
            return None
        score += 1
    return score


def match_rule(rules, trigger: str, device: str, resource: str | None) -> dict | None:
    """Return the most specific rule of ``rules`` matching the trigger, or None (= flush nothing).

    Ties go to the rule listed last.
    """
    best = None
    best_score = -1
    for rule in rules:
        s = rule_specificity(rule, trigger, device, resource)
        if s is not None and s >= best_score:
            best, best_score = rule, s
    return best


def rule_flushes(rule: dict | None, principle: str) -> bool:
    """True when ``rule`` consumes a line of ``principle`` (manual only under ``"always"``)."""
    if rule is None:
        return False
    flush = rule.get("flush")
    if flush == "always":
        return True
    if principle == "manual":
        return False
    return principle in flush


def flushed_lines(rule: dict, lines) -> list:
    """The lines of ``lines`` (objects with ``principle``) that ``rule`` consumes, in order:
    ``rule_flushes`` for a whole trigger at once (a finish goes over every BOM line)."""
    flush = rule.get("flush")
    if flush == "always":
        return list(lines)
    return [ln for ln in lines if ln.principle != "manual" and ln.principle in flush]


def rule_basis(rule: dict) -> str:
    """The basis of a rule, defaulting to good+error (DESIGN §4)."""
    return rule.get("basis") or DEFAULT_BASIS


class RuleSet:
    """A versioned rule set with a memo of matches (trigger, device, resource) -> rule.

    The memo only makes replay fast; it never changes an answer because a RuleSet is never
    mutated after construction.
    """

    __slots__ = ("rules", "_memo", "_put_memo")

    def __init__(self, rules=None):
        self.rules = tuple(default_rules() if rules is None else rules)
        self._memo: dict = {}
        self._put_memo: dict = {}

    def match(self, trigger: str, device: str, resource: str | None) -> dict | None:
        """Most specific matching rule, memoised."""
        k = (trigger, device, resource)
        try:
            return self._memo[k]
        except KeyError:
            r = self._memo[k] = match_rule(self.rules, trigger, device, resource)
            return r

    def put_rule(self, resource: str | None, principle: str) -> dict | None:
        """The put rule for a line of ``resource`` and ``principle`` when it consumes that
        line, else None (``put_target``'s test, memoised: one per put)."""
        k = (resource, principle)
        try:
            return self._put_memo[k]
        except KeyError:
            rule = self.match("put", "mobile", resource)
            r = self._put_memo[k] = rule if rule_flushes(rule, principle) else None
            return r


class Params:
    """Production parameters in force: default input location, tolerance, compiled rules."""

    __slots__ = ("default_input_location", "tolerance_pct", "rules", "source")

    def __init__(self, default_input_location=DEFAULT_INPUT_LOCATION, tolerance_pct=ZERO,
                 rules=None, source=None):
        self.default_input_location = default_input_location or DEFAULT_INPUT_LOCATION
        self.tolerance_pct = ZERO if tolerance_pct is None else Decimal(tolerance_pct)
        self.rules = RuleSet(rules)
        self.source = source  # id of the ProductionParametersSet event, None for defaults/policy

    @classmethod
    def from_dict(cls, d: dict | None, source=None) -> Params:
        """Build from a ProductionParametersSet-shaped dict; ``rules`` None keeps the defaults."""
        if d is None:
            return cls()
        return cls(
            d.get("default_input_location"), d.get("tolerance_pct"), d.get("rules"), source
        )


# --- master data resolution (done once per order at OrderCreated) ---------------------------


def resolve_principle(line_flushing: str | None, item_flushing: str | None) -> str:
    """BOM line principle, else the item's (D365 "<None>"), else the item default ``finish``."""
    return line_flushing or item_flushing or DEFAULT_ITEM_PRINCIPLE


def first_operation(route_ops) -> int | None:
    """Lowest operation number of a route (ops as dicts with ``op``), None without a route."""
    best = None
    for o in route_ops or ():
        if best is None or o["op"] < best:
            best = o["op"]
    return best


def resolve_operation(line_op: int | None, route_ops) -> int | None:
    """A line's operation; null is accredited to the first operation of the route (seed 001)."""
    return line_op if line_op is not None else first_operation(route_ops)


def resolve_location(line_location: str | None, resource_input_location: str | None,
                     default_input_location: str | None) -> str:
    """Consumption location: line location, else the input location of the resource of the
    line's operation, else the default production input location (seed 002's BACKFLUSH)."""
    return (line_location or resource_input_location or default_input_location
            or DEFAULT_INPUT_LOCATION)


# --- quantities -------------------------------------------------------------------------------


# Quanta for 0..18 decimals, built once: rounding runs for every flush.
_QUANTA = tuple(Decimal(1).scaleb(-i) for i in range(19))


def quantum(decimals: int) -> Decimal:
    """The Decimal exponent for ``decimals`` places (``Decimal('0.01')`` for 2)."""
    if 0 <= decimals < 19:
        return _QUANTA[decimals]
    return Decimal(1).scaleb(-int(decimals))


def round_half_up(q: Decimal, decimals: int) -> Decimal:
    """Round half-up (away from zero on .5) to ``decimals`` places."""
    return q.quantize(_QUANTA[decimals] if 0 <= decimals < 19 else quantum(decimals),
                      rounding=ROUND_HALF_UP)


def line_quantity(qty: Decimal, per: Decimal, scrap_pct: Decimal, scrap_const: Decimal,
                  units: Decimal, decimals: int) -> Decimal:
    """round(q(U)): ``qty/per × U × (1 + scrap_pct/100)`` plus ``scrap_const`` once U > 0.

    Computed with a single division so that e.g. 1/3 per unit over 3 units is exactly 1.
    """
    if units <= 0:
        if units == 0:
            return ZERO
        const = ZERO  # negative U only arises from corrections; the constant is never negative
    else:
        const = scrap_const
    if scrap_pct:
        q = qty * units * (HUNDRED + scrap_pct) / (per * HUNDRED) + const
    else:
        q = qty * units / per + const
    # round_half_up, written out (twice per flush)
    return q.quantize(_QUANTA[decimals] if 0 <= decimals < 19 else quantum(decimals),
                      ROUND_HALF_UP)


def flush_delta(qty, per, scrap_pct, scrap_const, u_before, u_after, decimals) -> Decimal:
    """Quantity a trigger flushes moving a line's U from ``u_before`` to ``u_after``.

    ``round(q(U_after)) − round(q(U_before))``: partial reports never drift from one report of
    their total (DESIGN §4).
    """
    return (line_quantity(qty, per, scrap_pct, scrap_const, u_after, decimals)
            - line_quantity(qty, per, scrap_pct, scrap_const, u_before, decimals))


def trigger_units(basis: str, good: Decimal, error: Decimal) -> Decimal:
    """Units a report stands for under ``basis`` (``transferred`` counts good+error units)."""
    if basis == "good":
        return good
    return good + error


def transferred_target(put_total: Decimal, units: Decimal, order_qty: Decimal,
                       decimals: int) -> Decimal:
    """Cumulative consumption under basis ``transferred`` after ``units`` reported.

    The quantity put for the order and line, prorated by units over order quantity; once the
    order quantity is reached the whole put quantity is taken ("what is left").
    """
    if order_qty <= 0 or units >= order_qty:
        return put_total
    if units <= 0:
        return ZERO
    return round_half_up(put_total * units / order_qty, decimals)


def expected_quantity(qty, per, scrap_pct, scrap_const, units, decimals) -> Decimal:
    """Standard consumption of a line for ``units`` processed (DESIGN §5), rounded like flushes."""
    if units <= 0:
        return ZERO
    return line_quantity(qty, per, scrap_pct, scrap_const, units, decimals)


def tolerance(expected: Decimal, tolerance_pct: Decimal) -> Decimal:
    """Allowed absolute variance: ``tolerance_pct`` % of expected (DESIGN §5)."""
    return abs(expected) * tolerance_pct / HUNDRED


# --- what a trigger consumes, and from where (the flusher applies these) ---------------------

# Components that need a batch (or serial) to be taken from: a take without one is unresolved.
TRACKED = frozenset(("batch", "serial"))


def trigger_quantity(basis: str, qty: Decimal, per: Decimal, scrap_pct: Decimal,
                     scrap_const: Decimal, decimals: int, u_before: Decimal, u_after: Decimal,
                     put_total: Decimal, order_qty: Decimal, transferred: Decimal) -> Decimal:
    """What one trigger consumes on one line moving its U from ``u_before`` to ``u_after``.

    Basis ``transferred``: the prorated quantity put for the order and line
    (``transferred_target``) less what that trigger kind already took (``transferred``);
    otherwise the BOM quantity's ``flush_delta``.
    """
    if basis == "transferred":
        return transferred_target(put_total, u_after, order_qty, decimals) - transferred
    return flush_delta(qty, per, scrap_pct, scrap_const, u_before, u_after, decimals)


def put_target(rules: RuleSet, lines) -> tuple | None:
    """(line, rule) a put consumes on, or None: the first of ``lines`` (objects with
    ``resource`` and ``principle``) whose principle the put rule matched for its resource lists
    (puts are made on the mobile scanner). A put is consumed once, never once per line."""
    for ln in lines:
        rule = rules.put_rule(ln.resource, ln.principle)
        if rule is not None:
            return ln, rule
    return None


def allocate(entries, bins: dict, line: int | None, location: str, qty: Decimal,
             batch: str | None = None) -> tuple[dict, list, Decimal]:
    """Choose the batch/lp a take of ``qty`` at ``location`` comes from (DESIGN §4).

    ``entries``: the order's put entries for the item (dicts with location, line, batch, lp,
    remaining), oldest first; ``bins``: on-hand at the location, (batch, lp) -> qty in FIFO
    order. The put entries for the line (or for no line) at the location first, each capped by
    what of its batch/lp is still on hand; then FIFO on hand; the rest unresolved, on
    (``batch``, None). ``batch`` given (manual consumption) restricts the choice to it.

    Returns (takes: (batch, lp) -> qty in the order chosen, entry takes: [(entry, qty)] to
    subtract from their ``remaining``, unresolved qty). Reads only; the caller applies it.
    """
    used: dict = {}
    taken: list = []
    left = qty
    if entries:
        for e in entries:
            rem = e["remaining"]
            if rem <= ZERO or e["location"] != location:
                continue
            if e["line"] is not None and e["line"] != line:
                continue
            k = (e["batch"], e["lp"])
            if batch is not None and k[0] != batch:
                continue
            t = min(left, rem, bins.get(k, ZERO) - used.get(k, ZERO))
            if t <= ZERO:
                continue
            taken.append((e, t))
            used[k] = used.get(k, ZERO) + t
            left -= t
            if not left:
                break
    if left:
        for k, have in bins.items():
            if batch is not None and k[0] != batch:
                continue
            t = min(left, have - used.get(k, ZERO))
            if t <= ZERO:
                continue
            used[k] = used.get(k, ZERO) + t
            left -= t
            if not left:
                break
    if left:
        k = (batch, None)
        used[k] = used.get(k, ZERO) + left
    return used, taken, left
