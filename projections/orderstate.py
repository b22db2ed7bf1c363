"""What is known about one production order and its BOM lines (``OrderState``, ``LineState``).

Data plus the derived figures findings and the audit read (units processed, expected
consumption, variance, units waiting after an operation, standard hours; DESIGN §5). The
order book (``projections.orderbook``) changes them; everyone else treats them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from backflush.projections import standard
from backflush.projections.exact import exact
from backflush.projections.rules import ZERO


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
        return waiting_after(self.ops, self.op_good, self.op_error, self.op_reports,
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
