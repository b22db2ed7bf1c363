"""Light pieces shared by the replay engine and the materialised queries.

No heavy imports here (no pydantic, no engine): a query answered from the materialised
history loads this, not the engine.
"""

from __future__ import annotations

from decimal import Context, Decimal, DivisionByZero, InvalidOperation, Overflow

# Engine arithmetic runs in its own context, whatever the caller's: enough digits that sums of
# accepted quantities (bounded at import) never round, and a quantity that still overflows or
# is not a number stops with a clean error naming the event (engine.UnreplayableEvent).
ARITHMETIC = Context(prec=80, Emax=999_999, Emin=-999_999,
                     traps=[InvalidOperation, DivisionByZero, Overflow])

def fmt_qty(q: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros ("24.5", "196")."""
    if q == 0:
        return "0"
    s = format(q, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


WIP_ORDER = ("resource", "location", "kind", "order", "op", "item", "batch")


def _sk(v):
    """Sort key tolerant of None (None first)."""
    return (0, "") if v is None else (1, v)


def sort_wip(rows: list[dict]) -> None:
    """Sort WIP rows in place, the order every WIP answer has (None first in each column)."""
    rows.sort(key=lambda r: tuple(_sk(r[k]) for k in WIP_ORDER))


def staged_rows(onhand_at: dict, staging: dict) -> list[dict]:
    """Staged WIP rows from on-hand per (location, item, batch) and the staging map
    (location -> resources staging there): one row per resource, zero totals left out."""
    rows = []
    for (loc, item, batch), q in onhand_at.items():
        if q <= 0:  # staged material is never negative: a shortage is NEGATIVE_ON_HAND
            continue
        for res in staging.get(loc, ()):
            rows.append({"resource": res, "location": loc, "kind": "staged", "order": None,
                         "op": None, "item": item, "batch": batch, "qty": q})
    return rows
