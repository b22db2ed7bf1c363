"""What is known about one production order and its BOM lines (``OrderState``, ``LineState``).

Data plus the derived figures findings and the audit read (units processed, expected
consumption, variance, units waiting after an operation, standard hours; DESIGN §5). The
order book (``projections.orderbook``) changes them; everyone else treats them as read-only.

Plain slotted classes rather than dataclasses: a query process that replays one order
(``consumption``/``findings --order``) would import ``dataclasses`` for them, and with it
``inspect`` and ``ast`` (~8 ms of a ~50 ms process). Identity equality, as the dataclasses
had (``eq=False``). ``projections.snapshot`` stores them field by field in ``__slots__``
order: a change of fields or order is a new ``ENGINE_VERSION``.
"""

from __future__ import annotations

from decimal import Decimal

from backflush.projections import standard
from backflush.projections.exact import exact
from backflush.projections.rules import ZERO

NOTHING: dict = {}  # read only: what a line that never flushed looks up


def list_of(obj, name: str) -> list:
    """The list ``obj.name``, made at its first entry: until then it is ``()``.

    An order or line that holds nothing keeps no empty container of its own (see
    ``LineState.__init__``); writers take the container through here or test as these do.
    """
    v = getattr(obj, name)
    if type(v) is tuple:
        v = []
        setattr(obj, name, v)
    return v


def dict_of(obj, name: str) -> dict:
    """The dict ``obj.name``, made at its first entry: until then it is None."""
    v = getattr(obj, name)
    if v is None:
        v = {}
        setattr(obj, name, v)
    return v


class LineState:
    """One BOM line of one order: resolved master data plus what has been posted against it."""

    __slots__ = (
        "order", "line", "item", "qty", "per", "scrap_pct", "scrap_const", "decimals",
        "tracking", "principle", "op", "resource", "location", "units", "posted",
        "manual_posted", "by_trigger", "flush_events", "good_basis_flushes", "transferred",
    )

    def __init__(self, order, line, item, qty, per, scrap_pct, scrap_const, decimals, tracking,
                 principle, op, resource, location):
        self.order = order
        self.line = line  # None for the unplanned line of a manually consumed non-BOM item
        self.item = item
        self.qty = qty
        self.per = per
        self.scrap_pct = scrap_pct
        self.scrap_const = scrap_const
        self.decimals = decimals
        self.tracking = tracking
        self.principle = principle  # resolved: BOM line → item → "finish"
        self.op = op  # resolved: line operation → first operation of the route
        self.resource = resource  # resource of ``op``
        self.location = location  # resolved consumption location
        # What has been flushed: made at the line's first flush (``projections.flusher``).
        # Most lines of an order in progress have none yet, and a plant with 20,000 orders
        # firmed ahead holds 100,000 such lines: five empty containers each were 30 MB, and
        # as many objects for a checkpoint to number.
        self.units = None  # trigger kind -> cumulative U that flushed it (dict)
        self.posted = ZERO  # flushed + manually consumed (net of reversals)
        self.manual_posted = ZERO
        self.by_trigger = None  # trigger kind -> posted qty (net) (dict)
        self.flush_events = ()  # (trigger kind, device, event id) (list)
        self.good_basis_flushes = ()  # (trigger kind, event id) (list)
        self.transferred = None  # trigger kind -> qty taken on "transferred" (dict)

    def __repr__(self) -> str:
        return (f"LineState(order={self.order.order!r}, line={self.line!r}, item={self.item!r},"
                f" principle={self.principle!r}, op={self.op!r}, posted={self.posted!r})")

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
            gap = max(gap, processed - (self.units or NOTHING).get(kind, ZERO))
        return gap


class OrderState:
    """Everything known about one production order: what findings and the audit need.

    Mutated only by ``Replay``; treat as read-only.
    """

    __slots__ = (
        "order", "item", "qty", "bom", "route", "created_event", "created_at",
        "default_input_location", "tolerance_pct", "ops", "ops_by_no", "lines", "lines_by_op",
        "line_list", "unplanned", "released", "started", "ended", "timeline", "events",
        "started_qty", "op_good", "op_error", "op_reports", "fin_good", "fin_error",
        "fin_reports", "hours_reported", "puts", "put_qty", "put_at", "put_events",
        "consumed_at", "out_of_sequence", "negative_onhand", "unresolved", "residual_at_end",
        "wip_at_end", "reversals",
    )

    def __init__(self, order, item, qty, bom, route, created_event, created_at,
                 default_input_location, tolerance_pct, *, ops=(), ops_by_no=None):
        self.order = order
        self.item = item
        self.qty = qty
        self.bom = bom
        self.route = route
        self.created_event = created_event
        self.created_at = created_at
        self.default_input_location = default_input_location
        self.tolerance_pct = tolerance_pct  # in force at creation, refreshed at OrderEnded
        self.ops = ops  # OpInfo sorted by op number
        # (shared by the orders of one BOM and route: read only)
        self.ops_by_no = {} if ops_by_no is None else ops_by_no
        self.lines = {}  # line no -> LineState
        self.lines_by_op = {}  # op -> tuple of LineState
        self.line_list = ()  # LineState by line number
        # What few orders have is made when it first happens (``list_of``/``dict_of``):
        # 20,000 orders firmed ahead held ten empty containers each.
        self.unplanned = None  # item -> LineState (line None) (dict)
        # status
        self.released = None  # (event id, at)
        self.started = ()  # (event id, at, qty) (list)
        self.ended = None  # (event id, at)
        self.timeline = []  # (status, event id, at[, reversed id])
        self.events = []  # ids of every event applied for this order
        # reported quantities
        self.started_qty = ZERO
        # The per-operation counters are made together at the order's first operation
        # report, the put tables at its first put, ``consumed_at`` at its first posting:
        # 20,000 orders firmed ahead held eight empty dicts each (~10 MB).
        self.op_good = None  # op -> Σ good (dict)
        self.op_error = None  # op -> Σ error (dict)
        self.op_reports = None  # op -> number of live reports (dict)
        self.fin_good = ZERO
        self.fin_error = ZERO
        self.fin_reports = ZERO
        self.hours_reported = None  # op -> Σ hours (actual or standard share) (dict)
        # material put for the order
        self.puts = None  # item -> list of put entries (dicts) (dict)
        self.put_qty = None  # line no -> qty put for that line (dict)
        self.put_at = None  # (item, location, batch) -> qty put there (dict)
        self.put_events = ()  # (event id, item, location) (list)
        self.consumed_at = None  # (item, location, batch) -> posted (dict)
        # records for findings
        self.out_of_sequence = ()  # OutOfSequence (list)
        self.negative_onhand = ()  # NegativeOnHand caused by this order (list)
        self.unresolved = ()  # Unresolved (list)
        self.residual_at_end = ()  # Residual, computed at OrderEnded
        self.wip_at_end = None  # op -> units waiting after op, set at OrderEnded (dict)
        self.reversals = ()  # (reversal event id, reversed event id) (list)

    def __repr__(self) -> str:
        return (f"OrderState(order={self.order!r}, item={self.item!r}, qty={self.qty!r},"
                f" bom={self.bom!r}, route={self.route!r})")

    @exact
    def units(self, op: int | None) -> Decimal:
        """Units processed at ``op`` (DESIGN §5)."""
        return standard.units_processed(
            op, _OpUnits(self.op_good or NOTHING, self.op_error or NOTHING),
            self.op_reports or NOTHING,
            self.fin_good + self.fin_error,
        )

    def error_units(self, op: int | None) -> Decimal:
        """Error units counted at ``op`` (or at report as finished when op has no reports)."""
        if op is not None and (self.op_reports or NOTHING).get(op, 0) > 0:
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
        return waiting_after(self.ops, self.op_good or NOTHING, self.op_error or NOTHING,
                             self.op_reports or NOTHING,
                             self.fin_good + self.fin_error).get(op, ZERO)

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
        if self.unplanned:
            out.extend(self.unplanned[k] for k in sorted(self.unplanned))
        return out


class _OpUnits:
    """Read-only view op -> good+error, so standard.units_processed sees one mapping."""

    __slots__ = ("good", "error")

    def __init__(self, good, error):
        self.good, self.error = good, error

    def get(self, op, default=ZERO):
        return self.good.get(op, default) + self.error.get(op, ZERO)


def waiting_after(ops, op_good: dict, op_error: dict, op_reports: dict,
                   finished: Decimal) -> dict:
    """op -> units waiting after it, for every operation of ``ops`` in one pass.

    Units processed at an op are ``standard.units_processed`` (its good+error when it has
    live reports, else what was finished). Walks the route backwards so each operation's
    successor's units are at hand; an op number listed twice takes its first position's value.
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
