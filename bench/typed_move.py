"""What typing the engine would buy, measured on its hottest primitive: ``Stock._move``.

A pick, a put and a transfer each move stock (about half the events of a plant), so
``_move`` is the engine's most frequent call. This script times 200,000 moves (the change
log drained every 5,000 moves, the cyclic collector off, as in a replay) in four forms:

- the engine's ``Stock`` as pure Python (``projections/stock.py`` loaded from its source);
- the engine's ``Stock`` as installed (compiled by Cython with Python semantics: today);
- the same body in a ``cdef class`` with typed attributes and a ``cpdef`` method, Decimal
  quantities;
- that ``cdef class`` with quantities as 64-bit integers (fixed point), as an engine with
  integer quantities would have them.

The two typed forms are built here with Cython in a temporary directory (they are an
experiment, not part of the package). Run: ``.venv/bin/python bench/typed_move.py``.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal, localcontext

# The body of ``Stock._move`` as a typed class: the same statements, typed locals.
_TYPED = '''
# cython: language_level=3
from decimal import Decimal
cdef object ZERO = Decimal(0)

cdef class Stock:
    cdef public dict _bins
    cdef public list balance_changes
    cdef public object _eid, _at, _seq, _fx

    def __init__(self):
        self._bins = {}
        self.balance_changes = []
        self._eid = "e"; self._at = None; self._seq = 0
        self._fx = None

    cdef _negative(self, key, QTY new):
        pass

    cpdef QTY _move(self, item, src, dst, batch, lp, QTY qty):
        cdef dict bins_of = self._bins
        cdef dict bins
        cdef QTY new, out, left
        k = (batch, lp)
        eid, at, seq = self._eid, self._at, self._seq
        cdef list log = self.balance_changes
        bins = bins_of.get((item, src))
        if bins is None:
            bins = {}
            bins_of[(item, src)] = bins
        out = -qty
        new = bins.get(k, ZERO) + out
        if new:
            bins[k] = new
        else:
            bins.pop(k, None)
        key = (item, src, batch, lp)
        log.append(("onhand", key, new, eid, at, seq))
        if new < ZERO and out < ZERO:
            self._negative(key, new)
        left = new
        bins = bins_of.get((item, dst))
        if bins is None:
            bins = {}
            bins_of[(item, dst)] = bins
        new = bins.get(k, ZERO) + qty
        if new:
            bins[k] = new
        else:
            bins.pop(k, None)
        key2 = (item, dst, batch, lp)
        log.append(("onhand", key2, new, eid, at, seq))
        if new < ZERO and qty < ZERO:
            self._negative(key2, new)
        fx = self._fx
        if fx is not None:
            fx.append((1, item, src, batch, lp, out))
        return left
'''

_SETUP = '''
from setuptools import Extension, setup
from Cython.Build import cythonize
setup(ext_modules=cythonize([Extension("typed_dec", ["typed_dec.pyx"]),
                             Extension("typed_int", ["typed_int.pyx"])], quiet=True))
'''


def _build(work: str) -> None:
    dec = _TYPED.replace("QTY ", "object ").replace("cpdef object", "cpdef")
    integer = (_TYPED.replace("QTY", "long long")
               .replace("cdef object ZERO = Decimal(0)", "cdef long long ZERO = 0"))
    for name, text in (("typed_dec.pyx", dec), ("typed_int.pyx", integer),
                       ("setup.py", _SETUP)):
        with open(os.path.join(work, name), "w") as fh:
            fh.write(text)
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=work,
                   check=True, capture_output=True)
    sys.path.insert(0, work)


def _engine_stock(pure: bool):
    from backflush.projections import stock

    if pure:
        path = stock.__file__.rsplit(".", 2)[0] + ".py" if not stock.__file__.endswith(
            ".py") else stock.__file__
        spec = importlib.util.spec_from_file_location("pure_stock", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        cls = mod.Stock
    else:
        cls = stock.Stock

    class Engine(cls):
        def __init__(self):
            self._init_stock()
            self._eid, self._at, self._seq, self._fx, self._cur_order = "e", None, 0, None, None

    return Engine


def _time(make, moves: list, stocked: dict, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        s = make()
        # Every source bin holds enough: no move goes below zero (a negative on-hand record
        # is the rare case, and only the engine's own class would make one).
        s._bins = {k: dict(v) for k, v in stocked.items()}
        mv, log = s._move, s.balance_changes
        t = time.perf_counter()
        for i in range(0, len(moves), 5000):
            for a, b, c, d, e, q in moves[i:i + 5000]:
                mv(a, b, c, d, e, q)
            log.clear()
        best = min(best, time.perf_counter() - t)
    return best / len(moves) * 1e9


def main() -> None:
    random.seed(1)
    items = [f"C{i:03d}" for i in range(60)]
    locs = [f"R{i}-IN" for i in range(20)] + ["BULK"]
    batches = [None] + [f"B{i}" for i in range(30)]
    base = [(random.choice(items), random.choice(locs), "IN_TRANSIT", random.choice(batches),
             None, random.choice([1, 2, 5, 10, 25, 100])) for _ in range(200_000)]
    dec = [(*m[:5], Decimal(m[5])) for m in base]
    ints = [(*m[:5], m[5] * 1_000_000) for m in base]
    big = 10**9
    stocked_dec = {(i, loc): {(b, None): Decimal(big) for b in batches}
                   for i in items for loc in locs}
    stocked_int = {k: {b: big * 1_000_000 for b in v} for k, v in stocked_dec.items()}
    with tempfile.TemporaryDirectory() as work:
        _build(work)
        import typed_dec
        import typed_int

        gc.disable()
        from backflush.projections.common import ARITHMETIC

        with localcontext(ARITHMETIC):
            rows = [
                ("engine Stock, pure Python", _engine_stock(True), dec, stocked_dec),
                ("engine Stock, as installed", _engine_stock(False), dec, stocked_dec),
                ("cdef class, Decimal", typed_dec.Stock, dec, stocked_dec),
                ("cdef class, int64", typed_int.Stock, ints, stocked_int),
            ]
            for name, make, moves, stocked in rows:
                print(f"{name:28s} {_time(make, moves, stocked):6.0f} ns per move")


if __name__ == "__main__":
    main()
