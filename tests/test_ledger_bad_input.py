"""Import rejects bad input (DESIGN §2): ``FILE:LINE: field: reason`` for every bad line,
exit code 2, and nothing appended from the file -- one test per rejection class.

References may point to what the ledger holds or to what an earlier line of the same import
defines, never to a later line.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from backflush.ledger.store import Ledger
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_cli import PLANT, run, snapshot

AT = "2026-05-01T08:00:00Z"

SETUP = PLANT


def ev(type_: str, **fields) -> str:
    return json.dumps({"type": type_, "at": AT, **fields})


def receipt(**over) -> str:
    return json.dumps({"type": "InventoryReceived", "at": AT, "item": "RAW", "qty": 1,
                       "location": "BULK", **over})


def report(**over) -> str:
    return json.dumps({"type": "OperationReported", "at": AT, "order": "P1", "op": 10,
                       "good": 1, **over})


# class -> bad lines, each (raw line, field the message must name). Two or more per class,
# so the tests also see that every bad line is reported, not just the first.
CASES: dict[str, list[tuple[str, str]]] = {
    "malformed_json": [
        ('{"type": "OrderReleased", "at": "2026-05-01T08:00:00Z", "order": "P1"', "(event)"),
        ("this is not JSON", "(event)"),
        ('["OrderReleased", "P1"]', "(event)"),
    ],
    "missing_field": [
        (json.dumps({"type": "InventoryReceived", "at": AT, "item": "RAW", "qty": 1}),
         "location"),
        (json.dumps({"type": "OrderReleased", "at": AT}), "order"),
        (json.dumps({"type": "OrderReleased", "order": "P1"}), "at"),
        (json.dumps({"at": AT, "order": "P1"}), "type"),
    ],
    "mistyped_field": [
        (report(op="10"), "op"),
        (receipt(qty=True), "qty"),
        (receipt(qty="ten"), "qty"),
        (ev("OrderReleased", order=5), "order"),
        (ev("BomDefined", bom="B2", item="FG", lines={"line": 10}), "lines"),
    ],
    "negative_quantity": [
        (receipt(qty=-1), "qty"),
        (report(error="-0.5"), "error"),
        (ev("BomDefined", bom="B2", item="FG", lines=[{"line": 10, "item": "RAW", "qty": -2}]),
         "lines[0].qty"),
    ],
    "naive_timestamp": [
        (receipt(at="2026-05-01T08:00:00"), "at"),
        (ev("OrderReleased", order="P1").replace(AT, "2026-05-01 08:00"), "at"),
    ],
    "unknown_field": [
        (receipt(colour="red"), "colour"),
        (receipt(quantity=1), "quantity"),
        (ev("BomDefined", bom="B2", item="FG",
            lines=[{"line": 10, "item": "RAW", "qty": 1, "qtty": 1}]), "lines[0].qtty"),
    ],
    "unknown_event_type": [
        (ev("Teleported", order="P1"), "type"),
        (ev("orderreleased", order="P1"), "type"),
    ],
    "unknown_order": [
        (ev("OrderReleased", order="P404"), "order"),
        (report(order="P404"), "order"),
        (ev("Picked", item="RAW", qty=1, location="BULK", order="P404"), "order"),
    ],
    "unknown_item": [
        (receipt(item="NOPE"), "item"),
        (ev("MaterialConsumed", order="P1", item="NOPE", qty=1), "item"),
        (ev("BomDefined", bom="B2", item="FG", lines=[{"line": 10, "item": "NOPE", "qty": 1}]),
         "lines[0].item"),
    ],
    "unknown_bom": [
        (ev("OrderCreated", order="P2", item="FG", qty=1, bom="NOPE"), "bom"),
        (ev("OrderCreated", order="P3", item="FG", qty=1, bom="NOPE", route="R"), "bom"),
    ],
    "unknown_route": [
        (ev("OrderCreated", order="P2", item="FG", qty=1, bom="B", route="NOPE"), "route"),
        (ev("OrderCreated", order="P3", item="FG", qty=1, bom="B", route="R9"), "route"),
    ],
    "unknown_resource": [
        (ev("RouteDefined", route="R2", operations=[{"op": 10, "resource": "NOPE"}]),
         "operations[0].resource"),
        (ev("RouteDefined", route="R3",
            operations=[{"op": 10, "resource": "M1"}, {"op": 20, "resource": "M9"}]),
         "operations[1].resource"),
    ],
    "operation_not_on_route": [
        (report(op=30), "op"),
        (report(op=0), "op"),
    ],
    "reversal_of_unknown_id": [
        (ev("Reversal", reverses="no-such-event"), "reverses"),
        (ev("Reversal", reverses="s-99", reason="typo"), "reverses"),
    ],
}

# A field is a path such as lines[0].qty; an odd key a sender typed comes JSON-quoted.
PROBLEM = re.compile(
    r'^(?P<file>.+?):(?P<line>\d+): (?P<field>(?:"(?:[^"\\]|\\.)*"|[^:"])+): (?P<reason>.+)$'
)


def write_lines(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def problems(stderr: str, path: str) -> list[tuple[int, str]]:
    """(line, field) of every ``FILE:LINE: field: reason`` line about ``path``."""
    out = []
    for line in stderr.splitlines():
        m = PROBLEM.match(line)
        if m and m["file"] == path:
            out.append((int(m["line"]), m["field"]))
    return out


@pytest.fixture
def ledger_with_setup(db_url, tmp_path) -> str:
    path = write_lines(tmp_path / "setup.jsonl", [json.dumps(e) for e in SETUP])
    r = run(db_url, "import", path)
    assert r.exit_code == 0, r.output
    return db_url


@pytest.mark.parametrize("case", sorted(CASES))
def test_rejection_class(case, ledger_with_setup, tmp_path):
    db = ledger_with_setup
    before = snapshot(db)
    # Good lines around and between the bad ones: the bad ones are lines 2, 4, 6, ...
    lines, expected = [receipt(id="good-0")], []
    for i, (raw, field) in enumerate(CASES[case], start=1):
        lines.append(raw)
        expected.append((len(lines), field))
        lines.append(receipt(id=f"good-{i}", qty=i))
    path = write_lines(tmp_path / f"{case}.jsonl", lines)

    r = run(db, "import", path)

    assert r.exit_code == 2, r.output
    assert problems(r.stderr, path) == expected, r.stderr
    for line, field in expected:
        assert f"{path}:{line}: {field}: " in r.stderr
    assert f"Error: {len(expected)} problems; nothing appended" in r.stderr
    assert r.stdout == ""
    assert snapshot(db) == before


def test_reasons_say_what_is_wrong(ledger_with_setup, tmp_path):
    """Spot checks of the reason text, one per class (the field alone is not enough)."""
    wanted = {
        CASES["malformed_json"][1][0]: "malformed JSON",
        CASES["missing_field"][0][0]: "required field is missing",
        CASES["negative_quantity"][0][0]: "must not be negative",
        CASES["naive_timestamp"][0][0]: "no UTC offset",
        CASES["unknown_field"][0][0]: "unknown field",
        CASES["unknown_event_type"][0][0]: "unknown event type 'Teleported'",
        CASES["unknown_order"][0][0]: "unknown order 'P404'",
        CASES["unknown_item"][0][0]: "unknown item 'NOPE'",
        CASES["unknown_bom"][0][0]: "unknown BOM 'NOPE'",
        CASES["unknown_route"][0][0]: "unknown route 'NOPE'",
        CASES["unknown_resource"][0][0]: "unknown resource 'NOPE'",
        CASES["operation_not_on_route"][0][0]: "operation 30 is not on route 'R'",
        CASES["reversal_of_unknown_id"][0][0]: "unknown event id 'no-such-event'",
    }
    lines = list(wanted)
    path = write_lines(tmp_path / "reasons.jsonl", lines)
    r = run(ledger_with_setup, "import", path)
    assert r.exit_code == 2
    for n, reason in enumerate(wanted.values(), start=1):
        mine = [x for x in r.stderr.splitlines() if x.startswith(f"{path}:{n}: ")]
        assert mine and reason in mine[0], (n, reason, mine)


def test_several_files_report_each_file_and_append_nothing(ledger_with_setup, tmp_path):
    db = ledger_with_setup
    before = snapshot(db)
    good = write_lines(tmp_path / "good.jsonl", [receipt(id="g-1")])
    bad = write_lines(tmp_path / "bad.jsonl", [receipt(id="g-2"), receipt(qty=-3)])
    worse = write_lines(tmp_path / "worse.jsonl", ["{", receipt(item="NOPE")])
    r = run(db, "import", good, bad, worse)
    assert r.exit_code == 2
    assert problems(r.stderr, bad) == [(2, "qty")]
    assert problems(r.stderr, worse) == [(1, "(event)"), (2, "item")]
    assert snapshot(db) == before


def test_a_file_bad_on_every_line_lists_the_first_problems_and_counts_all(
        ledger_with_setup, tmp_path):
    """A file whose master data was forgotten has a problem on every line: the command lists
    the first 1,000 (in line order) and counts them all, rather than flooding stderr (and
    holding 800 MB) at plant scale."""
    db = ledger_with_setup
    before = snapshot(db)
    lines = [receipt(id=f"r-{n}", item="NOPE") for n in range(1, 1201)]
    lines[1100] = receipt(id="r-1101", qty=-1)  # another kind of problem, past the cut
    path = write_lines(tmp_path / "bare.jsonl", lines)
    r = run(db, "import", path)
    assert r.exit_code == 2
    listed = problems(r.stderr, path)
    assert listed == [(n, "item") for n in range(1, 1001)]
    assert r.stderr.splitlines()[-1] == (
        "Error: 1200 problems (the first 1000 listed); nothing appended")
    assert snapshot(db) == before


def test_references_defined_earlier_in_the_same_import_are_accepted(db_url, tmp_path):
    lines = [json.dumps(e) for e in SETUP] + [
        ev("ResourceDefined", id="n-1", resource="M2", input_location="I", output_location="O"),
        ev("RouteDefined", id="n-2", route="R2", operations=[{"op": 5, "resource": "M2"}]),
        ev("OrderCreated", id="n-3", order="P2", item="FG", qty=1, bom="B", route="R2"),
        ev("OperationReported", id="n-4", order="P2", op=5, good=1),
        ev("Reversal", id="n-5", reverses="n-4"),
        ev("Picked", id="n-6", item="RAW", qty=1, location="BULK", order="P2"),
        ev("Reversal", id="n-7", reverses="n-6"),
    ]
    r = run(db_url, "import", write_lines(tmp_path / "all.jsonl", lines))
    assert r.exit_code == 0, r.output
    assert f"{len(lines)} appended" in r.stdout
    with Ledger(db_url) as ledger:
        assert ledger.count() == len(lines)


@pytest.mark.parametrize(
    ("use", "define", "field"),
    [
        (receipt(item="LATE"), ev("ItemDefined", item="LATE"), "item"),
        (ev("OrderReleased", order="P9"),
         ev("OrderCreated", order="P9", item="FG", qty=1, bom="B"), "order"),
        (ev("OrderCreated", order="P9", item="FG", qty=1, bom="B9"),
         ev("BomDefined", bom="B9", item="FG", lines=[]), "bom"),
        (ev("RouteDefined", route="R9", operations=[{"op": 1, "resource": "M9"}]),
         ev("ResourceDefined", resource="M9", input_location="I", output_location="O"),
         "operations[0].resource"),
        (ev("Reversal", reverses="later-id"), receipt(id="later-id"), "reverses"),
    ],
    ids=["item", "order", "bom", "resource", "reversal"],
)
def test_reference_defined_later_in_the_file_is_rejected(
    use, define, field, ledger_with_setup, tmp_path
):
    db = ledger_with_setup
    before = snapshot(db)
    path = write_lines(tmp_path / "late.jsonl", [receipt(id="x-1"), use, define])
    r = run(db, "import", path)
    assert r.exit_code == 2, r.output
    assert problems(r.stderr, path) == [(2, field)]
    assert snapshot(db) == before
    # In the right order the same lines are fine.
    path = write_lines(tmp_path / "in-order.jsonl", [receipt(id="x-1"), define, use])
    r = run(db, "import", path)
    assert r.exit_code == 0, r.output


def test_a_bad_definition_does_not_define_its_name(sqlite_db, tmp_path):
    lines = [
        ev("ItemDefined", item="X", unit=""),  # bad: empty unit
        receipt(item="X"),  # so X is unknown here
    ]
    path = write_lines(tmp_path / "a.jsonl", lines)
    r = run(sqlite_db, "import", path)
    assert r.exit_code == 2
    assert problems(r.stderr, path) == [(1, "unit"), (2, "item")]


# --- mutated valid files (Hypothesis) ---------------------------------------------------

VALID = [json.dumps(e) for e in SETUP] + [
    ev("OrderReleased", id="v-1", order="P1"),
    ev("OrderStarted", id="v-2", order="P1", device="mobile"),
    report(id="v-3", good="2.5", error=0.5, hours="1.25"),
    ev("MaterialConsumed", id="v-4", order="P1", item="RAW", qty="-0.1", line=10),
    ev("ReportedAsFinished", id="v-5", order="P1", good=2, location="M1-OUT", batch="L1"),
    ev("Reversal", id="v-6", reverses="v-5", reason="wrong batch"),
    ev("Put", id="v-7", item="RAW", qty=1, location="M1-IN", order="P1", line=10, lp="LP1"),
]
FIELD_NAMES = sorted({k for line in VALID for k in json.loads(line)} | {"qtty", "Item", ""})
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def mutated_files(draw) -> tuple[list[bytes], int]:
    """The valid file with one line mutated; returns (lines, 1-based mutated line)."""
    index = draw(st.integers(0, len(VALID) - 1))
    raw = VALID[index].encode()
    event = json.loads(raw)
    kind = draw(st.sampled_from(["drop", "rename", "retype", "garbage", "truncate"]))
    if kind == "drop":
        del event[draw(st.sampled_from(sorted(event)))]
        raw = json.dumps(event).encode()
    elif kind == "rename":
        old = draw(st.sampled_from(sorted(event)))
        new = draw(st.sampled_from(FIELD_NAMES) | st.text(min_size=1, max_size=8))
        event[new] = event.pop(old)
        raw = json.dumps(event).encode()
    elif kind == "retype":
        key = draw(st.sampled_from(sorted(event)))
        value = draw(JSON_VALUES.filter(lambda v, old=event[key]: type(v) is not type(old)))
        event[key] = value
        raw = json.dumps(event).encode()
    elif kind == "garbage":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=6)) + raw[at:]
    else:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    lines = [line.encode() for line in VALID]
    lines[index] = raw
    return lines, index + 1


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    deadline=None,
)
@given(mutated=mutated_files())
def test_mutated_valid_file_imports_or_is_rejected_whole(mutated, tmp_path):
    lines, mutated_line = mutated
    work = tmp_path / uuid.uuid4().hex[:12]
    work.mkdir()
    db = str(work / "ledger.db")
    path = str(work / "mutated.jsonl")
    Path(path).write_bytes(b"\n".join(lines) + b"\n")

    r = CliRunner().invoke(cli, ["--db", db, "import", path])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exc_info
    with Ledger(db) as ledger:
        count = ledger.count()
    if r.exit_code == 0:
        # The mutation happened to give a valid file: it imported like any other.
        m = re.search(r"^(\d+) appended, (\d+) duplicates$", r.stdout, re.M)
        assert m, r.stdout
        assert count == int(m[1]) > 0
        assert run(db, "verify").exit_code == 0
        return
    assert r.exit_code == 2, r.output
    # One line per problem, then the summary: nothing else, nothing split over lines.
    *problem_lines, summary = r.stderr.splitlines()
    assert summary.startswith("Error: ") and "nothing appended" in summary
    matches = [PROBLEM.match(line) for line in problem_lines]
    assert matches and all(matches), r.stderr
    reported = [(m["file"], int(m["line"])) for m in matches]
    # Lines before the mutated one are still valid; a newline among the garbage bytes
    # may push later lines down by one.
    total = sum(chunk.count(b"\n") for chunk in lines) + len(lines)
    for file, line in reported:
        assert file == path
        assert mutated_line <= line <= total, (line, r.stderr)
    assert count == 0


def test_random_line_shuffles_are_judged_by_order(tmp_path):
    """Not Hypothesis, just a few seeds: a shuffled valid file either imports completely
    or names only lines that refer to something defined further down."""
    for seed in range(5):
        lines = VALID[:]
        random.Random(seed).shuffle(lines)
        db = str(tmp_path / f"shuffled-{seed}.db")
        path = write_lines(tmp_path / f"shuffled-{seed}.jsonl", lines)
        r = run(db, "import", path)
        if r.exit_code == 0:
            continue
        assert r.exit_code == 2
        for line, _field in problems(r.stderr, path):
            event = orjson.loads(lines[line - 1])
            assert event["type"] not in ("ItemDefined", "ResourceDefined"), r.stderr
        with Ledger(db) as ledger:
            assert ledger.count() == 0


def test_an_odd_unknown_key_is_quoted_and_keeps_the_message_on_one_line(sqlite_db, tmp_path):
    path = write_lines(tmp_path / "odd.jsonl", [receipt(**{"a: b\nc": 1})])
    r = run(sqlite_db, "import", path)
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == f'{path}:1: "a: b\\nc": unknown field'


def test_values_a_backend_cannot_store_are_rejected_on_both(ledger_with_setup, tmp_path):
    """Same answer on SQLite and PostgreSQL: no backend error (or traceback) leaks out."""
    db = ledger_with_setup
    before = snapshot(db)
    lines = [
        receipt(id="nul\u0000id"),  # PostgreSQL text cannot hold NUL
        ev("OrderReleased", order="P\u00001"),
        report(op=2**64),  # the stored encoding holds 64-bit integers
        ev("BomDefined", bom="B2", item="FG",
           lines=[{"line": -(2**63) - 1, "item": "RAW", "qty": 1}]),
    ]
    path = write_lines(tmp_path / "unstorable.jsonl", lines)
    r = run(db, "import", path)
    assert r.exit_code == 2, r.output
    assert problems(r.stderr, path) == [(1, "id"), (2, "order"), (3, "op"), (4, "lines[0].line")]
    assert snapshot(db) == before
