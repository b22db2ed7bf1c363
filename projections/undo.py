"""The undo log: how a Reversal takes back exactly what the reversed event did.

Every state change an event makes either goes through the primitives here (``_add``,
``_add_attr``, ``_set``, ``_append``, and ``Stock._oh`` for on-hand) or, on the hot paths
(a trigger's postings, a put, an operation report, a receipt), is written out in place with
the same step appended beside it when ``_fx`` is set: a rule for anyone adding a change
there. While an event that may be reversed is applied, each change also records an effect
step, ``(opcode, ...)``, in ``_fx``; the
steps are kept per event id in ``_effects``. ``_reversal`` replays them backwards: on-hand
moves back, counters and attributes go back by their delta, a set attribute gets its old
value, an appended record is removed, and every flush gets an exact negative posting
(trigger ``reversal``) stamped with the Reversal. Later events keep what they did.

Only events some Reversal targets need steps (``reversible``); for the others ``_fx`` is
None and the primitives cost a plain update.

State owned (part of the snapshot): ``_effects`` (event id -> (event, steps)),
``_reversed`` (reversed id -> Reversal id).
"""

from __future__ import annotations

from backflush.projections.orderstate import list_of
from backflush.projections.records import FlushRecord
from backflush.projections.rules import ZERO

# Effect-log opcodes (undo information for reversals).
OH, CTR, ATTR, SET, APP, FLUSH = range(6)


class UndoLog:
    """Mixin of ``Replay``: the change primitives and ``Reversal``."""

    def _init_undo(self, reversible) -> None:
        self._keep = reversible  # ids a Reversal targets (None: keep undo for every event)
        self._effects: dict = {}  # event id -> (event, effect log)
        self._reversed: dict = {}  # reversed event id -> reversal event id
        self._fx: list | None = None  # steps of the event being applied, if reversible

    # --- primitives (a change outside them must append its own step: see above) -------

    def _add(self, container: dict, key, delta) -> None:
        container[key] = container.get(key, ZERO) + delta
        if self._fx is not None:
            self._fx.append((CTR, container, key, delta))

    def _add_attr(self, obj, attr: str, delta) -> None:
        setattr(obj, attr, getattr(obj, attr) + delta)
        if self._fx is not None:
            self._fx.append((ATTR, obj, attr, delta))

    def _set(self, obj, attr: str, value) -> None:
        old = getattr(obj, attr)
        setattr(obj, attr, value)
        if self._fx is not None:
            self._fx.append((SET, obj, attr, old))

    def _append(self, lst: list, value) -> None:
        lst.append(value)
        if self._fx is not None:
            self._fx.append((APP, lst, value))

    # --- reversal ---------------------------------------------------------------------------

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
            list_of(o, "reversals").append((ev["id"], target))
        self._fx = None  # a reversal itself is not reversible
        eid, at, seq = ev["id"], ev["at"], ev["seq"]
        for step in reversed(fx):
            code = step[0]
            if code == OH:
                _, item, loc, b, lp, delta = step
                self._oh(item, loc, b, lp, -delta)
            elif code == CTR:
                _, container, key, delta = step
                container[key] = container.get(key, ZERO) - delta
            elif code == ATTR:
                _, obj, attr, delta = step
                setattr(obj, attr, getattr(obj, attr) - delta)
            elif code == SET:
                _, obj, attr, old = step
                setattr(obj, attr, old)
            elif code == APP:
                _, lst, value = step
                _remove_last(lst, value)
            elif code == FLUSH:
                r = step[1]
                self.flushes.append(FlushRecord(eid, at, seq, r.order, r.line, r.item,
                                                "reversal", r.device, -r.qty, r.location,
                                                r.batch, r.lp, None, None, None, None))
        if o is not None:
            self._rewait(o)  # the counters are back: so is the waiting


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
