"""The replay engine alone: events/s of ``Replay.apply_all`` over pre-decoded replay dicts.

Run: ``.venv/bin/python bench/engine_replay.py --db LEDGER.db [--runs 3] [--limit N]``;
``--by-type`` times each event type, ``--opcodes`` counts the bytecodes run per event and per
function (exact where times are noisy; ``--limit 40000`` takes about half a minute).
Against another version: ``--baseline-tree DIR`` (a checkout of this repository at another
commit, e.g. ``git worktree add /tmp/base main``), run interleaved in a subprocess.

The events are read and decoded (``events_for_replay``, as the materialiser feeds them) before
the clock starts, afresh for every run; the engine then replays them as a rebuild does:
undo kept for reversal targets only, the change log drained every page, finished orders
retired, the cyclic collector off. Prints the events/s (CPU) of each run, the median and a digest
of everything the engine emitted (change log, flushes, records, final queries), so two versions of
the engine can be checked to give the very same output on a real history.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import sys
import time

from backflush.ledger.store import Ledger, to_us
from backflush.projections import materialise

PAGE = 5000


def _digest_page(h, engine) -> None:
    for log in (engine.balance_changes, engine.flushes, engine.staging_changes,
                engine.unresolved_log, engine.residual_log, engine.negative_onhand,
                engine.anomalies):
        for r in log:
            h.update(repr(r).encode())


def _drain(engine) -> None:
    for lst in (engine.balance_changes, engine.flushes, engine.staging_changes,
                engine.unresolved_log, engine.residual_log, engine.negative_onhand,
                engine.puts_without_pick, engine.anomalies):
        lst.clear()


def _engine_class(path: str | None):
    """``Replay`` of the installed engine, or of another version's engine.py (a baseline)."""
    if path is None:
        from backflush.projections.engine import Replay

        return Replay
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_engine", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod.Replay


# How the package maps onto the source tree (pyproject's package-dir).
_PACKAGE_DIRS = {"backflush": "backflush", "backflush.ledger": "ledger",
                 "backflush.projections": "projections", "backflush.cli": "cli",
                 "backflush.examples": "examples"}

_TREE_RUNNER = """
import importlib.machinery, importlib.util, json, runpy, sys
tree, dirs = sys.argv[1], json.loads(sys.argv[2])
class Finder:  # the baseline tree's packages, ahead of the installed (editable) ones
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name in dirs:
            where = tree + "/" + dirs[name]
            return importlib.util.spec_from_file_location(
                name, where + "/__init__.py", submodule_search_locations=[where])
        parent = name.rpartition(".")[0]
        if parent in dirs:
            return importlib.machinery.PathFinder.find_spec(name, [tree + "/" + dirs[parent]])
        return None
sys.meta_path.insert(0, Finder)
sys.argv = [tree + "/bench/engine_replay.py"] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def tree_run(tree: str, db: str, limit: int) -> tuple[float, str]:
    """One run of the engine of another source tree, in a subprocess: (events/s, its output)."""
    import subprocess

    args = [sys.executable, "-c", _TREE_RUNNER, tree, json.dumps(_PACKAGE_DIRS), "--db", db,
            "--runs", "1"] + (["--limit", str(limit)] if limit else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if " run 0: " in x)
    return float(line.rsplit("= ", 1)[1].split()[0].replace(",", "")), line


def run(events, targets, plan, digest: bool, Replay=None):
    """Replay ``events``; returns (CPU seconds of this process, hex digest or None).

    CPU time, not wall time: the machine is shared, and another process's burst would
    otherwise count against whichever engine happened to run then.
    """
    if Replay is None:
        Replay = _engine_class(None)

    h = hashlib.sha256() if digest else None
    retire = list(plan)
    gc.disable()
    t = time.process_time()
    engine = Replay(reversible=targets)
    for i in range(0, len(events), PAGE):
        page = events[i:i + PAGE]
        engine.apply_all(page)
        if h is not None:
            _digest_page(h, engine)
        _drain(engine)
        at = page[-1]["at"]
        at_us = to_us(at)
        while retire and retire[-1][0] < at_us:
            o = engine.order_state(retire[-1][1])
            if h is not None and o is not None:
                h.update(repr((o.order, [(ln.line, ln.posted, ln.by_trigger, ln.expected)
                                         for ln in o.all_lines()], o.wip_at_end,
                               o.out_of_sequence, o.hours_reported)).encode())
            engine.retire(retire.pop()[1])
    if h is not None:
        h.update(repr((engine.onhand(), engine.wip(), engine.consumption(), engine.hours(),
                       engine.item_totals(), engine.reversed_ids())).encode())
    dt = time.process_time() - t
    gc.enable()
    gc.collect()
    return dt, (h.hexdigest() if h is not None else None)


def by_type(events, targets) -> None:
    """CPU per event type (each handler timed; the CPU clock itself adds ~0.3 us a call)."""
    from collections import defaultdict

    engine = _engine_class(None)(reversible=targets)
    tot: dict = defaultdict(int)
    cnt: dict = defaultdict(int)
    clock = time.process_time_ns
    handlers = engine._handlers = dict(engine._handlers)  # noqa: SLF001 - this engine's own
    for name, h in list(handlers.items()):
        def timed(engine, ev, h=h, name=name):
            t = clock()
            h(engine, ev)
            tot[name] += clock() - t
            cnt[name] += 1
        handlers[name] = timed
    gc.disable()
    t = clock()
    for i in range(0, len(events), PAGE):
        engine.apply_all(events[i:i + PAGE])
        _drain(engine)
    total = clock() - t
    gc.enable()
    print(f"{'event type':24s} {'events':>8s} {'CPU s':>7s} {'us/event':>9s}")
    for k in sorted(tot, key=tot.get, reverse=True):
        print(f"{k:24s} {cnt[k]:8d} {tot[k] / 1e9:7.2f} {tot[k] / cnt[k] / 1000:9.1f}")
    print(f"{'all (with dispatch)':24s} {sum(cnt.values()):8d} {total / 1e9:7.2f}")


def opcodes(events, targets, top: int = 25) -> None:
    """Bytecodes the interpreter runs per event, in total and per function: a count, not a
    clock, so two versions compare exactly on a busy machine (CPU times there vary by 10-20%
    from run to run). Slow (a tracer sees every opcode): use ``--limit``. Counts the
    interpreter's work only, not what C does (Decimal, dict and tuple operations)."""
    from collections import Counter

    engine = _engine_class(None)(reversible=targets)
    counts: Counter = Counter()

    def tracer(frame, _event, _arg):
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        key = (code.co_filename.rsplit("/", 1)[-1], code.co_name, code.co_firstlineno)

        def local(_frame, event, _arg):
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    sys.settrace(tracer)
    try:
        for i in range(0, len(events), PAGE):
            engine.apply_all(events[i:i + PAGE])
            _drain(engine)
    finally:
        sys.settrace(None)
    total = sum(counts.values())
    print(f"{total} opcodes over {len(events)} events = {total / len(events):.1f} per event")
    for (file, name, line), n in counts.most_common(top):
        print(f"{file + ':' + name + ':' + str(line):48s} {n:10d} {n / total * 100:5.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--digest", action="store_true", help="also digest the output (slower)")
    ap.add_argument("--baseline", help="another engine.py, run interleaved with this one")
    ap.add_argument("--baseline-tree", help="a checkout of another version: its engine, "
                    "run interleaved in a subprocess (each run there reads the events afresh)")
    ap.add_argument("--by-type", action="store_true", help="CPU per event type, then exit")
    ap.add_argument("--opcodes", action="store_true",
                    help="bytecodes run per event and per function (exact, slow), then exit")
    a = ap.parse_args()
    if a.by_type or a.opcodes:
        ledger = Ledger(a.db)
        events = list(materialise.events_for_replay(ledger))
        if a.limit:
            events = events[:a.limit]
        (opcodes if a.opcodes else by_type)(events, materialise.reversal_targets(ledger))
        return
    engines = [("this", _engine_class(None))]
    if a.baseline:
        engines.append(("baseline", _engine_class(a.baseline)))
    ledger = Ledger(a.db)
    targets = materialise.reversal_targets(ledger)
    plan = materialise.last_event_of_orders(ledger)
    rates: dict = {name: [] for name, _ in engines}
    if a.baseline_tree:
        rates["baseline"] = []
    for k in range(a.runs + (1 if a.digest else 0)):
        if a.baseline_tree and not (a.digest and k == 0):
            rate, line = tree_run(a.baseline_tree, a.db, a.limit)
            rates["baseline"].append(rate)
            print(f"baseline-tree run {k}: {line.split(': ', 1)[1]}", flush=True)
        for name, cls in engines:
            events = list(materialise.events_for_replay(ledger))
            if a.limit:
                events = events[:a.limit]
            digest = a.digest and k == 0  # a digest run is not timed
            dt, dg = run(events, targets, plan, digest, cls)
            if not digest:
                rates[name].append(len(events) / dt)
            print(f"{name} run {k}: {len(events)} events in {dt:.2f} CPU s"
                  + (f"  digest {dg}" if dg else f" = {len(events) / dt:,.0f} events/s"),
                  flush=True)
            del events
    for name, r in rates.items():
        if not r:  # (--runs 0: the digest alone)
            continue
        print(f"{name}: median {statistics.median(r):,.0f} events/s over {len(r)} runs")
    if (a.baseline or a.baseline_tree) and rates["this"]:
        print(f"ratio this/baseline: "
              f"{statistics.median(rates['this']) / statistics.median(rates['baseline']):.2f}")


if __name__ == "__main__":
    main()
