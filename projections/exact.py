"""The engine's arithmetic: one Decimal context for every computation, and its errors.

Quantities that overflow or are not numbers must stop the replay with a clean error naming the
event (``UnreplayableEvent``), never a half-applied state or a traceback.
"""

from __future__ import annotations

from contextvars import ContextVar
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


_INSIDE = ContextVar("backflush_exact", default=False)


def exact(f):
    """Run ``f`` in the engine's arithmetic context (queries computing from the state).

    Called from another exact function, ``f`` runs in that call's context, which already is
    the engine's, and its errors are that call's to translate: findings read a dozen exact
    properties per BOM line, and entering a context for each took a tenth of a whole-history
    ``findings`` (stop 30). Nothing here sets another context inside an exact call.
    """

    @wraps(f)
    def inner(*args, **kw):
        if _INSIDE.get():  # called from an exact function: its context and errors hold
            return f(*args, **kw)
        token = _INSIDE.set(True)
        try:
            with localcontext(ARITHMETIC):
                return f(*args, **kw)
        except DecimalException as exc:
            raise QuantityOutOfRange(
                f"{f.__name__}: quantity out of range ({type(exc).__name__})") from None
        finally:
            _INSIDE.reset(token)

    return inner
