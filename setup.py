"""Build: the package as Python, plus the replay engine's hot modules compiled by Cython.

Why compile: a full replay spends about half its time in the engine (``docs/benchmarks.md``,
"A compiled engine"); Cython compiles those modules unchanged, and with annotations *not*
used as C types (``annotation_typing=False``) the compiled code keeps Python's semantics:
the same objects, the same Decimal arithmetic, the same answers, a little faster. The
``.py`` files ship as well: where nothing can be compiled (no C compiler, no Python
headers, ``BACKFLUSH_PURE=1``) the build says so and installs pure Python, which gives the
same answers, slower. Everything else is configured in ``pyproject.toml``.

An editable install compiles in place, next to the sources; ``tests/conftest.py`` refuses to
run against a compiled module older than its ``.py`` (``make venv`` rebuilds them).
"""

from __future__ import annotations

import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The replay's hot loop: the engine and the modules it calls per event. Each must run the
# same compiled or not (no frame inspection, no reliance on exact types of annotations).
COMPILED = {
    "backflush.projections.engine": "projections/engine.py",
    "backflush.projections.orderbook": "projections/orderbook.py",
    "backflush.projections.stock": "projections/stock.py",
    "backflush.projections.flusher": "projections/flusher.py",
    "backflush.projections.rules": "projections/rules.py",
    "backflush.projections.orderstate": "projections/orderstate.py",
    "backflush.projections.records": "projections/records.py",
    "backflush.projections.changelog": "projections/changelog.py",
    "backflush.ledger.codec": "ledger/codec.py",
}


class _Optional(build_ext):
    """``build_ext`` that falls back to pure Python when a module cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._fallback(exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # this module failed: it stays Python
            self._fallback(exc, ext.name)

    @staticmethod
    def _fallback(exc: Exception, name: str = "the engine") -> None:
        print(f"backflush: not compiling {name} ({exc}); installing it as pure Python",
              file=sys.stderr)


def _extensions() -> list:
    if os.environ.get("BACKFLUSH_PURE", "").strip() not in ("", "0"):
        return []
    if platform.python_implementation() != "CPython":
        return []  # PyPy and others run extension modules through an emulation: slower
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        print("backflush: Cython not found; installing pure Python", file=sys.stderr)
        return []
    # The full dotted name, so classes and functions report the module they are imported as.
    # No debug information: a third of the size, and nobody steps through it in gdb.
    flags = [] if sys.platform == "win32" else ["-g0"]
    exts = [Extension(name, [path], extra_compile_args=flags) for name, path in COMPILED.items()]
    try:
        return cythonize(
            exts,
            language_level=3,
            quiet=True,
            compiler_directives={"annotation_typing": False, "binding": True},
        )
    except Exception as exc:  # a Cython that cannot translate them: they stay Python
        _Optional._fallback(exc)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": _Optional})
