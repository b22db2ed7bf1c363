"""The replay engine's records: immutable facts it emits and findings read.

Flush postings, anomalies, out-of-sequence facts, negative on-hand, unresolved batch takes,
residuals at order end and the resolved operations of an order's route. Plain frozen
dataclasses; ``projections.snapshot`` stores them by class name.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


# Not frozen, though never changed: a frozen dataclass sets each of its 16 fields through
# object.__setattr__, 3.3 us a posting against 0.4 us (one per posting, tens of thousands per
# rebuild). unsafe_hash keeps equality and hashing exactly those of a frozen record.
@dataclass(slots=True, unsafe_hash=True)
class FlushRecord:
    """One consumption posting (rule flush, manual consumption or reversal of either).

    Read-only by convention (see above). ``qty`` is negative for returns and reversals.
    ``units_before``/``units_after`` are the cumulative U of the (order, line, trigger kind)
    for rule-driven start/operation/finish flushes, else None. ``rule`` is the rule dict that
    fired (None for manual/reversal).
    """

    event_id: str
    at: object
    seq: int
    order: str
    line: int | None
    item: str
    trigger: str
    device: str | None
    qty: Decimal
    location: str
    batch: str | None
    lp: str | None
    units_before: Decimal | None
    units_after: Decimal | None
    basis: str | None
    rule: dict | None


@dataclass(frozen=True, slots=True)
class Anomaly:
    """An event the engine could not apply as meant (unknown reference, bad reversal...)."""

    event_id: str
    at: object
    reason: str


@dataclass(frozen=True, slots=True)
class OutOfSequence:
    """An order fact reported out of sequence (accepted anyway; OUT_OF_SEQUENCE finding)."""

    event_id: str
    at: object
    reason: str  # "before release" | "after end" | "op not on route" | "beyond order qty" | ...
    op: int | None = None


@dataclass(frozen=True, slots=True)
class NegativeOnHand:
    """A take that left on-hand of key = (item, location, batch, lp) below zero."""

    event_id: str
    at: object
    key: tuple
    balance: Decimal
    order: str | None = None
    seq: int | None = None  # of the event (where the materialiser files it)


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A batch/serial-tracked component flushed with no batch to take it from."""

    event_id: str
    at: object
    line: int | None
    item: str
    location: str
    qty: Decimal


@dataclass(frozen=True, slots=True)
class Residual:
    """Material put for an order and still at that location when the order ended."""

    item: str
    location: str
    qty: Decimal
    put_events: tuple
    end_event: str
    batch: str | None = None


@dataclass(frozen=True, slots=True)
class OpInfo:
    """An operation of an order's route, with its resource's locations as of order creation."""

    op: int
    resource: str | None
    setup_hours: Decimal
    run_hours: Decimal
    input_location: str | None
    output_location: str | None
