"""Stock: on-hand bins, the inventory events and the queries over them.

On-hand is kept per (item, location) as an insertion-ordered dict (batch, lp) -> qty, whose
order is the FIFO order flushes take from (a bin that runs empty leaves the queue; a refill
queues at the back). Every change goes through ``_oh``, which logs it for the materialiser
(``balance_changes``), records negative on-hand, and keeps the undo step of a reversible
event. Staged WIP is derived from the bins and the staging map (which locations are a
resource's input), never kept twice.

Inventory events: received, transferred, counted (a shortage taken from the licence plates
FIFO, a surplus without lp), picked (location -> ``IN_TRANSIT``) and the stock side of a put
(``IN_TRANSIT`` -> location; its order side is ``OrderBook._put_for_order``).

State owned (part of the snapshot): ``_bins``, ``_staged_map``, ``_received``, ``_adjusted``,
``negative_onhand``, ``puts_without_pick`` (``_produced``/``_consumed`` are the order book's).
"""

from __future__ import annotations

from backflush.projections.common import _sk, sort_wip, staged_rows
from backflush.projections.exact import exact
from backflush.projections.orderstate import list_of
from backflush.projections.records import NegativeOnHand
from backflush.projections.rules import ZERO
from backflush.projections.undo import CTR, OH

IN_TRANSIT = "IN_TRANSIT"


class Stock:
    """Mixin of ``Replay``: on-hand, staged WIP and the inventory events."""

    def _init_stock(self) -> None:
        self._bins: dict = {}  # (item, location) -> {(batch, lp): qty}, insertion order = FIFO
        self._staged_map: dict = {}  # staging location -> (resource,) staging there
        self._received: dict = {}  # item -> Σ received
        self._adjusted: dict = {}  # item -> Σ count differences
        self.negative_onhand: list = []  # NegativeOnHand, every take that went below zero
        self.puts_without_pick: list = []  # (event id, item, location, batch, lp)
        # change log, drained by the materialiser
        self.balance_changes: list = []  # ("onhand" | "wip", key, new balance, id, at, seq)
        self.staging_changes: list = []  # (staging map, event id, at, seq)

    # --- the one on-hand primitive ------------------------------------------------------

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
        key = (item, loc, batch, lp)
        self.balance_changes.append(("onhand", key, new, self._eid, self._at, self._seq))
        # (comparisons with the Decimal ZERO: about twice as fast as with the int 0; the
        # rare case, below zero, tested first)
        if new < ZERO and delta < ZERO and record_negative:
            self._negative(key, new)
        fx = self._fx
        if fx is not None:
            fx.append((OH, item, loc, batch, lp, delta))

    def _move(self, item, src, dst, batch, lp, qty):
        """``qty`` of (item, batch, lp) from ``src`` to ``dst``: ``_oh`` twice, as one call
        (a pick, a put and a transfer each move stock; about half the events of a plant).
        Returns what is left at ``src``."""
        bins_of = self._bins
        k = (batch, lp)
        eid, at, seq = self._eid, self._at, self._seq
        log = self.balance_changes
        # out of src (the take: may go below zero)
        bins = bins_of.get((item, src))
        if bins is None:
            bins = bins_of[(item, src)] = {}
        out = -qty
        new = bins.get(k, ZERO) + out
        if new:
            bins[k] = new
        else:
            bins.pop(k, None)
        key = (item, src, batch, lp)
        log.append(("onhand", key, new, eid, at, seq))
        if new < ZERO and out < ZERO:
            self._negative(key, new)
        left = new
        # into dst (a negative qty, a correction, takes from there instead)
        bins = bins_of.get((item, dst))
        if bins is None:
            bins = bins_of[(item, dst)] = {}
        new = bins.get(k, ZERO) + qty
        if new:
            bins[k] = new
        else:
            bins.pop(k, None)
        key2 = (item, dst, batch, lp)
        log.append(("onhand", key2, new, eid, at, seq))
        if new < ZERO and qty < ZERO:
            self._negative(key2, new)
        fx = self._fx
        if fx is not None:
            fx.append((OH, item, src, batch, lp, out))
            fx.append((OH, item, dst, batch, lp, qty))
        return left

    def _negative(self, key, new) -> None:
        """Record a take that left on-hand of ``key`` at ``new`` below zero."""
        o = self._cur_order
        rec = NegativeOnHand(self._eid, self._at, key, new, o.order if o is not None else None,
                             self._seq)
        self.negative_onhand.append(rec)
        if o is not None:
            list_of(o, "negative_onhand").append(rec)

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

    # --- inventory events -----------------------------------------------------------

    def _unknown_item(self, item):
        self._anomaly(f"unknown item {item!r}")

    def _received_ev(self, ev):
        item, qty = ev["item"], ev["qty"]
        if item not in self._items:
            self._unknown_item(item)
        self._oh(item, ev["location"], ev.get("batch"), ev.get("lp"), qty)
        received = self._received
        received[item] = received.get(item, ZERO) + qty
        if self._fx is not None:
            self._fx.append((CTR, received, item, qty))

    def _transferred_ev(self, ev):
        item, qty, b, lp = ev["item"], ev["qty"], ev.get("batch"), ev.get("lp")
        if item not in self._items:
            self._unknown_item(item)
        self._move(item, ev["from_location"], ev["to_location"], b, lp, qty)

    def _counted_ev(self, ev):
        item, loc, batch, counted = ev["item"], ev["location"], ev.get("batch"), ev["qty"]
        if item not in self._items:
            self._unknown_item(item)
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
        if item not in self._items:
            self._unknown_item(item)
        order = ev.get("order")
        o = self._orders.get(order) if order else None
        if o is not None:
            self._cur_order = o
            o.events.append(ev["id"])
        self._move(item, ev["location"], IN_TRANSIT, b, lp, qty)

    def _put_ev(self, ev):
        item, qty, loc = ev["item"], ev["qty"], ev["location"]
        b, lp = ev.get("batch"), ev.get("lp")
        if item not in self._items:
            self._unknown_item(item)
        order = ev.get("order")
        o = None
        if order is not None:
            o = self._orders.get(order)
            if o is None:
                self._anomaly(f"put for unknown order {order!r}")
            else:
                self._cur_order = o
                o.events.append(ev["id"])
        # in transit before the put < qty: what is left there is below zero
        if self._move(item, IN_TRANSIT, loc, b, lp, qty) < ZERO:
            self._append(self.puts_without_pick, (ev["id"], item, loc, b, lp))
        if o is not None:
            self._put_for_order(o, ev, item, qty, loc, b, lp)

    # --- queries ------------------------------------------------------------------------

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
