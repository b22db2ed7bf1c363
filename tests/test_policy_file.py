"""``--policy`` files reported like import files: FILE:LINE: field: reason, real lines,
plain words, did-you-mean (issue 9 item 5)."""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from backflush.cli.main import cli
from backflush.ledger.codec import replay_policy
from backflush.ledger.events import parse_policy
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from backflush.errors import BadInput
from backflush.policy import Policy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
POLICIES = sorted(EXAMPLES.glob("*/*policy*.json"))
FIX = EXAMPLES / "001-terminals-and-scanner" / "fix-policy.json"
INTERNALS = re.compile(r"Input should|literal\[|list\[|pydantic|type=|errors\.pydantic|"
                       r"validation error|union_tag|\[type")

BAD = """{
  "default_input_location": "BACKFLUSH",
  "tolerance_pct": "abc",
  "rules": [
    {"trigger": "start", "device": "*", "flush": ["start"]},
    {
      "trigger": "finsh",
      "devise": "mobile",
      "flush": ["finish", "producton_finish"],
      "basis": "god"
    },
    {"trigger": "finish", "device": "mobil", "flush": "alway"},
    {"device": "client", "flush": [], "flush": []}
  ],
  "tolerence_pct": 1
}
"""


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of ``needle`` (the test's own search)."""
    return text[: text.index(needle)].count("\n") + 1


def errors(text: str | bytes, source: str = "p.json") -> list[str]:
    with pytest.raises(BadInput) as exc:
        Policy.parse(text, source)
    for e in exc.value.errors:
        assert not INTERNALS.search(e), e
        assert re.match(rf"{re.escape(source)}:\d+: \S+: .+", e), e
    return exc.value.errors


def test_every_mistake_on_its_line() -> None:
    errs = errors(BAD)
    expect = {
        (line_of(BAD, '"tolerance_pct"'), "tolerance_pct", "must be a decimal number"),
        (line_of(BAD, '"finsh"'), "rules[1].trigger", "did you mean 'finish'?"),
        (line_of(BAD, '"devise"'), "rules[1].devise", "unknown field; did you mean 'device'?"),
        (line_of(BAD, '"producton_finish"'), "rules[1].flush[1]",
         "did you mean 'production_finish'?"),
        (line_of(BAD, '"god"'), "rules[1].basis", "did you mean 'good'?"),
        (line_of(BAD, '"mobil"'), "rules[2].device", "did you mean 'mobile'?"),
        (line_of(BAD, '"alway"'), "rules[2].flush", "did you mean 'always'?"),
        (line_of(BAD, '"device": "client"'), "rules[3].flush", "duplicate key"),
        (line_of(BAD, '"device": "client"'), "rules[3].trigger", "required field is missing"),
        (line_of(BAD, '"tolerence_pct"'), "tolerence_pct", "did you mean 'tolerance_pct'?"),
    }
    assert len(errs) == len(expect)
    for line, field, reason in expect:
        assert any(e.startswith(f"p.json:{line}: {field}: ") and reason in e for e in errs), (
            line, field, reason, errs)
    # in line order, each field once
    lines = [int(e.split(":")[1]) for e in errs]
    assert lines == sorted(lines)


@pytest.mark.parametrize(("text", "line", "field", "reason"), [
    ("", 1, "(policy)", "malformed JSON"),
    ('{\n  "rules": [1,]\n}', 2, "(policy)", "malformed JSON"),
    ("[]", 1, "(policy)", "must be a JSON object"),
    ('{\n\n  "rules": {}\n}', 3, "rules", "must be a list"),
    ('{"tolerance_pct": -1}', 1, "tolerance_pct", "must not be negative"),
    ('{\n "rules": [\n  {"trigger": "start",\n   "flush": ["start"], "resource": 5}]}', 4,
     "rules[0].resource", "must be a string"),
    ('{\n "rules": [\n\n  {"trigger": "start"}\n ]\n}', 4, "rules[0].flush",
     "required field is missing"),
    ('{"a": 1,\n "a": 2}', 2, "a", "duplicate key (first on line 1)"),
])
def test_single_mistakes(text: str, line: int, field: str, reason: str) -> None:
    errs = errors(text)
    assert any(e.startswith(f"p.json:{line}: {field}: ") and reason in e for e in errs), errs


def test_not_utf8() -> None:
    assert errors(b'{\n"rules": "\xff"}') == ["p.json:2: (policy): not UTF-8 text"]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_valid_files_unchanged(path: Path) -> None:
    raw = path.read_bytes()
    pol = Policy.from_file(path)
    assert pol.params == replay_policy(parse_policy(raw))
    assert pol.sha256 == hashlib.sha256(raw).hexdigest() and pol.source == str(path)
    assert Policy.parse(json.loads(raw)).params == pol.params


RULE_KEYS = ["trigger", "device", "flush", "basis"]


@given(st.data())
def test_a_misspelled_key_is_found_and_named(data: st.DataObject) -> None:
    doc = json.loads(FIX.read_text())
    i = data.draw(st.integers(0, len(doc["rules"]) - 1), label="rule")
    key = data.draw(st.sampled_from([k for k in RULE_KEYS if k in doc["rules"][i]]))
    pos = data.draw(st.integers(1, len(key) - 1))
    typo = key[:pos] + key[pos + 1:]  # one letter dropped
    rule = doc["rules"][i]
    doc["rules"][i] = {(typo if k == key else k): v for k, v in rule.items()}
    text = json.dumps(doc, indent=data.draw(st.sampled_from([1, 2, 4])))
    errs = errors(text)
    # the typo's own line: the i-th rule object's lines, found by counting rule starts
    starts = [m.start() for m in re.finditer(r'\{\s*"', text)][1:]  # skip the outer object
    typo_at = text.index(f'"{typo}"', starts[i])
    line = text[:typo_at].count("\n") + 1
    assert any(e.startswith(f"p.json:{line}: rules[{i}].{typo}: unknown field") for e in errs)
    if key in ("trigger", "flush"):  # required: also reported missing
        assert any(f"rules[{i}].{key}: required field is missing" in e for e in errs)


@given(st.sampled_from(["start", "finish", "operation", "put"]), st.integers(0, 3))
def test_a_misspelled_value_gets_a_suggestion(value: str, cut: int) -> None:
    cut %= len(value)
    typo = value[:cut] + value[cut + 1:]
    text = '{"rules": [\n {"trigger": "' + typo + '", "flush": []}\n]}'
    errs = errors(text)
    assert len(errs) == 1 and errs[0].startswith("p.json:2: rules[0].trigger: ")
    assert f"did you mean '{value}'?" in errs[0]


def test_cli_reports_the_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(BAD)
    db = str(tmp_path / "l.db")
    runner = CliRunner()
    r = runner.invoke(cli, ["--db", db, "import",
                            str(EXAMPLES / "001-terminals-and-scanner" / "events.jsonl")])
    assert r.exit_code == 0, r.output
    for args in (["findings", "--policy", str(bad)], ["policy", "check", str(bad)],
                 ["consumption", "--order", "P001T-2", "--policy", str(bad)]):
        r = runner.invoke(cli, ["--db", db, *args])
        assert r.exit_code == 2, r.output
        assert f"{bad}:{line_of(BAD, 'devise')}: rules[1].devise: unknown field" in r.stderr
        assert "Traceback" not in r.output and not INTERNALS.search(r.stderr)


def test_a_policy_built_in_python_takes_decimals() -> None:
    # Quantities are Decimal in the API: a policy dict may hold them as a file holds text.
    doc = json.loads(FIX.read_text())
    as_text = Policy.parse(dict(doc, tolerance_pct="2.5")).params
    assert Policy.parse(dict(doc, tolerance_pct=Decimal("2.5"))).params == as_text
    with pytest.raises(BadInput) as exc:  # a value no field takes: a one-line error, no crash
        Policy.parse(dict(doc, tolerance_pct=object()), "mine")
    assert exc.value.errors[0].startswith("mine: ")


def _ledger_of(tmp_path: Path, events: list[str]) -> str:
    src = tmp_path / "events.jsonl"
    src.write_text("".join(events))
    db = str(tmp_path / "l.db")
    r = CliRunner().invoke(cli, ["--db", db, "import", str(src)])
    assert r.exit_code == 0, r.output
    return db


def _answers(db: str, *policy: str) -> list[bytes]:
    runner = CliRunner()
    out = []
    for q in (["findings"], ["onhand"], ["wip"], ["hours"]):
        r = runner.invoke(cli, ["--db", db, *q, "--json", *policy])
        assert r.exit_code == 0, r.output
        out.append(r.stdout_bytes)
    return out


ONE_POLICY = ["001-robot-packing", "001-sfg-between-orders", "002-staged-backflush"]


@pytest.mark.parametrize("example", [*ONE_POLICY, "no-parameters"])
def test_policy_show_replays_to_the_recorded_answers(tmp_path: Path, example: str) -> None:
    # `policy show` is the start of a what-if: replayed unchanged as --policy, it must give
    # the recorded answers (these histories record one set of parameters, or none).
    name = "001-robot-packing" if example == "no-parameters" else example
    lines = (EXAMPLES / name / "events.jsonl").read_text().splitlines(keepends=True)
    if example == "no-parameters":
        lines = [x for x in lines if "ProductionParametersSet" not in x]
    db = _ledger_of(tmp_path, lines)
    r = CliRunner().invoke(cli, ["--db", db, "policy", "show"])
    assert r.exit_code == 0, r.output
    shown = tmp_path / "shown.json"
    shown.write_bytes(r.stdout_bytes)
    doc = json.loads(r.stdout)
    assert set(doc) <= {"default_input_location", "tolerance_pct", "rules"}
    if example == "no-parameters":
        assert doc["rules"] is None and "the defaults" in r.stderr
    else:
        assert doc["rules"] is not None or example == "002-staged-backflush"
    assert Policy.from_file(shown).params  # a valid --policy file
    assert _answers(db, "--policy", str(shown)) == _answers(db)


def test_policy_show_is_the_one_in_force_then(tmp_path: Path) -> None:
    # 001-terminals-and-scanner changes its parameters at 11:30: before and after differ,
    # and each is what was recorded then (envelope fields left out).
    db = _ledger_of(tmp_path, [(EXAMPLES / "001-terminals-and-scanner" / "events.jsonl")
                               .read_text()])
    recorded = [json.loads(x) for x in (EXAMPLES / "001-terminals-and-scanner" /
                                        "events.jsonl").read_text().splitlines()
                if "ProductionParametersSet" in x]
    runner = CliRunner()
    before = runner.invoke(cli, ["--db", db, "policy", "show", "--at", "2026-11-03T11:00:00Z"])
    after = runner.invoke(cli, ["--db", db, "policy", "show"])
    assert before.exit_code == after.exit_code == 0
    for got, ev in ((json.loads(before.stdout), recorded[0]),
                    (json.loads(after.stdout), recorded[1])):
        assert Policy.parse(got).params == replay_policy(parse_policy(json.dumps(
            {k: v for k, v in ev.items() if k not in ("type", "at", "id")}).encode()))
    assert json.loads(before.stdout) != json.loads(after.stdout)
    r = runner.invoke(cli, ["--db", str(tmp_path / "none.db"), "policy", "show"])
    assert r.exit_code == 2 and "no ledger" in r.stderr
