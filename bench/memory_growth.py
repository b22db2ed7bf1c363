"""Peak memory of each command as the history grows: one plant at N and at k×N events.

"Every command streams in <= 150 MB" has to hold whatever the history's length. A figure at
one size cannot show that: a structure that grows with the history passes at 1M events and
fails at 3M (stop 33 found three: the replay writer's key ids, every engine a reference
cycle, an order answered alone keeping its engine). This script simulates one plant
history, imports its first N events into one SQLite ledger and k×N into another, runs the
same commands on both and reports, for each, the peak of every process of its tree (the
import's and the replay's worker processes too, sampled from /proc every 20 ms: VmHWM, so a
sample taken late still sees the peak; the command's own also from its rusage), and how
much the largest grew per million events.

Run: ``python bench/memory_growth.py --events 1000000 --times 3 --out DIR`` (Linux: /proc).
The commands run as ``python -m backflush`` of this interpreter. Not timed: the durations
printed are for orientation only (benchmarks of speed are ``bench/plant.py``'s).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

LIMIT_MB = 150
END = "2099-01-01"  # after every simulated event (simulate dates them in the future)
POLICY = '{"tolerance_pct": "5"}'


def commands(order: str, item: str) -> list[tuple[str, list[str]]]:
    """(label, arguments) of the commands measured, ``import`` first."""
    return [
        ("import FILE", ["import", "{file}"]),
        ("rebuild", ["rebuild"]),
        ("onhand --at END", ["onhand", "--at", END]),
        ("findings --at END", ["findings", "--at", END]),
        ("hours --at END", ["hours", "--at", END]),
        ("events --at END", ["events", "--at", END]),
        ("export", ["export"]),
        ("verify", ["verify"]),
        ("verify --deep", ["verify", "--deep"]),
        ("findings --policy P --at END", ["findings", "--policy", "{policy}", "--at", END]),
        ("onhand --policy P --at END", ["onhand", "--policy", "{policy}", "--at", END]),
        ("audit O", ["audit", order]),
        ("moves --item I", ["moves", "--item", item]),
    ]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass  # ended meanwhile
    return out


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def tree_peaks(argv: list[str]) -> tuple[list[float], float]:
    """Run ``argv`` (it must succeed); the peak (MB) of each process of its tree in the
    order they started (the command's own first), and its wall time."""
    import tempfile

    errf = tempfile.TemporaryFile()  # not a pipe: a command never blocks on what it says
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errf)
    peaks: dict[int, float] = {p.pid: 0.0}
    while True:
        # Reaped here, not by ``poll``: a command that ends between two samples has its
        # peak in its rusage (which counts its children's too: used only without any).
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            if len(peaks) == 1:
                peaks[p.pid] = max(peaks[p.pid], usage.ru_maxrss / 1024)  # KiB on Linux
            break
        todo, seen = [p.pid], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            mb = _hwm_mb(pid)
            if mb is not None:
                peaks[pid] = max(peaks.get(pid, 0.0), mb)
            todo += _children(pid)
        time.sleep(0.02)
    errf.seek(0)
    err = errf.read().decode("utf-8", "replace")
    errf.close()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {p.returncode}: {err[-500:]}")
    return list(peaks.values()), time.perf_counter() - t0


def _first(path: Path, key: str, typ: str) -> str:
    import orjson

    with path.open("rb") as f:
        for line in f:
            ev = orjson.loads(line)
            if ev.get("type") == typ:
                return ev[key]
    raise SystemExit(f"{path}: no {typ}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="N: the smaller history")
    ap.add_argument("--times", type=int, default=3, help="k: the larger is k×N events")
    ap.add_argument("--out", required=True, help="a directory for the files and report.md")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "backflush"]
    big_n = a.events * a.times
    # ~32 events an order in simulate's plant (the plant bench's 31,340 orders for 1M).
    full = out / "history.jsonl"
    subprocess.run([*cli, "simulate", "--orders", str(big_n // 30 + 10), "--seed", "7",
                    "--fault", "scrap", "--fault", "late", "-o", str(full)], check=True,
                   stdout=subprocess.DEVNULL)
    sizes = {n: out / f"h{n}.jsonl" for n in (a.events, big_n)}
    with full.open("rb") as src, sizes[a.events].open("wb") as small, \
            sizes[big_n].open("wb") as big:
        for i, line in enumerate(src):
            if i >= big_n:
                break
            big.write(line)
            if i < a.events:
                small.write(line)
    full.unlink()
    (out / "policy.json").write_text(POLICY)
    order = _first(sizes[a.events], "order", "OrderCreated")
    item = _first(sizes[a.events], "item", "InventoryReceived")
    results: dict[str, dict[int, tuple[list[float], float]]] = {}
    for n, path in sizes.items():
        db = out / f"l{n}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        for label, args in commands(order, item):
            argv = [*cli, "--db", str(db),
                    *(x.format(file=path, policy=out / "policy.json") for x in args)]
            peaks, wall = tree_peaks(argv)
            results.setdefault(label, {})[n] = (peaks, wall)
            print(f"{n:>10,} events  {label:30s} {wall:7.1f} s  peaks (MB): "
                  + ", ".join(f"{x:.0f}" for x in peaks), flush=True)
    rows = []
    for label, by in results.items():
        small, big = by[a.events], by[big_n]
        hi_small, hi_big = max(small[0]), max(big[0])
        growth = (hi_big - hi_small) / ((big_n - a.events) / 1e6)
        verdict = "pass" if hi_big <= LIMIT_MB else "**FAIL**"
        rows.append(f"| {label} | {_fmt(small[0])} | {_fmt(big[0])} | {growth:+.1f} MB"
                    f" | {verdict} |")
    md = [f"Measured {time.strftime('%Y-%m-%dT%H:%M:%S%z')} with `python bench/memory_growth.py"
          f" --events {a.events} --times {a.times}`: the same plant history (`simulate --seed"
          f" 7 --fault scrap --fault late`) cut at {a.events:,} and {big_n:,} events, SQLite."
          " Peak of each process of the command's tree, the command's own first, MB.", "",
          f"| command | {a.events:,} events | {big_n:,} events | largest, per 1M events more"
          f" | <= {LIMIT_MB} MB at {big_n:,} |", "|---|---|---|---|---|", *rows]
    (out / "report.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _fmt(peaks: list[float]) -> str:
    return " / ".join(f"{x:.0f}" for x in peaks)


if __name__ == "__main__":
    main()
