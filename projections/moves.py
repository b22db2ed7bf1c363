"""The stock-ledger register of one item: every on-hand move with a running balance.

What ERPNext's Stock Ledger report and ``hledger register`` give their users: one row per
event and on-hand key (item, location, batch, lp) that the event changed, with the quantity
in or out, the running balance of what the filter covers (the item at one location, or the
item over every location and transit), the event's id, type and order, when it happened and
when it was recorded; an opening balance when the register starts at ``from``.

Read from the materialised history (``bf_onhand_hist``, kept by ``projections.materialise``),
so it agrees with ``onhand`` at every point in time; the SQL is in `_history` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from backflush.ledger.store import Ledger, from_us, to_us

from backflush.errors import UnknownName, close_names

ZERO = Decimal(0)

COLUMNS = ["at", "recorded", "event", "type", "order", "location", "batch", "lp", "in", "out",
           "balance"]


# The register reads the item's history a window of time at a time: each window is one
# range of the (key, at) primary key per key of the item, so memory follows the window, not
# the item's whole history (a busy component at 1M events: 81 MB, every row held). Windows
# start at a week and follow the rows they hold, between these bounds.
_WINDOW_US = 7 * 86_400 * 1_000_000
_WINDOW_ROWS = (2_000, 20_000)


def _history(
    ledger: Ledger, item: str, location: str | None, to_us_: int | None
) -> Iterator[Any]:
    """Every balance row of the item's on-hand keys up to ``to_us_``, in replay order."""
    where = " WHERE k.item = ?"
    params: list[Any] = [item]
    if location is not None:
        where += " AND k.location = ?"
        params.append(location)
    with ledger.transaction(commit=False) as cur:
        # Per key, its first and last row through the primary key: no scan of the rows.
        row = cur.execute(
            "SELECT MIN((SELECT MIN(h.at_us) FROM bf_onhand_hist h WHERE h.key_id = k.key_id))"
            " AS lo, MAX((SELECT MAX(h.at_us) FROM bf_onhand_hist h"
            " WHERE h.key_id = k.key_id)) AS hi FROM bf_onhand_keys k" + where, params,
        ).fetchone()
    if row["lo"] is None:
        return
    lo, end = row["lo"] - 1, row["hi"] if to_us_ is None else min(row["hi"], to_us_)
    sql = (
        "SELECT k.key_id AS key_id, k.location AS location, k.batch AS batch, k.lp AS lp,"
        " h.at_us AS at_us, h.seq AS seq, h.n AS n, h.balance AS balance,"
        " e.id AS id, e.type AS type, e.ord AS ord, e.rec_us AS rec_us"
        " FROM bf_onhand_hist h"
        " JOIN bf_onhand_keys k ON k.key_id = h.key_id"
        " JOIN bf_events e ON e.seq = h.seq" + where +
        " AND h.at_us > ? AND h.at_us <= ? ORDER BY h.at_us, h.seq, h.n"
    )
    span = _WINDOW_US
    few, many = _WINDOW_ROWS
    while lo < end:
        hi = min(lo + span, end)
        with ledger.transaction(commit=False) as cur:
            rows = cur.execute(sql, [*params, lo, hi]).fetchall()
        yield from rows
        lo = hi
        if len(rows) > many:
            span = max(span // 2, 1)
        elif len(rows) < few:
            span *= 2


def _known(ledger: Ledger, column: str) -> set[str]:
    with ledger.transaction(commit=False) as cur:
        rows = cur.execute(f"SELECT DISTINCT {column} AS v FROM bf_onhand_keys").fetchall()
    return {r["v"] for r in rows if r["v"] is not None}


def _defined_items(ledger: Ledger) -> set[str]:
    from backflush.ledger.codec import payload_of

    return {payload_of(r["state"], r["seq"]).get("item")
            for r in ledger.iter_rows(types=["ItemDefined"])} - {None}


def check_names(ledger: Ledger, item: str, location: str | None) -> None:
    """Raise `UnknownName` (with a did-you-mean) for an item or location never seen."""
    items = _known(ledger, "item")
    if item not in items:
        items |= _defined_items(ledger)
        if item not in items:
            raise UnknownName("item", item, close_names(item, items))
    if location is not None:
        locations = _known(ledger, "location")
        if location not in locations:
            raise UnknownName("location", location, close_names(location, locations))


def iter_stock_moves(
    ledger: Ledger,
    item: str,
    location: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """The register of ``item`` (at ``location``, else everywhere) with ``start <= at <= end``.

    Rows: ``at``, ``recorded``, ``event`` (id), ``type``, ``order``, ``location``, ``batch``,
    ``lp``, ``in``, ``out`` (one of them None), ``balance`` (running, over what the filter
    covers). With ``start`` the first row is the opening balance (``type`` "opening", ``at``
    = ``start``). Moves that net to zero within one event and key are left out. Raises
    `UnknownName` for an item or location the ledger never saw, at once (before the first
    row is asked for); the rows are yielded as they are read.
    """
    from backflush.projections import materialise as mat

    mat.catch_up(ledger)
    check_names(ledger, item, location)
    return _register(ledger, item, location, start, end)


def _register(
    ledger: Ledger, item: str, location: str | None, start: datetime | None,
    end: datetime | None,
) -> Iterator[dict[str, Any]]:
    start_us = to_us(start) if start is not None else None
    rows = _history(ledger, item, location, to_us(end) if end is not None else None)
    prev: dict[int, Decimal] = {}  # last balance per key
    balance = ZERO
    out: list[dict[str, Any]] = []
    opened = start_us is None
    # One event may change one key several times (two BOM lines of one component): one row.
    pending: dict[str, Any] | None = None

    def flush_pending() -> None:
        nonlocal pending
        if pending is not None and pending["delta"] != 0:
            d = pending.pop("delta")
            pending["in"] = d if d > 0 else None
            pending["out"] = -d if d < 0 else None
            out.append(pending)
        pending = None

    for r in rows:
        if out:  # rows finished by the one before: out now, memory stays flat
            yield from _done(out)
        b = Decimal(r["balance"])
        delta = b - prev.get(r["key_id"], ZERO)
        prev[r["key_id"]] = b
        balance += delta
        if not opened and r["at_us"] >= start_us:
            opened = True
            out.append({"at": start, "recorded": None, "event": None, "type": "opening",
                        "order": None, "location": location, "batch": None, "lp": None,
                        "in": None, "out": None, "balance": balance - delta})
        if not opened:
            continue
        if pending is not None and (pending["_seq"], pending["_key"]) == (r["seq"], r["key_id"]):
            pending["delta"] += delta
            pending["balance"] = balance
            continue
        flush_pending()
        pending = {
            "at": from_us(r["at_us"]), "recorded": from_us(r["rec_us"]), "event": r["id"],
            "type": r["type"], "order": r["ord"], "location": r["location"],
            "batch": r["batch"], "lp": r["lp"], "delta": delta, "balance": balance,
            "_seq": r["seq"], "_key": r["key_id"],
        }
    flush_pending()
    if not opened:  # nothing moved from ``start`` on: the opening balance alone
        out.append({"at": start, "recorded": None, "event": None, "type": "opening",
                    "order": None, "location": location, "batch": None, "lp": None,
                    "in": None, "out": None, "balance": balance})
    yield from _done(out)


def _done(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The finished ``rows`` without their working fields; ``rows`` is emptied."""
    for row in rows:
        row.pop("_seq", None)
        row.pop("_key", None)
    done = rows[:]
    rows.clear()
    return iter(done)
