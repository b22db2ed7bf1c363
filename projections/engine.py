"""The pure replay engine: events in (at, seq) order in, inventory / WIP / consumption out.

``Replay.apply(ev)`` takes one validated, normalised event dict (DESIGN §2; quantities are
``Decimal``, ``at`` a tz-aware datetime, ``id`` and ``seq`` set) and updates the state. No I/O, no
clock, no globals: the same events always give the same state, flush log and change log.

Semantics where DESIGN is silent (what an experienced D365 / AX user expects):

- Master data are taken as in force when the order is created: BOM, route, the resources of its
  operations (input/output locations), component items (principle, decimals, tracking) and the
  default input location. The per-order line table (principle, operation, consumption location)
  is resolved once, at ``OrderCreated``. Flushing *rules* are those in force at each trigger.
- The resource a rule is matched against: ``operation`` → the reported operation's resource;
  ``start`` → the first operation's; ``finish`` → the last operation's (report as finished
  happens at the end of the route); ``put`` → the resource of the line's operation.
- A ``Put`` carries no device; warehouse puts are made on the mobile scanner, so put rules are
  matched with device ``mobile``. A put naming an order but no line is registered against the
  order's lines of that item; the put trigger consumes the quantity once, on the first such line
  (lowest line number) whose principle the rule lists — never once per line.
- ``OrderStarted`` releases an order that was not released yet (AX: "start ... automatically
  releases it", seed 002); a start is not out of sequence.
- Report as finished adds the good quantity of the order's item to on-hand at the event's
  location, else the output location of the last operation's resource, else ``OUTPUT``; error
  quantity is scrapped. Conservation therefore reads: received + produced − consumed
  ± adjustments = Σ on-hand (``item_totals``).
- ``InventoryCounted`` sets the on-hand of item/location/batch summed over licence plates: a
  shortage is taken from the licence plates first in first out, a surplus lands without lp.
- ``Picked`` / ``Put`` move the given item/batch/lp literally (location ↔ ``IN_TRANSIT``); a put
  without a pick drives ``IN_TRANSIT`` negative, which is accepted and recorded
  (``puts_without_pick`` and a negative on-hand record).
- Batch/lp selection for a flush: the put entries for that order and line (or order and item)
  at the consumption location, FIFO, capped by what of that batch is still on hand; then FIFO
  on hand at the location (order of arrival of the batch/lp there; a bin that ran empty and is
  refilled queues again at the back); the remainder is unresolved (batch None). A flush split
  over several batches gives one FlushRecord per batch with the same units_before/after.
- An unresolved take (a batch/serial-tracked component flushed or consumed with no batch on
  hand or put to take it from) is reported as UNRESOLVED_BATCH, whose quantity is the
  shortfall; the no-batch bucket it drives below zero is *not* also NEGATIVE_ON_HAND (one
  shortage, one finding). Picks, moves and takes that name a batch, and untracked items,
  still record negative on-hand.
- RESIDUAL_AT_INPUT is computed per item, location and batch at ``OrderEnded``: per batch, what
  was put for the order there minus what the order consumed of that batch there, capped by
  that batch's on-hand; another batch below zero at the location does not hide it.
- Manual consumption (``MaterialConsumed``) books against the named line, else the order's first
  line of that item, else an *unplanned* line (line None, expected 0). A negative quantity is a
  return: on-hand goes back up at the location (batch as given).
- WIP waiting after an operation: good out of it not yet processed at the next operation (or
  not reported as finished after the last), with DESIGN §5's fallback on both sides (an
  operation nobody reports on, seed 001's robot packing, is deemed to have processed what was
  finished), never negative (over-reporting is OUT_OF_SEQUENCE, not negative WIP).
  ``wip_at_end`` keeps it for WIP_NOT_CLEARED: an ended order's WIP is zero or flagged.
- Staged WIP: material on hand at a resource's input location, one row per item and batch
  under that resource (several resources sharing an input location: the first by name;
  the default input location: no resource only when no resource has it as input). It mirrors
  on-hand but never goes below zero: a shortage there is NEGATIVE_ON_HAND, not WIP.
- Hours: reported hours come from ``OperationReported`` only (actual, else the report's standard
  share); standard hours follow DESIGN §5.
- Reversal undoes, from its own ``at``, every effect the reversed event had: it posts exact
  negatives of its flushes (trigger ``reversal``), undoes its inventory moves, and takes back
  the U counters, unit counts, hours, status changes and findings records it added. Later
  events keep what they did. ``by_trigger`` is net, keyed by the original trigger kind.
  Reversing master data, a reversal, an unknown or an already reversed id is an anomaly.
- Order events on unknown orders are skipped with an anomaly; inventory events on unknown
  items still move stock (the shelf does not care) and record an anomaly.

Performance: per event only dict lookups and a few small tuples; effects needed to undo an event
are only kept for events that may be reversed (all, unless ``reversible`` narrows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, DecimalException, localcontext
from functools import wraps

from backflush.ledger.names import INVENTORY_TYPES, ORDER_TYPES
from backflush.projections import standard
from backflush.projections.common import (  # noqa: F401  (sort_wip, staged_rows: re-exported)
    ARITHMETIC,
    WIP_ORDER,
    sort_wip,
    staged_rows,
)
from backflush.projections.rules import (
    DEFAULT_DECIMALS,
    ZERO,
    Params,
    flush_delta,
    resolve_location,
    resolve_operation,
    resolve_principle,
    rule_basis,
    rule_flushes,
    transferred_target,
)

from backflush.errors import BadInput

IN_TRANSIT = "IN_TRANSIT"
DEFAULT_OUTPUT_LOCATION = "OUTPUT"
TRACKED = frozenset(("batch", "serial"))

INVENTORY_EVENTS = INVENTORY_TYPES
ORDER_EVENTS = ORDER_TYPES
REVERSIBLE = INVENTORY_EVENTS | ORDER_EVENTS

# Effect-log opcodes (undo information for reversals).
_OH, _CTR, _ATTR, _SET, _APP, _FLUSH = range(6)


# The engine's state, as saved in a snapshot (``state`` / ``restore``); everything else is
# derived (handlers) or given again by the caller (policy, reversible ids).
STATE = (
    "_items", "_resources", "_boms", "_routes", "_params", "_orders", "_bins",
    "_waiting", "_staged_map", "_received", "_produced", "_consumed", "_adjusted", "_effects",
    "_reversed", "_last", "anomalies", "negative_onhand", "puts_without_pick",
)


class QuantityOutOfRange(BadInput):
    """Quantities the engine cannot compute with (overflow, not a number)."""


class UnreplayableEvent(QuantityOutOfRange):
    """A recorded event whose quantities the engine cannot compute with (out of range)."""

    def __init__(self, ev: dict, exc: Exception):
        self.event_id = ev.get("id")
        super().__init__(
            f"event {ev.get('id')} ({ev.get('type')} at {ev.get('at')}): quantity out of range"
            f" ({type(exc).__name__}); the engine cannot replay it"
        )


def exact(f):
    """Run ``f`` in the engine's arithmetic context (queries computing from the state)."""

    @wraps(f)
    def inner(*args, **kw):
        with localcontext(ARITHMETIC):
            try:
                return f(*args, **kw)
            except DecimalException as exc:
                raise QuantityOutOfRange(
                    f"{f.__name__}: quantity out of range ({type(exc).__name__})") from None

    return inner


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlushRecord:
    """One consumption posting (rule flush, manual consumption or reversal of either).

    ``qty`` is negative for returns and reversals. ``units_before``/``units_after`` are the
    cumulative U of the (order, line, trigger kind) for rule-driven start/operation/finish
    flushes, else None. ``rule`` is the rule dict that fired (None for manual/reversal).
    """

    event_id: str
    at: object
    seq: int
    order: str
    line: int | None
    item: str
    trigger: str
    device: str | None
    qty: Decimal
    location: str
    batch: str | None
    lp: str | None
    units_before: Decimal | None
    units_after: Decimal | None
    basis: str | None
    rule: dict | None


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An event the engine could not apply as meant (unknown reference, bad reversal...)."""

    event_id: str
    at: object
    reason: str


@dataclass(frozen=True, slots=True)
class OutOfSequence:
    """An order fact reported out of sequence (accepted anyway; OUT_OF_SEQUENCE finding)."""

    event_id: str
    at: object
    reason: str  # "before release" | "after end" | "op not on route" | "beyond order qty" | ...
    op: int | None = None


@dataclass(frozen=True, slots=True)
class NegativeOnHand:
    """A take that left on-hand of key = (item, location, batch, lp) below zero."""

    event_id: str
    at: object
    key: tuple
    balance: Decimal
    order: str | None = None
    seq: int | None = None  # of the event (where the materialiser files it)


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A batch/serial-tracked component flushed with no batch to take it from."""

    event_id: str
    at: object
    line: int | None
    item: str
    location: str
    qty: Decimal


@dataclass(frozen=True, slots=True)
class Residual:
    """Material put for an order and still at that location when the order ended."""

    item: str
    location: str
    qty: Decimal
    put_events: tuple
    end_event: str
    batch: str | None = None


@dataclass(frozen=True, slots=True)
class OpInfo:
    """An operation of an order's route, with its resource's locations as of order creation."""

    op: int
    resource: str | None
    setup_hours: Decimal
    run_hours: Decimal
    input_location: str | None
    output_location: str | None


# --- order state --------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class LineState:
    """One BOM line of one order: resolved master data plus what has been posted against it."""

    order: OrderState = field(repr=False)
    line: int | None  # None for the unplanned line of a manually consumed non-BOM item
    item: str
    qty: Decimal
    per: Decimal
    scrap_pct: Decimal
    scrap_const: Decimal
    decimals: int
    tracking: str
    principle: str  # resolved: BOM line → item → "finish"
    op: int | None  # resolved: line operation → first operation of the route
    resource: str | None  # resource of ``op``
    location: str  # resolved consumption location
    units: dict = field(default_factory=dict)  # trigger kind -> cumulative U that flushed it
    posted: Decimal = ZERO  # flushed + manually consumed (net of reversals)
    manual_posted: Decimal = ZERO
    by_trigger: dict = field(default_factory=dict)  # trigger kind -> posted qty (net)
    flush_events: list = field(default_factory=list)  # (trigger kind, device, event id)
    good_basis_flushes: list = field(default_factory=list)  # (trigger kind, event id)
    transferred: dict = field(default_factory=dict)  # trigger kind -> qty taken on "transferred"

    @property
    def manual(self) -> bool:
        """True for a manual line (D365 principle Manual): rules never flush it but "always"."""
        return self.principle == "manual"

    @property
    @exact
    def units_processed(self) -> Decimal:
        """Units processed at the line's operation (DESIGN §5)."""
        return self.order.units(self.op)

    @property
    @exact
    def expected(self) -> Decimal:
        """Standard consumption for the units processed at the line's operation (DESIGN §5)."""
        if self.line is None:
            return ZERO
        return standard.expected_consumption(
            self.qty, self.per, self.scrap_pct, self.scrap_const, self.units_processed,
            self.decimals,
        )

    @property
    @exact
    def variance(self) -> Decimal:
        """Posted minus expected."""
        return self.posted - self.expected

    @property
    def trigger_kinds(self) -> frozenset:
        """Distinct trigger kinds (incl. "manual") with a live posting on this line."""
        return frozenset(k for k, _, _ in self.flush_events)

    @property
    def devices(self) -> frozenset:
        """Distinct devices with a live posting on this line."""
        return frozenset(d for _, d, _ in self.flush_events)

    @property
    def error_units(self) -> Decimal:
        """Error units reported where this line's units are counted (its op, else finished)."""
        return self.order.error_units(self.op)

    @property
    @exact
    def error_units_unflushed(self) -> Decimal:
        """Error units a good-only trigger left unflushed (SCRAP_SHORTFALL), 0 if none.

        For each trigger kind that flushed this line on basis "good": units processed minus the
        units that kind flushed, capped by the error units reported.
        """
        if not self.good_basis_flushes:
            return ZERO
        errors = self.error_units
        if errors <= 0:
            return ZERO
        gap = self.good_basis_gap()
        return min(gap, errors) if gap > 0 else ZERO

    @exact
    def good_basis_gap(self) -> Decimal:
        """Units processed that the good-only trigger kinds of this line have not flushed."""
        processed = self.units_processed
        gap = ZERO
        for kind in {k for k, _ in self.good_basis_flushes}:
            gap = max(gap, processed - self.units.get(kind, ZERO))
        return gap


@dataclass(eq=False, slots=True)
class OrderState:
    """Everything known about one production order: what findings and the audit need.

    Mutated only by ``Replay``; treat as read-only.
    """

    order: str
    item: str
    qty: Decimal
    bom: str | None
    route: str | None
    created_event: str
    created_at: object
    default_input_location: str
    tolerance_pct: Decimal  # in force at creation, refreshed at OrderEnded
    ops: tuple = ()  # OpInfo sorted by op number
    ops_by_no: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)  # line no -> LineState
    lines_by_op: dict = field(default_factory=dict)  # op -> tuple of LineState
    line_list: tuple = ()  # LineState by line number
    unplanned: dict = field(default_factory=dict)  # item -> LineState (line None)
    # status
    released: tuple | None = None  # (event id, at)
    started: list = field(default_factory=list)  # (event id, at, qty)
    ended: tuple | None = None  # (event id, at)
    timeline: list = field(default_factory=list)  # (status, event id, at[, reversed id])
    events: list = field(default_factory=list)  # ids of every event applied for this order
    # reported quantities
    started_qty: Decimal = ZERO
    op_good: dict = field(default_factory=dict)  # op -> Σ good
    op_error: dict = field(default_factory=dict)  # op -> Σ error
    op_reports: dict = field(default_factory=dict)  # op -> number of live reports
    fin_good: Decimal = ZERO
    fin_error: Decimal = ZERO
    fin_reports: Decimal = ZERO
    hours_reported: dict = field(default_factory=dict)  # op -> Σ hours (actual or standard share)
    # material put for the order
    puts: dict = field(default_factory=dict)  # item -> list of put entries (dicts)
    put_qty: dict = field(default_factory=dict)  # line no -> qty put for that line
    put_at: dict = field(default_factory=dict)  # (item, location, batch) -> qty put there
    put_events: list = field(default_factory=list)  # (event id, item, location)
    consumed_at: dict = field(default_factory=dict)  # (item, location, batch) -> posted
    # records for findings
    out_of_sequence: list = field(default_factory=list)  # OutOfSequence
    negative_onhand: list = field(default_factory=list)  # NegativeOnHand caused by this order
    unresolved: list = field(default_factory=list)  # Unresolved
    residual_at_end: tuple = ()  # Residual, computed at OrderEnded
    wip_at_end: dict = field(default_factory=dict)  # op -> units waiting after op at OrderEnded
    reversals: list = field(default_factory=list)  # (reversal event id, reversed event id)

    @exact
    def units(self, op: int | None) -> Decimal:
        """Units processed at ``op`` (DESIGN §5)."""
        return standard.units_processed(
            op, _OpUnits(self.op_good, self.op_error), self.op_reports,
            self.fin_good + self.fin_error,
        )

    def error_units(self, op: int | None) -> Decimal:
        """Error units counted at ``op`` (or at report as finished when op has no reports)."""
        if op is not None and self.op_reports.get(op, 0) > 0:
            return self.op_error.get(op, ZERO)
        return self.fin_error

    @exact
    def waiting(self, op: int) -> Decimal:
        """Units waiting after ``op``: good out of op not yet processed at the next op (or, after
        the last, not reported as finished); never negative.

        DESIGN §5's fallback applies on both sides: an operation nobody reported on is deemed
        to have processed (and passed on) what was finished, so a robot cell outside MES
        leaves no WIP and its successor's units never show as negative waiting. More
        processed at the next operation than came out of this one (over-reporting, flagged
        OUT_OF_SEQUENCE) leaves nothing waiting.
        """
        idx = next((i for i, o in enumerate(self.ops) if o.op == op), None)
        if idx is None:
            return ZERO
        finished = self.fin_good + self.fin_error
        out = self.op_good.get(op, ZERO) if self.op_reports.get(op, 0) > 0 else finished
        nxt = self.units(self.ops[idx + 1].op) if idx + 1 < len(self.ops) else finished
        return max(ZERO, out - nxt)

    @exact
    def standard_hours(self, op: int) -> Decimal:
        """Standard hours of ``op`` for the units processed there."""
        info = self.ops_by_no.get(op)
        if info is None:
            return ZERO
        return standard.standard_hours(info.setup_hours, info.run_hours, self.units(op))

    def all_lines(self) -> list:
        """BOM lines by line number, then unplanned lines by item."""
        out = [self.lines[k] for k in sorted(self.lines)]
        out.extend(self.unplanned[k] for k in sorted(self.unplanned))
        return out


class _OpUnits:
    """Read-only view op -> good+error, so standard.units_processed sees one mapping."""

    __slots__ = ("good", "error")

    def __init__(self, good, error):
        self.good, self.error = good, error

    def get(self, op, default=ZERO):
        return self.good.get(op, default) + self.error.get(op, ZERO)


def _waiting_after(ops, op_good: dict, op_error: dict, op_reports: dict,
                   finished: Decimal) -> dict:
    """op -> units waiting after it (``OrderState.waiting`` for every op in one pass).

    Walks the route backwards so each operation's successor's units are at hand; an op
    number listed twice takes its first position's value, as ``waiting`` does.
    """
    vals = {}
    nxt = finished
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i].op
        if op_reports.get(op, 0) > 0:
            good = op_good.get(op, ZERO)
            x = good - nxt
            nxt = good + op_error.get(op, ZERO)
        else:
            x = finished - nxt
            nxt = finished
        vals[op] = x if x > ZERO else ZERO
    return vals


def _remove_last(lst: list, value) -> None:
    """Remove ``value`` from ``lst``, searching from the end: the very object if it is there,
    else an equal one (a restored snapshot keeps records shared, not tuples, and the tuples
    an event appends are unique by their event id)."""
    for i in range(len(lst) - 1, -1, -1):
        if lst[i] is value:
            del lst[i]
            return
    for i in range(len(lst) - 1, -1, -1):
        if lst[i] == value:
            del lst[i]
            return


def _sk(v):
    """Sort key tolerant of None (None first)."""
    return (0, "") if v is None else (1, v)


# --- the engine ---------------------------------------------------------------------------


class Replay:
    """Replay state machine. See module docstring for semantics.

    ``policy``: a ProductionParametersSet-shaped dict replacing every recorded one (what-if).
    ``reversible``: optional set of event ids that a Reversal in the history targets; when given,
    undo information is kept only for those (memory for big rebuilds). None keeps it for all.
    """

    def __init__(self, policy: dict | None = None, reversible=None):
        self.policy = policy
        self._params = Params.from_dict(policy) if policy is not None else Params()
        self._keep = reversible
        # change log, drained by the materialiser
        self.balance_changes: list = []
        self.flushes: list = []
        self.unresolved_log: list = []  # (order, Unresolved, seq): batch-less takes, for I/O
        self.residual_log: list = []  # (order, end event id, seq, at, residuals), for I/O
        # global records
        self.anomalies: list = []
        self.negative_onhand: list = []
        self.puts_without_pick: list = []  # (event id, item, location, batch, lp)
        # master data (current versions)
        self._items: dict = {}
        self._resources: dict = {}
        self._boms: dict = {}
        self._routes: dict = {}
        # state
        self._orders: dict = {}
        self._bins: dict = {}  # (item, location) -> {(batch, lp): qty}, insertion order = FIFO
        # Staged WIP is on-hand at a staging location (a resource's input location, or the
        # default input location for resource None): derived from the bins and this map,
        # never kept twice. Changes of the map are logged for the materialiser.
        self.staging_changes: list = []  # (map, event id, at, seq)
        self._waiting: dict = {}
        self._staged_map: dict = {}
        self._received: dict = {}
        self._produced: dict = {}
        self._consumed: dict = {}
        self._adjusted: dict = {}
        self._effects: dict = {}  # event id -> (event, effect log)
        self._reversed: dict = {}  # reversed event id -> reversal event id
        self._last = None
        self._cur: dict = {}
        self._eid = self._at = self._seq = None  # id, at, seq of the event being applied
        self._cur_order: OrderState | None = None
        self._fx: list | None = None
        self._handlers = {
            "ItemDefined": self._item_defined,
            "ResourceDefined": self._resource_defined,
            "BomDefined": self._bom_defined,
            "RouteDefined": self._route_defined,
            "ProductionParametersSet": self._params_set,
            "InventoryReceived": self._received_ev,
            "InventoryTransferred": self._transferred_ev,
            "InventoryCounted": self._counted_ev,
            "Picked": self._picked_ev,
            "Put": self._put_ev,
            "OrderCreated": self._order_created,
            "OrderReleased": self._order_released,
            "OrderStarted": self._order_started,
            "OperationReported": self._operation_reported,
            "ReportedAsFinished": self._reported_as_finished,
            "MaterialConsumed": self._material_consumed,
            "OrderEnded": self._order_ended,
            "Reversal": self._reversal,
        }
        self._remap_staged()

    # --- driving -----------------------------------------------------------------------

    def apply(self, ev: dict) -> None:
        """Apply one event. Events must come in (at, seq) order; raises ValueError otherwise.

        Raises ``UnreplayableEvent`` (a ``BadInput``) when its arithmetic overflows.
        """
        with localcontext(ARITHMETIC):
            try:
                self._apply(ev)
            except DecimalException as exc:
                raise UnreplayableEvent(ev, exc) from None

    def _apply(self, ev: dict) -> None:
        """``apply`` without its context and error translation (callers provide both)."""
        at, seq = ev["at"], ev["seq"]
        pos = (at, seq)
        if self._last is not None and pos < self._last:
            raise ValueError(f"event {ev.get('id')} out of (at, seq) order")
        self._last = pos
        self._cur = ev
        eid = self._eid = ev["id"]
        self._at, self._seq = at, seq
        self._cur_order = None
        typ = ev["type"]
        handler = self._handlers.get(typ)
        if handler is None:
            self._anomaly(f"unknown event type {typ!r}")
            return
        keep = typ in REVERSIBLE and (self._keep is None or eid in self._keep)
        fx = self._fx = [] if keep else None
        handler(ev)
        if keep:
            self._effects[eid] = (ev, fx)
        self._fx = None

    def apply_all(self, events) -> Replay:
        """Apply every event of an iterable (already in (at, seq) order); returns self."""
        apply = self._apply
        ev: dict = {}
        with localcontext(ARITHMETIC):
            try:
                for ev in events:
                    apply(ev)
            except DecimalException as exc:
                raise UnreplayableEvent(ev, exc) from None
        return self

    # --- snapshots ---------------------------------------------------------------------

    def state(self) -> dict:
        """The engine's state as plain values and records (see ``projections.snapshot``).

        Taken between events; the change log (``balance_changes``, ``flushes``) is not part
        of it and must have been drained.
        """
        return {k: getattr(self, k) for k in STATE}

    @classmethod
    def restore(cls, state: dict, reversible=None) -> Replay:
        """An engine continuing from ``state`` (from ``state()``), undo kept for ``reversible``."""
        missing = [k for k in STATE if k not in state]
        if missing:
            raise ValueError(f"engine state lacks {', '.join(missing)}")
        engine = cls(reversible=reversible)
        for k in STATE:
            setattr(engine, k, state[k])
        if engine._last is not None:
            engine._last = tuple(engine._last)
        engine.balance_changes.clear()
        engine.staging_changes.clear()
        engine.unresolved_log.clear()
        engine.residual_log.clear()
        return engine

    # --- queries -----------------------------------------------------------------------

    def onhand(self) -> list[dict]:
        """Non-zero on-hand rows (item, location, batch, lp, qty), in-transit included."""
        rows = [
            {"item": item, "location": loc, "batch": b, "lp": lp, "qty": q}
            for (item, loc), bins in self._bins.items()
            for (b, lp), q in bins.items()
            if q
        ]
        rows.sort(key=lambda r: (r["item"], r["location"], _sk(r["batch"]), _sk(r["lp"])))
        return rows

    @exact
    def wip(self) -> list[dict]:
        """Non-zero WIP rows: material staged at input locations, units waiting at outputs."""
        staged: dict = {}
        for (item, loc), bins in self._bins.items():
            if loc in self._staged_map:
                for (b, _lp), q in bins.items():
                    staged[(loc, item, b)] = staged.get((loc, item, b), ZERO) + q
        rows = staged_rows(staged, self._staged_map)
        for (res, loc, kind, order, op, item, batch), q in self._waiting.items():
            if q > 0:
                rows.append({"resource": res, "location": loc, "kind": kind, "order": order,
                             "op": op, "item": item, "batch": batch, "qty": q})
        sort_wip(rows)
        return rows

    @exact
    def consumption(self, order: str | None = None) -> list[dict]:
        """Per order line: expected, posted, variance and posted by trigger kind (DESIGN §6)."""
        rows = []
        for o in self._select(order):
            for ln in o.all_lines():
                expected = ln.expected
                rows.append({
                    "order": o.order, "line": ln.line, "item": ln.item,
                    "principle": ln.principle if ln.line is not None else None,
                    "expected": expected, "posted": ln.posted,
                    "variance": ln.posted - expected,
                    "by_trigger": {k: ln.by_trigger[k] for k in sorted(ln.by_trigger)},
                })
        return rows

    @exact
    def hours(self, order: str | None = None, resource: str | None = None) -> list[dict]:
        """Per order operation: standard vs reported hours (operations off the route included)."""
        rows = []
        for o in self._select(order):
            seen = set()
            for info in o.ops:
                seen.add(info.op)
                if resource is not None and info.resource != resource:
                    continue
                rows.append({"order": o.order, "op": info.op, "resource": info.resource,
                             "standard": o.standard_hours(info.op),
                             "reported": o.hours_reported.get(info.op, ZERO)})
            if resource is None:
                for op in sorted(k for k in o.hours_reported if k not in seen):
                    rows.append({"order": o.order, "op": op, "resource": None,
                                 "standard": ZERO, "reported": o.hours_reported[op]})
        return rows

    def orders(self) -> list[str]:
        """Known order numbers, sorted."""
        return sorted(self._orders)

    def order_state(self, order: str) -> OrderState | None:
        """The live state of one order (None when unknown). Read-only."""
        return self._orders.get(order)

    def retire(self, order: str) -> None:
        """Forget an order's state once the caller knows no later event refers to it.

        For long replays that only feed the materialised history (on-hand, WIP and postings
        are already written out): memory then follows the open orders, not the history. A
        later event for a retired order is treated as one for an unknown order, so callers
        must replay from the start instead when that can happen.
        """
        o = self._orders.pop(order, None)
        if o is not None:
            # Lines point back to their order: break that cycle so the memory is returned
            # at once, even while a long replay runs with the cyclic collector switched off.
            for ln in o.all_lines():
                ln.order = None

    @exact
    def item_totals(self) -> dict:
        """Per item: received, produced, consumed, adjusted and on-hand (all locations, transit).

        Conservation: received + produced − consumed + adjusted == onhand.
        """
        items = set(self._received) | set(self._produced) | set(self._consumed)
        items |= set(self._adjusted)
        items |= {item for item, _ in self._bins}
        out = {}
        for item in sorted(items):
            onhand = ZERO
            for (i, _), bins in self._bins.items():
                if i == item:
                    onhand += sum(bins.values(), ZERO)
            out[item] = {"received": self._received.get(item, ZERO),
                         "produced": self._produced.get(item, ZERO),
                         "consumed": self._consumed.get(item, ZERO),
                         "adjusted": self._adjusted.get(item, ZERO),
                         "onhand": onhand}
        return out

    def reversed_ids(self) -> dict:
        """Reversed event id -> id of the Reversal that undid it."""
        return dict(self._reversed)

    def params(self) -> Params:
        """Production parameters currently in force (the policy when one is given)."""
        return self._params

    def _select(self, order):
        if order is None:
            return [self._orders[k] for k in sorted(self._orders)]
        o = self._orders.get(order)
        return [o] if o is not None else []

    # --- primitives (every state change goes through these so reversals can undo it) ------

    def _anomaly(self, reason: str) -> None:
        ev = self._cur
        self.anomalies.append(Anomaly(ev.get("id"), ev.get("at"), reason))

    def _add(self, container: dict, key, delta) -> None:
        container[key] = container.get(key, ZERO) + delta
        if self._fx is not None:
            self._fx.append((_CTR, container, key, delta))

    def _add_attr(self, obj, attr: str, delta) -> None:
        setattr(obj, attr, getattr(obj, attr) + delta)
        if self._fx is not None:
            self._fx.append((_ATTR, obj, attr, delta))

    def _set(self, obj, attr: str, value) -> None:
        old = getattr(obj, attr)
        setattr(obj, attr, value)
        if self._fx is not None:
            self._fx.append((_SET, obj, attr, old))

    def _append(self, lst: list, value) -> None:
        lst.append(value)
        if self._fx is not None:
            self._fx.append((_APP, lst, value))

    def _oh(self, item, loc, batch, lp, delta, record_negative=True) -> None:
        """Change on-hand of (item, loc, batch, lp) (staged WIP follows: see ``wip``)."""
        ik = (item, loc)
        bins = self._bins.get(ik)
        if bins is None:
            bins = self._bins[ik] = {}
        k = (batch, lp)
        new = bins.get(k, ZERO) + delta
        if new:
            bins[k] = new
        else:
            # an emptied bin leaves the FIFO queue; a refill queues at the back
            bins.pop(k, None)
        eid, at, seq = self._eid, self._at, self._seq
        key = (item, loc, batch, lp)
        self.balance_changes.append(("onhand", key, new, eid, at, seq))
        if record_negative and new < 0 and delta < 0:
            o = self._cur_order
            rec = NegativeOnHand(eid, at, key, new, o.order if o is not None else None, seq)
            self.negative_onhand.append(rec)
            if o is not None:
                o.negative_onhand.append(rec)
        if self._fx is not None:
            self._fx.append((_OH, item, loc, batch, lp, delta))

    def _rewait(self, o: OrderState) -> None:
        """Bring the units waiting after each operation of ``o`` up to date (``waiting``).

        Recomputed from the order's counters, not moved by deltas: with DESIGN §5's fallback
        one report changes the waiting of its predecessors too, and a reversal (which undoes
        the counters) only needs to call this again.
        """
        ops = o.ops
        if not ops:
            return
        vals = _waiting_after(ops, o.op_good, o.op_error, o.op_reports,
                              o.fin_good + o.fin_error)
        waiting = self._waiting
        order, item = o.order, o.item
        for info in ops:
            k = (info.resource, info.output_location, "waiting", order, info.op, item, None)
            v = vals[info.op]
            if v == waiting.get(k, ZERO):
                continue
            if v:
                waiting[k] = v
            else:
                waiting.pop(k, None)
            self.balance_changes.append(("wip", k, v, self._eid, self._at, self._seq))

    def _remap_staged(self) -> None:
        """Recompute which locations are staging areas of which resource; log a change.

        Runs only on master-data changes (resource input location, default input location).
        """
        new: dict = {}
        # one resource per staging location, so a staged quantity is shown (and summed) once
        for res in sorted(self._resources):
            il = self._resources[res].get("input_location")
            if il and il not in new:
                new[il] = (res,)
        new.setdefault(self._params.default_input_location, (None,))
        if new == self._staged_map:
            return
        self._staged_map = new
        ev = self._cur
        self.staging_changes.append((new, ev.get("id"), ev.get("at"), ev.get("seq")))

    # --- master data -----------------------------------------------------------------------

    def _item_defined(self, ev):
        self._items[ev["item"]] = ev

    def _resource_defined(self, ev):
        self._resources[ev["resource"]] = ev
        self._remap_staged()

    def _bom_defined(self, ev):
        self._boms[ev["bom"]] = ev

    def _route_defined(self, ev):
        self._routes[ev["route"]] = sorted(ev.get("operations") or (), key=lambda o: o["op"])

    def _params_set(self, ev):
        if self.policy is not None:
            return  # a what-if policy replaces every recorded parameter set
        self._params = Params.from_dict(ev, ev.get("id"))
        self._remap_staged()

    # --- inventory ---------------------------------------------------------------------------

    def _check_item(self, item):
        if item not in self._items:
            self._anomaly(f"unknown item {item!r}")

    def _received_ev(self, ev):
        item, qty = ev["item"], ev["qty"]
        self._check_item(item)
        self._oh(item, ev["location"], ev.get("batch"), ev.get("lp"), qty)
        self._add(self._received, item, qty)

    def _transferred_ev(self, ev):
        item, qty, b, lp = ev["item"], ev["qty"], ev.get("batch"), ev.get("lp")
        self._check_item(item)
        self._oh(item, ev["from_location"], b, lp, -qty)
        self._oh(item, ev["to_location"], b, lp, qty)

    def _counted_ev(self, ev):
        item, loc, batch, counted = ev["item"], ev["location"], ev.get("batch"), ev["qty"]
        self._check_item(item)
        bins = self._bins.get((item, loc)) or {}
        current = [(k, q) for k, q in bins.items() if k[0] == batch]
        diff = counted - sum((q for _, q in current), ZERO)
        if not diff:
            return
        self._add(self._adjusted, item, diff)
        if diff > 0:
            self._oh(item, loc, batch, None, diff, record_negative=False)
            return
        left = -diff
        for (b, lp), q in current:  # shortage taken from the licence plates FIFO
            if q <= 0:
                continue
            t = min(q, left)
            self._oh(item, loc, b, lp, -t, record_negative=False)
            left -= t
            if not left:
                return
        self._oh(item, loc, batch, None, -left, record_negative=False)

    def _picked_ev(self, ev):
        item, qty, b, lp = ev["item"], ev["qty"], ev.get("batch"), ev.get("lp")
        self._check_item(item)
        o = self._orders.get(ev.get("order")) if ev.get("order") else None
        if o is not None:
            self._cur_order = o
            o.events.append(ev["id"])
        self._oh(item, ev["location"], b, lp, -qty)
        self._oh(item, IN_TRANSIT, b, lp, qty)

    def _put_ev(self, ev):
        item, qty, loc = ev["item"], ev["qty"], ev["location"]
        b, lp = ev.get("batch"), ev.get("lp")
        self._check_item(item)
        order = ev.get("order")
        o = None
        if order is not None:
            o = self._orders.get(order)
            if o is None:
                self._anomaly(f"put for unknown order {order!r}")
            else:
                self._cur_order = o
                o.events.append(ev["id"])
        before = self._bins.get((item, IN_TRANSIT), {}).get((b, lp), ZERO)
        self._oh(item, IN_TRANSIT, b, lp, -qty)
        if before < qty:
            self._append(self.puts_without_pick, (ev["id"], item, loc, b, lp))
        self._oh(item, loc, b, lp, qty)
        if o is None:
            return
        line_no = ev.get("line")
        if line_no is not None:
            ln = o.lines.get(line_no)
            if ln is None or ln.item != item:
                self._anomaly(f"put for order {order!r} names line {line_no!r} of another item")
                lines = [x for x in o.lines.values() if x.item == item]
            else:
                lines = [ln]
        else:
            lines = sorted((x for x in o.lines.values() if x.item == item), key=lambda x: x.line)
        entry = {"location": loc, "line": line_no, "batch": b, "lp": lp, "remaining": qty,
                 "event": ev["id"]}
        entries = o.puts.get(item)
        if entries is None:
            entries = o.puts[item] = []
        self._append(entries, entry)
        if lines:
            self._add(o.put_qty, lines[0].line, qty)
        self._add(o.put_at, (item, loc, b), qty)
        self._append(o.put_events, (ev["id"], item, loc))
        # the put trigger: consume the quantity put, once, on the first line whose principle
        # the matching rule lists
        rules = self._params.rules
        for ln in lines:
            rule = rules.match("put", "mobile", ln.resource)
            if rule_flushes(rule, ln.principle):
                self._post(o, ln, qty, "put", "mobile", rule_basis(rule), rule, None, None)
                break

    # --- orders --------------------------------------------------------------------------

    def _order(self, ev) -> OrderState | None:
        o = self._orders.get(ev["order"])
        if o is None:
            self._anomaly(f"unknown order {ev['order']!r}")
            return None
        self._cur_order = o
        o.events.append(ev["id"])
        return o

    def _oos(self, o: OrderState, reason: str, op=None) -> None:
        ev = self._cur
        self._append(o.out_of_sequence, OutOfSequence(ev["id"], ev["at"], reason, op))

    def _order_created(self, ev):
        order = ev["order"]
        if order in self._orders:
            self._anomaly(f"order {order!r} created twice")
            return
        params = self._params
        bom = self._boms.get(ev.get("bom"))
        if bom is None:
            self._anomaly(f"unknown BOM {ev.get('bom')!r}")
        route_id = ev.get("route")
        route_ops = self._routes.get(route_id) if route_id is not None else None
        if route_id is not None and route_ops is None:
            self._anomaly(f"unknown route {route_id!r}")
        ops = []
        for od in route_ops or ():
            rd = self._resources.get(od.get("resource")) or {}
            ops.append(OpInfo(od["op"], od.get("resource"), od.get("setup_hours") or ZERO,
                              od.get("run_hours") or ZERO, rd.get("input_location"),
                              rd.get("output_location")))
        o = OrderState(order=order, item=ev["item"], qty=ev["qty"], bom=ev.get("bom"),
                       route=route_id, created_event=ev["id"], created_at=ev["at"],
                       default_input_location=params.default_input_location,
                       tolerance_pct=params.tolerance_pct, ops=tuple(ops),
                       ops_by_no={x.op: x for x in ops})
        by_op: dict = {}
        for ld in (bom or {}).get("lines") or ():
            comp = ld["item"]
            itd = self._items.get(comp)
            if itd is None:
                self._anomaly(f"unknown component item {comp!r}")
                itd = {}
            op = resolve_operation(ld.get("operation"), route_ops)
            info = o.ops_by_no.get(op)
            ln = LineState(
                order=o, line=ld["line"], item=comp, qty=ld["qty"],
                per=ld.get("per") or Decimal(1), scrap_pct=ld.get("scrap_pct") or ZERO,
                scrap_const=ld.get("scrap_const") or ZERO,
                decimals=itd.get("decimals", DEFAULT_DECIMALS),
                tracking=itd.get("tracking") or "none",
                principle=resolve_principle(ld.get("flushing"), itd.get("flushing")),
                op=op, resource=info.resource if info else None,
                location=resolve_location(ld.get("location"),
                                          info.input_location if info else None,
                                          params.default_input_location),
            )
            o.lines[ln.line] = ln
            by_op.setdefault(op, []).append(ln)
        o.lines_by_op = {k: tuple(v) for k, v in by_op.items()}
        o.line_list = tuple(o.lines[k] for k in sorted(o.lines))
        o.timeline.append(("created", ev["id"], ev["at"]))
        o.events.append(ev["id"])
        self._orders[order] = o

    def _order_released(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "after end")
        if o.released is None:
            self._set(o, "released", (ev["id"], ev["at"]))
        o.timeline.append(("released", ev["id"], ev["at"]))

    def _order_started(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "after end")
        qty = ev.get("qty")
        if qty is None:
            qty = o.qty
        if o.released is None:  # starting releases the order (AX, seed 002)
            self._set(o, "released", (ev["id"], ev["at"]))
            o.timeline.append(("released", ev["id"], ev["at"]))
        self._append(o.started, (ev["id"], ev["at"], qty))
        o.timeline.append(("started", ev["id"], ev["at"]))
        self._add_attr(o, "started_qty", qty)
        first = o.ops[0] if o.ops else None
        self._trigger(o, "start", ev.get("device") or "client", first.resource if first else None,
                      o.line_list, qty, ZERO)

    def _operation_reported(self, ev):
        o = self._order(ev)
        if o is None:
            return
        op, good, error = ev["op"], ev.get("good") or ZERO, ev.get("error") or ZERO
        info = o.ops_by_no.get(op)
        if o.released is None:
            self._oos(o, "before release", op)
        if o.ended is not None:
            self._oos(o, "after end", op)
        if info is None:
            self._oos(o, "op not on route", op)
        before = o.op_good.get(op, ZERO) + o.op_error.get(op, ZERO)
        units = good + error
        self._add(o.op_good, op, good)
        self._add(o.op_error, op, error)
        self._add(o.op_reports, op, 1)
        if before + units > o.qty:
            self._oos(o, "beyond order qty", op)
        hours = ev.get("hours")
        if info is not None:
            self._rewait(o)
            if hours is None:
                hours = standard.standard_share(info.setup_hours, info.run_hours, before, units)
        if hours is not None:
            self._add(o.hours_reported, op, hours)
        self._trigger(o, "operation", ev.get("device") or "job_terminal",
                      info.resource if info else None, o.lines_by_op.get(op, ()), good, error)

    def _reported_as_finished(self, ev):
        o = self._order(ev)
        if o is None:
            return
        good, error = ev.get("good") or ZERO, ev.get("error") or ZERO
        if o.released is None:
            self._oos(o, "before release")
        if o.ended is not None:
            self._oos(o, "after end")
        if o.fin_good + o.fin_error + good + error > o.qty:
            self._oos(o, "beyond order qty")
        self._add_attr(o, "fin_good", good)
        self._add_attr(o, "fin_error", error)
        self._add_attr(o, "fin_reports", 1)
        last = o.ops[-1] if o.ops else None
        if last is not None:
            self._rewait(o)
        if good:
            loc = ev.get("location") or (last.output_location if last else None) \
                or DEFAULT_OUTPUT_LOCATION
            self._oh(o.item, loc, ev.get("batch"), ev.get("lp"), good)
            self._add(self._produced, o.item, good)
        self._trigger(o, "finish", ev.get("device") or "client",
                      last.resource if last else None, o.line_list, good, error)

    def _material_consumed(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "after end")
        item, qty, batch = ev["item"], ev["qty"], ev.get("batch")
        line_no = ev.get("line")
        ln = o.lines.get(line_no) if line_no is not None else None
        if ln is not None and ln.item != item:
            self._anomaly(f"line {line_no} of order {o.order!r} is not item {item!r}")
            ln = None
        if ln is None:
            ln = next((x for k, x in sorted(o.lines.items()) if x.item == item), None)
        if ln is None:
            ln = o.unplanned.get(item)
            if ln is None:
                itd = self._items.get(item) or {}
                ln = LineState(order=o, line=None, item=item, qty=ZERO, per=Decimal(1),
                               scrap_pct=ZERO, scrap_const=ZERO,
                               decimals=itd.get("decimals", DEFAULT_DECIMALS),
                               tracking=itd.get("tracking") or "none", principle="manual",
                               op=None, resource=None, location=o.default_input_location)
                # the line is a container: a reversal takes back postings, never the line
                o.unplanned[item] = ln
        loc = ev.get("location") or ln.location
        self._post(o, ln, qty, "manual", ev.get("device") or "client", None, None, None, None,
                   loc, batch)

    def _order_ended(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "ended twice")
        self._set(o, "ended", (ev["id"], ev["at"]))
        self._set(o, "tolerance_pct", self._params.tolerance_pct)
        o.timeline.append(("ended", ev["id"], ev["at"]))
        # residual material put for the order and still at its location (RESIDUAL_AT_INPUT)
        residual = []
        # per item, location and batch: another batch below zero there must not hide it
        for (item, loc, b), put in sorted(o.put_at.items(), key=lambda kv: (
                kv[0][0], kv[0][1], _sk(kv[0][2]))):
            left = put - o.consumed_at.get((item, loc, b), ZERO)
            bins = self._bins.get((item, loc)) or {}
            there = sum((q for (bb, _lp), q in bins.items() if bb == b), ZERO)
            q = min(left, there)
            if q > 0:
                ids = tuple(e for e, i, lc in o.put_events if i == item and lc == loc)
                residual.append(Residual(item, loc, q, ids, ev["id"], b))
        self._set(o, "residual_at_end", tuple(residual))
        self._set(o, "wip_at_end", {x.op: w for x in o.ops if (w := o.waiting(x.op))})
        self.residual_log.append((o.order, ev["id"], ev["seq"], ev["at"], o.residual_at_end))

    # --- flushing --------------------------------------------------------------------------

    def _trigger(self, o, kind, device, resource, lines, good, error) -> None:
        """Apply the rule in force for a start/operation/finish trigger to ``lines``."""
        rule = self._params.rules.match(kind, device, resource)
        if rule is None or not lines:
            return
        basis = rule_basis(rule)
        units = good if basis == "good" else good + error
        eid = self._cur["id"]
        for ln in lines:
            if not rule_flushes(rule, ln.principle):
                continue
            ub = ln.units.get(kind, ZERO)
            ua = ub + units
            self._add(ln.units, kind, units)
            if basis == "good":
                self._append(ln.good_basis_flushes, (kind, eid))
            if basis == "transferred":
                target = transferred_target(o.put_qty.get(ln.line, ZERO), ua, o.qty, ln.decimals)
                q = target - ln.transferred.get(kind, ZERO)
                if q:
                    self._add(ln.transferred, kind, q)
            else:
                q = flush_delta(ln.qty, ln.per, ln.scrap_pct, ln.scrap_const, ub, ua, ln.decimals)
            if q:
                self._post(o, ln, q, kind, device, basis, rule, ub, ua)

    def _post(self, o, ln, qty, kind, device, basis, rule, ub, ua, location=None,
              batch=None) -> None:
        """Post one consumption of ``qty`` on line ``ln`` (negative = return)."""
        ev = self._cur
        eid, at, seq = ev["id"], ev["at"], ev["seq"]
        loc = location or ln.location
        item = ln.item
        parts = self._allocate(o, ln, loc, qty, batch) if qty > 0 else ((batch, None, qty),)
        for b, lp, q in parts:
            # an unresolved take (no batch to take a tracked item from) is UNRESOLVED_BATCH
            # only: its no-batch bucket going below zero is not also NEGATIVE_ON_HAND
            self._oh(item, loc, b, lp, -q,
                     record_negative=not (b is None and ln.tracking in TRACKED))
            self._add(o.consumed_at, (item, loc, b), q)
            rec = FlushRecord(eid, at, seq, o.order, ln.line, item, kind, device, q, loc, b, lp,
                              ub, ua, basis, rule)
            self.flushes.append(rec)
            if self._fx is not None:
                self._fx.append((_FLUSH, rec))
        self._add_attr(ln, "posted", qty)
        if kind == "manual":
            self._add_attr(ln, "manual_posted", qty)
        self._add(ln.by_trigger, kind, qty)
        self._add(self._consumed, item, qty)
        self._append(ln.flush_events, (kind, device, eid))

    def _allocate(self, o, ln, loc, qty, batch=None):
        """Choose batch/lp for taking ``qty`` of ln.item at ``loc`` (DESIGN §4).

        The order's put entries for the line first (FIFO), then FIFO on hand, then unresolved.
        ``batch`` given (manual consumption) restricts the choice to that batch.
        """
        item = ln.item
        bins = self._bins.get((item, loc)) or {}
        used: dict = {}
        left = qty
        entries = o.puts.get(item)
        if entries:
            for e in entries:
                rem = e["remaining"]
                if rem <= 0 or e["location"] != loc:
                    continue
                if e["line"] is not None and e["line"] != ln.line:
                    continue
                k = (e["batch"], e["lp"])
                if batch is not None and k[0] != batch:
                    continue
                t = min(left, rem, bins.get(k, ZERO) - used.get(k, ZERO))
                if t <= 0:
                    continue
                self._add(e, "remaining", -t)
                used[k] = used.get(k, ZERO) + t
                left -= t
                if not left:
                    break
        if left:
            for k, have in bins.items():
                if batch is not None and k[0] != batch:
                    continue
                t = min(left, have - used.get(k, ZERO))
                if t <= 0:
                    continue
                used[k] = used.get(k, ZERO) + t
                left -= t
                if not left:
                    break
        if left:
            k = (batch, None)
            used[k] = used.get(k, ZERO) + left
            if batch is None and ln.tracking in TRACKED:
                ev = self._cur
                rec = Unresolved(ev["id"], ev["at"], ln.line, item, loc, left)
                self._append(o.unresolved, rec)
                self.unresolved_log.append((o.order, rec, ev["seq"]))
        return [(b, lp, q) for (b, lp), q in used.items()]

    # --- reversal --------------------------------------------------------------------------

    def _reversal(self, ev):
        target = ev.get("reverses")
        if target in self._reversed:
            self._anomaly(f"event {target!r} already reversed")
            return
        entry = self._effects.get(target)
        if entry is None:
            self._anomaly(f"cannot reverse {target!r}: unknown, or not an inventory/order event")
            return
        tev, fx = entry
        if tev["type"] == "OrderCreated":
            self._anomaly(f"cannot reverse order creation {target!r}")
            return
        self._reversed[target] = ev["id"]
        del self._effects[target]
        o = self._orders.get(tev.get("order")) if tev.get("order") is not None else None
        if o is not None:
            self._cur_order = o
            o.events.append(ev["id"])
            o.timeline.append(("reversed", ev["id"], ev["at"], target))
            o.reversals.append((ev["id"], target))
        self._fx = None  # a reversal itself is not reversible
        eid, at, seq = ev["id"], ev["at"], ev["seq"]
        for step in reversed(fx):
            code = step[0]
            if code == _OH:
                _, item, loc, b, lp, delta = step
                self._oh(item, loc, b, lp, -delta)
            elif code == _CTR:
                _, container, key, delta = step
                container[key] = container.get(key, ZERO) - delta
            elif code == _ATTR:
                _, obj, attr, delta = step
                setattr(obj, attr, getattr(obj, attr) - delta)
            elif code == _SET:
                _, obj, attr, old = step
                setattr(obj, attr, old)
            elif code == _APP:
                _, lst, value = step
                _remove_last(lst, value)
            elif code == _FLUSH:
                r = step[1]
                self.flushes.append(FlushRecord(eid, at, seq, r.order, r.line, r.item,
                                                "reversal", r.device, -r.qty, r.location,
                                                r.batch, r.lp, None, None, None, None))
        if o is not None:
            self._rewait(o)  # the counters are back: so is the waiting
