"""The attack list (``strict_input.jsonl``): each hostile line is refused with its reason.

Every entry is data: ``attack`` (what it tries), ``issue`` (where it was reported),
``expect`` ("reject" or "accept"), the line (``event``: an object, written as JSON;
``raw``: the exact text), and for rejections the ``field`` and a ``reason`` fragment the
``FILE:LINE: field: reason`` message must carry. Add a line to the file to add an attack.

Each attack runs in one file between good lines, on SQLite and PostgreSQL, written both as
raw UTF-8 and with every non-ASCII character escaped: the import must exit 2, name exactly
the bad lines, and append nothing. The accepted edges must import and replay.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ledger_cli import PLANT, run, snapshot

HERE = Path(__file__).parent
ATTACKS = [json.loads(line) for line in (HERE / "strict_input.jsonl").read_text().splitlines()]
AT = "2026-05-01T08:00:00Z"
SETUP = [
    *PLANT,
    {"type": "InventoryReceived", "at": "2026-05-01T07:10:00Z", "id": "s-8", "item": "RAW",
     "qty": 1, "location": "BULK"},
    {"type": "Reversal", "at": "2026-05-01T07:20:00Z", "id": "s-9", "reverses": "s-8"},
]


def good(i: int) -> str:
    return json.dumps({"type": "InventoryReceived", "at": AT, "id": f"good-{i}",
                       "item": "RAW", "qty": 1, "location": "BULK"})


def line_of(attack: dict, ascii_only: bool) -> str:
    if "raw" in attack:
        return attack["raw"]
    return json.dumps(attack["event"], ensure_ascii=ascii_only)


@pytest.fixture
def ledger(db_url, tmp_path) -> str:
    path = tmp_path / "setup.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in SETUP))
    r = run(db_url, "import", str(path))
    assert r.exit_code == 0, r.output
    return db_url


def test_the_list_is_well_formed():
    assert len(ATTACKS) >= 60
    for a in ATTACKS:
        assert a["expect"] in ("reject", "accept"), a
        assert ("raw" in a) != ("event" in a), a
        if a["expect"] == "reject":
            assert a["field"] and a["reason"], a
    names = [a["attack"] for a in ATTACKS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("encoding", ["utf8", "escaped"])
def test_every_attack_is_refused_with_its_reason(ledger, tmp_path, encoding):
    before = snapshot(ledger)
    rejects = [a for a in ATTACKS if a["expect"] == "reject"]
    lines, where = [good(0)], {}
    for i, a in enumerate(rejects, start=1):
        lines.append(line_of(a, encoding == "escaped"))
        where[len(lines)] = a
        lines.append(good(i))
    path = tmp_path / "attacks.jsonl"
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")

    r = run(ledger, "import", str(path))

    assert r.exit_code == 2, r.output
    problems = [x for x in r.stderr.splitlines() if x.startswith(f"{path}:")]
    by_line: dict[int, list[str]] = {}
    for p in problems:
        n = int(p[len(str(path)) + 1 :].split(":", 1)[0])
        by_line.setdefault(n, []).append(p)
    missed = []
    for n, a in where.items():
        want = f"{path}:{n}: {a['field']}: "
        got = by_line.pop(n, [])
        if not any(p.startswith(want) and a["reason"] in p for p in got):
            missed.append((a["attack"], want + a["reason"], got))
    assert not missed, "\n".join(map(str, missed))
    assert not by_line, f"good lines reported: {by_line}"
    assert f"Error: {len(problems)} problems; nothing appended" in r.stderr
    assert snapshot(ledger) == before


@pytest.mark.parametrize("encoding", ["utf8", "escaped"])
def test_accepted_edges_import_and_replay(ledger, tmp_path, encoding):
    accepts = [a for a in ATTACKS if a["expect"] == "accept"]
    path = tmp_path / "edges.jsonl"
    path.write_text(
        "".join(line_of(a, encoding == "escaped") + "\n" for a in accepts), encoding="utf-8"
    )
    r = run(ledger, "import", str(path))
    assert r.exit_code == 0, r.output
    assert f"{len(accepts)} appended" in r.stdout
    for args in (["onhand", "--json"], ["findings", "--json"], ["wip", "--json"]):
        r = run(ledger, *args, "--at", "2026-05-02")
        assert r.exit_code in (0, 1), (args, r.output)
        json.loads(r.stdout)
    assert run(ledger, "verify").exit_code == 0


def test_an_overlong_line_is_refused_without_reading_it_whole(sqlite_db, tmp_path):
    from backflush.ledger.importer import MAX_LINE

    path = tmp_path / "long.jsonl"
    with path.open("w") as fh:
        fh.write(json.dumps(SETUP[1]) + "\n")
        long_item = {"type": "ItemDefined", "at": AT, "item": "x" * (MAX_LINE + 10)}
        fh.write(json.dumps(long_item) + "\n")
        fh.write(json.dumps(SETUP[0]) + "\n")
    r = run(sqlite_db, "import", str(path))
    assert r.exit_code == 2
    assert r.stderr.splitlines()[0] == f"{path}:2: (event): line longer than {MAX_LINE} bytes"
    assert len(r.stderr.splitlines()) == 2
