"""Idempotent import (DESIGN §2, §8): an id seen before with the same content is skipped,
with other content it is an error; events sent without an id get a stable derived one."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import orjson
from backflush.ledger.store import Ledger
from ledger_cli import run, snapshot

MASTER = [
    {"type": "ItemDefined", "at": "2026-04-01T06:00:00Z", "id": "m-1", "item": "FG"},
    {"type": "ItemDefined", "at": "2026-04-01T06:00:00Z", "id": "m-2", "item": "RAW",
     "unit": "kg"},
    {"type": "BomDefined", "at": "2026-04-01T06:01:00Z", "id": "m-3", "bom": "B",
     "item": "FG", "lines": [{"line": 10, "item": "RAW", "qty": "0.5"}]},
    {"type": "OrderCreated", "at": "2026-04-01T07:00:00Z", "id": "o-1", "order": "P1",
     "item": "FG", "qty": 4, "bom": "B"},
]
MOVES = [
    {"type": "InventoryReceived", "at": "2026-04-01T06:30:00Z", "id": "i-1", "item": "RAW",
     "qty": 10, "location": "BULK"},
    {"type": "OrderStarted", "at": "2026-04-01T07:10:00Z", "id": "o-2", "order": "P1"},
    {"type": "ReportedAsFinished", "at": "2026-04-01T08:00:00Z", "id": "o-3", "order": "P1",
     "good": 4},
]


def write_lines(path: Path, lines: list[dict]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in lines), encoding="utf-8")
    return str(path)


def test_same_file_twice_appends_nothing_the_second_time(db_url, tmp_path):
    src = write_lines(tmp_path / "day.jsonl", MASTER + MOVES)
    first = run(db_url, "import", src)
    assert first.exit_code == 0, first.output
    assert "7 appended, 0 duplicates" in first.stdout
    before = snapshot(db_url)

    second = run(db_url, "import", src)
    assert second.exit_code == 0, second.output
    assert "0 appended, 7 duplicates" in second.stdout
    assert snapshot(db_url) == before
    assert run(db_url, "verify").exit_code == 0


def test_overlapping_file_appends_only_the_new_events(db_url, tmp_path):
    assert run(db_url, "import", write_lines(tmp_path / "a.jsonl", MASTER)).exit_code == 0
    # A resend that repeats the master data and adds the day's moves.
    r = run(db_url, "import", write_lines(tmp_path / "b.jsonl", MASTER + MOVES))
    assert r.exit_code == 0, r.output
    assert "3 appended, 4 duplicates" in r.stdout
    with Ledger(db_url) as ledger:
        assert ledger.count() == 7


def test_reimporting_the_export_is_a_no_op(db_url, tmp_path):
    assert run(db_url, "import", write_lines(tmp_path / "a.jsonl", MASTER + MOVES)).exit_code == 0
    before = snapshot(db_url)
    exported = tmp_path / "export.jsonl"
    exported.write_bytes(before[1])
    r = run(db_url, "import", str(exported))
    assert r.exit_code == 0, r.output
    assert "0 appended, 7 duplicates" in r.stdout
    assert snapshot(db_url) == before


def test_same_id_with_other_content_is_an_error_naming_line_and_field(db_url, tmp_path):
    assert run(db_url, "import", write_lines(tmp_path / "a.jsonl", MASTER)).exit_code == 0
    before = snapshot(db_url)

    changed = dict(MASTER[3], qty=5)  # same id "o-1", other quantity
    path = write_lines(tmp_path / "b.jsonl", MOVES[:1] + [changed] + MOVES[1:])
    r = run(db_url, "import", path)
    assert r.exit_code == 2
    assert f"{path}:2: id: " in r.stderr
    assert "'o-1'" in r.stderr
    assert "nothing appended" in r.stderr
    # The new, valid lines of that file were not appended either.
    assert snapshot(db_url) == before


def test_same_id_twice_in_one_file_with_other_content(db_url, tmp_path):
    twin = dict(MOVES[0], qty=11)
    path = write_lines(tmp_path / "a.jsonl", MASTER + [MOVES[0], twin])
    r = run(db_url, "import", path)
    assert r.exit_code == 2
    assert f"{path}:6: id: " in r.stderr
    with Ledger(db_url) as ledger:
        assert ledger.count() == 0


def test_same_line_twice_in_one_file_is_a_duplicate_not_an_error(db_url, tmp_path):
    path = write_lines(tmp_path / "a.jsonl", MASTER + [MOVES[0], MOVES[0]])
    r = run(db_url, "import", path)
    assert r.exit_code == 0, r.output
    assert "5 appended, 1 duplicates" in r.stdout


def _without_ids(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "id"} for e in lines]


def _ids(db: str) -> list[str]:
    r = run(db, "export")
    return [orjson.loads(line)["id"] for line in r.stdout_bytes.splitlines()]


def test_events_without_id_get_stable_ids_and_reimport_is_idempotent(db_url, tmp_path):
    # The same receipt sent twice in one file is two receipts (two pallets), not a resend.
    lines = _without_ids(MASTER + MOVES + [MOVES[0]])
    path = write_lines(tmp_path / "noid.jsonl", lines)
    r = run(db_url, "import", path)
    assert r.exit_code == 0, r.output
    assert "8 appended, 0 duplicates" in r.stdout
    ids = _ids(db_url)
    assert len(ids) == len(set(ids)) == 8
    for i in ids:
        uuid.UUID(i)  # assigned ids are UUIDs

    r = run(db_url, "import", path)
    assert r.exit_code == 0, r.output
    assert "0 appended, 8 duplicates" in r.stdout
    assert _ids(db_url) == ids

    # Derived from content, not from the ledger: another ledger assigns the same ids.
    other = str(tmp_path / "other.db")
    assert run(other, "import", path).exit_code == 0
    assert _ids(other) == ids


def test_an_event_without_id_that_differs_is_a_new_event(db_url, tmp_path):
    lines = _without_ids(MASTER + MOVES[:1])
    assert run(db_url, "import", write_lines(tmp_path / "a.jsonl", lines)).exit_code == 0
    later = dict(lines[-1], qty=3)
    r = run(db_url, "import", write_lines(tmp_path / "b.jsonl", lines + [later]))
    assert r.exit_code == 0, r.output
    assert "1 appended, 5 duplicates" in r.stdout


def test_dry_run_appends_nothing_but_reports_the_count(db_url, tmp_path):
    src = write_lines(tmp_path / "day.jsonl", MASTER + MOVES)
    r = run(db_url, "import", "--dry-run", src)
    assert r.exit_code == 0, r.output
    assert "7 would be appended, 0 duplicates" in r.stdout
    with Ledger(db_url) as ledger:
        assert ledger.count() == 0

    assert run(db_url, "import", write_lines(tmp_path / "a.jsonl", MASTER)).exit_code == 0
    before = snapshot(db_url)
    r = run(db_url, "import", "--dry-run", src)
    assert r.exit_code == 0, r.output
    assert "3 would be appended, 4 duplicates" in r.stdout
    assert snapshot(db_url) == before

    # A dry run of a bad file reports its problems like a real import would.
    bad = write_lines(tmp_path / "bad.jsonl", [dict(MOVES[0], qty=-1)])
    r = run(db_url, "import", "--dry-run", bad)
    assert r.exit_code == 2
    assert f"{bad}:1: qty: must not be negative" in r.stderr
    assert snapshot(db_url) == before


def test_id_conflicts_after_a_bad_line_are_reported_too(db_url, tmp_path):
    """Every problem in one go: a bad line must not hide the id conflicts after it."""
    assert run(db_url, "import", write_lines(tmp_path / "a.jsonl", MASTER)).exit_code == 0
    before = snapshot(db_url)
    path = tmp_path / "b.jsonl"
    write_lines(
        path,
        [
            dict(MOVES[0], qty=-1),  # 1: bad quantity
            dict(MASTER[3], qty=5),  # 2: conflicts with the ledger
            dict(MOVES[1]),  # 3: fine
            dict(MOVES[1], device="mobile"),  # 4: conflicts with line 3
        ],
    )
    r = run(db_url, "import", str(path))
    assert r.exit_code == 2
    problems = [line for line in r.stderr.splitlines() if line.startswith(f"{path}:")]
    assert problems == [
        f"{path}:1: qty: must not be negative",
        f"{path}:2: id: id 'o-1' already recorded with other content",
        f"{path}:4: id: id 'o-2' already recorded with other content",
    ]
    assert snapshot(db_url) == before
