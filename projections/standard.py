"""Standard (expected) consumption and standard hours (DESIGN §5). Pure functions, Decimal only.

- Units processed at operation k: Σ(good+error) reported at k when any operation report exists
  for k, otherwise Σ(good+error) reported as finished (an operation nobody reported on is
  deemed to have processed what was finished).
- Expected consumption of a line: ``qty/per × units(op of line) × (1 + scrap_pct/100) +
  scrap_const`` when units > 0, rounded half-up to the component's decimals like every flush.
- Posted = flushed + manually consumed; variance = posted − expected; tolerance =
  ``tolerance_pct`` % of expected.
- Standard hours of an operation: ``setup_hours`` once (when units > 0) + ``run_hours × units``.
  A report without actual hours is booked at its standard share: its run hours, plus the setup
  when it is the first report that brings the operation's units above zero.
"""

from __future__ import annotations

from decimal import Decimal

from backflush.projections.rules import ZERO, expected_quantity, tolerance


def units_processed(op: int | None, op_units: dict, op_reports: dict,
                    finished_units: Decimal) -> Decimal:
    """Units processed at ``op`` (DESIGN §5).

    ``op_units`` maps op -> Σ(good+error) reported there, ``op_reports`` op -> number of live
    (not reversed) reports; ``finished_units`` = Σ(good+error) reported as finished. A line with
    no operation (order without route) is measured on finished units.
    """
    if op is not None and op_reports.get(op, 0) > 0:
        return op_units.get(op, ZERO)
    return finished_units


def expected_consumption(qty: Decimal, per: Decimal, scrap_pct: Decimal, scrap_const: Decimal,
                         units: Decimal, decimals: int) -> Decimal:
    """Expected consumption of one BOM line for ``units`` processed at its operation."""
    return expected_quantity(qty, per, scrap_pct, scrap_const, units, decimals)


def variance(posted: Decimal, expected: Decimal) -> Decimal:
    """Posted minus expected: positive = over-consumption, negative = under-consumption."""
    return posted - expected


def within_tolerance(posted: Decimal, expected: Decimal, tolerance_pct: Decimal) -> bool:
    """True when |posted − expected| ≤ tolerance_pct % of expected."""
    return abs(posted - expected) <= tolerance(expected, tolerance_pct)


def standard_hours(setup_hours: Decimal, run_hours: Decimal, units: Decimal) -> Decimal:
    """Standard hours of an operation: setup once when units > 0, plus run hours per unit."""
    if units <= 0:
        return ZERO
    return setup_hours + run_hours * units


def standard_share(setup_hours: Decimal, run_hours: Decimal, units_before: Decimal,
                   units: Decimal) -> Decimal:
    """Standard hours one report stands for when it carries no actual hours.

    The difference of standard hours before and after the report, so the shares of all
    reports of an operation add up to its standard hours.
    """
    # standard_hours(after) - standard_hours(before), written out: once per operation report
    after = units_before + units
    return ((ZERO if after <= 0 else setup_hours + run_hours * after)
            - (ZERO if units_before <= 0 else setup_hours + run_hours * units_before))
