"""The pure replay engine: events in (at, seq) order in, inventory / WIP / consumption out.

``Replay.apply(ev)`` takes one validated, normalised event dict (DESIGN §2; quantities are
``Decimal``, ``at`` a tz-aware datetime, ``id`` and ``seq`` set) and updates the state. No I/O, no
clock, no globals: the same events always give the same state, flush log and change log.

Where to look (``Replay`` is one object assembled from these parts, each in its own module):

- ``engine`` (here): driving (``apply``, order check, dispatch by event type), master data,
  snapshots (``state``/``restore``), the anomaly log; re-exports the records.
- ``stock``: on-hand bins (FIFO per item and location), the inventory events (received,
  transferred, counted, picked, the stock side of a put), ``onhand``/``wip``/``item_totals``.
- ``orderbook``: the production order lifecycle (created, released, started, operation
  reported, reported as finished, material consumed, ended, the order side of a put), the
  units waiting after each operation, ``consumption``/``hours``/``orders``/``retire``.
- ``orderstate``: ``OrderState``/``LineState``, an order's data and derived figures (units
  processed, expected, variance, waiting, standard hours).
- ``flusher``: applies the flushing decisions to lines and posts consumption; the decisions
  themselves (which rule, which lines, how much, from which batch) are pure functions in
  ``rules``.
- ``undo``: the change primitives, the per-event undo log and ``Reversal``.
- ``records``: the immutable records emitted (``FlushRecord``, ``NegativeOnHand``, ...);
  ``exact``: the arithmetic context and its errors; ``snapshot``: the state as data.

Semantics where DESIGN is silent (what an experienced D365 / AX user expects):

- Master data are taken as in force when the order is created: BOM, route, the resources of its
  operations (input/output locations), component items (principle, decimals, tracking) and the
  default input location. The per-order line table (principle, operation, consumption location)
  is resolved once, at ``OrderCreated``. Flushing *rules* are those in force at each trigger.
- The resource a rule is matched against: ``operation`` → the reported operation's resource;
  ``start`` → the first operation's; ``finish`` → the last operation's (report as finished
  happens at the end of the route); ``put`` → the resource of the line's operation.
- A ``Put`` carries no device; warehouse puts are made on the mobile scanner, so put rules are
  matched with device ``mobile``. A put naming an order but no line is registered against the
  order's lines of that item; the put trigger consumes the quantity once, on the first such line
  (lowest line number) whose principle the rule lists — never once per line.
- ``OrderStarted`` releases an order that was not released yet (AX: "start ... automatically
  releases it", seed 002); a start is not out of sequence.
- Report as finished adds the good quantity of the order's item to on-hand at the event's
  location, else the output location of the last operation's resource, else ``OUTPUT``; error
  quantity is scrapped. Conservation therefore reads: received + produced − consumed
  ± adjustments = Σ on-hand (``item_totals``).
- ``InventoryCounted`` sets the on-hand of item/location/batch summed over licence plates: a
  shortage is taken from the licence plates first in first out, a surplus lands without lp.
- ``Picked`` / ``Put`` move the given item/batch/lp literally (location ↔ ``IN_TRANSIT``); a put
  without a pick drives ``IN_TRANSIT`` negative, which is accepted and recorded
  (``puts_without_pick`` and a negative on-hand record).
- Batch/lp selection for a flush: the put entries for that order and line (or order and item)
  at the consumption location, FIFO, capped by what of that batch is still on hand; then FIFO
  on hand at the location (order of arrival of the batch/lp there; a bin that ran empty and is
  refilled queues again at the back); the remainder is unresolved (batch None). A flush split
  over several batches gives one FlushRecord per batch with the same units_before/after.
- An unresolved take (a batch/serial-tracked component flushed or consumed with no batch on
  hand or put to take it from) is reported as UNRESOLVED_BATCH, whose quantity is the
  shortfall; the no-batch bucket it drives below zero is *not* also NEGATIVE_ON_HAND (one
  shortage, one finding). Picks, moves and takes that name a batch, and untracked items,
  still record negative on-hand.
- RESIDUAL_AT_INPUT is computed per item, location and batch at ``OrderEnded``: per batch, what
  was put for the order there minus what the order consumed of that batch there, capped by
  that batch's on-hand; another batch below zero at the location does not hide it.
- Manual consumption (``MaterialConsumed``) books against the named line, else the order's first
  line of that item, else an *unplanned* line (line None, expected 0). A negative quantity is a
  return: on-hand goes back up at the location (batch as given).
- WIP waiting after an operation: good out of it not yet processed at the next operation (or
  not reported as finished after the last), with DESIGN §5's fallback on both sides (an
  operation nobody reports on, seed 001's robot packing, is deemed to have processed what was
  finished), never negative (over-reporting is OUT_OF_SEQUENCE, not negative WIP).
  ``wip_at_end`` keeps it for WIP_NOT_CLEARED: an ended order's WIP is zero or flagged.
- Staged WIP: material on hand at a resource's input location, one row per item and batch
  under that resource (several resources sharing an input location: the first by name;
  the default input location: no resource only when no resource has it as input). It mirrors
  on-hand but never goes below zero: a shortage there is NEGATIVE_ON_HAND, not WIP.
- Hours: reported hours come from ``OperationReported`` only (actual, else the report's standard
  share); standard hours follow DESIGN §5.
- Reversal undoes, from its own ``at``, every effect the reversed event had: it posts exact
  negatives of its flushes (trigger ``reversal``), undoes its inventory moves, and takes back
  the U counters, unit counts, hours, status changes and findings records it added. Later
  events keep what they did. ``by_trigger`` is net, keyed by the original trigger kind.
  Reversing master data, a reversal, an unknown or an already reversed id is an anomaly.
- Order events on unknown orders are skipped with an anomaly; inventory events on unknown
  items still move stock (the shelf does not care) and record an anomaly.

Performance: per event only dict lookups and a few small tuples; effects needed to undo an event
are only kept for events that may be reversed (all, unless ``reversible`` narrows it). The
whole replay runs in one arithmetic context (``apply_all``), not one per event.
"""

from __future__ import annotations

from decimal import DecimalException, localcontext

from backflush.ledger.names import INVENTORY_TYPES, ORDER_TYPES
from backflush.projections.common import (  # noqa: F401  (re-exported)
    ARITHMETIC,
    WIP_ORDER,
    sort_wip,
    staged_rows,
)
from backflush.projections.exact import (  # noqa: F401  (re-exported)
    QuantityOutOfRange,
    UnreplayableEvent,
    exact,
)
from backflush.projections.flusher import Flusher
from backflush.projections.orderbook import DEFAULT_OUTPUT_LOCATION, OrderBook  # noqa: F401
from backflush.projections.orderstate import LineState, OrderState  # noqa: F401
from backflush.projections.records import (  # noqa: F401  (re-exported)
    Anomaly,
    FlushRecord,
    NegativeOnHand,
    OpInfo,
    OutOfSequence,
    Residual,
    Unresolved,
)
from backflush.projections.rules import TRACKED, Params  # noqa: F401
from backflush.projections.stock import IN_TRANSIT, Stock  # noqa: F401
from backflush.projections.undo import UndoLog

INVENTORY_EVENTS = INVENTORY_TYPES
ORDER_EVENTS = ORDER_TYPES
REVERSIBLE = INVENTORY_EVENTS | ORDER_EVENTS


# The engine's state, as saved in a snapshot (``state`` / ``restore``); everything else is
# derived (handlers) or given again by the caller (policy, reversible ids).
STATE = (
    "_items", "_resources", "_boms", "_routes", "_params", "_orders", "_bins",
    "_waiting", "_staged_map", "_received", "_produced", "_consumed", "_adjusted", "_effects",
    "_reversed", "_last", "anomalies", "negative_onhand", "puts_without_pick",
)


class Replay(Stock, OrderBook, Flusher, UndoLog):
    """Replay state machine. See the module docstring for semantics and where each part lives.

    ``policy``: a ProductionParametersSet-shaped dict replacing every recorded one (what-if).
    ``reversible``: optional set of event ids that a Reversal in the history targets; when given,
    undo information is kept only for those (memory for big rebuilds). None keeps it for all.
    """

    def __init__(self, policy: dict | None = None, reversible=None):
        self.policy = policy
        self._params = Params.from_dict(policy) if policy is not None else Params()
        self.anomalies: list = []
        # master data (current versions)
        self._items: dict = {}
        self._resources: dict = {}
        self._boms: dict = {}
        self._routes: dict = {}
        self._init_stock()
        self._init_orders()
        self._init_flusher()
        self._init_undo(reversible)
        # the event being applied
        self._last = None  # (at, seq) of the last event applied
        self._cur: dict = {}
        self._eid = self._at = self._seq = None  # its id, at and seq
        self._cur_order: OrderState | None = None  # the order it concerns, if any
        # Shared by every engine (``HANDLERS``): bound methods kept here made each engine a
        # reference cycle, freed only by the cyclic collector, which long replays switch
        # off; an order answered alone in a stream of findings kept its engine to the end.
        self._handlers = HANDLERS
        self._remap_staged()

    # --- driving -----------------------------------------------------------------------

    def apply(self, ev: dict) -> None:
        """Apply one event. Events must come in (at, seq) order; raises ValueError otherwise.

        Raises ``UnreplayableEvent`` (a ``BadInput``) when its arithmetic overflows.
        """
        with localcontext(ARITHMETIC):
            try:
                self._apply(ev)
            except DecimalException as exc:
                raise UnreplayableEvent(ev, exc) from None

    def _apply(self, ev: dict) -> None:
        """``apply`` without its context and error translation (callers provide both)."""
        at, seq = ev["at"], ev["seq"]
        pos = (at, seq)
        last = self._last
        if last is not None and pos < last:
            raise ValueError(f"event {ev.get('id')} out of (at, seq) order")
        self._last = pos
        self._cur = ev
        eid = self._eid = ev.get("id")  # (an event of an unknown type may lack one)
        self._at = at
        self._seq = seq
        self._cur_order = None
        typ = ev["type"]
        handler = self._handlers.get(typ)
        if handler is None:
            self._anomaly(f"unknown event type {typ!r}")
            return
        keep = self._keep
        # (a rebuild keeps undo for the few reversal targets only: test the id first)
        if (keep is None or eid in keep) and typ in REVERSIBLE:
            fx = self._fx = []
            handler(self, ev)
            self._effects[eid] = (ev, fx)
            self._fx = None
        else:
            handler(self, ev)

    def apply_all(self, events) -> Replay:
        """Apply every event of an iterable (already in (at, seq) order); returns self."""
        apply = self._apply
        ev: dict = {}
        with localcontext(ARITHMETIC):
            try:
                for ev in events:
                    apply(ev)
            except DecimalException as exc:
                raise UnreplayableEvent(ev, exc) from None
        return self

    def apply_some(self, events, k: int):
        """Apply the next ``k`` events of the iterator ``events`` (in (at, seq) order) in
        one arithmetic context, as ``apply`` would each; returns the ``k``-th, or None when
        fewer were left. A streaming replay hands its state over between runs of events,
        outside this context (``projections.asof``)."""
        apply = self._apply
        ev: dict = {}
        n = 0
        with localcontext(ARITHMETIC):
            try:
                for ev in events:
                    apply(ev)
                    n += 1
                    if n == k:
                        return ev
            except DecimalException as exc:
                raise UnreplayableEvent(ev, exc) from None
        return None

    # --- snapshots ---------------------------------------------------------------------

    def state(self) -> dict:
        """The engine's state as plain values and records (see ``projections.snapshot``).

        Taken between events; the change log (``balance_changes``, ``flushes``) is not part
        of it and must have been drained.
        """
        return {k: getattr(self, k) for k in STATE}

    @classmethod
    def restore(cls, state: dict, reversible=None) -> Replay:
        """An engine continuing from ``state`` (from ``state()``), undo kept for ``reversible``."""
        missing = [k for k in STATE if k not in state]
        if missing:
            raise ValueError(f"engine state lacks {', '.join(missing)}")
        engine = cls(reversible=reversible)
        for k in STATE:
            setattr(engine, k, state[k])
        if engine._last is not None:
            engine._last = tuple(engine._last)
        engine.discard_changes()
        return engine

    def discard_changes(self) -> None:
        """Empty the change log: what a materialising pass drains and writes (balance
        changes, flushes, staging maps, takes without a batch, residuals at order end). A
        replay that only reads the state calls this now and then, or the log grows with
        the history (the residuals of every order ended: 94,000 entries at 3M events)."""
        self.balance_changes.clear()
        self.flushes.clear()
        self.staging_changes.clear()
        self.unresolved_log.clear()
        self.residual_log.clear()

    # --- master data and the rest ------------------------------------------------------

    # Every master-data change clears the order book's resolved (BOM, route) templates:
    # orders created from now on see the new versions.

    def _item_defined(self, ev):
        self._items[ev["item"]] = ev
        self._templates.clear()

    def _resource_defined(self, ev):
        self._resources[ev["resource"]] = ev
        self._templates.clear()
        self._remap_staged()

    def _bom_defined(self, ev):
        self._boms[ev["bom"]] = ev
        self._templates.clear()

    def _route_defined(self, ev):
        self._routes[ev["route"]] = sorted(ev.get("operations") or (), key=lambda o: o["op"])
        self._templates.clear()

    def _params_set(self, ev):
        if self.policy is not None:
            return  # a what-if policy replaces every recorded parameter set
        self._params = Params.from_dict(ev, ev.get("id"))
        self._templates.clear()
        self._remap_staged()

    def _anomaly(self, reason: str) -> None:
        ev = self._cur
        self.anomalies.append(Anomaly(ev.get("id"), ev.get("at"), reason))

    def reversed_ids(self) -> dict:
        """Reversed event id -> id of the Reversal that undid it."""
        return dict(self._reversed)

    def params(self) -> Params:
        """Production parameters currently in force (the policy when one is given)."""
        return self._params


# Event type -> the ``Replay`` method that applies it, called as ``handler(engine, ev)``.
HANDLERS = {typ: getattr(Replay, name) for typ, name in (
    ("ItemDefined", "_item_defined"),
    ("ResourceDefined", "_resource_defined"),
    ("BomDefined", "_bom_defined"),
    ("RouteDefined", "_route_defined"),
    ("ProductionParametersSet", "_params_set"),
    ("InventoryReceived", "_received_ev"),
    ("InventoryTransferred", "_transferred_ev"),
    ("InventoryCounted", "_counted_ev"),
    ("Picked", "_picked_ev"),
    ("Put", "_put_ev"),
    ("OrderCreated", "_order_created"),
    ("OrderReleased", "_order_released"),
    ("OrderStarted", "_order_started"),
    ("OperationReported", "_operation_reported"),
    ("ReportedAsFinished", "_reported_as_finished"),
    ("MaterialConsumed", "_material_consumed"),
    ("OrderEnded", "_order_ended"),
    ("Reversal", "_reversal"),
)}
