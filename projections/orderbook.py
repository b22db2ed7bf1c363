"""The order book: the production order lifecycle, from creation to end.

``OrderCreated`` resolves the order's master data once (route operations with their
resources' locations, BOM lines with principle, operation and consumption location); the
lifecycle events then move its status and counters (``OrderState``), fire the flushing
triggers (``Flusher._trigger``: start, operation, finish; put via ``_put_for_order``), and
keep the units waiting after each operation up to date (``_rewait``). ``OrderEnded`` fixes
what findings read at the end: residual material at the input locations and WIP left.

State owned (part of the snapshot): ``_orders``, ``_waiting`` (WIP key -> units),
``_produced`` and ``_consumed`` (item -> Σ); change log: ``residual_log``.
"""

from __future__ import annotations

from decimal import Decimal

from backflush.projections import standard
from backflush.projections.exact import exact
from backflush.projections.orderstate import (
    NOTHING,
    LineState,
    OrderState,
    dict_of,
    list_of,
    waiting_after,
)
from backflush.projections.records import OpInfo, OutOfSequence, Residual
from backflush.projections.rules import (
    DEFAULT_DECIMALS,
    ONE,
    ZERO,
    put_target,
    resolve_location,
    resolve_operation,
    resolve_principle,
    rule_basis,
)
from backflush.projections.undo import APP, CTR

DEFAULT_OUTPUT_LOCATION = "OUTPUT"


class OrderBook:
    """Mixin of ``Replay``: production orders and their lifecycle events."""

    def _init_orders(self) -> None:
        self._orders: dict = {}  # order -> OrderState (retired ones forgotten)
        self._waiting: dict = {}  # (resource, location, "waiting", order, op, item, None) -> qty
        self._produced: dict = {}  # item -> Σ good reported as finished
        self._consumed: dict = {}  # item -> Σ posted
        self.residual_log: list = []  # (order, end event id, seq, at, residuals), for I/O
        # (bom, route) -> resolved master data (``_resolve``); derived, not in the snapshot,
        # cleared by every master-data event
        self._templates: dict = {}
        # order -> ``_wait_cache``: derived, not in the snapshot
        self._wait_cache: dict = {}

    def _order(self, ev) -> OrderState | None:
        o = self._orders.get(ev["order"])
        if o is None:
            self._anomaly(f"unknown order {ev['order']!r}")
            return None
        self._cur_order = o
        o.events.append(ev["id"])
        return o

    def _oos(self, o: OrderState, reason: str, op=None) -> None:
        ev = self._cur
        self._append(list_of(o, "out_of_sequence"), OutOfSequence(ev["id"], ev["at"], reason, op))

    def _order_created(self, ev):
        order = ev["order"]
        if order in self._orders:
            self._anomaly(f"order {order!r} created twice")
            return
        params = self._params
        route_id = ev.get("route")
        key = (ev.get("bom"), route_id)
        tmpl = self._templates.get(key)
        if tmpl is None:
            tmpl = self._templates[key] = self._resolve(*key)
        ops, ops_by_no, specs, anomalies = tmpl
        for reason in anomalies:
            self._anomaly(reason)
        o = OrderState(order=order, item=ev["item"], qty=ev["qty"], bom=key[0],
                       route=route_id, created_event=ev["id"], created_at=ev["at"],
                       default_input_location=params.default_input_location,
                       tolerance_pct=params.tolerance_pct, ops=ops, ops_by_no=ops_by_no)
        by_op: dict = {}
        lines = o.lines
        for spec in specs:
            ln = LineState(o, *spec)
            lines[ln.line] = ln
            by_op.setdefault(ln.op, []).append(ln)
        o.lines_by_op = {k: tuple(v) for k, v in by_op.items()}
        o.line_list = tuple(lines[k] for k in sorted(lines))
        o.timeline.append(("created", ev["id"], ev["at"]))
        o.events.append(ev["id"])
        self._orders[order] = o

    def _resolve(self, bom_id, route_id) -> tuple:
        """An order's master data as in force now, for a BOM and route: (operations, the
        operations by number, line specs, anomaly reasons). The same for every order created
        until master data change (``_templates`` is then cleared), so it is resolved once per
        BOM and route, and its orders share the operations (read only)."""
        params = self._params
        anomalies = []
        bom = self._boms.get(bom_id)
        if bom is None:
            anomalies.append(f"unknown BOM {bom_id!r}")
        route_ops = self._routes.get(route_id) if route_id is not None else None
        if route_id is not None and route_ops is None:
            anomalies.append(f"unknown route {route_id!r}")
        ops = []
        for od in route_ops or ():
            rd = self._resources.get(od.get("resource")) or {}
            ops.append(OpInfo(od["op"], od.get("resource"), od.get("setup_hours") or ZERO,
                              od.get("run_hours") or ZERO, rd.get("input_location"),
                              rd.get("output_location")))
        ops_by_no = {x.op: x for x in ops}
        specs = []
        for ld in (bom or {}).get("lines") or ():
            comp = ld["item"]
            itd = self._items.get(comp)
            if itd is None:
                anomalies.append(f"unknown component item {comp!r}")
                itd = {}
            op = resolve_operation(ld.get("operation"), route_ops)
            info = ops_by_no.get(op)
            # LineState's fields after ``order``, in order (positional: built per order)
            specs.append((
                ld["line"], comp, ld["qty"], ld.get("per") or Decimal(1),
                ld.get("scrap_pct") or ZERO, ld.get("scrap_const") or ZERO,
                itd.get("decimals", DEFAULT_DECIMALS), itd.get("tracking") or "none",
                resolve_principle(ld.get("flushing"), itd.get("flushing")),
                op, info.resource if info else None,
                resolve_location(ld.get("location"), info.input_location if info else None,
                                 params.default_input_location),
            ))
        return tuple(ops), ops_by_no, tuple(specs), tuple(anomalies)

    def _order_released(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "after end")
        if o.released is None:
            self._set(o, "released", (ev["id"], ev["at"]))
        o.timeline.append(("released", ev["id"], ev["at"]))

    def _order_started(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "after end")
        qty = ev.get("qty")
        if qty is None:
            qty = o.qty
        if o.released is None:  # starting releases the order (AX, seed 002)
            self._set(o, "released", (ev["id"], ev["at"]))
            o.timeline.append(("released", ev["id"], ev["at"]))
        self._append(list_of(o, "started"), (ev["id"], ev["at"], qty))
        o.timeline.append(("started", ev["id"], ev["at"]))
        self._add_attr(o, "started_qty", qty)
        first = o.ops[0] if o.ops else None
        self._trigger(o, "start", ev.get("device") or "client", first.resource if first else None,
                      o.line_list, qty, ZERO)

    def _operation_reported(self, ev):
        o = self._orders.get(ev["order"])  # ``_order`` written out: the most frequent order event
        if o is None:
            self._order(ev)  # (the anomaly)
            return
        self._cur_order = o
        o.events.append(ev["id"])
        op, good, error = ev["op"], ev.get("good") or ZERO, ev.get("error") or ZERO
        info = o.ops_by_no.get(op)
        if o.released is None:
            self._oos(o, "before release", op)
        if o.ended is not None:
            self._oos(o, "after end", op)
        if info is None:
            self._oos(o, "op not on route", op)
        op_good, op_error, op_reports = o.op_good, o.op_error, o.op_reports
        if op_reports is None:  # (the order's first report: see ``OrderState``)
            op_good = o.op_good = {}
            op_error = o.op_error = {}
            op_reports = o.op_reports = {}
        g0 = op_good.get(op, ZERO)
        e0 = op_error.get(op, ZERO)
        before = g0 + e0
        units = good + error
        op_good[op] = g0 + good
        op_error[op] = e0 + error
        op_reports[op] = op_reports.get(op, ZERO) + ONE  # a Decimal, as it always was
        fx = self._fx
        if fx is not None:
            fx.append((CTR, op_good, op, good))
            fx.append((CTR, op_error, op, error))
            fx.append((CTR, op_reports, op, 1))
        if before + units > o.qty:
            self._oos(o, "beyond order qty", op)
        hours = ev.get("hours")
        if info is not None:
            self._rewait(o)
            if hours is None:
                hours = standard.standard_share(info.setup_hours, info.run_hours, before, units)
        if hours is not None:
            self._add(dict_of(o, "hours_reported"), op, hours)
        lines = o.lines_by_op.get(op)
        if lines:  # (most operations flush no line)
            self._trigger(o, "operation", ev.get("device") or "job_terminal",
                          info.resource if info else None, lines, good, error)

    def _reported_as_finished(self, ev):
        o = self._order(ev)
        if o is None:
            return
        good, error = ev.get("good") or ZERO, ev.get("error") or ZERO
        if o.released is None:
            self._oos(o, "before release")
        if o.ended is not None:
            self._oos(o, "after end")
        if o.fin_good + o.fin_error + good + error > o.qty:
            self._oos(o, "beyond order qty")
        self._add_attr(o, "fin_good", good)
        self._add_attr(o, "fin_error", error)
        self._add_attr(o, "fin_reports", ONE)
        last = o.ops[-1] if o.ops else None
        if last is not None:
            self._rewait(o)
        if good:
            loc = ev.get("location") or (last.output_location if last else None) \
                or DEFAULT_OUTPUT_LOCATION
            self._oh(o.item, loc, ev.get("batch"), ev.get("lp"), good)
            self._add(self._produced, o.item, good)
        self._trigger(o, "finish", ev.get("device") or "client",
                      last.resource if last else None, o.line_list, good, error)

    def _material_consumed(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "after end")
        item, qty, batch = ev["item"], ev["qty"], ev.get("batch")
        line_no = ev.get("line")
        ln = o.lines.get(line_no) if line_no is not None else None
        if ln is not None and ln.item != item:
            self._anomaly(f"line {line_no} of order {o.order!r} is not item {item!r}")
            ln = None
        if ln is None:
            ln = next((x for k, x in sorted(o.lines.items()) if x.item == item), None)
        if ln is None:
            ln = (o.unplanned or NOTHING).get(item)
            if ln is None:
                itd = self._items.get(item) or {}
                ln = LineState(order=o, line=None, item=item, qty=ZERO, per=Decimal(1),
                               scrap_pct=ZERO, scrap_const=ZERO,
                               decimals=itd.get("decimals", DEFAULT_DECIMALS),
                               tracking=itd.get("tracking") or "none", principle="manual",
                               op=None, resource=None, location=o.default_input_location)
                # the line is a container: a reversal takes back postings, never the line
                dict_of(o, "unplanned")[item] = ln
        loc = ev.get("location") or ln.location
        self._post(o, ln, qty, "manual", ev.get("device") or "client", None, None, None, None,
                   loc, batch)

    def _order_ended(self, ev):
        o = self._order(ev)
        if o is None:
            return
        if o.ended is not None:
            self._oos(o, "ended twice")
        self._set(o, "ended", (ev["id"], ev["at"]))
        self._set(o, "tolerance_pct", self._params.tolerance_pct)
        o.timeline.append(("ended", ev["id"], ev["at"]))
        # residual material put for the order and still at its location (RESIDUAL_AT_INPUT)
        residual = []
        consumed_at, bins_of = o.consumed_at or NOTHING, self._bins
        # per item, location and batch: another batch below zero there must not hide it;
        # by item, location, batch (None first: the order of ``_sk``, without a call each)
        for _i, _l, _n, _b, (item, loc, b), put in sorted(
                [(k[0], k[1], k[2] is not None, k[2] or "", k, put)
                 for k, put in (o.put_at or NOTHING).items()]):
            left = put - consumed_at.get((item, loc, b), ZERO)
            there = ZERO
            for (bb, _lp), q in (bins_of.get((item, loc)) or {}).items():
                if bb == b:
                    there += q
            q = min(left, there)
            if q > 0:
                ids = tuple(e for e, i, lc in o.put_events if i == item and lc == loc)
                residual.append(Residual(item, loc, q, ids, ev["id"], b))
        self._set(o, "residual_at_end", tuple(residual))
        waits = waiting_after(o.ops, o.op_good or NOTHING, o.op_error or NOTHING,
                              o.op_reports or NOTHING, o.fin_good + o.fin_error)
        self._set(o, "wip_at_end", {x.op: w for x in o.ops if (w := waits[x.op])})
        self.residual_log.append((o.order, ev["id"], ev["seq"], ev["at"], o.residual_at_end))

    def _put_for_order(self, o: OrderState, ev, item, qty, loc, b, lp) -> None:
        """Register a put naming order ``o`` against its lines, and fire the put trigger
        (``item`` ... ``lp``: the put's fields, as ``Stock._put_ev`` read them)."""
        line_no = ev.get("line")
        if line_no is not None:
            ln = o.lines.get(line_no)
            if ln is None or ln.item != item:
                self._anomaly(f"put for order {o.order!r} names line {line_no!r} of another item")
                lines = [x for x in o.lines.values() if x.item == item]
            else:
                lines = [ln]
        else:
            lines = [x for x in o.line_list if x.item == item]  # by line number
        entry = {"location": loc, "line": line_no, "batch": b, "lp": lp, "remaining": qty,
                 "event": ev["id"]}
        puts = o.puts
        if puts is None:  # (the order's first put: its three put tables at once)
            puts = o.puts = {}
            o.put_qty = {}
            o.put_at = {}
        entries = puts.get(item)
        if entries is None:
            entries = puts[item] = []
        # undo primitives inlined (a put per pick: a hot path); steps only when ``fx`` is set
        entries.append(entry)
        put_qty, put_at = o.put_qty, o.put_at
        if lines:
            ln0 = lines[0].line
            put_qty[ln0] = put_qty.get(ln0, ZERO) + qty
        k = (item, loc, b)
        put_at[k] = put_at.get(k, ZERO) + qty
        pev = (ev["id"], item, loc)
        list_of(o, "put_events").append(pev)
        fx = self._fx
        if fx is not None:
            fx.append((APP, entries, entry))
            if lines:
                fx.append((CTR, put_qty, ln0, qty))
            fx.append((CTR, put_at, k, qty))
            fx.append((APP, o.put_events, pev))
        target = put_target(self._params.rules, lines)
        if target is not None:
            ln, rule = target
            self._post(o, ln, qty, "put", "mobile", rule_basis(rule), rule, None, None)

    def _rewait(self, o: OrderState) -> None:
        """Bring the units waiting after each operation of ``o`` up to date (``waiting``).

        Recomputed from the order's counters, not moved by deltas: with DESIGN §5's fallback
        one report changes the waiting of its predecessors too, and a reversal (which undoes
        the counters) only needs to call this again.
        """
        ops = o.ops
        if not ops:
            return
        cache = self._wait_cache.get(o.order)
        if cache is None:
            cache = self._wait_cache[o.order] = _wait_cache(o, self._waiting)
        finished = o.fin_good + o.fin_error
        waiting = self._waiting
        if cache:
            # ``waiting_after`` written out (a report of any operation recomputes them all):
            # the route backwards, each operation's successor's units at hand, compared with
            # what is waiting now (kept beside the keys, not looked up by a 7-tuple key each)
            nos, keys, cur = cache
            op_good = o.op_good or NOTHING
            op_error = o.op_error or NOTHING
            op_reports = o.op_reports or NOTHING
            changed = None
            nxt = finished
            for i, op in enumerate(nos):
                if op_reports.get(op, 0) > 0:
                    good = op_good.get(op, ZERO)
                    x = good - nxt
                    nxt = good + op_error.get(op, ZERO)
                else:
                    x = finished - nxt
                    nxt = finished
                if x <= ZERO:  # (never negative; a zero is the ZERO, as logged before)
                    x = ZERO
                if x != cur[i]:
                    if changed is None:
                        changed = []
                    changed.append((i, x))
            if changed is None:
                return
            changed.reverse()  # logged by operation number, as the route runs
            for i, v in changed:
                cur[i] = v
                k = keys[i]
                if v:
                    waiting[k] = v
                else:
                    waiting.pop(k, None)
                self.balance_changes.append(("wip", k, v, self._eid, self._at, self._seq))
            return
        # an op number listed twice (it takes its first position's value)
        vals = waiting_after(ops, o.op_good or NOTHING, o.op_error or NOTHING,
                             o.op_reports or NOTHING, finished)
        for x in ops:
            k = _wait_key(o, x)
            v = vals[x.op]
            if v == waiting.get(k, ZERO):
                continue
            if v:
                waiting[k] = v
            else:
                waiting.pop(k, None)
            self.balance_changes.append(("wip", k, v, self._eid, self._at, self._seq))

    # --- queries ------------------------------------------------------------------------

    @exact
    def consumption(self, order: str | None = None) -> list[dict]:
        """Per order line: expected, posted, variance and posted by trigger kind (DESIGN §6)."""
        rows = []
        for o in self._select(order):
            for ln in o.all_lines():
                expected = ln.expected
                rows.append({
                    "order": o.order, "line": ln.line, "item": ln.item,
                    "principle": ln.principle if ln.line is not None else None,
                    "expected": expected, "posted": ln.posted,
                    "variance": ln.posted - expected,
                    "by_trigger": {k: ln.by_trigger[k] for k in sorted(ln.by_trigger or ())},
                })
        return rows

    @exact
    def hours(self, order: str | None = None, resource: str | None = None) -> list[dict]:
        """Per order operation: standard vs reported hours (operations off the route included)."""
        rows = []
        for o in self._select(order):
            seen = set()
            hours_reported = o.hours_reported or NOTHING
            for info in o.ops:
                seen.add(info.op)
                if resource is not None and info.resource != resource:
                    continue
                rows.append({"order": o.order, "op": info.op, "resource": info.resource,
                             "standard": o.standard_hours(info.op),
                             "reported": hours_reported.get(info.op, ZERO)})
            if resource is None:
                for op in sorted(k for k in hours_reported if k not in seen):
                    rows.append({"order": o.order, "op": op, "resource": None,
                                 "standard": ZERO, "reported": hours_reported[op]})
        return rows

    def orders(self) -> list[str]:
        """Known order numbers, sorted."""
        return sorted(self._orders)

    def holds_orders(self) -> bool:
        """Whether any order is held (not retired)."""
        return bool(self._orders)

    def order_state(self, order: str) -> OrderState | None:
        """The live state of one order (None when unknown). Read-only."""
        return self._orders.get(order)

    def retire(self, order: str) -> None:
        """Forget an order's state once the caller knows no later event refers to it.

        For long replays that only feed the materialised history (on-hand, WIP and postings
        are already written out): memory then follows the open orders, not the history. A
        later event for a retired order is treated as one for an unknown order, so callers
        must replay from before its last event, or ``adopt`` it back, when that can happen.
        """
        o = self._orders.pop(order, None)
        self._wait_cache.pop(order, None)
        if o is not None:
            # Lines point back to their order: break that cycle so the memory is returned
            # at once, even while a long replay runs with the cyclic collector switched off.
            for ln in o.all_lines():
                ln.order = None

    def adopt(self, o: OrderState) -> None:
        """Take back an order this replay retired, as another replay of the same events
        holds it after its last event (``retire`` undone).

        Exact because an order's state changes only with events that name it: past its
        last event it is what it was then, and nothing else in the replay points into it
        (``retire`` keeps no reference; its WIP waiting is keyed by name in ``_waiting``).
        """
        if o.order in self._orders:
            raise ValueError(f"order {o.order!r} is held already")
        self._orders[o.order] = o

    def _select(self, order):
        if order is None:
            return [self._orders[k] for k in sorted(self._orders)]
        o = self._orders.get(order)
        return [o] if o is not None else []


def _wait_key(o: OrderState, info) -> tuple:
    """The WIP key of the units of order ``o`` waiting after operation ``info``."""
    return (info.resource, info.output_location, "waiting", o.order, info.op, o.item, None)


def _wait_cache(o: OrderState, waiting: dict) -> tuple:
    """``_rewait``'s view of ``o``'s route, backwards: (op numbers, their WIP keys, the units
    waiting there now: a list it keeps equal to ``waiting``); () when an operation number is
    listed twice (then the general ``waiting_after`` applies)."""
    if len({x.op for x in o.ops}) != len(o.ops):
        return ()
    ops = o.ops[::-1]
    keys = tuple(_wait_key(o, x) for x in ops)
    return tuple(x.op for x in ops), keys, [waiting.get(k, ZERO) for k in keys]
