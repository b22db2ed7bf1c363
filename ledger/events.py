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
from decimal import Decimal
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

# Names and ids end up in text columns, and PostgreSQL text cannot hold NUL: refuse it on
# both backends alike.
_NO_NUL = r"^[^\x00]*$"
Name = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=_NO_NUL)]
# Line and operation numbers: any integer the stored encoding (orjson, 64-bit) can hold.
Int = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
Qty = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
SignedQty = Annotated[Decimal, Field(allow_inf_nan=False)]
Device = Literal["client", "job_terminal", "mobile", "route_card"]
Principle = Literal[
    "start", "finish", "manual", "available_at_location", "operation_finish", "production_finish"
]
PRINCIPLES: tuple[str, ...] = Principle.__args__  # type: ignore[attr-defined]
DEVICES: tuple[str, ...] = Device.__args__  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Event(_Strict):
    at: AwareDatetime
    id: Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=_NO_NUL)] | None = None


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
    per: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] = Decimal(1)
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
    reason: StrictStr | None = None


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
MASTER_TYPES = frozenset(
    {"ItemDefined", "ResourceDefined", "BomDefined", "RouteDefined", "ProductionParametersSet"}
)
INVENTORY_TYPES = frozenset(
    {"InventoryReceived", "InventoryTransferred", "InventoryCounted", "Picked", "Put"}
)
ORDER_TYPES = frozenset(
    {
        "OrderCreated",
        "OrderReleased",
        "OrderStarted",
        "OperationReported",
        "ReportedAsFinished",
        "MaterialConsumed",
        "OrderEnded",
    }
)

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
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == _NO_NUL:
        return "must not contain NUL characters"
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


# A run of 16 or more digits and points may hold more digits than a double carries
# exactly. Also matches inside strings, which only costs a second parse; a character
# class without backtracking keeps the common case cheap (it runs on every line).
_LONG_NUMBER = re.compile(rb"[\d.]{16,}")


def parse_event(raw: bytes | str) -> _Event:
    """Validate one JSON text as an event, or raise EventErrors listing every problem."""
    try:
        event = _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise EventErrors(_errors(exc)) from None
    if _LONG_NUMBER.search(raw.encode() if isinstance(raw, str) else raw):
        # The fast path read JSON numbers through doubles: redo it with exact decimals.
        try:
            event = _ADAPTER.validate_python(json.loads(raw, parse_float=Decimal))
        except ValidationError as exc:
            raise EventErrors(_errors(exc)) from None
    return event


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
    # pydantic renders aware datetimes as "...Z" or "+hh:mm": keep the sender's offset, it
    # is a fact of the floor (which shift, which plant).
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
        policy = Policy.model_validate_json(raw)
    except ValidationError as exc:
        raise EventErrors(_errors(exc)) from None
    return policy.model_dump(mode="json")
