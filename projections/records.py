"""The replay engine's records: immutable facts it emits and findings read.

Flush postings, anomalies, out-of-sequence facts, negative on-hand, unresolved batch takes,
residuals at order end and the resolved operations of an order's route. Slotted value
records (equality, hash and repr of their fields, as a frozen dataclass); ``projections.snapshot``
stores them by class name and fields (``__slots__``).
"""

from __future__ import annotations

from decimal import Decimal


class _Record:
    """Value semantics over ``__slots__``, as a dataclass gives them: equality (same class,
    equal fields), hash and repr of the fields in order.

    Hand-written rather than ``@dataclass``: a dataclass costs about 1 ms of import per class
    (its methods are generated and compiled at import), and every short query process that
    replays one order imports these records.
    """

    __slots__ = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self):
        return hash(self._values())

    def __repr__(self):
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{self.__class__.__qualname__}({fields})"

    def __reduce__(self):
        # Pickled by fields (rows spilled to disk while a stream holds them back): the
        # default would set each slot through ``__setattr__``, which a frozen record refuses.
        return _restore, (self.__class__, tuple(getattr(self, n) for n in self.__slots__))


def _restore(cls: type, values: tuple) -> _Record:
    rec = object.__new__(cls)
    for name, v in zip(cls.__slots__, values, strict=True):
        object.__setattr__(rec, name, v)
    return rec


class _Frozen(_Record):
    """A record whose fields cannot be assigned once built (a frozen dataclass)."""

    __slots__ = ()

    def _init(self, *values) -> None:
        for name, v in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, v)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"cannot delete field {name!r}")


# Not frozen, though never changed: a frozen record sets each of its 16 fields through
# object.__setattr__, 3.3 us a posting against 0.4 us (one per posting, tens of thousands per
# rebuild). Equality and hashing are exactly those of a frozen record.
class FlushRecord(_Record):
    """One consumption posting (rule flush, manual consumption or reversal of either).

    Read-only by convention (see above). ``qty`` is negative for returns and reversals.
    ``units_before``/``units_after`` are the cumulative U of the (order, line, trigger kind)
    for rule-driven start/operation/finish flushes, else None. ``rule`` is the rule dict that
    fired (None for manual/reversal).
    """

    __slots__ = ("event_id", "at", "seq", "order", "line", "item", "trigger", "device", "qty",
                 "location", "batch", "lp", "units_before", "units_after", "basis", "rule")

    def __init__(self, event_id: str, at, seq: int, order: str, line: int | None, item: str,
                 trigger: str, device: str | None, qty: Decimal, location: str,
                 batch: str | None, lp: str | None, units_before: Decimal | None,
                 units_after: Decimal | None, basis: str | None, rule: dict | None):
        self.event_id = event_id
        self.at = at
        self.seq = seq
        self.order = order
        self.line = line
        self.item = item
        self.trigger = trigger
        self.device = device
        self.qty = qty
        self.location = location
        self.batch = batch
        self.lp = lp
        self.units_before = units_before
        self.units_after = units_after
        self.basis = basis
        self.rule = rule


class Anomaly(_Frozen):
    """An event the engine could not apply as meant (unknown reference, bad reversal...)."""

    __slots__ = ("event_id", "at", "reason")

    def __init__(self, event_id: str, at, reason: str):
        self._init(event_id, at, reason)


class OutOfSequence(_Frozen):
    """An order fact reported out of sequence (accepted anyway; OUT_OF_SEQUENCE finding).

    ``reason``: "before release" | "after end" | "op not on route" | "beyond order qty" | ...
    """

    __slots__ = ("event_id", "at", "reason", "op")

    def __init__(self, event_id: str, at, reason: str, op: int | None = None):
        self._init(event_id, at, reason, op)


class NegativeOnHand(_Frozen):
    """A take that left on-hand of key = (item, location, batch, lp) below zero.

    ``seq``: of the event (where the materialiser files it).
    """

    __slots__ = ("event_id", "at", "key", "balance", "order", "seq")

    def __init__(self, event_id: str, at, key: tuple, balance: Decimal,
                 order: str | None = None, seq: int | None = None):
        self._init(event_id, at, key, balance, order, seq)


class Unresolved(_Frozen):
    """A batch/serial-tracked component flushed with no batch to take it from."""

    __slots__ = ("event_id", "at", "line", "item", "location", "qty")

    def __init__(self, event_id: str, at, line: int | None, item: str, location: str,
                 qty: Decimal):
        self._init(event_id, at, line, item, location, qty)


class Residual(_Frozen):
    """Material put for an order and still at that location when the order ended."""

    __slots__ = ("item", "location", "qty", "put_events", "end_event", "batch")

    def __init__(self, item: str, location: str, qty: Decimal, put_events: tuple,
                 end_event: str, batch: str | None = None):
        self._init(item, location, qty, put_events, end_event, batch)


class OpInfo(_Frozen):
    """An operation of an order's route, with its resource's locations as of order creation."""

    __slots__ = ("op", "resource", "setup_hours", "run_hours", "input_location",
                 "output_location")

    def __init__(self, op: int, resource: str | None, setup_hours: Decimal,
                 run_hours: Decimal, input_location: str | None, output_location: str | None):
        self._init(op, resource, setup_hours, run_hours, input_location, output_location)
