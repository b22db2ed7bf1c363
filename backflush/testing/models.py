"""Strategies for the pydantic event models, registered so ``st.from_type(Model)`` works.

``st.from_type(backflush.ledger.events.OperationReported)`` draws one valid event model (every
constraint of the interchange format kept: names without NUL, quantities exact and not
negative, aware timestamps). Such events are valid one by one; a *history* that makes sense
(references defined before use) comes from ``histories`` or ``PlantMachine``.

Registration happens through Hypothesis's ``hypothesis`` entry point (``_hypothesis_setup_hook``)
once the package is installed, or by calling ``register()``.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

import orjson
from hypothesis import strategies as st

NAMES = ("C1", "C2", "FG", "R10", "B1", "RT1", "P1", "IN-10", "BULK", "L-01")
# As a JSON line carries it: RFC 3339 text with an offset.
_AT = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31),
                   timezones=st.sampled_from((UTC, timezone(timedelta(hours=1))))).map(
    lambda t: t.replace(microsecond=0).isoformat())


def _decimal(c: dict[str, Any]) -> st.SearchStrategy[Decimal]:
    if "gt" in c:
        lo = Decimal(c["gt"]) + Decimal("0.001")
    elif "ge" in c:
        lo = Decimal(c["ge"])
    else:
        lo = Decimal(-1000)  # signed quantities (a manual return)
    return st.decimals(min_value=lo, max_value=Decimal(1000), places=3, allow_nan=False,
                       allow_infinity=False)


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in metadata:
        for attr in ("gt", "ge", "le", "min_length", "max_length"):
            v = getattr(m, attr, None)
            if v is not None:
                out[attr] = v
        # pydantic keeps Field() constraints in one FieldInfo-like object
        for sub in getattr(m, "metadata", ()) or ():
            out.update(_constraints([sub]))
    return out


def _for(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:
    """A strategy for one annotation (with its pydantic constraints)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _for(base, [*metadata, *extra])
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return st.one_of([_for(a, metadata) for a in args])
    if origin is Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return st.lists(_for(inner, []), min_size=1, max_size=3)
    if annotation is type(None):
        return st.none()
    c = _constraints(metadata)
    if annotation is Decimal:
        return _decimal(c)
    if annotation is int:
        # line and operation numbers, decimals: small non-negative integers read best
        return st.integers(max(c.get("ge", 0), 0), min(c.get("le", 10_000), 10_000))
    if annotation is str:
        return st.sampled_from(NAMES)
    if annotation is datetime:
        return _AT
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return _fields(annotation)
    raise TypeError(f"no strategy for {annotation!r}")


def _fields(model: type) -> st.SearchStrategy[dict[str, Any]]:
    """The fields of one model as the dict a JSON line would hold."""
    fields = {}
    for name, f in model.model_fields.items():
        # ``at`` is pydantic's AwareDatetime: a marker class, not a datetime subclass
        fields[name] = _AT if name == "at" else _for(f.annotation, list(f.metadata))
    return st.fixed_dictionaries(fields)


def model_strategy(model: type) -> st.SearchStrategy[Any]:
    """A strategy drawing valid instances of one pydantic model of ``ledger.events``.

    Each instance is validated from its JSON text, exactly as an imported line is.
    """
    return _fields(model).map(
        lambda kw: model.model_validate_json(orjson.dumps(kw, default=str)))


def event_models() -> st.SearchStrategy[Any]:
    """A strategy for any one event model (each of the 18 types of the interchange format)."""
    from backflush.ledger.events import EVENT_MODELS

    return st.one_of([model_strategy(m) for m in EVENT_MODELS])


def register() -> None:
    """Register a strategy for every event model with ``st.register_type_strategy``."""
    from backflush.ledger.events import EVENT_MODELS

    for m in EVENT_MODELS:
        st.register_type_strategy(m, st.deferred(lambda m=m: model_strategy(m)))


def _hypothesis_setup_hook() -> None:
    """Hypothesis's entry point (``[project.entry-points.hypothesis]``): ``register()``."""
    register()
