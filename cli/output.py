"""Rendering query results: a readable table (default), ``--json``, ``--nl``, ``--csv``, ``--tsv``.

Quantities are Decimals inside; every machine format carries them as decimal strings (JSON)
or plain decimal text (CSV/TSV), so no consumer ever sees a binary float.

- ``--json``: a JSON array (DESIGN's keys); with ``--meta`` an object
  ``{"meta": {...}, "rows": [...]}``.
- ``--nl``: one JSON object a line; with ``--meta`` the first line is ``{"meta": {...}}``.
- ``--csv`` / ``--tsv``: one header row, no JSON in any cell: a nested dict becomes dotted
  columns (``by_trigger.finish``), a list of plain values is joined with ``;``. A text cell
  starting with ``= + - @``, TAB or CR is prefixed with ``'`` so a spreadsheet shows it
  instead of running it (CSV injection). Numeric cells (a quantity such as ``-5``) are exempt:
  a spreadsheet reads them as numbers, never as formulas, and prefixing them would turn
  every negative quantity into text. TSV escapes ``\\``, TAB, LF and CR as ``\\\\ \\t \\n
  \\r`` (the PostgreSQL text convention), so a row is always one line.
- table: control characters, ESC, line breaks and bidi overrides are shown as escapes
  (``\\x1b``, ``\\n``, ``\\u202e``) so a name cannot repaint the terminal or forge rows; the
  table fits the terminal width (the widest text columns are cut with ``…``); severities show
  as ``ERROR``/``WARN``/``info`` markers, coloured only on a terminal without ``NO_COLOR``;
  a footer gives the provenance and a what-if policy is announced on the first line.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache, wraps

from backflush.projections.common import fmt_qty as _dec

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    import re
    from typing import Any

FORMATS = ("table", "json", "nl", "csv", "tsv")

# The columns of each query's rows (DESIGN §7 JSON keys), in output order. Here rather than
# beside the click commands: the click-free path (``cli.quick``) renders them too.
ONHAND_COLUMNS = ["item", "location", "batch", "lp", "qty"]
WIP_COLUMNS = ["resource", "location", "kind", "order", "op", "item", "batch", "qty"]
CONSUMPTION_COLUMNS = [
    "order", "line", "item", "principle", "expected", "posted", "variance", "by_trigger",
]
HOURS_COLUMNS = ["order", "op", "resource", "standard", "reported"]
FINDING_COLUMNS = ["code", "severity", "order", "line", "item", "qty", "events", "message"]


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


def _json_default(v: Any) -> Any:
    """What ``_plain`` makes of a value orjson does not write as ``_plain`` would."""
    if isinstance(v, (Decimal, datetime)):
        return _plain(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


# --- escaping --------------------------------------------------------------------------------

# C0 and C1 controls, DEL, and the Unicode format characters that reorder or hide text
# (bidi embeddings/overrides/isolates, zero-width joiners, line/paragraph separators, BOM).
# Compiled on first use: a query answering in JSON needs neither pattern.
@cache
def _unsafe() -> re.Pattern[str]:
    import re  # here: ``re`` (with ``enum``) is ~3 ms of a query process's start

    return re.compile(
        "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
    )


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _esc_char(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def escape_text(s: str) -> str:
    """``s`` with every control, line-break and bidi character shown as a visible escape."""
    if s.isprintable():  # every character the pattern matches is one ``isprintable`` refuses
        return s
    unsafe = _unsafe()
    return s if unsafe.search(s) is None else unsafe.sub(_esc_char, s)


def escape_lines(text: str) -> str:
    """``escape_text`` line by line: the line breaks of ``text`` stay, nothing else does."""
    return "\n".join(escape_text(line) for line in text.split("\n"))


_NUMBER = r"-?\d+(\.\d+)?"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str, numeric: bool) -> str:
    """Prefix ``'`` to a text cell a spreadsheet would run as a formula (CSV injection).

    A numeric cell is left alone (see the module docstring); so is text that is a plain
    number, since no spreadsheet runs ``-5``.
    """
    if numeric or not text.startswith(_FORMULA_START):
        return text
    import re

    if re.fullmatch(_NUMBER, text):
        return text
    return "'" + text


# --- flattening for CSV/TSV ------------------------------------------------------------------


def _flatten_into(out: dict[str, Any], prefix: str, v: Any) -> None:
    if isinstance(v, dict):
        if not v:
            out.setdefault(prefix, None)
        for k, x in v.items():
            _flatten_into(out, f"{prefix}.{k}", x)
    elif isinstance(v, (list, tuple)):
        if any(isinstance(x, (dict, list, tuple)) for x in v):
            for i, x in enumerate(v):
                _flatten_into(out, f"{prefix}.{i}", x)
        else:
            out[prefix] = ";".join("" if x is None else str(_plain(x)) for x in v)
    else:
        out[prefix] = v


def flatten(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> tuple[list[str], list[dict]]:
    """Rows with nested values spread over dotted columns; returns (columns, flat rows)."""
    flat_rows = _flat_rows(rows, columns)
    cols: dict[str, None] = {}
    # Column order: the declared order, each nested column's keys in first-seen order.
    for c in columns:
        cols[c] = None
        for flat in flat_rows:
            for k in flat:
                if k != c and k.startswith(c + "."):
                    cols.setdefault(k, None)
        if any(k.startswith(c + ".") for k in cols) and all(
            flat.get(c) is None for flat in flat_rows
        ):
            del cols[c]
    return list(cols), flat_rows


def _flat_rows(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> list[dict]:
    """Each row's values spread over dotted keys (``flatten`` without the column order)."""
    flat_rows: list[dict[str, Any]] = []
    for r in rows:
        flat: dict[str, Any] = {}
        for c in columns:
            _flatten_into(flat, c, r.get(c))
        flat_rows.append(flat)
    return flat_rows


def _cell(v: Any) -> tuple[str, bool]:
    numeric = isinstance(v, (Decimal, int)) and not isinstance(v, bool)
    p = _plain(v)
    return ("" if p is None else str(p)), numeric


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], delimiter: str = ",") -> str:
    """CSV (or TSV with ``delimiter="\\t"``): header row, flat cells, formula-safe."""
    cols, flat_rows = flatten(rows, columns)
    buf = io.StringIO()
    tsv = delimiter == "\t"

    def put(vals: list[str]) -> None:
        buf.write(("\t" if tsv else ",").join(vals) + "\n")

    put([_tsv_escape(c) if tsv else _csv_quote(c) for c in cols])
    for flat in flat_rows:
        out = []
        for c in cols:
            text, numeric = _cell(flat.get(c))
            text = spreadsheet_safe(text, numeric)
            out.append(_tsv_escape(text) if tsv else _csv_quote(text))
        put(out)
    return buf.getvalue()


def _csv_quote(s: str) -> str:
    # RFC 4180 quoting; unlike the csv module with "\n" line ends, a lone CR is quoted too.
    # Four searches in C: a generator over the four characters took most of a long CSV.
    if "," in s or '"' in s or "\n" in s or "\r" in s:
        return '"' + s.replace('"', '""') + '"'
    return s


def _tsv_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# Up to this many rows a JSON answer is written by the standard library's encoder (the same
# bytes, checked by tests/test_output.py): orjson's import loads dataclasses, inspect and uuid
# (~10 ms), more than encoding a few thousand rows takes. Beyond it orjson is worth loading.
LIGHT_ROWS = 2000


def _light(body: Any, rows: int) -> bool:
    """Whether the standard encoder writes ``body`` exactly as orjson would: few rows, and
    no float (the two format floats differently; answers carry decimals as strings)."""
    if rows > LIGHT_ROWS:
        return False
    stack = [body]
    while stack:
        v = stack.pop()
        if type(v) is float:
            return False
        if type(v) is dict:
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return True


def _dumps(body: Any, rows: int, indent: bool = False) -> str:
    if _light(body, rows):
        text = _plain_json(body, indent)
        if text is not None:
            return text
        import json

        if indent:
            return json.dumps(body, ensure_ascii=False, indent=2)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    import orjson

    return orjson.dumps(body, option=orjson.OPT_INDENT_2 if indent else 0).decode()


class _NotPlain(Exception):
    pass


def _plain_json(body: Any, indent: bool) -> str | None:
    """``json.dumps(body, ensure_ascii=False)`` (``indent=2``, else compact separators), the
    same text, by ``json``'s own C string encoder and without the ``json`` package: that
    imports ``re`` (with ``enum``, ~3 ms of a 30 ms query). None for anything but dicts with
    str keys, lists, str, int, bool and None (``json.dumps`` writes those)."""
    try:
        from _json import encode_basestring as quote
    except ImportError:
        return None
    out: list[str] = []
    put = out.append
    colon, comma = (": ", ",") if indent else (":", ",")

    def enc(v: Any, level: int) -> None:
        t = type(v)
        if t is str:
            put(quote(v))
        elif v is None:
            put("null")
        elif v is True:
            put("true")
        elif v is False:
            put("false")
        elif t is int:
            put(int.__repr__(v))
        elif t is list or t is dict:
            if not v:
                put("[]" if t is list else "{}")
                return
            inner = "\n" + "  " * (level + 1) if indent else ""
            put(("[" if t is list else "{") + inner)
            for i, item in enumerate(v.items() if t is dict else v):
                if i:
                    put(comma + inner)
                if t is dict:
                    k, item = item
                    if type(k) is not str:
                        raise _NotPlain
                    put(quote(k) + colon)
                enc(item, level + 1)
            put(("\n" + "  " * level if indent else "") + ("]" if t is list else "}"))
        else:
            raise _NotPlain

    try:
        enc(body, 0)
    except _NotPlain:
        return None
    return "".join(out)


def to_json(rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """A JSON array of the rows (or ``{"meta", "rows"}``), quantities as decimal strings."""
    body: Any = [_plain(r) for r in rows]
    n = len(body)
    if meta is not None:
        body = {"meta": meta, "rows": body}
    return _dumps(body, n, indent=True)


def to_nl(rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    """One JSON object a line (``{"meta": …}`` first when asked for)."""
    plain = [_plain(r) for r in rows]
    lines = [] if meta is None else [_dumps({"meta": meta}, 1)]
    lines.extend(_dumps(r, len(plain)) for r in plain)
    return "\n".join(lines)


# --- tables ----------------------------------------------------------------------------------

SEVERITY_MARK = {"error": "ERROR", "warning": "WARN", "info": "info"}
_SEVERITY_SGR = {"error": "1;31", "warning": "33", "info": "36"}


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def terminal_width() -> int:
    """Columns to fit: ``COLUMNS`` if set, else the terminal's (stdout's, else stderr's, so
    ``backflush … | head`` still fits the screen), else 160 (a file: little to cut)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None and stream.isatty():
                return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            continue
    return 160


def _table_when(v: datetime) -> str:
    """A timestamp for a table: to the second, ``Z`` for UTC ("2026-11-03 12:00:00Z")."""
    text = v.replace(microsecond=0).isoformat(sep=" ")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _table_text(v: Any) -> str:
    t = type(v)
    if t is str:  # most cells (a long table's), as the general path below makes them
        return escape_text(v)
    if v is None:
        return ""
    if t is int:
        return str(v)
    if isinstance(v, datetime):
        return _table_when(v)
    p = _plain(v)
    if isinstance(p, dict):
        p = ", ".join(f"{k}={x}" for k, x in p.items())
    elif isinstance(p, list):
        p = ",".join("" if x is None else str(x) for x in p)
    return "" if p is None else escape_text(str(p))


WRAP_COLUMNS = ("message",)
KEEP_COLUMNS = ("code", "severity", "type", "at", "recorded")


def _fit(widths: list[int], heads: list[int], numeric: list[bool], budget: int,
         wrap: int | None, keep: list[bool]) -> list[int]:
    """Narrow the columns until a row fits ``budget`` characters.

    First the wrapped column (``message``, wrapped onto continuation lines) gives way down to
    30 characters, then the widest other text columns are cut down to their header or 10
    characters (codes are kept whole), then the wrapped column down to 16. Numbers are never
    cut; on a very narrow terminal every text column finally gives way.
    """
    widths = list(widths)
    gap = 2 * (len(widths) - 1)

    def over() -> int:
        return sum(widths) + gap - budget

    if wrap is not None and over() > 0:
        widths[wrap] = max(widths[wrap] - over(), min(widths[wrap], 30))
    while over() > 0:
        cand = [i for i, w in enumerate(widths)
                if not numeric[i] and not keep[i] and i != wrap and w > max(heads[i], 10)]
        if not cand:
            break
        i = max(cand, key=lambda j: widths[j])
        second = max([widths[j] for j in cand if j != i], default=0)
        widths[i] = max(widths[i] - max(1, min(over(), widths[i] - second)), max(heads[i], 10))
    if wrap is not None and over() > 0:
        widths[wrap] = max(widths[wrap] - over(), min(widths[wrap], 16))
    # A very narrow terminal: every text column gives way, widest first, down to 4; codes,
    # types and timestamps last.
    for last in (False, True):
        while over() > 0:
            cand = [i for i, w in enumerate(widths)
                    if not numeric[i] and w > 4 and (last or not keep[i])]
            if not cand:
                break
            i = max(cand, key=lambda j: widths[j])
            widths[i] -= 1
    return widths


def _cut(s: str, w: int) -> str:
    return s if len(s) <= w else s[: max(w - 1, 0)] + "…"


def _wrap_cell(s: str, w: int) -> list[str]:
    """Break ``s`` into lines of at most ``w`` characters, at spaces where possible."""
    out: list[str] = []
    while len(s) > w:
        cut = s.rfind(" ", 0, w + 1)
        if cut <= 0:
            cut = w
        out.append(s[:cut].rstrip())
        s = s[cut:].lstrip()
    out.append(s)
    return out


def to_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    width: int | None = None,
    colour: bool = False,
) -> str:
    """An aligned text table (numbers right-aligned) that fits ``width`` columns."""
    if not rows:
        return "(no rows)"
    cells = []
    for r in rows:
        line = []
        for c in columns:
            v = r.get(c)
            if c == "severity" and isinstance(v, str):
                v = SEVERITY_MARK.get(v, v)
            line.append(_table_text(v))
        cells.append(line)
    numeric = [
        all(isinstance(r.get(c), (Decimal, int)) or r.get(c) is None for r in rows)
        for c in columns
    ]
    budget = width or terminal_width()
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    if sum(widths) + 2 * (len(widths) - 1) > budget:
        # Too wide: first leave out the columns with no value in any row.
        used = [i for i in range(len(columns)) if any(row[i] for row in cells)]
        if used and len(used) < len(columns):
            columns = [columns[i] for i in used]
            cells = [[row[i] for i in used] for row in cells]
            numeric = [numeric[i] for i in used]
            widths = [widths[i] for i in used]
    heads = [len(c) for c in columns]
    wrap = next((i for i, c in enumerate(columns) if c in WRAP_COLUMNS and not numeric[i]), None)
    keep = [c in KEEP_COLUMNS or any(isinstance(r.get(c), datetime) for r in rows)
            for c in columns]
    widths = _fit(widths, heads, numeric, budget, wrap, keep)
    sev_col = list(columns).index("severity") if "severity" in columns else None

    def fmt(vals: Sequence[str], sev: str | None = None) -> list[str]:
        extra: list[str] = []
        parts = []
        for i, (v, w, num) in enumerate(zip(vals, widths, numeric, strict=True)):
            if i == wrap and len(v) > w:
                v, *extra = _wrap_cell(v, w)
            else:
                v = _cut(v, w)
            text = v.rjust(w) if num else v.ljust(w)
            if colour and sev is not None and i == sev_col and sev in _SEVERITY_SGR:
                text = f"\x1b[{_SEVERITY_SGR[sev]}m{text}\x1b[0m"
            parts.append(text)
        lines = ["  ".join(parts).rstrip()]
        if extra:
            indent = " " * (sum(widths[: wrap]) + 2 * wrap)
            lines.extend((indent + x).rstrip() for x in extra)
        return lines

    out = fmt(columns) + fmt(["-" * w for w in widths])
    for r, line in zip(rows, cells, strict=True):
        out.extend(fmt(line, r.get("severity") if sev_col is not None else None))
    return "\n".join(out)


def _wrap(line: str, width: int) -> list[str]:
    """Wrap a provenance line at its `` · `` separators to fit ``width``."""
    width = max(width, 20)
    out, cur = [], ""
    for part in line.split(" · "):
        nxt = part if not cur else f"{cur} · {part}"
        if cur and len(nxt) > width:
            out.append(cur)
            cur = "  " + part
        else:
            cur = nxt
    out.append(cur)
    # A part longer than the line (a long path, a digest) is broken, never cut: it is evidence.
    hard: list[str] = []
    for x in out:
        while len(x) > width:
            hard.append(x[:width])
            x = "  " + x[width:]
        hard.append(x)
    return hard


def with_provenance(text: str, meta: dict[str, Any] | None = None, width: int | None = None) -> str:
    """``text`` with a what-if warning first (when one applies) and a provenance footer."""
    before, after = provenance_lines(meta, width)
    return "\n".join([*before, text, *after])


def provenance_lines(meta: dict[str, Any] | None = None, width: int | None = None
                     ) -> tuple[list[str], list[str]]:
    """The lines ``with_provenance`` puts before and after a text (for one written out as
    it comes)."""
    from backflush.cli import provenance as P

    meta = meta if meta is not None else P.collect()
    width = width or terminal_width()
    before, after = [], ["--"]
    banner = P.what_if_banner(meta)
    if banner:
        banner = escape_text(banner)
        before.append(f"!!! {banner} !!!")
    for line in P.footer_lines(meta):
        after.extend("# " + escape_text(x) for x in _wrap(line, width - 2))
    if banner:
        after.append(f"!!! {banner} !!!")
    return before, after


# --- the entry points ------------------------------------------------------------------------


def _options() -> dict[str, Any]:
    # click is not loaded when the command line took the click-free path (``cli.quick``):
    # then there is no command context either.
    click = sys.modules.get("click")
    if click is None:
        return {}
    ctx = click.get_current_context(silent=True)
    return {} if ctx is None else ctx.meta.get("backflush.output", {})


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> str:
    """Render rows in the chosen format (one of `FORMATS`).

    Inside a command decorated with `output_options`, tables gain the provenance footer and
    ``--meta`` adds the provenance to JSON and ``--nl`` (read from click's current context).
    Called elsewhere (or twice in one command), it renders the bare rows.
    """
    opts = _options()
    first = bool(opts) and not opts.get("rendered")
    if opts:
        opts["rendered"] = True
    meta = None
    if first and (opts.get("meta") or fmt == "table"):
        from backflush.cli.provenance import collect

        meta = collect()
    if fmt == "json":
        return to_json(rows, meta if opts.get("meta") else None)
    if fmt == "nl":
        return to_nl(rows, meta if opts.get("meta") else None)
    if fmt == "csv":
        return to_csv(rows, columns).rstrip("\n")
    if fmt == "tsv":
        return to_csv(rows, columns, "\t").rstrip("\n")
    table = to_table(rows, columns, colour=use_colour())
    return with_provenance(table, meta) if meta is not None else table


FIRST_PAGE = 100  # rows of a streamed table's first page (the later pages have ``chunk``)


def render_stream(rows: Iterable[dict[str, Any]], columns: Sequence[str], fmt: str,
                  chunk: int = 2000) -> Iterator[str]:
    """`render` for a long result, as text pieces, with memory bounded. A table is aligned
    page by page: its first page has ``FIRST_PAGE`` rows, so an answer whose rows come slowly
    (findings and hours of a whole ledger come as the replay runs) starts printing at once,
    and the later pages ``chunk`` rows each. Tables repeat no header and end with one
    provenance footer;
    ``--json`` streams one array (``{"meta", "rows"}`` under ``--meta``); ``--nl`` and
    ``--json`` carry the meta first, as `render` does."""
    from itertools import islice

    opts = _options()
    want_meta = bool(opts) and not opts.get("rendered") and (opts.get("meta") or fmt == "table")
    if opts:
        opts["rendered"] = True  # the pieces below render bare; provenance is added here once
    meta = None
    if want_meta:
        from backflush.cli.provenance import collect

        # A table's provenance is its footer: the chain's head is read after the rows (at
        # the end, below), so the first rows wait for nothing but the query.
        meta = collect(chain=fmt != "table")
    it = iter(rows)
    if fmt in ("json", "nl"):
        import orjson  # a stream may be long: the C encoder

        first = True
        if fmt == "nl" and meta is not None and opts.get("meta"):
            yield orjson.dumps({"meta": meta}).decode() + "\n"
        if fmt == "json":
            yield ('{\n  "meta": ' + orjson.dumps(meta).decode() + ',\n  "rows": ['
                   if meta is not None and opts.get("meta") else "[")
        # orjson walks the rows itself and asks ``_json_default`` only for what ``_plain``
        # would change (a long stream spent 40% of its time in ``_plain``'s walk).
        passthrough = orjson.OPT_PASSTHROUGH_DATETIME
        for r in it:
            if fmt == "nl":
                yield orjson.dumps(r, default=_json_default, option=passthrough).decode() + "\n"
                continue
            body = orjson.dumps(r, default=_json_default,
                                option=orjson.OPT_INDENT_2 | passthrough).decode()
            yield ("\n  " if first else ",\n  ") + body.replace("\n", "\n  ")
            first = False
        if fmt == "json":
            close = "]\n}" if meta is not None and opts.get("meta") else "]"
            yield ("\n" if not first else "") + close + "\n"
        return
    if fmt in ("csv", "tsv"):
        yield from _csv_stream(it, columns, "\t" if fmt == "tsv" else ",", chunk)
        return
    header_lines = 2
    first = True
    while True:
        part = list(islice(it, min(chunk, FIRST_PAGE) if first else chunk))
        if not part and not first:
            break
        text = render(part, columns, fmt)
        if not first:  # the header once, at the top
            text = text.split("\n", header_lines)[-1]
        if fmt != "table" or meta is None:
            yield text + "\n"
        elif first:
            banner_and_table = with_provenance(text, meta).split("\n--\n")[0]
            yield banner_and_table + "\n"
        else:
            yield text + "\n"
        first = False
        if not part:
            break
    if fmt == "table" and meta is not None:
        # The chain's part only: "generated" and "at now" stay the times the query began.
        meta.update((k, v) for k, v in collect().items()
                    if k in ("events", "last_seq", "link", "verify"))
        tail = with_provenance("", meta).split("\n--\n", 1)[1]
        yield "--\n" + tail + "\n"


def _csv_stream(rows: Iterator[dict[str, Any]], columns: Sequence[str], delimiter: str,
                chunk: int) -> Iterator[str]:
    """CSV/TSV of a long result with one header that fits every row.

    Flat rows (every value plain or a list of plain values: the header is ``columns``)
    go out as they come, the first at once. Rows with nested values (``events``: the
    payloads) spread over dotted columns that only the whole result determines: they are
    kept in a temporary file, not in memory, and written under the header of all of them.
    """
    from itertools import islice

    import orjson

    def line(cols: Sequence[str], flat: dict[str, Any]) -> str:
        out = []
        for c in cols:
            text, numeric = _cell(flat.get(c))
            text = spreadsheet_safe(text, numeric)
            out.append(_tsv_escape(text) if tsv else _csv_quote(text))
        return delimiter.join(out) + "\n"

    tsv = delimiter == "\t"
    header = list(columns)
    first = list(islice(rows, 1))
    if all(k in columns for r in first for k in flatten([r], columns)[0]):
        yield to_csv(first, columns, delimiter)  # the header, and the first row at once
        known = set(header)
        while part := list(islice(rows, chunk)):
            flat_rows = _flat_rows(part, columns)
            for f in flat_rows:
                if not known.issuperset(f):  # a row that is not flat after all
                    raise ValueError(f"a row has nested values ({list(f)}) after a flat CSV"
                                     " header")
            yield "".join(line(header, f) for f in flat_rows)
        return
    import tempfile

    # Column order as ``flatten`` gives for the whole result: each declared column, then its
    # dotted keys in first-seen order; a declared column that only ever nests is left out.
    nested: dict[str, dict[str, None]] = {c: {} for c in columns}
    plain: set[str] = set()
    dotted: set[str] = set()  # the dotted keys met so far (most rows repeat them)
    with tempfile.TemporaryFile() as spool:
        part = first
        while part:
            for flat in _flat_rows(part, columns):  # the order is made once, below
                cells = {}
                for k, v in flat.items():
                    if k in nested:
                        if v is not None:
                            plain.add(k)
                    elif k not in dotted:
                        dotted.add(k)
                        nested[k.split(".", 1)[0]].setdefault(k, None)
                    # a text is its own cell (``_cell``'s answer, without the calls)
                    cells[k] = (v, False) if type(v) is str else _cell(v)
                spool.write(orjson.dumps(cells) + b"\n")
            part = list(islice(rows, chunk))
        cols: list[str] = []
        for c in columns:
            if c in plain or not nested[c]:
                cols.append(c)
            cols.extend(nested[c])
        # The header as ``to_csv`` writes it (not ``to_csv([], cols)``: with no rows it took
        # a column that prefixes another, ``event.x`` beside ``event.x.y``, for one that
        # only nests, and dropped it from the header but not from the rows).
        escape = _tsv_escape if tsv else _csv_quote
        yield delimiter.join(escape(c) for c in cols) + "\n"
        spool.seek(0)
        buf: list[str] = []
        # A row fills only its own cells (a dozen of the events' 100+ columns); every other
        # one is empty. A key left out of ``cols`` is a declared column whose value was
        # always None: its cell is empty too.
        where = {c: i for i, c in enumerate(cols)}
        blank = [""] * len(cols)
        for raw in spool:
            out = blank.copy()
            for c, (text, numeric) in orjson.loads(raw).items():
                i = where.get(c)
                if i is not None and text:
                    out[i] = escape(spreadsheet_safe(text, numeric))
            buf.append(delimiter.join(out) + "\n")
            if len(buf) >= chunk:
                yield "".join(buf)
                buf = []
        if buf:
            yield "".join(buf)


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` / ``--nl`` / ``--csv`` / ``--tsv`` / ``--meta``, folded into one ``fmt``."""
    import click
    from backflush.cli.app import Fail

    @click.option("--json", "as_json", is_flag=True, help="Output a JSON array.")
    @click.option("--nl", "as_nl", is_flag=True, help="Output one JSON object a line.")
    @click.option("--csv", "as_csv", is_flag=True,
                  help="Output CSV: nested values in dotted columns; text that a spreadsheet "
                       "would run as a formula (= + - @ TAB CR) gets a leading '.")
    @click.option("--tsv", "as_tsv", is_flag=True,
                  help="Output tab-separated values (like --csv; TAB, LF, CR, \\ escaped).")
    @click.option("--meta", "with_meta", is_flag=True,
                  help="JSON/--nl: add provenance (ledger, version, as-of, policy, verify).")
    @wraps(f)
    def inner(*args: Any, as_json: bool, as_nl: bool, as_csv: bool, as_tsv: bool,
              with_meta: bool, **kw: Any) -> Any:
        chosen = [n for n, on in (("json", as_json), ("nl", as_nl), ("csv", as_csv),
                                  ("tsv", as_tsv)) if on]
        if len(chosen) > 1:
            raise Fail(" and ".join(f"--{c}" for c in chosen) + " are mutually exclusive")
        if with_meta and chosen and chosen[0] in ("csv", "tsv"):
            raise Fail(f"--meta: not available with --{chosen[0]} (use --json or --nl)")
        ctx = click.get_current_context()
        ctx.meta["backflush.output"] = {"meta": with_meta}
        return f(*args, fmt=chosen[0] if chosen else "table", **kw)

    return inner


SUMMARY_COLUMNS = ["severity", "code", "count"]


def summarize(found: Sequence[Any]) -> list[dict[str, Any]]:
    """``findings --summary``: one row per (severity, code) with its count, worst first."""
    from backflush.projections.findings import SEVERITY_RANK

    counts: dict[tuple[str, str], int] = {}
    for f in found:
        d = f if isinstance(f, dict) else f.as_dict()
        k = (d["severity"], d["code"])
        counts[k] = counts.get(k, 0) + 1
    keys = sorted(counts, key=lambda k: (-SEVERITY_RANK.get(k[0], -1), k[1]))
    return [{"severity": s, "code": c, "count": counts[(s, c)]} for s, c in keys]
