"""A replay pass's producer side, per event and per page: apply the stored rows, drain the
engine's change log into plain data.

What leaves here crosses a pipe when the pass runs in a worker process
(``projections.pipeline``), so it is plain data that ``marshal`` carries; the writer
(``materialise._Writer``) turns it into rows.

Compiled with the engine (``setup.py``): this is the loop around it, millions of times a
rebuild. Pure: no I/O, no clock.
"""

from __future__ import annotations

from decimal import DecimalException

from backflush.ledger.store import to_us
from backflush.projections.exact import UnreplayableEvent


def apply_rows(apply, decode, rows: list, i: int, j: int) -> None:
    """Decode and apply the stored events ``rows[i:j]`` (``(seq, at_us, state)`` tuples, in
    replay order) inside the caller's arithmetic context; arithmetic that fails is
    ``UnreplayableEvent`` of the last event decoded."""
    ev: dict = {}
    try:
        for k in range(i, j):
            seq, _at_us, state = rows[k]
            ev = decode(state, seq)
            apply(ev)
    except DecimalException as exc:
        raise UnreplayableEvent(ev, exc) from None


def page_times(rows: list) -> dict:
    """seq -> at_us of a page's rows (the stored sortable time of every event in it)."""
    return {seq: at_us for seq, at_us, _ in rows}


def changes(engine, at_us_of: dict) -> tuple:
    """Drain the engine's change log into plain data (ints, strs, None, tuples, lists,
    dicts: what ``marshal`` carries from a replay worker to the writing process).

    ``at_us_of``: seq -> at_us of the events being applied (the stored sortable time,
    instead of converting each event's datetime back; every balance change is of an event
    in it). Returns (balance changes as ``(kind, key, balance text, seq, zero)``,
    ``at_us_of``, then the rows of bf_flushes, bf_staging, bf_unresolved, bf_negative and
    bf_residual)."""
    import orjson

    # Only what must happen here: the balance as text (and whether it is zero). Key ids,
    # numbering and bf_alive are the writer's: numbering the keys here instead (a dict
    # lookup per change, ~170k keys at 1M events) measured 0.7 s more on this side, the
    # longer one, for 0.35 s less ``marshal``.
    bal = [(kind, key, str(b), seq, not b)
           for kind, key, b, _eid, _at, seq in engine.balance_changes]
    engine.balance_changes.clear()
    flushes = []
    last_seq, n = None, 0
    for f in engine.flushes:
        if f.seq != last_seq:
            last_seq, n = f.seq, 0
        else:
            n += 1
        flushes.append(
            (
                f.event_id, at_us_of.get(f.seq) or to_us(f.at), f.seq, n, f.order, f.line,
                f.item, f.trigger, f.device, str(f.qty), f.location, f.batch, f.lp,
            )
        )
    engine.flushes.clear()
    staging = []
    if engine.staging_changes:  # (master data: rare)
        from backflush.projections.materialise import _NEVER

        staging = [
            (_NEVER if at is None else to_us(at), seq or 0,
             orjson.dumps(sorted([loc, list(rs)] for loc, rs in m.items())).decode())
            for m, _eid, at, seq in engine.staging_changes
        ]
        engine.staging_changes.clear()
    unresolved = []
    last_seq, n = None, 0
    for order, u, seq in engine.unresolved_log:
        n = n + 1 if seq == last_seq else 0
        last_seq = seq
        unresolved.append((u.event_id, to_us(u.at), seq, n, order, u.line, u.item,
                           u.location, str(u.qty)))
    engine.unresolved_log.clear()
    # The history tables hold what these lists would tell (negative balances are rows
    # with a balance below zero); keeping them would grow memory with the history.
    negative = []
    last_seq, n = None, 0
    for r in engine.negative_onhand:
        n = n + 1 if r.seq == last_seq else 0
        last_seq = r.seq
        item, loc, batch, lp = r.key
        negative.append((r.event_id, to_us(r.at), r.seq, n, r.order, item, loc, batch, lp,
                         str(r.balance)))
    residual = []
    for order, eid, seq, at, found in engine.residual_log:
        at_us = to_us(at)
        if not found:  # an end that left nothing: a row too, it replaces an earlier end's
            residual.append((eid, at_us, seq, -1, order, "", "", None, "0", "[]"))
        for n, r in enumerate(found):
            residual.append((eid, at_us, seq, n, order, r.item, r.location,
                             getattr(r, "batch", None), str(r.qty),
                             orjson.dumps(list(r.put_events)).decode()))
    engine.residual_log.clear()
    engine.negative_onhand.clear()
    engine.puts_without_pick.clear()
    engine.anomalies.clear()
    return bal, at_us_of, flushes, staging, unresolved, negative, residual
