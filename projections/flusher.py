"""The flusher: applies the flushing rules' decisions to an order's lines and posts them.

What a trigger consumes and where it is taken from are pure functions in
``projections.rules`` (``RuleSet.match``, ``flushed_lines``, ``trigger_quantity``,
``put_target``, ``allocate``); this part applies them to the state: a line's cumulative U
per trigger kind, the posting itself (``FlushRecord`` per batch/lp taken, on-hand down, the
line's posted figures up) and the unresolved takes of batch-tracked components.

Change log, drained by the materialiser: ``flushes`` (every posting in replay order) and
``unresolved_log``.
"""

from __future__ import annotations

from backflush.projections.orderstate import NOTHING, list_of
from backflush.projections.records import FlushRecord, Unresolved
from backflush.projections.rules import (
    TRACKED,
    ZERO,
    allocate,
    flush_delta,
    flushed_lines,
    rule_basis,
    trigger_quantity,
)
from backflush.projections.undo import APP, ATTR, CTR, FLUSH


class Flusher:
    """Mixin of ``Replay``: flushing triggers and consumption postings."""

    def _init_flusher(self) -> None:
        self.flushes: list = []  # FlushRecord, drained by the materialiser
        self.unresolved_log: list = []  # (order, Unresolved, seq): batch-less takes, for I/O

    def _trigger(self, o, kind, device, resource, lines, good, error) -> None:
        """Apply the rule in force for a start/operation/finish trigger to ``lines``."""
        if not lines:  # (an operation with no lines: most reports)
            return
        rule = self._params.rules.match(kind, device, resource)
        if rule is None:
            return
        basis = rule_basis(rule)
        units = good if basis == "good" else good + error
        eid = self._eid
        # The hot path of a replay (a finish posts every BOM line): the undo primitives are
        # inlined, their step kept only when the event may be reversed (``fx``).
        fx = self._fx
        for ln in flushed_lines(rule, lines):
            lu = ln.units
            if lu is None:
                lu = ln.units = {}
            ub = lu.get(kind, ZERO)
            ua = lu[kind] = ub + units
            if fx is not None:
                fx.append((CTR, lu, kind, units))
            if basis == "good":
                if type(ln.good_basis_flushes) is tuple:  # (none yet: the line's first)
                    ln.good_basis_flushes = []
                self._append(ln.good_basis_flushes, (kind, eid))
            if basis == "transferred":
                if ln.transferred is None:
                    ln.transferred = {}
                put = (o.put_qty or NOTHING).get(ln.line, ZERO)
                q = trigger_quantity(basis, ln.qty, ln.per, ln.scrap_pct, ln.scrap_const,
                                     ln.decimals, ub, ua, put, o.qty,
                                     ln.transferred.get(kind, ZERO))
                if q:
                    self._add(ln.transferred, kind, q)
            else:
                q = flush_delta(ln.qty, ln.per, ln.scrap_pct, ln.scrap_const, ub, ua,
                                ln.decimals)
            if q:
                self._post(o, ln, q, kind, device, basis, rule, ub, ua)

    def _post(self, o, ln, qty, kind, device, basis, rule, ub, ua, location=None,
              batch=None) -> None:
        """Post one consumption of ``qty`` on line ``ln`` (negative = return)."""
        eid, at, seq = self._eid, self._at, self._seq
        loc = location or ln.location
        item = ln.item
        if qty > ZERO:
            parts = self._allocate(o, ln, loc, qty, batch)
        else:
            parts = {(batch, None): qty}
        # an unresolved take (no batch to take a tracked item from) is UNRESOLVED_BATCH
        # only: its no-batch bucket going below zero is not also NEGATIVE_ON_HAND
        tracked = ln.tracking in TRACKED
        # undo primitives inlined (see ``_trigger``): steps only when ``fx`` keeps them
        fx = self._fx
        consumed_at = o.consumed_at
        if consumed_at is None:  # (the order's first posting)
            consumed_at = o.consumed_at = {}
        flushes = self.flushes
        for (b, lp), q in parts.items():
            self._oh(item, loc, b, lp, -q, not (b is None and tracked))
            k = (item, loc, b)
            consumed_at[k] = consumed_at.get(k, ZERO) + q
            rec = FlushRecord(eid, at, seq, o.order, ln.line, item, kind, device, q, loc, b, lp,
                              ub, ua, basis, rule)
            flushes.append(rec)
            if fx is not None:
                fx.append((CTR, consumed_at, k, q))
                fx.append((FLUSH, rec))
        ln.posted += qty
        if kind == "manual":
            ln.manual_posted += qty
        by_trigger = ln.by_trigger
        if by_trigger is None:
            by_trigger = ln.by_trigger = {}
        by_trigger[kind] = by_trigger.get(kind, ZERO) + qty
        consumed = self._consumed
        consumed[item] = consumed.get(item, ZERO) + qty
        flush_ev = (kind, device, eid)
        if type(ln.flush_events) is tuple:  # (none yet: the line's first)
            ln.flush_events = []
        ln.flush_events.append(flush_ev)
        if fx is not None:
            fx.append((ATTR, ln, "posted", qty))
            if kind == "manual":
                fx.append((ATTR, ln, "manual_posted", qty))
            fx.append((CTR, by_trigger, kind, qty))
            fx.append((CTR, consumed, item, qty))
            fx.append((APP, ln.flush_events, flush_ev))

    def _allocate(self, o, ln, loc, qty, batch=None) -> dict:
        """Take ``qty`` of ln.item at ``loc`` for order ``o`` (``rules.allocate``); returns
        (batch, lp) -> qty, and records the take from put entries and any unresolved rest."""
        bins = self._bins.get((ln.item, loc)) or {}
        entries = (o.puts or NOTHING).get(ln.item)
        used, taken, left = allocate(entries, bins, ln.line, loc, qty, batch)
        fx = self._fx
        for e, t in taken:
            e["remaining"] -= t
            if fx is not None:
                fx.append((CTR, e, "remaining", -t))
        if left and batch is None and ln.tracking in TRACKED:
            rec = Unresolved(self._eid, self._at, ln.line, ln.item, loc, left)
            self._append(list_of(o, "unresolved"), rec)
            self.unresolved_log.append((o.order, rec, self._seq))
        return used
