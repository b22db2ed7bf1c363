"""Every example history against its hand-computed ``expected.json`` (examples/README.md).

Findings are compared on (code, order, line, item, qty) exactly — the same set, quantities
numerically; consumption on (order, line, item, expected, posted). With ``fix-policy.json``
and ``sitewide-policy.json`` the ``*_with_fix_policy`` / ``*_with_sitewide_policy`` keys, each
restricted to the example's own orders.
"""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest
from backflush.cli.main import cli
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NAMES = sorted(p.name for p in EXAMPLES.iterdir() if (p / "events.jsonl").exists())


def _orders(name: str) -> list[str]:
    out = []
    for raw in (EXAMPLES / name / "events.jsonl").read_bytes().splitlines():
        if raw.strip():
            ev = orjson.loads(raw)
            if ev["type"] == "OrderCreated":
                out.append(ev["order"])
    return out


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """One imported ledger per example."""
    out = {}
    for name in NAMES:
        db = str(tmp_path_factory.mktemp(name) / "ledger.db")
        r = CliRunner().invoke(cli, ["--db", db, "import", str(EXAMPLES / name / "events.jsonl")])
        assert r.exit_code == 0, r.output
        out[name] = db
    return out


def _json(db: str, *args: str):
    r = CliRunner().invoke(cli, ["--db", db, *args, "--json"])
    assert r.exit_code == 0, r.output
    return orjson.loads(r.output)


def _finding_set(rows) -> list[tuple]:
    return sorted((r["code"], r["order"], r["line"], r["item"], D(r["qty"]).normalize())
                  for r in rows)


def _consumption_set(rows) -> list[tuple]:
    return sorted((r["order"], r["line"], r["item"], D(r["expected"]).normalize(),
                   D(r["posted"]).normalize()) for r in rows)


def _variants(name: str):
    exp = orjson.loads((EXAMPLES / name / "expected.json").read_bytes())
    yield "recorded", None, exp.get("findings"), exp.get("consumption")
    for kind in ("fix", "sitewide"):
        policy = EXAMPLES / name / f"{kind}-policy.json"
        f, c = exp.get(f"findings_with_{kind}_policy"), exp.get(f"consumption_with_{kind}_policy")
        if policy.exists():
            yield kind, str(policy), f, c
        else:
            assert not f and not c, f"{name}: {kind} expectations without {policy.name}"


CASES = [(name, kind) for name in NAMES for kind, *_ in _variants(name)]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_findings_match_expected(dbs, name, kind):
    _, policy, expected, _ = next(v for v in _variants(name) if v[0] == kind)
    assert expected is not None
    args = ["findings"] + (["--policy", policy] if policy else [])
    orders = set(_orders(name))
    got = [r for r in _json(dbs[name], *args) if r["order"] in orders]
    assert _finding_set(got) == _finding_set(expected)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_consumption_matches_expected(dbs, name, kind):
    _, policy, _, expected = next(v for v in _variants(name) if v[0] == kind)
    if expected is None:
        pytest.skip("no consumption expectation for this policy")
    got = []
    for order in _orders(name):
        args = ["consumption", "--order", order] + (["--policy", policy] if policy else [])
        got += _json(dbs[name], *args)
    assert _consumption_set(got) == _consumption_set(expected)


def test_all_examples_in_one_ledger_give_the_same_findings(tmp_path):
    """The demo imports every example into one ledger: nothing may leak between them."""
    db = str(tmp_path / "all.db")
    files = [str(EXAMPLES / n / "events.jsonl") for n in NAMES]
    assert CliRunner().invoke(cli, ["--db", db, "import", *files]).exit_code == 0
    got = _json(db, "findings")
    want = []
    for name in NAMES:
        want += orjson.loads((EXAMPLES / name / "expected.json").read_bytes())["findings"]
    assert _finding_set(got) == _finding_set(want)
