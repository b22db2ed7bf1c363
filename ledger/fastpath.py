"""A fast, accept-only reading of the common event lines, checked against the models.

Validating every line with pydantic costs more than writing it (issue 7). Most lines of a
real file are plain: a flat object, ASCII, no escapes, integers or plain decimal strings,
an ``at`` without fraction. For those, ``check`` does what the reference reading
(``ledger.events.parse_event`` + ``normalise``: the stdlib exact parse and the pydantic
models) would do, in plain Python over orjson's dict, and returns the same normalised
payload. It never rejects: anything it is not sure about (nested lists, escapes, non-ASCII,
exponents, leading zeros, a missing or unknown field, a value out of its simple range)
returns None, and the caller takes the reference path, which accepts or explains. So the
fast path can only be wrong by accepting what the reference refuses, or normalising
differently: ``tests/test_ingest_strict.py`` checks both against the models with
Hypothesis, and that the table below lists exactly the models' fields.

Duplicate keys: orjson keeps the last one silently. Without backslashes every ``"`` in the
line delimits a string, so the line holds ``count('"') / 2`` strings; the parsed dict holds
``len(d)`` keys and some string values. A duplicated key drops at least one key string, so
the two counts agree only when no key was repeated.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from backflush.ledger.events import at_text
from backflush.ledger.names import DEVICES, PRINCIPLES, TRACKING
from backflush.ledger.store import to_us

NAME, QTY, SQTY, TEXT = "name", "qty", "sqty", "text"
INT64 = (-(2**63), 2**63 - 1)
DECIMALS = (0, 12)
DEVICE = frozenset(DEVICES)
PRINCIPLE = frozenset(PRINCIPLES)

# Plain decimals whose Decimal text is the string itself: no exponent, no leading zero,
# and not 0.000000x (Decimal writes 1E-7). Bounds as the models': < 10^15, ≤ 12 places.
_QTY = re.compile(r"(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,12})?")
_SQTY = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,12})?")
_QTY_INT = 10**15
# Whole seconds, years 1900-2999, Z or a non-zero offset: forms whose stored text is the
# sender's text (at_text would write +00:00 and -00:00 as Z).
_AT = re.compile(
    r"(?:19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?:Z|[+-](?!00:00)[0-9]{2}:[0-9]{2})"
)

# type -> ({field: kind}, required fields, defaults as normalised values)
_W = {"item": NAME, "qty": QTY, "location": NAME, "order": NAME, "line": INT64,
      "work": NAME, "batch": NAME, "lp": NAME}  # fmt: skip
SPEC: dict[str, tuple[dict[str, Any], frozenset[str], dict[str, Any]]] = {
    "ItemDefined": (
        {"item": NAME, "unit": NAME, "decimals": DECIMALS, "tracking": frozenset(TRACKING),
         "flushing": PRINCIPLE},
        frozenset({"item"}),
        {"unit": "ea", "decimals": 6, "tracking": "none", "flushing": "finish"},
    ),
    "ResourceDefined": (
        {"resource": NAME, "input_location": NAME, "output_location": NAME},
        frozenset({"resource", "input_location", "output_location"}),
        {},
    ),
    "InventoryReceived": (
        {"item": NAME, "qty": QTY, "location": NAME, "batch": NAME, "lp": NAME},
        frozenset({"item", "qty", "location"}),
        {},
    ),
    "InventoryTransferred": (
        {"item": NAME, "qty": QTY, "from_location": NAME, "to_location": NAME, "batch": NAME,
         "lp": NAME},
        frozenset({"item", "qty", "from_location", "to_location"}),
        {},
    ),
    "InventoryCounted": (
        {"item": NAME, "location": NAME, "qty": QTY, "batch": NAME},
        frozenset({"item", "location", "qty"}),
        {},
    ),
    "Picked": (_W, frozenset({"item", "qty", "location"}), {}),
    "Put": (_W, frozenset({"item", "qty", "location"}), {}),
    "OrderCreated": (
        {"order": NAME, "item": NAME, "qty": QTY, "bom": NAME, "route": NAME},
        frozenset({"order", "item", "qty", "bom"}),
        {},
    ),
    "OrderReleased": ({"order": NAME}, frozenset({"order"}), {}),
    "OrderStarted": (
        {"order": NAME, "qty": QTY, "device": DEVICE},
        frozenset({"order"}),
        {"device": "client"},
    ),
    "OperationReported": (
        {"order": NAME, "op": INT64, "good": QTY, "error": QTY, "device": DEVICE, "hours": QTY},
        frozenset({"order", "op"}),
        {"good": "0", "error": "0", "device": "job_terminal"},
    ),
    "ReportedAsFinished": (
        {"order": NAME, "good": QTY, "error": QTY, "device": DEVICE, "location": NAME,
         "batch": NAME, "lp": NAME},
        frozenset({"order", "good"}),
        {"error": "0", "device": "client"},
    ),
    "MaterialConsumed": (
        {"order": NAME, "item": NAME, "qty": SQTY, "location": NAME, "batch": NAME,
         "line": INT64, "device": DEVICE},
        frozenset({"order", "item", "qty"}),
        {"device": "client"},
    ),
    "OrderEnded": ({"order": NAME}, frozenset({"order"}), {}),
    "Reversal": ({"reverses": NAME, "reason": TEXT}, frozenset({"reverses"}), {}),
}

_at_cache: dict[str, int | None] = {}


def _at_us(text: str) -> int | None:
    us = _at_cache.get(text, -1)
    if us != -1:
        return us
    us = None
    if _AT.fullmatch(text):
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            dt = None
        if dt is not None and at_text(dt) == text:
            us = to_us(dt)
    if len(_at_cache) > 4096:
        _at_cache.clear()
    _at_cache[text] = us
    return us


def plain(raw: bytes) -> bool:
    """Whether a line may take the fast path at all: ASCII, no escapes, no DEL."""
    return raw.isascii() and b"\\" not in raw and b"\x7f" not in raw


def check(d: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], str | None, int] | None:
    """(normalised payload without id, id or None, at in µs), or None: ask the reference.

    ``d`` is orjson's reading of ``raw``, and ``plain(raw)`` holds.
    """
    t = d.get("type")
    spec = SPEC.get(t) if type(t) is str else None
    if spec is None:
        return None
    fields, required, defaults = spec
    out = dict(defaults)
    nstr = nreq = 0
    at = eid = None
    for k, v in d.items():
        tv = type(v)
        if tv is str:
            nstr += 1
        if k == "type":
            out[k] = v
            continue
        if k == "at":
            at = v
            continue
        if k == "id":
            if v is None:
                continue
            if tv is not str or not 0 < len(v) <= 200:
                return None
            eid = v
            continue
        kind = fields.get(k)
        if kind is None:
            return None
        if v is None:
            if k in defaults or k in required:
                return None
            continue
        if kind is NAME:
            if tv is not str or not 0 < len(v) <= 200:
                return None
            out[k] = v
        elif kind is QTY:
            if tv is int:
                if not 0 <= v < _QTY_INT:
                    return None
                out[k] = str(v)
            elif tv is str and _QTY.fullmatch(v) and not v.startswith("0.000000"):
                out[k] = v
            else:
                return None
        elif kind is SQTY:
            if tv is int:
                if not -_QTY_INT < v < _QTY_INT:
                    return None
                out[k] = str(v)
            elif tv is str and _SQTY.fullmatch(v) and "0.000000" not in v[:9]:
                out[k] = v
            else:
                return None
        elif tv is int and type(kind) is tuple:
            if not kind[0] <= v <= kind[1]:
                return None
            out[k] = v
        elif kind is TEXT:
            if tv is not str or len(v) > 2000:
                return None
            out[k] = v
        elif type(kind) is frozenset and tv is str and v in kind:
            out[k] = v
        else:
            return None
        if k in required:
            nreq += 1
    if nreq != len(required) or type(at) is not str:
        return None
    if raw.count(b'"') != 2 * (len(d) + nstr):
        return None  # a repeated key (or so it seems): the reference decides
    at_us = _at_us(at)
    if at_us is None:
        return None
    out["at"] = at
    return out, eid, at_us
