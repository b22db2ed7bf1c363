"""The flusher: applies the flushing rules' decisions to an order's lines and posts them.

What a trigger consumes and where it is taken from are pure functions in
``projections.rules`` (``RuleSet.match``, ``rule_flushes``, ``trigger_quantity``,
``put_target``, ``allocate``); this part applies them to the state: a line's cumulative U
per trigger kind, the posting itself (``FlushRecord`` per batch/lp taken, on-hand down, the
line's posted figures up) and the unresolved takes of batch-tracked components.

Change log, drained by the materialiser: ``flushes`` (every posting in replay order) and
``unresolved_log``.
"""

from __future__ import annotations

from backflush.projections.records import FlushRecord, Unresolved
from backflush.projections.rules import (
    TRACKED,
    ZERO,
    allocate,
    rule_basis,
    rule_flushes,
    trigger_quantity,
)
from backflush.projections.undo import FLUSH


class Flusher:
    """Mixin of ``Replay``: flushing triggers and consumption postings."""

    def _init_flusher(self) -> None:
        self.flushes: list = []  # FlushRecord, drained by the materialiser
        self.unresolved_log: list = []  # (order, Unresolved, seq): batch-less takes, for I/O

    def _trigger(self, o, kind, device, resource, lines, good, error) -> None:
        """Apply the rule in force for a start/operation/finish trigger to ``lines``."""
        rule = self._params.rules.match(kind, device, resource)
        if rule is None or not lines:
            return
        basis = rule_basis(rule)
        units = good if basis == "good" else good + error
        eid = self._eid
        for ln in lines:
            if not rule_flushes(rule, ln.principle):
                continue
            ub = ln.units.get(kind, ZERO)
            ua = ub + units
            self._add(ln.units, kind, units)
            if basis == "good":
                self._append(ln.good_basis_flushes, (kind, eid))
            q = trigger_quantity(basis, ln.qty, ln.per, ln.scrap_pct, ln.scrap_const,
                                 ln.decimals, ub, ua, o.put_qty.get(ln.line, ZERO), o.qty,
                                 ln.transferred.get(kind, ZERO))
            if q:
                if basis == "transferred":
                    self._add(ln.transferred, kind, q)
                self._post(o, ln, q, kind, device, basis, rule, ub, ua)

    def _post(self, o, ln, qty, kind, device, basis, rule, ub, ua, location=None,
              batch=None) -> None:
        """Post one consumption of ``qty`` on line ``ln`` (negative = return)."""
        eid, at, seq = self._eid, self._at, self._seq
        loc = location or ln.location
        item = ln.item
        parts = self._allocate(o, ln, loc, qty, batch) if qty > ZERO else {(batch, None): qty}
        # an unresolved take (no batch to take a tracked item from) is UNRESOLVED_BATCH
        # only: its no-batch bucket going below zero is not also NEGATIVE_ON_HAND
        tracked = ln.tracking in TRACKED
        fx = self._fx
        for (b, lp), q in parts.items():
            self._oh(item, loc, b, lp, -q, record_negative=not (b is None and tracked))
            self._add(o.consumed_at, (item, loc, b), q)
            rec = FlushRecord(eid, at, seq, o.order, ln.line, item, kind, device, q, loc, b, lp,
                              ub, ua, basis, rule)
            self.flushes.append(rec)
            if fx is not None:
                fx.append((FLUSH, rec))
        self._add_attr(ln, "posted", qty)
        if kind == "manual":
            self._add_attr(ln, "manual_posted", qty)
        self._add(ln.by_trigger, kind, qty)
        self._add(self._consumed, item, qty)
        self._append(ln.flush_events, (kind, device, eid))

    def _allocate(self, o, ln, loc, qty, batch=None) -> dict:
        """Take ``qty`` of ln.item at ``loc`` for order ``o`` (``rules.allocate``); returns
        (batch, lp) -> qty, and records the take from put entries and any unresolved rest."""
        bins = self._bins.get((ln.item, loc)) or {}
        used, taken, left = allocate(o.puts.get(ln.item), bins, ln.line, loc, qty, batch)
        for e, t in taken:
            self._add(e, "remaining", -t)
        if left and batch is None and ln.tracking in TRACKED:
            rec = Unresolved(self._eid, self._at, ln.line, ln.item, loc, left)
            self._append(o.unresolved, rec)
            self.unresolved_log.append((o.order, rec, self._seq))
        return used
