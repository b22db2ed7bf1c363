"""Rendering query results: a readable table (default), ``--json`` or ``--csv``.

Quantities are Decimals inside; JSON and CSV carry them as decimal strings so that no
consumer ever sees a binary float.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import wraps
from typing import Any

import click
import orjson
from backflush.cli.app import Fail
from backflush.projections.findings import fmt_qty as _dec


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return _dec(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """A JSON array of the rows, quantities as decimal strings."""
    return orjson.dumps([_plain(r) for r in rows], option=orjson.OPT_INDENT_2).decode()


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header row; nested values as compact JSON."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        out = []
        for c in columns:
            v = _plain(r.get(c))
            if isinstance(v, (dict, list)):
                v = orjson.dumps(v).decode()
            out.append("" if v is None else v)
        w.writerow(out)
    return buf.getvalue()


def to_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    if not rows:
        return "(no rows)"
    cells = []
    for r in rows:
        line = []
        for c in columns:
            v = _plain(r.get(c))
            if isinstance(v, dict):
                v = ", ".join(f"{k}={x}" for k, x in v.items())
            elif isinstance(v, list):
                v = ",".join(str(x) for x in v)
            line.append("" if v is None else str(v))
        cells.append(line)
    numeric = [
        all(isinstance(r.get(c), (Decimal, int)) or r.get(c) is None for r in rows)
        for c in columns
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    def fmt(vals: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(vals, widths, numeric, strict=True)
        ).rstrip()
    out = [fmt(columns), fmt(["-" * w for w in widths])]
    out.extend(fmt(line) for line in cells)
    return "\n".join(out)


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Render rows in the chosen format: "table", "json" or "csv"."""
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(rows, columns).rstrip("\n")
    return to_table(rows, columns)


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` / ``--csv`` flags, folded into one ``fmt`` argument."""

    @click.option("--json", "as_json", is_flag=True, help="Output a JSON array.")
    @click.option("--csv", "as_csv", is_flag=True, help="Output CSV.")
    @wraps(f)
    def inner(*args: Any, as_json: bool, as_csv: bool, **kw: Any) -> Any:
        if as_json and as_csv:
            raise Fail("--json and --csv are mutually exclusive")
        return f(*args, fmt="json" if as_json else "csv" if as_csv else "table", **kw)

    return inner
