"""The engine's arithmetic: one Decimal context for every computation, and its errors.

Quantities that overflow or are not numbers must stop the replay with a clean error naming the
event (``UnreplayableEvent``), never a half-applied state or a traceback.
"""

from __future__ import annotations

from decimal import DecimalException, localcontext
from functools import wraps

from backflush.projections.common import ARITHMETIC

from backflush.errors import BadInput


class QuantityOutOfRange(BadInput):
    """Quantities the engine cannot compute with (overflow, not a number)."""


class UnreplayableEvent(QuantityOutOfRange):
    """A recorded event whose quantities the engine cannot compute with (out of range)."""

    def __init__(self, ev: dict, exc: Exception):
        self.event_id = ev.get("id")
        super().__init__(
            f"event {ev.get('id')} ({ev.get('type')} at {ev.get('at')}): quantity out of range"
            f" ({type(exc).__name__}); the engine cannot replay it"
        )


def exact(f):
    """Run ``f`` in the engine's arithmetic context (queries computing from the state)."""

    @wraps(f)
    def inner(*args, **kw):
        with localcontext(ARITHMETIC):
            try:
                return f(*args, **kw)
            except DecimalException as exc:
                raise QuantityOutOfRange(
                    f"{f.__name__}: quantity out of range ({type(exc).__name__})") from None

    return inner
