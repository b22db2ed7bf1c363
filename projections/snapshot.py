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

Layout (version 2): the document is that JSON with line breaks where whitespace may go, so
that it is written and read a line at a time (``_Encoder.write``, ``_Reader``): a first line
``{"format": …, "version": 2, "engine": …, "state":``, the state's lines, and a last line
``}``. The state's top containers, large containers and long orders take a line per entry:
an opening line (``["M",n,[``, ``["L",n,[``, ``["O",n,"Class",[``), then per entry a line
with its value (a dict's: ``[key,value]``, or ``[key,`` then the value's own lines and
``]``), each after the first led by a comma, then ``]]``. JSON strings never hold a raw line
break, so the lines split safely. Why: 20,000 open orders are 20 MB of this JSON but
several hundred MB as a tree of Python lists, which is what a whole-document parse builds.

Version 3: the same lines, compressed as one zlib stream or as several one after the other
(``Compressed`` parts: the engine's part of a checkpoint is compressed as it is written,
in the replay worker, so that neither process holds its uncompressed JSON whole).

Version 4: only what is reachable by more than one path is numbered; a list, dict, record or
parameter set reachable by one path only has ``null`` for its number (``["L", null, [...]]``)
and can never be referred to. Why: every number costs the writer an entry in its table of
objects met (~100 bytes) and the reader one in its table of objects read; 20,000 open
orders are ~450,000 containers and records, of which the orders and their BOM lines are
the ~130,000 referred to again (a line points back to its order). Which objects those are
is found before writing (``_shared``) from their reference counts: an object that only its
container refers to can be met once only.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from typing import Any

import orjson

FORMAT = "backflush-engine-snapshot"
VERSION = 4  # 2: in lines; 3: in several zlib streams; 4: shared objects numbered only
_READS = (2, 3, 4)  # each earlier document is a special case of the next: read as it was


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
_WRITE_PART = 64  # a container with more entries than this is written entry by entry


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        # the records' and the (slotted) dataclasses' __slots__ are their fields, in order
        names = _FIELDS[cls] = tuple(cls.__slots__)
    return names


_PLAIN = frozenset({type(None), str, int, bool})  # written as they are
_ATOMS = _PLAIN | {Decimal, datetime}  # never numbered, and hold nothing that is
_UNNUMBERED = frozenset({tuple, set, frozenset})  # written in full wherever they are met


def _values_of(cls: type) -> Callable[[Any], tuple]:
    """A function giving the values of a record's fields as a tuple (``attrgetter`` gives
    a lone value for a single field)."""
    names = _field_names(cls)
    get = attrgetter(*names)
    return get if len(names) > 1 else lambda v: (get(v),)


def _walk(root: Any, single: int, shared: dict[int, None], rcs: list[int] | None = None
          ) -> None:
    """Add to ``shared`` (as keys) the ids of the lists, dicts, records and parameter sets that
    ``_Encoder`` may meet more than once below ``root``: those with more references than
    ``single`` when taken off the stack, and all of them below a tuple or set that may
    itself be met more than once (a tuple is written in full wherever it is met).

    Every object is counted at the same place (``rc = getrefcount(v)``), taken off
    ``todo`` into ``v``, with no other local of this function referring to it, so that an
    object that only one container refers to always shows the same count (``_single``
    measures it by running this very code; ``rcs`` records the counts for it). Objects that
    something outside the state also refers to (a cache, a caller's variable) are numbered
    needlessly, which costs a number and nothing else."""
    from backflush.projections.rules import Params

    getrc = sys.getrefcount
    atoms = _ATOMS
    unnumbered = _UNNUMBERED
    fields = {c: _values_of(c) for c in _classes().values()}
    todo: list[Any] = [root]
    many: list[Any] = []  # met below a tuple or set that may be met more than once
    push = todo.extend
    pop = todo.pop
    while todo or many:
        if todo:
            v = pop()
            t = type(v)
            if t in atoms:
                continue
            rc = getrc(v)
            if rcs is not None:
                rcs.append(rc)
            again = rc > single
        else:
            v = many.pop()
            t = type(v)
            if t in atoms:
                continue
            again = True
        if t in unnumbered:
            (many.extend if again else push)(v)
            continue
        if again:
            if id(v) in shared:
                continue  # numbered, and its contents taken already: met once
            shared[id(v)] = None
        if t is list:
            push(v)
        elif t is dict:
            push(v.keys())
            push(v.values())
        elif t in fields:
            push(fields[t](v))
        elif t is Params:
            push(v.rules.rules)  # (its other fields are strings and a quantity)
        # anything else: ``_Encoder.enc`` refuses it


_SINGLE: list[int | None] = []  # ``_single()``, measured once


def _single() -> int | None:
    """The count ``_walk`` sees for an object that only its container refers to, measured
    by running ``_walk`` on a probe; None where counts cannot be had or do not behave as
    expected (another Python), and then every object is numbered, as up to version 3."""
    if not _SINGLE:
        value = None
        if hasattr(sys, "getrefcount"):
            rcs: list[int] = []
            _walk([[[]]], 1 << 30, {}, rcs)  # root, its list, that list's list
            twice: list[int] = []
            x: list = []
            probe = [x, x]
            del x
            _walk(probe, 1 << 30, {}, twice)  # root, then the same list twice
            del probe
            if len(rcs) == 3 and rcs[1] == rcs[2] and len(twice) == 3 \
                    and twice[1] > rcs[2] and twice[2] > rcs[2]:
                value = rcs[2]
        _SINGLE.append(value)
    return _SINGLE[0]


def _shared(root: Any, forced: tuple[int, ...] = ()) -> dict[int, None] | None:
    """The ids of the objects below ``root`` that a document must number (see ``_walk``),
    as the keys of a dict (``_Encoder`` puts their numbers in it); ``root`` and the objects
    of the ids ``forced`` always are (ids: holding the objects here would count as a
    reference). None: number every object."""
    single = _single()
    if single is None:
        return None
    shared: dict[int, None] = {}
    _walk(root, single, shared)
    shared[id(root)] = None  # (after the walk, which takes the contents of what it numbers)
    shared.update(dict.fromkeys(forced))
    return shared


class _Encoder:
    def __init__(self, start: int = 0, shared: dict[int, None] | None = None) -> None:
        from backflush.projections.rules import Params

        self.start = start  # the number of the first shared object met
        self.part = _WRITE_PART  # ``write``: containers larger than this go entry by entry
        # id -> number of the objects numbered so far; with ``shared`` (``_shared``), its
        # keys are all the ids to number, each None until met (one table, not two)
        self.every = shared is None
        self.memo: dict[int, int | None] = {} if shared is None else shared
        self.count = 0  # objects numbered
        self.keep: list[Any] = []  # ids stay valid while encoding
        self.classes = {c: n for n, c in _classes().items()}
        self.params = Params
        self.order_state = next(c for c in self.classes if c.__name__ == "OrderState")
        # a record's fields in one call: a tuple of their values, in ``__slots__`` order
        self.fields = {c: _values_of(c) for c in self.classes}
        # ``write`` into a zlib stream: the bytes written so far are compressed (onto
        # ``zout``) whenever they pass _SPILL, between two entries
        self.z: Any = None
        self.zout = Compressed()
        self.size = 0  # bytes of JSON compressed so far

    def _spill(self, out: bytearray) -> None:
        if self.z is not None and len(out) >= _SPILL:
            self.size += len(out)
            self.zout += self.z.compress(out)
            del out[:]

    def _number(self, v: Any) -> int | None:
        """The number of ``v``, met for the first time; None if it is met only once."""
        if not self.every and id(v) not in self.memo:
            return None
        n = self.memo[id(v)] = self.start + self.count
        self.count += 1
        self.keep.append(v)
        return n

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
        return self._node(v, t)

    def _node(self, v: Any, t: type) -> Any:
        """``enc`` of a container or record. (Apart from ``enc``, which is called for
        every value: the comprehensions here make cells, which cost every call.)"""
        # (values that are written as they are skip the call: most of a state's values)
        plain, enc = _PLAIN, self.enc
        if t is tuple:
            return ["t", [x if type(x) in plain else enc(x) for x in v]]
        if t is set or t is frozenset:
            items = sorted((enc(x) for x in v), key=orjson.dumps)
            return ["s" if t is set else "f", items]
        n = self.memo.get(id(v))
        if n is not None:
            return ["R", n]
        n = self._number(v)
        if t is list:
            return ["L", n, [x if type(x) in plain else enc(x) for x in v]]
        if t is dict:
            return ["M", n, [[k if type(k) in plain else enc(k), x if type(x) in plain
                              else enc(x)] for k, x in v.items()]]
        if t is self.params:
            return ["P", n, [v.default_input_location, enc(v.tolerance_pct),
                             enc(list(v.rules.rules)), v.source]]
        name = self.classes.get(t)
        if name is None:
            raise SnapshotError(f"no snapshot encoding for {t.__name__}")
        return ["O", n, name, [x if type(x) in plain else enc(x) for x in self.fields[t](v)]]

    def _in_lines(self, v: Any, depth: int) -> bool:
        """Whether ``write`` writes ``v`` in lines of its own rather than as one value: the
        top containers, large ones, long orders, and small containers holding any of these
        (a plant with one open order of 200,000 events: the engine's table of open orders
        has one entry, and was built whole as a tree of ten times its JSON, ~130 MB)."""
        t = type(v)
        if t is dict or t is list:
            lines = depth < 2 or len(v) > self.part or any(
                self._in_lines(x, depth + 1) for x in (v.values() if t is dict else v)
                if type(x) not in _PLAIN)
        else:
            lines = t is self.order_state and len(v.events) > self.part
        return lines and self.memo.get(id(v)) is None

    def write(self, v: Any, out: bytearray, depth: int = 0) -> None:
        """Append to ``out`` the JSON of ``enc(v)`` in lines (see the module docstring),
        without building it whole.

        The state's top containers, every large container and every long order are written
        entry by entry (field by field), a line each; what is below them is encoded and
        serialised one entry at a time. The tree ``enc`` builds costs about ten times its
        JSON in memory (a list per node, a string per quantity): for 20,000 open orders,
        400 MB against 40 MB of bytes. Objects are numbered in the order ``enc`` meets them.
        """
        if not self._in_lines(v, depth):
            # (into the bytearray at once: each of orjson's results holds a 4 kB buffer)
            out += orjson.dumps(self.enc(v))
            return
        t = type(v)
        n = b"null" if (k := self._number(v)) is None else b"%d" % k
        depth += 1
        if t is dict:
            out += b'["M",%s,[' % n
            for i, (k, x) in enumerate(v.items()):
                out += b"\n,[" if i else b"\n["
                out += orjson.dumps(self.enc(k))
                if self._in_lines(x, depth):
                    out += b",\n"
                    self.write(x, out, depth)
                    out += b"\n]"
                else:
                    out += b","
                    out += orjson.dumps(self.enc(x))
                    out += b"]"
                self._spill(out)
        else:
            if t is list:
                out += b'["L",%s,[' % n
                values: Any = v
            else:
                out += b'["O",%s,"%s",[' % (n, self.classes[t].encode())
                values = (getattr(v, f) for f in _field_names(t))
            for i, x in enumerate(values):
                out += b"\n," if i else b"\n"
                self.write(x, out, depth)
                self._spill(out)
        out += b"\n]]"


class _Decoder:
    def __init__(self) -> None:
        from backflush.projections.rules import Params

        self.objs: dict[int, Any] = {}
        self.classes = _classes()
        self.params = Params
        # The engine shares its strings and quantities (an item code, ZERO); read back one
        # object per occurrence, 10,000 open orders took 85 MB instead of 40. Both kinds
        # are immutable: one object per distinct text is the same state.
        self.strs: dict[str, str] = {}
        self.decimals: dict[str, Decimal] = {}

    def _new(self, n: Any, obj: Any) -> Any:
        if n is None:
            return obj  # met once only: never referred to (version 4)
        if type(n) is not int or n in self.objs:
            raise SnapshotError("bad object number")
        self.objs[n] = obj
        return obj

    def dec(self, v: Any) -> Any:
        t = type(v)
        if t is str:
            return self.strs.setdefault(v, v)
        if v is None or t is int or t is bool:
            return v
        if t is not list or not v or type(v[0]) is not str:
            raise SnapshotError("malformed node")
        tag = v[0]
        try:
            if tag == "D":
                d = self.decimals.get(v[1])
                if d is None:
                    d = self.decimals[v[1]] = Decimal(v[1])
                return d
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


def dumps(state: dict[str, Any], engine_version: str, part: int = _WRITE_PART) -> bytes:
    """A snapshot document for ``state`` (attribute name -> value), compressed."""
    # (its values numbered as ``dumps_parts`` numbers each part: the same document)
    enc = _Encoder(0, _shared(state, tuple(map(id, state.values()))))
    enc.part = part
    body = bytearray()
    enc.write(state, body)
    return _compressed([_head(engine_version), body, b"\n}"])


def _head(engine_version: str) -> bytes:
    head = orjson.dumps({"format": FORMAT, "version": VERSION, "engine": engine_version,
                         "state": None})
    return head[:-5] + b"\n"  # "state": then the state's lines


class Compressed(bytearray):
    """A part of a document compressed already: a zlib stream of its own, which
    ``dumps_parts`` puts between the streams of the other parts (version 3).

    Mutable, so that it grows as it is compressed rather than being joined from pieces at
    the end: with 20,000 open orders the pieces and their join were two copies of several
    MB at the replay worker's peak."""


def _compressed(pieces: list[bytes | bytearray]) -> bytes:
    z = zlib.compressobj(1)
    out = []
    for p in pieces:
        if type(p) is Compressed:
            out.append(z.flush())
            out.append(p)
            z = zlib.compressobj(1)
        else:
            out.append(z.compress(p))
    out.append(z.flush())
    return b"".join(out)


def encode_part(value: Any, start: int) -> tuple[Any, int]:
    """``value`` encoded as one part of a state whose shared objects before it took the
    numbers below ``start``, as a tree (tests compare ``encode_part_json`` with it);
    returns the encoded part and the next free number."""
    enc = _Encoder(start, _shared(value))
    return enc.enc(value), start + enc.count


def encode_part_json(value: Any, start: int, part: int = _WRITE_PART
                     ) -> tuple[bytearray, int]:
    """``value`` encoded as one part of a state whose shared objects before it took the
    numbers below ``start``, as JSON in lines (``_Encoder.write``; containers of more than
    ``part`` entries entry by entry); returns it and the next free number.

    Its memory is the bytes', not a tree's. Lets one process encode the engine and another
    the rest of the state, joined by ``dumps_parts``: the very document ``dumps`` writes,
    provided the parts share no object."""
    enc = _Encoder(start, _shared(value))
    enc.part = part
    out = bytearray()
    enc.write(value, out, 1)  # (a value of the state's top dict, as ``dumps`` writes it)
    return out, start + enc.count


def encode_part_compressed(value: Any, start: int, part: int = _WRITE_PART
                           ) -> tuple[Compressed, int, int]:
    """``encode_part_json``, compressed as it is written (its JSON is never whole in
    memory: 20,000 open orders are ~80 MB of it); returns the part, the next free number
    and the size of its JSON in bytes."""
    enc = _Encoder(start, _shared(value))
    enc.part = part
    enc.z = zlib.compressobj(1)
    out = bytearray()
    enc.write(value, out, 1)
    enc.size += len(out)
    enc.zout += enc.z.compress(out)
    del out
    enc.zout += enc.z.flush()
    return enc.zout, start + enc.count, enc.size


def dumps_parts(parts: list[tuple[str, bytes | bytearray]], engine_version: str) -> bytes:
    """``dumps`` of a dict whose values were encoded (in this order) by ``encode_part_json``
    or ``encode_part_compressed``, the first from number 1 on (the dict itself is number 0):
    the same text, in one zlib stream or several."""
    pieces: list[bytes | bytearray] = [_head(engine_version), b'["M",0,[']
    for i, (k, v) in enumerate(parts):
        pieces.append(b"\n%s[%s,\n" % (b"," if i else b"", orjson.dumps(k)))
        pieces.append(v)
        pieces.append(b"\n]")
    pieces.append(b"\n]]\n}")
    return _compressed(pieces)


def _lines(blob: bytes) -> Iterator[bytes]:
    """The lines of a compressed document (one zlib stream or several one after the
    other), decompressed a piece at a time."""
    z = zlib.decompressobj()
    fed = False  # whether the current stream has begun
    view = memoryview(blob)
    rest = b""
    for i in range(0, len(view), _READ):
        chunk: Any = view[i:i + _READ]
        while chunk:
            data = rest + z.decompress(chunk)
            fed = True
            *done, rest = data.split(b"\n")
            yield from done
            if not z.eof:
                break
            chunk = z.unused_data  # the next stream begins after this one's end
            z, fed = zlib.decompressobj(), False
    data = rest + z.flush()
    if fed and not z.eof or not view:
        raise SnapshotError("not a snapshot: truncated")
    yield from data.split(b"\n")


# Compressed bytes decompressed at a time: each is ~8 times as many bytes of lines, held
# twice while split (a 1 MB step cost 24 MB more at the peak of reading 20,000 orders).
_READ = 1 << 17
_SPILL = 1 << 20  # JSON bytes ``encode_part_compressed`` holds before compressing them


def loads(blob: bytes, engine_version: str) -> dict[str, Any]:
    """The state written by ``dumps``; SnapshotError for anything else.

    Read line by line (``_Reader``): the state is built as it is read, never held as a
    tree of the whole document as well."""
    try:
        lines = _lines(bytes(blob))
        first = next(lines, b"")
        if not first.endswith(b'"state":'):
            raise SnapshotError("not a snapshot")
        doc = orjson.loads(first + b"null}")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise SnapshotError("not a snapshot")
        if doc.get("version") not in _READS or doc.get("engine") != engine_version:
            raise SnapshotError("snapshot of another version")
        state = _Reader().read(lines)
    except SnapshotError:
        raise
    except (zlib.error, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise SnapshotError(f"not a snapshot: {exc}") from None
    except RecursionError:
        raise SnapshotError("snapshot nested too deeply") from None
    if not isinstance(state, dict):
        raise SnapshotError("snapshot state is not a mapping")
    return state


class _Reader(_Decoder):
    """Builds the state from a document's lines (``_Encoder.write``): a stack of the
    containers being filled; each complete line decoded (``_Decoder.dec``) and put in."""

    _OPEN = (b'["L",', b'["M",', b'["O",')

    def read(self, lines: Iterator[bytes]) -> Any:
        stack: list[list] = []  # [container, kind, key or field index]
        done = _NONE = object()
        for line in lines:
            if done is not _NONE:  # the state is complete: only the document's end is left
                if line != b"}" or next(lines, None) is not None:
                    raise SnapshotError("malformed snapshot: data after the state")
                return done
            if line[:1] == b",":
                line = line[1:]
            top = stack[-1] if stack else None
            if line == b"]]":
                if top is None:
                    raise SnapshotError("malformed snapshot: unbalanced")
                stack.pop()
                value = self._close(top)
            elif line == b"]":
                if top is None or top[1] != "M" or top[2] is not _DONE:
                    raise SnapshotError("malformed snapshot: unbalanced")
                top[2] = _NONE_KEY
                continue
            elif line.endswith(b"[") and line[:5] in self._OPEN:
                node = orjson.loads(line + b"]]")
                stack.append(self._open(node))
                continue
            elif line.endswith(b",") and top is not None and top[1] == "M":
                if top[2] is not _NONE_KEY:
                    raise SnapshotError("malformed snapshot: entry in an entry")
                top[2] = self.dec(orjson.loads(line + b"0]")[0])
                continue
            elif top is not None and top[1] == "M" and top[2] is _NONE_KEY:
                pair = orjson.loads(line)
                if type(pair) is not list or len(pair) != 2:
                    raise SnapshotError("malformed snapshot: not an entry")
                key = self.dec(pair[0])
                top[0][key] = self.dec(pair[1])
                continue
            else:
                value = self.dec(orjson.loads(line))
            if not stack:
                done = value
            else:
                self._put(stack[-1], value)
        raise SnapshotError("not a snapshot: truncated")

    def _open(self, node: Any) -> list:
        tag, n = node[0], node[1]
        if tag == "O":
            cls = self.classes.get(node[2]) if len(node) == 4 else None
            if cls is None:
                raise SnapshotError(f"unknown record class {node[2:3]!r}")
            return [self._new(n, object.__new__(cls)), "O", 0]
        if tag == "M":
            return [self._new(n, {}), "M", _NONE_KEY]
        return [self._new(n, []), "L", None]

    def _put(self, frame: list, value: Any) -> None:
        obj, kind, at = frame
        if kind == "L":
            obj.append(value)
        elif kind == "O":
            names = _field_names(type(obj))
            if at >= len(names):
                raise SnapshotError(f"{type(obj).__name__}: wrong number of fields")
            object.__setattr__(obj, names[at], value)
            frame[2] = at + 1
        else:
            if at is _NONE_KEY or at is _DONE:
                raise SnapshotError("malformed snapshot: a value without its key")
            obj[at] = value
            frame[2] = _DONE

    def _close(self, frame: list) -> Any:
        obj, kind, at = frame
        if kind == "O" and at != len(_field_names(type(obj))):
            raise SnapshotError(f"{type(obj).__name__}: wrong number of fields")
        if kind == "M" and at is not _NONE_KEY:
            raise SnapshotError("malformed snapshot: unbalanced")
        return obj


_NONE_KEY = object()  # a dict being read expects its next entry
_DONE = object()  # a dict being read has the value of its entry; its "]" comes next
