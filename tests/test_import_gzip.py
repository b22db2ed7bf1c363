"""Gzip-compressed input: ``import`` reads a compressed file or pipe as the lines it holds.

ERP and MES exports often arrive compressed. A file (or standard input) that starts with
gzip's magic bytes is decompressed as it is read, whatever its name: the same rows as the
plain file, the same line numbers in errors and warnings, the same choice of one or two
processes (made on the size of what it holds, not of the compressed bytes). Damaged
compressed data is one problem against the file, and nothing is appended.
"""

from __future__ import annotations

import gzip

import orjson
import pytest
from backflush.cli.main import cli
from backflush.ledger import importer, parallel
from backflush.ledger.store import Ledger
from click.testing import CliRunner
from test_import_parallel import _import, _plant_lines, _rows, _same, runs  # noqa: F401


def _files(tmp_path, lines: list[bytes]) -> tuple[str, str]:
    data = b"".join(x + b"\n" for x in lines)
    plain, packed = tmp_path / "h.jsonl", tmp_path / "h.jsonl.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    return str(plain), str(packed)


@pytest.mark.parametrize("workers", [False, True], ids=["one-process", "pipelined"])
def test_a_compressed_file_stores_what_the_plain_file_stores(tmp_path, monkeypatch, workers,
                                                              runs):  # noqa: F811
    lines = _plant_lines()
    plain, packed = _files(tmp_path, lines)
    content = len(b"".join(x + b"\n" for x in lines))
    # Between the compressed size and the content's: only the content's size pipelines it.
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", content - 1)
    one, two = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    a = _import(one, [plain], workers=workers, monkeypatch=monkeypatch)
    b = _import(two, [packed], workers=workers, monkeypatch=monkeypatch)
    _same(a, b)
    assert a.appended > 0 and not a.errors
    assert _rows(one) == _rows(two)
    if workers and parallel.usable():
        assert runs == [1, 1]  # the compressed one too, though it is far smaller
    assert importer.content_size(packed) == content
    assert importer.content_size(plain) == content


def test_compressed_standard_input_and_concatenated_members(tmp_path):
    lines = _plant_lines()
    half = len(lines) // 2
    data = [b"".join(x + b"\n" for x in part) for part in (lines[:half], lines[half:])]
    members = gzip.compress(data[0]) + gzip.compress(data[1])  # `cat a.gz b.gz`
    runner = CliRunner()
    db = str(tmp_path / "a.db")
    r = runner.invoke(cli, ["--db", db, "import", "-"], input=members)
    assert r.exit_code == 0, r.output
    ref = str(tmp_path / "ref.db")
    plain = tmp_path / "all.jsonl"
    plain.write_bytes(data[0] + data[1])
    assert runner.invoke(cli, ["--db", ref, "import", str(plain)]).exit_code == 0
    assert runner.invoke(cli, ["--db", db, "export"]).stdout == \
        runner.invoke(cli, ["--db", ref, "export"]).stdout


def test_errors_and_warnings_name_the_lines_of_the_content(tmp_path):
    lines = [
        {"type": "ItemDefined", "at": "2026-01-01T00:00:00Z", "id": "z1", "item": "A"},
        {"type": "InventoryReceived", "at": "2031-01-02T00:00:00Z", "id": "z2", "item": "A",
         "qty": 5, "location": "L"},
    ]
    src = tmp_path / "f.jsonl.gz"
    src.write_bytes(gzip.compress(b"\n".join(orjson.dumps(x) for x in lines) + b"\n"))
    runner = CliRunner()
    r = runner.invoke(cli, ["--db", str(tmp_path / "a.db"), "import", str(src)])
    assert r.exit_code == 0, r.output
    assert f"warning: {src}:2: at: 2031-01-02" in r.stderr
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"type": "ItemDefined"}\n\n{"type": "Nope"}\n'))
    r = runner.invoke(cli, ["--db", str(tmp_path / "b.db"), "import", str(bad)])
    assert r.exit_code == 2
    assert f"{bad}:1:" in r.stderr and f"{bad}:3:" in r.stderr


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "header only"])
def test_damaged_compressed_data_is_one_problem_and_nothing_is_appended(tmp_path, damage):
    lines = _plant_lines()
    packed = gzip.compress(b"".join(x + b"\n" for x in lines))
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    elif damage == "corrupted":
        mid = len(packed) // 2
        packed = packed[:mid] + bytes(b ^ 0xFF for b in packed[mid:mid + 64]) + \
            packed[mid + 64:]
    else:
        packed = packed[:5]
    src = tmp_path / "h.jsonl.gz"
    src.write_bytes(packed)
    db = tmp_path / "a.db"
    r = CliRunner().invoke(cli, ["--db", str(db), "import", str(src)])
    assert r.exit_code == 2, r.output
    assert f"{src}:0: (file): damaged gzip data" in r.stderr
    assert "Traceback" not in r.output + r.stderr
    assert r.stderr.strip().splitlines()[-1] == "Error: 1 problem; nothing appended"
    assert not db.exists() or Ledger(str(db)).count() == 0
