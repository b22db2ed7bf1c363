"""Strict, bounded input (DESIGN §1 "strict", issue 11): random garbage mixed into valid
files is either refused with ``FILE:LINE: field: reason`` (exit 2, nothing appended) or
imports, verifies and replays without error -- never a traceback, never a poisoned ledger.

The garbage leans on the grammar edges: decimals and timestamps just inside and just
outside the bounds, look-alike digits, control and bidi characters, duplicate keys.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

from backflush.cli.main import cli
from backflush.ledger.store import Ledger
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

AT = "2026-05-01T08:00:00Z"
VALID = [
    {"type": "ItemDefined", "at": "2026-05-01T06:00:00Z", "id": "s-1", "item": "FG", "decimals": 0},
    {"type": "ItemDefined", "at": "2026-05-01T06:00:00Z", "id": "s-2", "item": "RAW"},
    {
        "type": "ResourceDefined",
        "at": "2026-05-01T06:00:00Z",
        "id": "s-3",
        "resource": "M1",
        "input_location": "M1-IN",
        "output_location": "M1-OUT",
    },
    {
        "type": "BomDefined",
        "at": "2026-05-01T06:01:00Z",
        "id": "s-4",
        "bom": "B",
        "item": "FG",
        "lines": [{"line": 10, "item": "RAW", "qty": 2, "scrap_pct": "1.5"}],
    },
    {
        "type": "RouteDefined",
        "at": "2026-05-01T06:01:00Z",
        "id": "s-5",
        "route": "R",
        "operations": [{"op": 10, "resource": "M1", "run_hours": "0.1"}],
    },
    {
        "type": "OrderCreated",
        "at": "2026-05-01T07:00:00Z",
        "id": "s-6",
        "order": "P1",
        "item": "FG",
        "qty": 5,
        "bom": "B",
        "route": "R",
    },
    {
        "type": "InventoryReceived",
        "at": "2026-05-01T07:00:00Z",
        "id": "s-7",
        "item": "RAW",
        "qty": 100,
        "location": "M1-IN",
    },
    {"type": "OrderReleased", "at": AT, "id": "v-1", "order": "P1"},
    {"type": "OrderStarted", "at": AT, "id": "v-2", "order": "P1", "device": "mobile"},
    {
        "type": "OperationReported",
        "at": "2026-05-01T09:00:00Z",
        "id": "v-3",
        "order": "P1",
        "op": 10,
        "good": "2.5",
        "error": 0.5,
        "hours": "1.25",
    },
    {
        "type": "MaterialConsumed",
        "at": "2026-05-01T09:10:00Z",
        "id": "v-4",
        "order": "P1",
        "item": "RAW",
        "qty": "-0.1",
        "line": 10,
    },
    {
        "type": "ReportedAsFinished",
        "at": "2026-05-01T10:00:00Z",
        "id": "v-5",
        "order": "P1",
        "good": 2,
        "location": "M1-OUT",
        "batch": "L1",
    },
    {"type": "Reversal", "at": "2026-05-01T10:05:00Z", "id": "v-6", "reverses": "v-5"},
    {
        "type": "Picked",
        "at": "2026-05-01T10:10:00Z",
        "id": "v-7",
        "item": "RAW",
        "qty": 1,
        "location": "M1-IN",
        "order": "P1",
        "line": 10,
    },
    {
        "type": "Put",
        "at": "2026-05-01T10:11:00Z",
        "id": "v-8",
        "item": "RAW",
        "qty": 1,
        "location": "M1-IN",
        "order": "P1",
        "line": 10,
        "lp": "LP1",
    },
    {"type": "OrderEnded", "at": "2026-05-01T11:00:00Z", "id": "v-9", "order": "P1"},
]

# Values on both sides of every bound and grammar rule.
EDGE_DECIMALS = [
    0,
    1,
    -1,
    999999999999999,
    10**15,
    -(10**15),
    2**63,
    "0",
    "-0",
    "1e3",
    "1E+14",
    "1e15",
    "1e-12",
    "1e-13",
    "0.000000000001",
    "0.0000000000001",
    "999999999999999.999999999999",
    "1000000000000000",
    "1_000",
    " 5",
    "5 ",
    "\u0665",
    "\uff15",
    "+5",
    ".5",
    "5.",
    "NaN",
    "-Infinity",
    "1e999999999",
    "0x1F",
    "",
    "1,5",
    "12.50",
    True,
    None,
    [],
    {},
]
EDGE_TIMES = [
    AT,
    "2026-05-01T08:00:00.123456Z",
    "2026-05-01T08:00:00.1234567Z",
    "2026-05-01T08:00:00",
    "2026-05-01 08:00:00Z",
    "2026-05-01T08:00:00+05:30",
    "2026-05-01T08:00:00-00:00",
    "2026-05-01T24:00:00Z",
    "2026-02-30T08:00:00Z",
    "1900-01-01T00:00:00Z",
    "1899-12-31T23:59:59Z",
    "2999-12-31T23:59:59-12:00",
    "3000-01-01T00:00:00Z",
    "20260102",
    1767225600,
    "1767225600",
    1767225600.5,
    None,
]
EDGE_TEXT = st.text(
    alphabet=st.sampled_from(
        list("AZaz09-_ .äß٥")
        + ["\x00", "\x1b", "\n", "\x7f", "\x85", "\u202e", "\u2066", "\u2028", "\u200e"]
    ),
    min_size=0,
    max_size=6,
)
QTY_FIELDS = {"qty", "good", "error", "hours"}
PROBLEM = re.compile(r'^(?P<file>.+?):(?P<line>\d+): (?:"(?:[^"\\]|\\.)*"|[^:"])+: .+$')


@st.composite
def garbage_line(draw) -> bytes:
    base = dict(draw(st.sampled_from(VALID)))
    kind = draw(st.sampled_from(["decimal", "time", "text", "dup", "bytes", "nested"]))
    if kind == "bytes":
        raw = json.dumps(base).encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=5)).replace(b"\n", b"") + raw[at:]
    if kind == "decimal":
        fields = sorted(QTY_FIELDS & base.keys()) or ["qty"]
        base[draw(st.sampled_from(fields))] = draw(st.sampled_from(EDGE_DECIMALS))
    elif kind == "time":
        base["at"] = draw(st.sampled_from(EDGE_TIMES))
    elif kind == "text":
        fields = sorted(k for k, v in base.items() if isinstance(v, str) and k not in ("type",))
        base[draw(st.sampled_from(fields))] = draw(EDGE_TEXT)
    elif kind == "nested" and base["type"] == "BomDefined":
        base["lines"] = [dict(base["lines"][0], qty=draw(st.sampled_from(EDGE_DECIMALS)))]
    base["id"] = f"g-{draw(st.integers(0, 10**6))}"
    raw = json.dumps(base, ensure_ascii=draw(st.booleans()))
    if kind == "dup":
        key = draw(st.sampled_from(sorted(base)))
        raw = raw[:-1] + f", {json.dumps(key)}: {json.dumps(base[key])}}}"
    return raw.encode()


@st.composite
def garbled_files(draw) -> list[bytes]:
    lines = [json.dumps(e).encode() for e in VALID]
    for _ in range(draw(st.integers(1, 3))):
        lines.insert(draw(st.integers(0, len(lines))), draw(garbage_line()))
    return lines


def cli_run(db: str, *args: str):
    return CliRunner().invoke(cli, ["--db", db, *args])


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(lines=garbled_files())
def test_garbage_is_refused_with_a_reason_or_imports_and_replays(lines, tmp_path):
    work = tmp_path / uuid.uuid4().hex[:12]
    work.mkdir()
    db, path = str(work / "ledger.db"), str(work / "in.jsonl")
    Path(path).write_bytes(b"\n".join(lines) + b"\n")

    r = cli_run(db, "import", path)

    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    with Ledger(db) as ledger:
        count = ledger.count()
    if r.exit_code == 2:
        *problem_lines, summary = r.stderr.splitlines()
        assert summary.startswith("Error: ") and "nothing appended" in summary
        assert problem_lines and all(PROBLEM.match(x) for x in problem_lines), r.stderr
        assert count == 0
        return
    assert r.exit_code == 0, r.output
    assert count > 0
    assert cli_run(db, "verify").exit_code == 0
    for args in (["onhand", "--json"], ["findings", "--json"], ["wip", "--json"]):
        q = cli_run(db, *args, "--at", "2026-06-01")
        assert q.exception is None or isinstance(q.exception, SystemExit), (args, q.exc_info)
        assert q.exit_code in (0, 1), (args, q.output)
        json.loads(q.stdout)


def test_type_names_load_without_pydantic_and_agree_with_the_models():
    import subprocess
    import sys

    code = (
        "import sys, backflush.ledger.names as n; "
        "assert 'pydantic' not in sys.modules, 'names imported pydantic'; "
        "print(len(n.EVENT_TYPES))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    from backflush.ledger import events, names

    assert tuple(events.EVENT_TYPES) == names.EVENT_TYPES
    assert events.MASTER_TYPES == names.MASTER_TYPES
    assert events.ORDER_TYPES == names.ORDER_TYPES
    assert events.INVENTORY_TYPES == names.INVENTORY_TYPES
    assert events.DEVICES == names.DEVICES and events.PRINCIPLES == names.PRINCIPLES


# --- the fast path agrees with the reference (pydantic) reading -----------------------


def test_fast_path_table_lists_exactly_the_models_fields():
    from backflush.ledger import fastpath
    from backflush.ledger.events import EVENT_TYPES

    for type_, (fields, required, defaults) in fastpath.SPEC.items():
        model = EVENT_TYPES[type_]
        mine = {k: f for k, f in model.model_fields.items() if k not in ("type", "at", "id")}
        assert set(fields) == set(mine), type_
        assert required == {k for k, f in mine.items() if f.is_required()}, type_
        dumped = {
            k: (str(f.default) if not isinstance(f.default, str | int) else f.default)
            for k, f in mine.items()
            if not f.is_required() and f.default is not None
        }
        assert defaults == dumped, type_


FAST_VALUES = st.one_of(
    st.sampled_from(EDGE_DECIMALS),
    st.sampled_from(EDGE_TIMES),
    st.sampled_from(["client", "mobile", "route_card", "start", "batch", "none", "finish"]),
    st.integers(-(2**64), 2**64),
    st.from_regex(r"-?(0|[1-9][0-9]{0,16})(\.[0-9]{1,14})?", fullmatch=True),
    st.text(alphabet="AZaz09-_:. \"'\\{}", max_size=8),
    st.none(),
)


def _valid_value(kind, draw):
    from backflush.ledger import fastpath

    # Mostly letters (Latin, German, Arabic digits), sometimes a refused character.
    alphabet = st.sampled_from(list("ABCxyz019-_ .äßØ٥") + ["\u202e", "\x85", "\u2066"])
    if kind is fastpath.NAME:
        return draw(st.text(alphabet=alphabet, min_size=1, max_size=8))
    if kind is fastpath.TEXT:
        return draw(st.text(alphabet=alphabet, max_size=8))
    if kind in (fastpath.QTY, fastpath.SQTY):
        sign = "-?" if kind is fastpath.SQTY else ""
        return draw(
            st.integers(0, 10**15 - 1)
            | st.from_regex(sign + r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,12})?", fullmatch=True)
        )
    if type(kind) is tuple:
        return draw(st.integers(*kind))
    return draw(st.sampled_from(sorted(kind)))


@st.composite
def near_valid_events(draw) -> bytes:
    """Mostly valid flat events (the fast path's domain), some with one value at an edge."""
    from backflush.ledger import fastpath

    type_ = draw(st.sampled_from(sorted(fastpath.SPEC)))
    fields, required, _ = fastpath.SPEC[type_]
    times = [*EDGE_TIMES[:7], "2026-05-01T08:00:00-05:00", "2026-05-01T08:00:00+14:00"]
    d: dict = {"type": type_, "at": draw(st.sampled_from(times))}
    for k in sorted(fields):
        if k in required or draw(st.booleans()):
            odd = draw(st.integers(0, 9)) == 0
            d[k] = draw(FAST_VALUES) if odd else _valid_value(fields[k], draw)
    if draw(st.booleans()):
        d["id"] = draw(st.one_of(st.just("e-1"), FAST_VALUES))
    if draw(st.integers(0, 9)) == 0:
        d[draw(st.sampled_from(sorted(d)))] = draw(FAST_VALUES)
    raw = json.dumps(
        d,
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
        ensure_ascii=draw(st.booleans()),
    )
    if draw(st.integers(0, 9)) == 0:  # a repeated key
        key = draw(st.sampled_from(sorted(d)))
        raw = raw[:-1] + f',"{key}":{json.dumps(draw(FAST_VALUES))}}}'
    return raw.encode()


@settings(max_examples=400, deadline=None)
@given(raw=near_valid_events())
def test_fast_path_accepts_only_what_the_models_accept_and_normalises_alike(raw):
    import orjson
    from backflush.ledger import fastpath
    from backflush.ledger.events import EventErrors, normalise, parse_event
    from backflush.ledger.store import to_us

    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return
    fast = fastpath.check(d, raw) if type(d) is dict and fastpath.plain(raw) else None
    try:
        event = parse_event(raw)
    except EventErrors as exc:
        assert fast is None, (raw, fast, str(exc))
        return
    if fast is not None:
        payload, eid, at_us, body = fast
        assert body == orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), raw
        assert payload == normalise(event), raw
        assert eid == event.id and at_us == to_us(event.at), raw


def test_fast_path_takes_the_common_lines():
    """The fast path is not vacuous: a simulated history goes through it almost whole."""
    import orjson
    from backflush.ledger import fastpath
    from backflush.ledger.events import normalise, parse_event
    from backflush.ledger.simulate import simulate
    from backflush.ledger.store import to_us

    lines = [orjson.dumps(e) for e in simulate(20, 3, ("scrap", "late"))]
    fast = 0
    for raw in lines:
        got = fastpath.check(orjson.loads(raw), raw)
        if got is not None:
            fast += 1
            event = parse_event(raw)  # the reference agrees on every real line
            assert got[:3] == (normalise(event), event.id, to_us(event.at)), raw
    assert fast >= 0.95 * len(lines)


def test_a_ledger_of_the_old_layout_is_refused_with_a_re_import_message(tmp_path):
    import sqlite3

    import pytest
    from backflush.ledger.store import SchemaTooOld

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as con:  # what stored layout 1 left: the lock row, no version
        con.execute("CREATE TABLE bf_lock (k INTEGER PRIMARY KEY, v INTEGER)")
        con.execute("INSERT INTO bf_lock VALUES (1, 0)")
    with pytest.raises(SchemaTooOld, match="export it with the version that wrote it"):
        Ledger(str(db))
    r = cli_run(str(db), "onhand")
    assert r.exit_code == 2 and "older backflush" in r.output


def test_import_dash_reads_standard_input_and_names_it_in_errors(tmp_path):
    db = str(tmp_path / "stdin.db")
    good = "".join(json.dumps(e) + "\n" for e in VALID[:3])
    r = CliRunner().invoke(cli, ["--db", db, "import", "-"], input=good)
    assert r.exit_code == 0, r.output
    assert "3 appended" in r.stdout
    bad = json.dumps(VALID[3]) + "\n" + json.dumps(dict(VALID[1], id="x", qty=1)) + "\n"
    r = CliRunner().invoke(cli, ["--db", db, "import", "-"], input=bad)
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == "<stdin>:2: qty: unknown field"
    with Ledger(db) as ledger:
        assert ledger.count() == 3


def test_failed_import_from_standard_input_leaves_no_new_ledger(tmp_path):
    db = tmp_path / "new.db"
    bad = json.dumps(VALID[0]) + "\n" + json.dumps({"type": "Bogus"}) + "\n"
    r = CliRunner().invoke(cli, ["--db", str(db), "import", "-"], input=bad)
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0].startswith("<stdin>:2: type:")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_import_dash_with_standard_input_closed_is_an_error(tmp_path):
    """A command started with its standard input closed (``<&-``) reads no events: that is
    a mistake to report, not an empty import to call a success."""
    import subprocess
    import sys

    db = tmp_path / "new.db"
    r = subprocess.run(
        [sys.executable, "-m", "backflush", "--db", str(db), "import", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        # closed, not empty: the child's fd 0 is shut before the interpreter starts
        preexec_fn=lambda: os.close(0),
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[0] == "<stdin>:0: (file): standard input is not open"
    assert not db.exists()


def test_standard_input_whose_descriptor_was_closed_is_an_error(tmp_path, monkeypatch):
    """``sys.stdin`` still there, its descriptor closed under it: the same error, no
    traceback."""
    import io
    import sys

    r, w = os.pipe()
    os.close(w)
    high = os.dup2(r, 900)  # a number the ledger's own files will not take once it is free
    os.close(r)
    stream = open(high, "rb")  # noqa: SIM115
    os.close(high)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stream))
    # (through the importer: the CLI runner puts a stream of its own in sys.stdin)
    from backflush.ledger import importer

    with Ledger(str(tmp_path / "new.db")) as ledger:
        result = importer.run_import(ledger, ["-"])
        assert [str(e) for e in result.errors] == [
            "<stdin>:0: (file): standard input is not open"]
        assert result.appended == 0 and ledger.count() == 0


def test_future_dated_events_from_standard_input_are_counted(tmp_path):
    """Standard input cannot be read twice to name the lines: the stored ones are counted."""
    db = str(tmp_path / "stdin.db")
    ahead = dict(VALID[0], id="ahead", at="2099-06-01T06:00:00Z")
    r = CliRunner().invoke(cli, ["--db", db, "import", "-"], input=json.dumps(ahead) + "\n")
    assert r.exit_code == 0, r.output
    assert "warning: 1 event dated more than" in r.stderr


def test_lines_are_split_alike_whatever_the_read_size(monkeypatch):
    """The chunked reader numbers lines and drops overlong ones across chunk boundaries."""
    import io

    from backflush.ledger import importer

    monkeypatch.setattr(importer, "MAX_LINE", 10)

    class Trickle(io.BytesIO):
        def __init__(self, data: bytes, size: int):
            super().__init__(data)
            self.size = size

        def read(self, n: int = -1) -> bytes:
            return super().read(min(n, self.size))

    data = b"a\n\n bb \r\n0123456789\n0123456789a\nxxxxxxxxxxxxxxxxxxxxxxxx\nc"
    want = [(1, b"a"), (3, b"bb"), (4, b"0123456789"), (5, None), (6, None), (7, b"c")]
    for size in (1, 2, 3, 7, 11, 1000):
        assert list(importer._lines(Trickle(data, size))) == want, size
    assert list(importer._lines(Trickle(b"y" * 50, 4))) == [(1, None)]
