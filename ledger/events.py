"""Event models of the interchange format (DESIGN §2), validated strictly at the boundary.

Every line of a JSONL file is one event. Validation is done by pydantic straight from the
JSON bytes. pydantic-core reads a JSON number as a double and turns it into a Decimal by its
shortest repr, which is exact up to 15 significant digits (``0.1`` becomes ``Decimal("0.1")``)
but not beyond (pydantic-core#1688); a line with a longer number is therefore validated again
from a stdlib parse that reads numbers as Decimals. Unknown fields, naive timestamps and
negative quantities are errors.

Once validated, an event is kept as a *normalised payload*: a plain dict with every field
(defaults filled), quantities as decimal strings and ``at`` as ISO 8601 text. That dict is
what the store hashes and encodes, what ``export`` writes back, and what replay decodes.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from backflush.ledger import names
from backflush.ledger.names import INVENTORY_TYPES as INVENTORY_TYPES  # re-exported
from backflush.ledger.names import MASTER_TYPES as MASTER_TYPES
from backflush.ledger.names import ORDER_TYPES as ORDER_TYPES
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

# Names, ids and texts end up in text columns and on terminals. PostgreSQL text cannot
# hold NUL; control characters (C0, DEL, C1), line/paragraph separators, lone surrogates
# and bidirectional marks, embeddings, overrides and isolates can forge table rows or
# repaint a terminal, and make two different names look alike. Refused on both backends.
BAD_CHARS = (
    "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff"
)
_CLEAN = f"^[^{BAD_CHARS}]*$"
Name = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=_CLEAN)]
Text = Annotated[StrictStr, Field(max_length=2000, pattern=_CLEAN)]
# Line and operation numbers: any integer the stored encoding (orjson, 64-bit) can hold.
Int = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]

# --- strict decimals ---------------------------------------------------------------------
# The plain grammar -?digits[.digits][e±digits], ASCII digits only: no "1_000", no " 5 ",
# no "٥", no "+5", no ".5", no NaN or Infinity.
DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Bounds that keep every accepted quantity exact in the engine's arithmetic (28 digits):
# |q| < 10^15 with at most 12 decimal places is at most 27 significant digits.
MAX_MAGNITUDE = 15  # |q| < 10^15
MAX_SCALE = 12
_RANGE = f"out of range: |q| must be below 10^{MAX_MAGNITUDE} with at most {MAX_SCALE} decimals"


def _exact_decimal(v: Any) -> Any:
    """A JSON number (int, or Decimal from an exact parse) or a decimal string, as Decimal."""
    if type(v) is int:
        if abs(v) >= 10**MAX_MAGNITUDE:
            raise ValueError(_RANGE)
        return Decimal(v)
    if type(v) is Decimal:
        return v
    if type(v) is str:
        if len(v) > 64 or not DECIMAL_TEXT.fullmatch(v):
            raise ValueError("must be a decimal number such as 12 or 0.25 (digits, one point)")
        return Decimal(v)
    if type(v) is float:
        # Only a caller handing over Python floats gets here (JSON is parsed exactly).
        raise ValueError("must be an exact decimal, not a binary float")
    raise ValueError("must be a decimal number (a JSON number or a decimal string)")


def _bounded(d: Decimal) -> Decimal:
    if not d.is_finite():
        raise ValueError("must be a finite number")
    exp = d.as_tuple().exponent
    if exp < -MAX_SCALE or d.adjusted() >= MAX_MAGNITUDE:  # type: ignore[operator]
        raise ValueError(_RANGE)
    return d


Qty = Annotated[
    Decimal, BeforeValidator(_exact_decimal), Field(ge=0), AfterValidator(_bounded)
]
SignedQty = Annotated[Decimal, BeforeValidator(_exact_decimal), AfterValidator(_bounded)]
PositiveQty = Annotated[
    Decimal, BeforeValidator(_exact_decimal), Field(gt=0), AfterValidator(_bounded)
]

# --- strict timestamps -------------------------------------------------------------------
# RFC 3339 date-time with an offset; at most microseconds (a 7th digit would be dropped).
AT_TEXT = re.compile(
    r"([0-9]{4})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_NAIVE_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
)
_NAIVE = "timestamp has no UTC offset (naive timestamps are not accepted)"
MIN_YEAR, MAX_YEAR = 1900, 2999


def _rfc3339(v: Any) -> datetime:
    if type(v) is not str:
        raise ValueError("must be an RFC 3339 timestamp string, e.g. 2026-11-21T08:00:00Z")
    m = AT_TEXT.fullmatch(v)
    if m is None:
        if _NAIVE_TEXT.fullmatch(v):
            raise ValueError(_NAIVE)
        raise ValueError(
            "must be an RFC 3339 timestamp with offset, e.g. 2026-11-21T08:00:00Z"
            " (at most 6 fraction digits)"
        )
    if not MIN_YEAR <= int(m[1]) <= MAX_YEAR:
        raise ValueError(f"year must be between {MIN_YEAR} and {MAX_YEAR}")
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        raise ValueError("not a valid date or time") from None


At = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def at_text(dt: datetime) -> str:
    """The stored text of an ``at``: ISO 8601, the sender's offset kept, UTC as ``Z``."""
    s = dt.isoformat()
    return s[:-6] + "Z" if s.endswith("+00:00") else s

Device = Literal["client", "job_terminal", "mobile", "route_card"]
Principle = Literal[
    "start", "finish", "manual", "available_at_location", "operation_finish", "production_finish"
]
PRINCIPLES: tuple[str, ...] = Principle.__args__  # type: ignore[attr-defined]
DEVICES: tuple[str, ...] = Device.__args__  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Event(_Strict):
    at: At
    id: Name | None = None


# --- master data -------------------------------------------------------------------------


class ItemDefined(_Event):
    type: Literal["ItemDefined"]
    item: Name
    unit: Name = "ea"
    decimals: Annotated[StrictInt, Field(ge=0, le=12)] = 6
    tracking: Literal["none", "batch", "serial"] = "none"
    flushing: Principle = "finish"


class ResourceDefined(_Event):
    type: Literal["ResourceDefined"]
    resource: Name
    input_location: Name
    output_location: Name


class BomLine(_Strict):
    line: Int
    item: Name
    qty: Qty
    per: PositiveQty = Decimal(1)
    scrap_pct: Qty = Decimal(0)
    scrap_const: Qty = Decimal(0)
    flushing: Principle | None = None
    operation: Int | None = None
    location: Name | None = None


class BomDefined(_Event):
    type: Literal["BomDefined"]
    bom: Name
    item: Name
    lines: list[BomLine]


class RouteOperation(_Strict):
    op: Int
    resource: Name
    setup_hours: Qty = Decimal(0)
    run_hours: Qty = Decimal(0)


class RouteDefined(_Event):
    type: Literal["RouteDefined"]
    route: Name
    operations: Annotated[list[RouteOperation], Field(min_length=1)]


class FlushingRule(_Strict):
    trigger: Literal["start", "operation", "finish", "put"]
    device: Device | Literal["*"] = "*"
    resource: Name | None = None
    flush: list[Principle] | Literal["always"]
    basis: Literal["good", "good+error", "transferred"] = "good+error"


class ProductionParametersSet(_Event):
    type: Literal["ProductionParametersSet"]
    default_input_location: Name = "BACKFLUSH"
    tolerance_pct: Qty = Decimal(0)
    rules: list[FlushingRule] | None = None


# --- inventory ---------------------------------------------------------------------------


class InventoryReceived(_Event):
    type: Literal["InventoryReceived"]
    item: Name
    qty: Qty
    location: Name
    batch: Name | None = None
    lp: Name | None = None


class InventoryTransferred(_Event):
    type: Literal["InventoryTransferred"]
    item: Name
    qty: Qty
    from_location: Name
    to_location: Name
    batch: Name | None = None
    lp: Name | None = None


class InventoryCounted(_Event):
    type: Literal["InventoryCounted"]
    item: Name
    location: Name
    qty: Qty
    batch: Name | None = None


class _WarehouseWork(_Event):
    """A pick or a put of warehouse work: the same fields, opposite directions."""

    item: Name
    qty: Qty
    location: Name
    order: Name | None = None
    line: Int | None = None
    work: Name | None = None
    batch: Name | None = None
    lp: Name | None = None


class Picked(_WarehouseWork):
    type: Literal["Picked"]


class Put(_WarehouseWork):
    type: Literal["Put"]


# --- production order --------------------------------------------------------------------


class OrderCreated(_Event):
    type: Literal["OrderCreated"]
    order: Name
    item: Name
    qty: Qty
    bom: Name
    route: Name | None = None


class OrderReleased(_Event):
    type: Literal["OrderReleased"]
    order: Name


class OrderStarted(_Event):
    type: Literal["OrderStarted"]
    order: Name
    qty: Qty | None = None
    device: Device = "client"


class OperationReported(_Event):
    type: Literal["OperationReported"]
    order: Name
    op: Int
    good: Qty = Decimal(0)
    error: Qty = Decimal(0)
    device: Device = "job_terminal"
    hours: Qty | None = None


class ReportedAsFinished(_Event):
    type: Literal["ReportedAsFinished"]
    order: Name
    good: Qty
    error: Qty = Decimal(0)
    device: Device = "client"
    location: Name | None = None
    batch: Name | None = None
    lp: Name | None = None


class MaterialConsumed(_Event):
    type: Literal["MaterialConsumed"]
    order: Name
    item: Name
    qty: SignedQty
    location: Name | None = None
    batch: Name | None = None
    line: Int | None = None
    device: Device = "client"


class OrderEnded(_Event):
    type: Literal["OrderEnded"]
    order: Name


class Reversal(_Event):
    type: Literal["Reversal"]
    reverses: Name
    reason: Text | None = None


EVENT_MODELS: tuple[type[_Event], ...] = (
    ItemDefined,
    ResourceDefined,
    BomDefined,
    RouteDefined,
    ProductionParametersSet,
    InventoryReceived,
    InventoryTransferred,
    InventoryCounted,
    Picked,
    Put,
    OrderCreated,
    OrderReleased,
    OrderStarted,
    OperationReported,
    ReportedAsFinished,
    MaterialConsumed,
    OrderEnded,
    Reversal,
)
EVENT_TYPES: dict[str, type[_Event]] = {
    m.model_fields["type"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in EVENT_MODELS
}
# The plain-data names (``ledger.names``, importable without pydantic) must say what the
# models say: checked once here, so the two cannot drift apart.
if tuple(EVENT_TYPES) != names.EVENT_TYPES:
    raise AssertionError("ledger.names.EVENT_TYPES disagrees with the event models")
if names.MASTER_TYPES | names.INVENTORY_TYPES | names.ORDER_TYPES | {"Reversal"} != set(
    EVENT_TYPES
) or len(names.MASTER_TYPES) + len(names.INVENTORY_TYPES) + len(names.ORDER_TYPES) + 1 != len(
    EVENT_TYPES
):
    raise AssertionError("ledger.names type groups do not partition the event types")
if (
    PRINCIPLES != names.PRINCIPLES
    or DEVICES != names.DEVICES
    or FlushingRule.model_fields["trigger"].annotation.__args__ != names.TRIGGERS  # type: ignore[union-attr]
    or FlushingRule.model_fields["basis"].annotation.__args__ != names.BASES  # type: ignore[union-attr]
    or ItemDefined.model_fields["tracking"].annotation.__args__ != names.TRACKING  # type: ignore[union-attr]
):
    raise AssertionError("ledger.names literals disagree with the event models")


def _replay_fields_agree() -> bool:
    from backflush.ledger.codec import decimal_fields, optional_fields

    spec = {
        t: (decimal_fields(m), tuple(n for n in optional_fields(m) if n != "id"))
        for t, m in EVENT_TYPES.items()
    }
    return (
        spec == names.REPLAY_FIELDS
        and decimal_fields(BomLine) == names.BOM_LINE_DECIMALS
        and optional_fields(BomLine) == names.BOM_LINE_OPTIONAL
        and decimal_fields(RouteOperation) == names.OPERATION_DECIMALS
        and optional_fields(FlushingRule) == names.RULE_OPTIONAL
    )


if not _replay_fields_agree():
    raise AssertionError("ledger.names.REPLAY_FIELDS disagrees with the event models")

AnyEvent = Annotated[
    Union[tuple(EVENT_MODELS)],  # noqa: UP007 - a runtime-built union needs Union[...]
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)


class EventError(ValueError):
    """One reason why one input line is not a valid event: ``field: reason``."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _field_path(loc: tuple[Any, ...]) -> str:
    # The discriminated union puts the type tag first in the location; a reader wants
    # the path inside the event ("lines[1].qty"), not pydantic's internals.
    parts: list[str] = []
    for i, p in enumerate(loc):
        if i == 0 and isinstance(p, str) and p in EVENT_TYPES:
            continue
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            # A sender's unknown key may hold anything (": ", a line break): quote it so
            # the message stays one unambiguous line.
            name = str(p) if _PLAIN_KEY.fullmatch(str(p)) else json.dumps(str(p))
            parts.append(("." if parts else "") + name)
    return "".join(parts) or "(event)"


def _reason(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "timezone_aware":
        return "timestamp has no UTC offset (naive timestamps are not accepted)"
    if kind in ("greater_than_equal", "greater_than") and err.get("ctx", {}).get("ge") == 0:
        return "must not be negative"
    if kind in ("string_pattern_mismatch", "string_unicode"):  # _CLEAN is the only pattern
        return "must not contain control, line-separator or bidirectional characters"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "union_tag_not_found":
        return "required field is missing"
    if kind == "json_invalid":
        return f"malformed JSON ({err.get('ctx', {}).get('error', 'invalid')})"
    return str(err["msg"])


def _errors(exc: ValidationError) -> list[EventError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == "union_tag_not_found":
            loc = ("type",)
        if err["type"] == "union_tag_invalid":
            tag = err.get("ctx", {}).get("tag")
            out.append(EventError("type", f"unknown event type {tag!r}"))
            continue
        out.append(EventError(_field_path(loc), _reason(err)))
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _key_path(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def decode_exact(raw: bytes | str) -> Any:
    """Parse one JSON text exactly: numbers as int/Decimal, duplicate keys and NaN refused.

    This is the reference reading of a line (slow: the stdlib parser with hooks);
    ``ledger.fastpath`` reads the common lines faster and must agree with it.
    """
    try:
        return json.loads(
            raw, parse_float=Decimal, parse_constant=_no_constant, object_pairs_hook=_pairs
        )
    except _DuplicateKey as dup:
        raise EventErrors([EventError(_key_path(dup.key), "duplicate key")]) from None
    except RecursionError:
        raise EventErrors([EventError("(event)", "malformed JSON (nested too deeply)")]) from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, a 5000-digit number
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EventErrors([EventError("(event)", f"malformed JSON ({msg})")]) from None


def parse_event(raw: bytes | str) -> _Event:
    """Validate one JSON text as an event, or raise EventErrors listing every problem.

    Strict (DESIGN §1): exact decimals in the plain grammar and within bounds, ``at`` as
    an RFC 3339 string with offset, no duplicate keys, no control or bidi characters.
    """
    return validate_payload(decode_exact(raw))


class EventErrors(ValueError):
    """All the reasons one line is invalid (a reader fixes them all in one go)."""

    def __init__(self, errors: list[EventError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def normalise(event: _Event) -> dict[str, Any]:
    """The event as the ledger keeps it: all fields, defaults filled, decimals as strings.

    Optional fields that are absent stay absent (not ``null``), so an export reads like the
    input; ``id`` is left to the caller (the store assigns one when the sender gave none).
    """
    d = event.model_dump(mode="json", exclude_none=True, exclude={"id"})
    # Keep the sender's offset, it is a fact of the floor (which shift, which plant).
    d["at"] = at_text(event.at)
    return d


def validate_payload(d: dict[str, Any]) -> _Event:
    """Validate an already-decoded dict (used by tests and by the policy loader)."""
    try:
        return _ADAPTER.validate_python(d)
    except ValidationError as exc:
        raise EventErrors(_errors(exc)) from None


_RULES_ADAPTER: TypeAdapter[Any] = TypeAdapter(list[FlushingRule])


def parse_policy(raw: bytes | str) -> dict[str, Any]:
    """Validate a ``--policy`` file: the fields of ProductionParametersSet as one JSON object.

    Returns the normalised parameters dict (``rules`` None when absent = D365 defaults).
    """

    class Policy(_Strict):
        default_input_location: Name = "BACKFLUSH"
        tolerance_pct: Qty = Decimal(0)
        rules: list[FlushingRule] | None = None

    try:
        policy = Policy.model_validate(decode_exact(raw))
    except ValidationError as exc:
        raise EventErrors(_errors(exc)) from None
    return policy.model_dump(mode="json")
