"""A fast, accept-only reading of the common event lines, checked against the models.

Validating every line with pydantic costs more than writing it (issue 7). Most lines of a
real file are plain: a flat object, no escapes, no control or bidi characters, integers
or plain decimal strings, an ``at`` without fraction. For those, ``check`` does what the
reference reading (``ledger.events.parse_event`` + ``normalise``: the stdlib exact parse
and the pydantic models) would do, in plain Python over orjson's dict, and returns the
same normalised payload. It never rejects: anything it is not sure about (nested lists,
escapes, exponents, leading zeros, a missing or unknown field, a value out of its simple
range) returns None, and the caller takes the reference path, which accepts or explains.
So the fast path can only be wrong by accepting what the reference refuses, or by
normalising differently: ``tests/test_ingest_strict.py`` checks both against the models
with Hypothesis, and that the table below lists exactly the models' fields.

Duplicate keys: orjson keeps the last one silently. Without backslashes every ``"`` in the
line delimits a string, so the line holds ``count('"') / 2`` strings; the parsed dict holds
``len(d)`` keys and some string values. A duplicated key drops at least one key string, so
the two counts agree only when no key was repeated.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson
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

# Microseconds of each date ("YYYY-MM-DD", midnight UTC) and of each time of day
# ("HH:MM:SS") met so far. A key is stored only once a whole ``at`` holding it has passed
# ``fromisoformat``; a date's validity does not depend on the time beside it (no leap
# seconds), so any two stored keys make a valid ``at`` together. Most lines then cost two
# dict lookups instead of a parse.
_days: dict[str, int] = {}
_tods: dict[str, int] = {}
_DAY_US = 86_400_000_000


def _at_us(text: str) -> int | None:
    """``to_us`` of an ``at`` whose stored text is the sender's text, else None.

    Whole seconds, years 1900-2999, ``Z`` or a non-zero ``±hh:mm`` offset: the layout is
    checked by position and the digits by ``fromisoformat`` (ASCII only: it would read
    other scripts' digits too).
    """
    n = len(text)
    if n == 20:
        if text[19] != "Z":
            return None
    elif n != 25 or text[19] not in "+-" or text[22] != ":" or text[20:] == "00:00":
        return None
    # Separators at 4, 7, 10, 13, 16: "YYYY-MM-DDTHH:MM:SS".
    if text[4:17:3] != "--T::" or not "1900" <= text[:4] <= "2999" or not text.isascii():
        return None
    if n == 20:
        day, tod = _days.get(text[:10]), _tods.get(text[11:19])
        if day is not None and tod is not None:
            return day + tod
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    us = to_us(dt)
    if n == 20:
        tod = us % _DAY_US
        if len(_days) > 100_000:
            _days.clear()
        _days[text[:10]] = us - tod
        _tods[text[11:19]] = tod
    return us


# The UTF-8 of the characters names must not hold (events.BAD_CHARS) that may stand raw
# in valid JSON: DEL, C1 controls, ALM, LRM/RLM, line/paragraph separators, bidi
# embeddings/overrides (U+202A-E) and isolates (U+2066-9). C0 controls cannot (JSON needs
# them escaped) and neither can surrogates (not valid UTF-8).
BAD_RAW = re.compile(
    rb"\x7f|\xc2[\x80-\x9f]|\xd8\x9c|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]"
)


def plain(raw: bytes) -> bool:
    """Whether a line may take the fast path at all: no escapes, no refused characters."""
    if b"\\" in raw:
        return False
    if raw.isascii():
        return b"\x7f" not in raw
    return BAD_RAW.search(raw) is None


def _field_code(k: str, kind: Any, required: bool, default: Any) -> list[str]:
    """Source lines checking field ``k`` of ``d`` into local ``v_k`` (None: absent)."""
    v = f"v_{k}"
    out = [f"    {v} = d.get({k!r})"]
    if required:
        out.append(f"    if {v} is None: return None")
    elif default is not None:
        out.append(f"    if {v} is None:")
        out.append(f"        if {k!r} in d: return None")
        out.append(f"        {v} = {default!r}")
        out.append("    else:")
    else:
        out.append(f"    if {v} is not None:")
    ind = "    " if required else "        "
    if kind is NAME:
        out.append(f"{ind}if type({v}) is not str or not 0 < len({v}) <= 200: return None")
        out.append(f"{ind}nstr += 1")
    elif kind is TEXT:
        out.append(f"{ind}if type({v}) is not str or len({v}) > 2000: return None")
        out.append(f"{ind}nstr += 1")
    elif kind is QTY or kind is SQTY:
        rx, lo = ("_QTY", "0 <=") if kind is QTY else ("_SQTY", "-_QTY_INT <")
        out.append(f"{ind}if type({v}) is int:")
        out.append(f"{ind}    if not {lo} {v} < _QTY_INT: return None")
        out.append(f"{ind}    {v} = str({v})")
        out.append(
            f"{ind}elif type({v}) is not str or not {rx}({v})"
            f" or '0.000000' in {v}[:9]: return None"
        )
        out.append(f"{ind}else: nstr += 1")
    elif type(kind) is tuple:
        out.append(
            f"{ind}if type({v}) is not int or not {kind[0]} <= {v} <= {kind[1]}: return None"
        )
    else:  # a set of allowed names
        out.append(f"{ind}if type({v}) is not str or {v} not in _E_{k}: return None")
        out.append(f"{ind}nstr += 1")
    return out


def _compile(type_: str) -> Any:
    fields, required, defaults = SPEC[type_]
    names = sorted(fields)
    env: dict[str, Any] = {
        "_QTY": _QTY.fullmatch,
        "_SQTY": _SQTY.fullmatch,
        "_QTY_INT": _QTY_INT,
        "_at_us": _at_us,
        "_dumps": orjson.dumps,
        "_ALLOWED": frozenset(fields) | {"type", "at", "id"},
    }
    src = [
        "def check(d, raw):",
        "    if not d.keys() <= _ALLOWED: return None",
        "    at = d.get('at')",
        "    if type(at) is not str: return None",
        "    nstr = 2",  # type and at
        "    eid = d.get('id')",
        "    if eid is not None:",
        "        if type(eid) is not str or not 0 < len(eid) <= 200: return None",
        "        nstr += 1",
    ]
    for k in names:
        if type(fields[k]) is frozenset:
            env[f"_E_{k}"] = fields[k]
        src += _field_code(k, fields[k], k in required, defaults.get(k))
    src += [
        "    if raw.count(b'\"') != 2 * (len(d) + nstr): return None",
        "    at_us = _at_us(at)",
        "    if at_us is None: return None",
        "    out = {}",
    ]
    # Keys in sorted order: orjson then writes the canonical (sorted) body without sorting.
    for k in sorted([*names, "at", "type"]):
        if k == "at":
            src.append("    out['at'] = at")
        elif k == "type":
            src.append(f"    out['type'] = {type_!r}")
        elif k in required or k in defaults:
            src.append(f"    out[{k!r}] = v_{k}")
        else:
            src.append(f"    if v_{k} is not None: out[{k!r}] = v_{k}")
    src.append("    return out, eid, at_us, _dumps(out)")
    exec("\n".join(src), env)  # noqa: S102 - code generated from the table above
    return env["check"]


_CHECKS = {t: _compile(t) for t in SPEC}


def check(
    d: dict[str, Any], raw: bytes
) -> tuple[dict[str, Any], str | None, int, bytes] | None:
    """(normalised payload without id, id or None, at in µs, canonical body) or None.

    None means: ask the reference reading. ``d`` is orjson's reading of ``raw``, and
    ``plain(raw)`` holds. One function per event type, generated from ``SPEC``.
    """
    t = d.get("type")
    fn = _CHECKS.get(t) if type(t) is str else None
    return None if fn is None else fn(d, raw)
