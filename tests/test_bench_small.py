"""The plant benchmark (bench/plant.py) at a small size, so it cannot rot.

These tests never check timings: they check that one run produces a complete, well-formed
report (every figure of issue 7 measured, on SQLite and on PostgreSQL), that the late-import
file is what the report says it is, that the raw read-back found the stored events, and that
the report's ratios and verdicts follow from the samples.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent
PLANT = REPO / "bench" / "plant.py"
SMALL = ["--events", "2500", "--small", "800", "--reps", "1", "--query-reps", "1",
         "--pass-reps", "1"]


def _plant():
    spec = importlib.util.spec_from_file_location("bench_plant", PLANT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_plant"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def _run(out: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(PLANT), *SMALL, "--out", str(out), *extra],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["errors"] == []
    md = (out / "report.md").read_text()
    table = [x for x in md.splitlines() if x.startswith("| ")]
    assert table[0].startswith("| backend | figure | measured | target | ratio | result |")
    assert len(table) == len(report["rows"]) + 1  # header + one line per row
    assert md.split("\n\n", 1)[1] in proc.stdout  # the table is printed, ready to paste
    return report


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


# Every median the report is built from, per backend.
TIMED = [
    "raw_insert", "raw_read", "floor", "import", "ingest", "first_query", "rebuild", "late_import",
    "late_first_query", "late_total", "stream.events", "stream.export", "stream.findings",
    "stream.hours", "other.verify", "other.verify --deep", "other.wip --policy P --at END",
    "other.findings --policy P --at END",
] + [f"{tier}.{q}" for tier in ("small", "big")
     for q in ("pass", "version", "onhand", "wip", "consumption", "findings_order",
               "onhand.table", "wip.table", "consumption.table", "findings_order.table")]

FIGURES = [
    "raw insert", "raw read-back", "storage floor: the stored event rows alone",
    "import, ingest phase alone", "import, whole process",
    "end to end: import + first query", "full rebuild", "late import (",
    "late import + first query / full rebuild", "python -c pass [", "--version [",
    "onhand --at T [", "wip --at T [", "consumption --order O [", "findings --order O [",
    "onhand --at T (table) [", "wip --at T (table) [", "consumption --order O (table) [",
    "findings --order O (table) [",
    "events: first output byte", "export: first output byte", "findings: first output byte",
    "hours: first output byte", "peak RSS: import", "peak RSS: rebuild", "peak RSS: events",
    "findings --order O, net of python -c pass",
    "peak RSS: hours", "peak RSS: verify --deep (took", "peak RSS: onhand --policy P --at END",
]


def _check_backend(report: dict, name: str) -> None:
    meta, b = report["meta"], report["backends"][name]
    for key in TIMED:
        assert b["median_s"][key] > 0, key
    assert set(b["ttfb_s"]) == {"stream.events", "stream.export", "stream.findings",
                                "stream.hours", "other.findings --policy P --at END",
                                "other.hours --policy P --at END"}
    assert all(v > 0 for v in b["peak_rss_mb"].values())
    assert b["cpu_s"]["import"] > 0 and b["cpu_s"]["rebuild"] > 0
    # The raw read-back read the table holding the events, and every event in it.
    assert b["info"]["raw_read_rows"] == meta["events_big"]
    rows = [r for r in report["rows"] if r["backend"] == name]
    for fig in FIGURES:
        assert any(r["figure"].startswith(fig) for r in rows), fig
    for r in rows:
        assert r["result"] in {"pass", "FAIL", "n/a"}
        assert r["measured"] != "n/a", r
        if r["target"] not in {"baseline", "info"}:
            assert r["result"] != "n/a", r  # every target gets a verdict
    if name == "postgres":
        assert any(r["figure"] == "import, ingest rate" for r in rows)
    else:  # (PostgreSQL's rebuild met its target: its floor is not asked)
        assert b["median_s"]["floor_projections"] > 0
        assert any(r["figure"].startswith("storage floor: the projection rows alone")
                   for r in rows)


def _check_files(report: dict, work: Path) -> None:
    """The history files are what the report says: big, small prefix, 1,000-event tail."""
    meta = report["meta"]
    big = [orjson.loads(x) for x in (work / "big.jsonl").read_bytes().splitlines()]
    small = (work / "small.jsonl").read_bytes().splitlines()
    tail = [orjson.loads(x) for x in (work / "tail.jsonl").read_bytes().splitlines()]
    assert len(big) == meta["events_big"] and len(small) == meta["events_small"]
    assert [orjson.loads(x) for x in small] == big[: len(small)]
    assert len(tail) == meta["tail_events"] == 1000
    assert not {e["id"] for e in tail} & {e["id"] for e in big}  # only new events
    last = max(_at(e["at"]) for e in big)
    late = [e for e in tail if _at(e["at"]) < last]
    assert len(late) == meta["tail_late"] == meta["held_back"] == 20  # 2%
    assert all((last - _at(e["at"])).total_seconds() <= 24 * 3600 for e in late)
    assert {e["type"] for e in late} == {"OperationReported"}
    assert {e["order"] for e in late} <= {e["order"] for e in big if e["type"] == "OrderCreated"}


def test_bench_sqlite_small(tmp_path: Path) -> None:
    report = _run(tmp_path)
    assert list(report["backends"]) == ["sqlite"]
    _check_backend(report, "sqlite")
    _check_files(report, tmp_path / "work")
    assert not list((tmp_path / "work" / "sqlite").glob("*.db"))  # ledgers dropped


@pytest.mark.postgres
def test_bench_postgres_small(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    report = _run(tmp_path, "--no-sqlite", "--pg", pg_url)
    assert list(report["backends"]) == ["postgres"]
    _check_backend(report, "postgres")
    with psycopg.connect(pg_url) as conn:  # the bench drops the databases it made
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'bfbench_%'"
        ).fetchall()
    assert left == []


def test_a_failing_command_is_reported_and_the_rest_measured(tmp_path: Path) -> None:
    """A command that fails costs its own figures, not the whole (long) run."""
    real = Path(sys.executable).parent / "backflush"
    fake = tmp_path / "backflush"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = rebuild ] && { echo "rebuild broke" >&2; exit 3; }; done\n'
        f'exec "{real}" "$@"\n'
    )
    fake.chmod(0o755)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(PLANT), *SMALL, "--events", "1500", "--out", str(out),
         "--backflush", str(fake)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 1
    report = orjson.loads((out / "report.json").read_bytes())
    (err,) = report["errors"]
    assert err["error"].startswith("rebuild: rebuild: exit 3") and "rebuild broke" in err["error"]
    rows = {r["figure"]: r for r in report["rows"]}
    assert rows["full rebuild, whole process"]["measured"] == "n/a"
    assert rows["full rebuild, whole process"]["result"] == "n/a"
    medians = report["backends"]["sqlite"]["median_s"]
    assert "rebuild" not in medians
    for key in ("import", "big.onhand", "stream.hours", "late_total"):  # phases after it ran
        assert medians[key] > 0
    assert not list((out / "work" / "sqlite").glob("*.db"))


def test_rows_follow_from_samples() -> None:
    """Ratios are baseline time / ledger time; verdicts compare them with issue 7's targets."""
    plant = _plant()
    s = plant.Samples()
    for key, v in {
        "raw_insert": 1.0, "raw_read": 0.5, "floor": 2.0, "ingest": 4.0, "import": 5.0,
        "first_query": 1.0, "rebuild": 2.0, "late_total": 0.25,
        "small.pass": 0.02, "small.version": 0.07, "small.onhand": 0.09,
        "big.pass": 0.02, "big.version": 0.05, "big.onhand": 0.11, "big.findings_order": 0.13,
    }.items():
        s.add(key, v)
    tier = plant.Tier("big", Path("big.jsonl"), 1000, [], [], "")
    hist = plant.History(
        big=tier, small=plant.Tier("small", Path("s"), 100, [], [], ""), tail=Path("t"),
        tail_events=1000, tail_late=20, held_back=20, max_late_h=23.0, shift_h=0.0,
        simulate_cmd=[], simulate_s=0.0, tail_last_at="",
    )
    rows = {r.figure: r for r in plant.rows_for("postgres", s, hist, "COPY")}
    floor = rows["storage floor: the stored event rows alone (bf_events, bf_chain)"]
    assert floor.ratio == pytest.approx(0.5) and floor.ok is None  # information, no target
    ingest = rows["import, ingest phase alone (run_import)"]
    assert ingest.ratio == pytest.approx(0.25) and ingest.ok  # >= 0.2x COPY
    assert rows["import, ingest rate"].ok is False  # 250 ev/s < 30,000
    e2e = rows["end to end: import + first query"]
    assert e2e.ratio == pytest.approx(1.5 / 6.0) and e2e.ok
    rebuild = rows["full rebuild, whole process"]
    assert rebuild.ratio == pytest.approx(0.25) and rebuild.ok
    late = rows["late import + first query / full rebuild"]
    assert late.ratio == pytest.approx(0.125) and late.ok is False
    assert rows["late import (1000 events, 20 late <= 24 h) + first query"].ok
    assert rows["--version [100 ev]"].ok is False  # 3.5x
    assert rows["--version [1,000 ev]"].ok  # 2.5x
    assert rows["onhand --at T [100 ev]"].ok and rows["onhand --at T [1,000 ev]"].ok is False
    assert rows["wip --at T [1,000 ev]"].value == "n/a" and rows["wip --at T [1,000 ev]"].ok is None
    net = rows["findings --order O, net of python -c pass [1,000 ev]"]
    assert net.value == "110.0 ms" and net.ok is False  # > 100 ms
    md = plant.markdown(list(rows.values()))
    assert "| postgres | end to end: import + first query | 6.000 s |" in md
    assert "**FAIL**" in md


def test_spread_is_even_and_keeps_the_ends() -> None:
    plant = _plant()
    assert plant.spread(list(range(101)), 5) == [0, 25, 50, 75, 100]
    assert plant.spread([1, 2, 3], 1) == [2]
    assert plant.spread([], 3) == []


def test_the_report_never_shows_a_password() -> None:
    plant = _plant()
    assert plant.redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert plant.redact("postgresql://postgres@h:5432/db") == "postgresql://postgres@h:5432/db"
    assert plant.redact("--events") == "--events"


def test_memory_growth_small(tmp_path: Path) -> None:
    """bench/memory_growth.py: every command measured at both sizes, each row's figures
    from its own samples (the sizes are far too small for the growth to mean anything)."""
    script = REPO / "bench" / "memory_growth.py"
    proc = subprocess.run([sys.executable, str(script), "--events", "1500", "--times", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = [x for x in (tmp_path / "report.md").read_text().splitlines()
             if x.startswith("| ")]
    assert table[0] == ("| command | 1,500 events | 3,000 events | largest, per 1M events more"
                        " | <= 150 MB at 3,000 |")
    spec = importlib.util.spec_from_file_location("bench_memory", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    labels = [label for label, _ in mod.commands("O", "I")]
    assert [x.split(" | ")[0][2:] for x in table[1:]] == labels
    for row in table[1:]:
        _, small, big, _, verdict = row.strip("| ").split(" | ")
        # One peak per process (a long import or rebuild runs a worker beside it).
        assert all(float(x) > 5 for x in small.split(" / ") + big.split(" / "))
        assert verdict == "pass"


def test_memory_growth_samples_every_process_of_the_tree() -> None:
    spec = importlib.util.spec_from_file_location("bench_memory",
                                                  REPO / "bench" / "memory_growth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    code = ("import os, time; b = bytearray(40 << 20)\n"
            "if os.fork() == 0:\n c = bytearray(80 << 20); time.sleep(0.3); os._exit(0)\n"
            "os.wait()")
    peaks, _ = mod.tree_peaks([sys.executable, "-c", code])
    assert len(peaks) == 2
    assert 40 < peaks[0] < 80 < peaks[1]
