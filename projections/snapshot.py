"""Engine snapshots as data: a versioned JSON document, never code.

The replay engine's state is a graph: an order's lines point back to the order, and the undo
log of a reversible event points at the very counters and lists it changed. This module
writes that graph as plain JSON (via orjson, zlib-compressed) and reads it back, keeping
shared objects shared, with a fixed table of the engine's record classes. Nothing read is
evaluated or imported: a class name outside the table, a malformed node or a snapshot of
another version is refused (``SnapshotError``) and the caller rebuilds from the events.

Encoding (each node a JSON value):

- ``null``, booleans, integers, strings: themselves;
- ``["D", "1.50"]`` a Decimal (its exact text), ``["T", iso]`` an aware datetime,
  ``["t", [...]]`` a tuple, ``["s", [...]]`` a set, ``["f", [...]]`` a frozenset;
- ``["L", n, [...]]`` a list, ``["M", n, [[k, v], ...]]`` a dict (keys of any kind),
  ``["O", n, "Class", [field values]]`` a record of one of the engine's classes,
  ``["P", n, [default input location, tolerance, rules, source]]`` production parameters:
  each the n-th shared object, referred to again as ``["R", n]``.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

FORMAT = "backflush-engine-snapshot"
VERSION = 1


class SnapshotError(ValueError):
    """A stored snapshot that cannot be read as this version's data (the caller rebuilds)."""


def _classes() -> dict[str, type]:
    from backflush.projections import orderstate as S
    from backflush.projections import records as R

    return {c.__name__: c for c in (
        R.FlushRecord, R.Anomaly, R.OutOfSequence, R.NegativeOnHand, R.Unresolved,
        R.Residual, R.OpInfo, S.LineState, S.OrderState,
    )}


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        # the records' and the (slotted) dataclasses' __slots__ are their fields, in order
        names = _FIELDS[cls] = tuple(cls.__slots__)
    return names


class _Encoder:
    def __init__(self, start: int = 0) -> None:
        from backflush.projections.rules import Params

        self.start = start  # the number of the first shared object met
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # ids stay valid while encoding
        self.classes = {c: n for n, c in _classes().items()}
        self.params = Params

    def enc(self, v: Any) -> Any:
        t = type(v)
        if v is None or t is str or t is int or t is bool:
            return v
        if t is Decimal:
            return ["D", str(v)]
        if t is datetime:
            if v.tzinfo is None:
                raise SnapshotError("naive datetime in engine state")
            return ["T", v.isoformat()]
        if t is tuple:
            return ["t", [self.enc(x) for x in v]]
        if t is set or t is frozenset:
            items = sorted((self.enc(x) for x in v), key=orjson.dumps)
            return ["s" if t is set else "f", items]
        n = self.memo.get(id(v))
        if n is not None:
            return ["R", n]
        n = self.memo[id(v)] = self.start + len(self.memo)
        self.keep.append(v)
        if t is list:
            return ["L", n, [self.enc(x) for x in v]]
        if t is dict:
            return ["M", n, [[self.enc(k), self.enc(x)] for k, x in v.items()]]
        if t is self.params:
            return ["P", n, [v.default_input_location, self.enc(v.tolerance_pct),
                             self.enc(list(v.rules.rules)), v.source]]
        name = self.classes.get(t)
        if name is None:
            raise SnapshotError(f"no snapshot encoding for {t.__name__}")
        return ["O", n, name, [self.enc(getattr(v, f)) for f in _field_names(t)]]


class _Decoder:
    def __init__(self) -> None:
        from backflush.projections.rules import Params

        self.objs: dict[int, Any] = {}
        self.classes = _classes()
        self.params = Params

    def _new(self, n: Any, obj: Any) -> Any:
        if type(n) is not int or n in self.objs:
            raise SnapshotError("bad object number")
        self.objs[n] = obj
        return obj

    def dec(self, v: Any) -> Any:
        t = type(v)
        if v is None or t is str or t is int or t is bool:
            return v
        if t is not list or not v or type(v[0]) is not str:
            raise SnapshotError("malformed node")
        tag = v[0]
        try:
            if tag == "D":
                return Decimal(v[1])
            if tag == "R":
                return self.objs[v[1]]
            if tag == "T":
                dt = datetime.fromisoformat(v[1])
                if dt.tzinfo is None:
                    raise SnapshotError("naive datetime")
                return dt
            if tag == "t":
                return tuple(self.dec(x) for x in v[1])
            if tag == "s":
                return {self.dec(x) for x in v[1]}
            if tag == "f":
                return frozenset(self.dec(x) for x in v[1])
            if tag == "L":
                out: list = self._new(v[1], [])
                out.extend(self.dec(x) for x in v[2])
                return out
            if tag == "M":
                d: dict = self._new(v[1], {})
                for k, x in v[2]:
                    d[self.dec(k)] = self.dec(x)
                return d
            if tag == "P":
                dil, tol, rules, source = v[2]
                p = self._new(v[1], self.params(dil, self.dec(tol), self.dec(rules), source))
                return p
            if tag == "O":
                cls = self.classes.get(v[2])
                if cls is None:
                    raise SnapshotError(f"unknown record class {v[2]!r}")
                # A bare instance whose fields are then set one by one: no constructor code
                # runs, and references back to it (a line to its order) resolve while filling.
                obj = self._new(v[1], object.__new__(cls))
                names = _field_names(cls)
                if len(v[3]) != len(names):
                    raise SnapshotError(f"{v[2]}: wrong number of fields")
                for name, x in zip(names, v[3], strict=True):
                    object.__setattr__(obj, name, self.dec(x))
                return obj
        except SnapshotError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, InvalidOperation) as exc:
            raise SnapshotError(f"malformed {tag!r} node: {exc}") from None
        raise SnapshotError(f"unknown tag {tag!r}")


def dumps(state: dict[str, Any], engine_version: str) -> bytes:
    """A snapshot document for ``state`` (attribute name -> value), compressed."""
    doc = {"format": FORMAT, "version": VERSION, "engine": engine_version,
           "state": _Encoder().enc(state)}
    return zlib.compress(orjson.dumps(doc), 1)


def encode_part(value: Any, start: int) -> tuple[Any, int]:
    """``value`` encoded as one part of a state whose shared objects before it took the
    numbers below ``start``; returns the encoded part and the next free number.

    Lets one process encode the engine and another the rest of the state and join them
    with ``dumps_parts``: the very document ``dumps`` writes, provided the parts share no
    object."""
    enc = _Encoder(start)
    return enc.enc(value), start + len(enc.memo)


def dumps_parts(parts: list[tuple[str, Any]], engine_version: str) -> bytes:
    """``dumps`` of a dict whose values were encoded (in this order) by ``encode_part``,
    the first from number 1 on (the dict itself is number 0)."""
    doc = {"format": FORMAT, "version": VERSION, "engine": engine_version,
           "state": ["M", 0, [[k, v] for k, v in parts]]}
    return zlib.compress(orjson.dumps(doc), 1)


def loads(blob: bytes, engine_version: str) -> dict[str, Any]:
    """The state written by ``dumps``; SnapshotError for anything else."""
    try:
        doc = orjson.loads(zlib.decompress(bytes(blob)))
    except (zlib.error, orjson.JSONDecodeError, TypeError) as exc:
        raise SnapshotError(f"not a snapshot: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SnapshotError("not a snapshot")
    if doc.get("version") != VERSION or doc.get("engine") != engine_version:
        raise SnapshotError("snapshot of another version")
    try:
        state = _Decoder().dec(doc.get("state"))
    except RecursionError:
        raise SnapshotError("snapshot nested too deeply") from None
    if not isinstance(state, dict):
        raise SnapshotError("snapshot state is not a mapping")
    return state
