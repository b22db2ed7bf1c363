"""Output people can use: --tsv/--nl/--meta, flat CSV, formula-safe cells, escaped and
terminal-fitting tables, severity markers, findings --summary (issue 9 item 4, issue 11 item 7).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from backflush.cli.output import (
    escape_text,
    spreadsheet_safe,
    to_csv,
    to_table,
    use_colour,
)
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TERMINALS = EXAMPLES / "001-terminals-and-scanner" / "events.jsonl"


def run(db: str, *args: str, code: int = 0, env: dict | None = None) -> str:
    r = CliRunner().invoke(cli, ["--db", db, *args], env=env)
    assert r.exit_code == code, (r.output, r.exception)
    return r.stdout


@pytest.fixture
def db(db_url: str) -> str:
    run(db_url, "import", str(TERMINALS))
    return db_url


EVIL = [
    "=HYPERLINK(\"http://x\",\"click\")",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\tTAB",
    "\rCR",
]


@pytest.mark.parametrize("text", EVIL)
def test_formula_cells_are_prefixed(text: str) -> None:
    assert spreadsheet_safe(text, numeric=False) == "'" + text
    out = to_csv([{"item": text, "qty": Decimal("-5")}], ["item", "qty"])
    row = list(csv.reader(io.StringIO(out, newline="")))[1]
    assert row == ["'" + text, "-5"]


def test_numbers_stay_numbers() -> None:
    # A negative quantity is a number to a spreadsheet, not a formula: left as is.
    assert spreadsheet_safe("-5", numeric=True) == "-5"
    assert spreadsheet_safe("-5", numeric=False) == "-5"
    assert spreadsheet_safe("-5.25", numeric=False) == "-5.25"
    assert spreadsheet_safe("-5 apples", numeric=False) == "'-5 apples"
    assert spreadsheet_safe("plain", numeric=False) == "plain"


def test_csv_has_no_json_and_flattens(db: str) -> None:
    out = run(db, "consumption", "--order", "P001T-2", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and "by_trigger" not in rows[0]
    assert {"by_trigger.finish", "by_trigger.operation"} <= set(rows[0])
    assert not any(c.startswith(("{", "[")) for r in rows for c in r.values())
    as_json = json.loads(run(db, "consumption", "--order", "P001T-2", "--json"))
    for j, c in zip(as_json, rows, strict=True):
        for k, v in j["by_trigger"].items():
            assert c[f"by_trigger.{k}"] == v
    # lists (finding event ids) are joined, not JSON
    f = list(csv.DictReader(io.StringIO(run(db, "findings", "--csv"))))
    fj = json.loads(run(db, "findings", "--json"))
    assert [r["events"] for r in f] == [";".join(x["events"]) for x in fj]


def test_tsv_round_trips(db: str) -> None:
    out = run(db, "findings", "--tsv")
    lines = out.rstrip("\n").split("\n")
    head = lines[0].split("\t")
    assert head == ["code", "severity", "order", "line", "item", "qty", "events", "message"]
    fj = json.loads(run(db, "findings", "--json"))
    assert len(lines) == len(fj) + 1
    for line, j in zip(lines[1:], fj, strict=True):
        cells = dict(zip(head, line.split("\t"), strict=True))
        assert cells["code"] == j["code"] and cells["qty"] == j["qty"]


def test_tsv_escapes_tabs_and_newlines() -> None:
    out = to_csv([{"a": "x\ty\nz\\"}], ["a"], "\t")
    assert out == "a\nx\\ty\\nz\\\\\n"


def test_nl_and_meta(db: str) -> None:
    out = run(db, "onhand", "--nl")
    objs = [orjson.loads(x) for x in out.splitlines()]
    assert objs == json.loads(run(db, "onhand", "--json"))
    out = run(db, "onhand", "--nl", "--meta").splitlines()
    meta = orjson.loads(out[0])
    assert list(meta) == ["meta"] and meta["meta"]["events"] == 33
    assert [orjson.loads(x) for x in out[1:]] == objs
    wrapped = json.loads(run(db, "onhand", "--json", "--meta"))
    assert set(wrapped) == {"meta", "rows"} and wrapped["rows"] == objs
    run(db, "onhand", "--csv", "--meta", code=2)
    run(db, "onhand", "--csv", "--tsv", code=2)
    run(db, "onhand", "--json", "--nl", code=2)


def test_table_escapes_control_and_bidi() -> None:
    rows = [
        {"item": "A\x1b[2J\x1b[HALL GOOD", "location": "L", "qty": Decimal(1)},
        {"item": "B\nC  fake-row  99", "location": "L\u202eX", "qty": Decimal(2)},
        {"item": "D\u2066\x07\x9b", "location": "L", "qty": Decimal(3)},
    ]
    out = to_table(rows, ["item", "location", "qty"], width=200)
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out and "\x9b" not in out
    assert len(out.splitlines()) == 2 + len(rows)  # no forged row
    assert "\\x1b[2J" in out and "\\n" in out and "\\u202e" in out and "\\u2066" in out
    assert escape_text("plain – ünïcode") == "plain – ünïcode"


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_tables_fit_the_terminal(db: str, width: int) -> None:
    env = {"COLUMNS": str(width)}
    for args in (["findings"], ["consumption", "--order", "P001T-2"], ["onhand"],
                 ["events"], ["findings", "--summary"]):
        out = run(db, *args, env=env)
        long = [x for x in out.splitlines() if len(x) > width]
        assert not long, (args, width, long)
    # wide enough: nothing is cut
    if width >= 200:
        assert "…" not in run(db, "onhand", env=env)


def test_severity_markers_and_colour(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out = run(db, "findings", env={"COLUMNS": "200"})
    body = [x for x in out.splitlines()[2:] if x and not x.startswith(("#", "--", " "))]
    assert body and all(" ERROR " in x or " WARN " in x or " info " in x for x in body)
    assert "\x1b" not in out  # not a terminal: no colour
    coloured = to_table([{"severity": "error", "code": "X"}], ["severity", "code"], 80, True)
    assert "\x1b[1;31mERROR" in coloured

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())
    assert not use_colour(io.StringIO())


def test_findings_summary(db: str) -> None:
    found = json.loads(run(db, "findings", "--json"))
    expect = Counter((f["severity"], f["code"]) for f in found)
    summary = json.loads(run(db, "findings", "--summary", "--json"))
    assert {(s["severity"], s["code"]): s["count"] for s in summary} == dict(expect)
    assert sum(s["count"] for s in summary) == len(found) > 0
    rows = list(csv.DictReader(io.StringIO(run(db, "findings", "--summary", "--csv"))))
    assert [(r["code"], int(r["count"])) for r in rows] == [
        (s["code"], s["count"]) for s in summary
    ]
    nl = [orjson.loads(x) for x in run(db, "findings", "--summary", "--nl").splitlines()]
    assert nl == summary
    table = run(db, "findings", "--summary")
    assert "DOUBLE_FLUSH" in table and "count" in table.splitlines()[0]
    # --fail-on still applies to the summary
    run(db, "findings", "--summary", "--fail-on", "error", code=1)


def test_escape_lines_keeps_only_the_line_breaks() -> None:
    from backflush.cli.output import escape_lines

    out = escape_lines("Order A\x1b[2J\nline 10 \u202eX\tY")
    assert out.split("\n") == ["Order A\\x1b[2J", "line 10 \\u202eX\\tY"]


def test_streamed_csv_has_one_header_that_fits_every_row():
    # Pages of a long result used to be flattened one by one under the first page's
    # header: `events --csv` past 2,000 rows wrote rows of 24 cells under 125 columns.
    from backflush.cli.output import render_stream, to_csv

    rows = [{"seq": 1, "event": {"x": "1"}}] + [
        {"seq": i, "event": {"y": str(i), "z": {"w": "-5"}}} for i in range(2, 8)]
    for fmt, sep in (("csv", ","), ("tsv", "\t")):
        streamed = "".join(render_stream(iter(rows), ["seq", "event"], fmt, chunk=2))
        assert streamed == to_csv(rows, ["seq", "event"], sep)
        lines = streamed.splitlines()
        assert lines[0].split(sep) == ["seq", "event.x", "event.y", "event.z.w"]
        assert {len(x.split(sep)) for x in lines} == {4}


_CELL_TEXT = st.text(alphabet=st.sampled_from(list('ab,"\n\r\t=-+@1.\\')), max_size=5)
_LEAF = st.one_of(st.none(), _CELL_TEXT, st.integers(-3, 3),
                  st.decimals(allow_nan=False, allow_infinity=False, places=2,
                              min_value=-10, max_value=10))
_VALUE = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["p", "q", "r"]), inner, max_size=3)), max_leaves=6)


_FLAT_ROWS = st.lists(st.fixed_dictionaries({}, optional={
    k: st.one_of(_LEAF, st.lists(_LEAF, max_size=3)) for k in "abc"}), max_size=6)
# A nested result (``events``: every row carries its payload) nests from its first row on.
_NESTED_ROWS = st.tuples(
    st.fixed_dictionaries({"a": st.dictionaries(st.sampled_from(["p", "q"]), _VALUE,
                                                min_size=1, max_size=2)},
                          optional={"b": _VALUE, "c": _VALUE}),
    st.lists(st.fixed_dictionaries({}, optional={k: _VALUE for k in "abc"}), max_size=6),
).map(lambda t: [t[0], *t[1]])


@settings(max_examples=300, deadline=None)
@given(rows=st.one_of(_FLAT_ROWS, _NESTED_ROWS), chunk=st.integers(1, 4),
       fmt=st.sampled_from(["csv", "tsv"]))
def test_a_streamed_csv_is_the_whole_csv(rows, chunk, fmt):
    """However the rows nest and whatever their cells hold, the streamed CSV/TSV (flat rows
    as they come, nested ones spooled under the header of all of them) is ``to_csv`` of
    the whole result, byte for byte."""
    from backflush.cli.output import render_stream, to_csv

    cols = ["a", "b", "c"]
    want = to_csv(rows, cols, "," if fmt == "csv" else "\t")
    assert "".join(render_stream(iter(rows), cols, fmt, chunk=chunk)) == want


_JSON_LEAF = st.one_of(
    _LEAF, st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])))
_JSON_VALUE = st.recursive(_JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["p", "q", "r"]), inner, max_size=3)), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.fixed_dictionaries({}, optional={k: _JSON_VALUE for k in "abc"}),
                     max_size=4))
def test_streamed_json_writes_what_plain_values_write(rows):
    """A streamed ``--nl``/``--json`` lets orjson walk each row and converts only decimals
    and datetimes (``_json_default``): the bytes of ``orjson.dumps(_plain(row))``."""
    from backflush.cli.output import _plain, render_stream

    cols = ["a", "b", "c"]
    nl = "".join(render_stream(iter(rows), cols, "nl"))
    assert nl == "".join(orjson.dumps(_plain(r)).decode() + "\n" for r in rows)
    whole = "".join(render_stream(iter(rows), cols, "json"))
    assert json.loads(whole) == [json.loads(orjson.dumps(_plain(r))) for r in rows]


def test_streamed_csv_of_flat_rows_prints_the_first_row_at_once():
    from backflush.cli.output import render_stream

    def rows():
        yield {"order": "P1", "qty": Decimal("-2")}
        raise AssertionError("the first row must go out before the second is read")

    first = next(render_stream(rows(), ["order", "qty"], "csv"))
    assert first == "order,qty\nP1,-2\n"


def test_streamed_table_prints_a_short_first_page_before_reading_further():
    # Whole-ledger findings come as the replay runs, a few per thousand events: a table
    # that waited for a full page printed nothing for seconds (1.7 s at 1M events).
    from backflush.cli.output import FIRST_PAGE, render_stream

    read = []

    def rows():
        for i in range(FIRST_PAGE + 5):
            read.append(i)
            yield {"order": f"P{i:04d}", "qty": Decimal(i)}

    pieces = render_stream(rows(), ["order", "qty"], "table", chunk=2000)
    first = next(pieces)
    assert len(read) == FIRST_PAGE  # the first page went out before row FIRST_PAGE + 1
    assert first.splitlines()[0].split() == ["order", "qty"]
    assert len(first.splitlines()) == 2 + FIRST_PAGE  # header, rule, rows
    rest = "".join(pieces)
    assert len(rest.splitlines()) == 5 and "order" not in rest  # no second header


# --- the standard library's encoder for small answers (cli.output.LIGHT_ROWS) -------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@given(_json_values, st.booleans())
def test_small_answers_are_encoded_as_orjson_would(body, indent):
    from backflush.cli.output import LIGHT_ROWS, _dumps, _light

    assert _light(body, 1)
    light = _dumps(body, 1, indent)              # json.dumps
    heavy = _dumps(body, LIGHT_ROWS + 1, indent)  # orjson.dumps
    assert light == heavy


def test_floats_and_long_answers_take_orjson():
    from backflush.cli.output import LIGHT_ROWS, _light

    assert not _light([{"a": [1, {"b": 0.5}]}], 1)
    assert not _light([], LIGHT_ROWS + 1)
    assert _light([{"a": [1, {"b": "0.5"}]}], LIGHT_ROWS)


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=14,
)


@given(PLAIN)
def test_a_small_answer_is_written_as_json_dumps_writes_it(body):
    # Small answers are encoded without the json package (it loads ``re``): the same text.
    from backflush.cli.output import _plain_json

    assert _plain_json(body, True) == json.dumps(body, ensure_ascii=False, indent=2)
    assert _plain_json(body, False) == json.dumps(body, ensure_ascii=False,
                                                  separators=(",", ":"))


@pytest.mark.parametrize("body", [[1.5], {1: "a"}, {"a": Decimal("1")}, [("a",)], {None: 1}])
def test_what_the_small_encoder_does_not_write_goes_to_json(body):
    from backflush.cli.output import _plain_json

    assert _plain_json(body, True) is None and _plain_json(body, False) is None
