"""Detection quality: simulate a plant with faults, import it, and score the findings.

Run: ``.venv/bin/python bench/detection.py --orders 10000 --seed 1`` (every fault at its
default rate unless ``--fault NAME[:RATE]`` is given; ``--clean`` for no fault at all).

Steps: ``simulate`` writes the history and its truth (what each injected fault must cause,
computed by the simulator from DESIGN's formulas); the history is imported into a throwaway
SQLite ledger; the findings come from the same code path as ``backflush findings --json``
plus ``backflush policy check --json`` (POLICY_OVERLAP is a policy check); findings are
matched to the truth on (code, order, line), several of one key as a multiset, pairing equal
quantities first. Printed: precision and recall per code, the share of exactly right
quantities, and the first false positives (with the events that caused them) and false
negatives (with the fault that should have caused them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from backflush.ledger.importer import run_import
from backflush.ledger.simulate import FAULTS, parse_faults, simulate
from backflush.ledger.store import Ledger
from backflush.projections.findings import CODES


@dataclass
class Score:
    """Matching of found findings to the truth, per code."""

    tp: dict = field(default_factory=lambda: defaultdict(int))
    fp: dict = field(default_factory=lambda: defaultdict(int))
    fn: dict = field(default_factory=lambda: defaultdict(int))
    exact: dict = field(default_factory=lambda: defaultdict(int))
    false_pos: list = field(default_factory=list)  # found dicts
    false_neg: list = field(default_factory=list)  # truth dicts (with "fault")
    wrong_qty: list = field(default_factory=list)  # (truth, found)

    def precision(self, code: str | None = None) -> float:
        """TP / (TP + FP) for one code (all codes when None); 1.0 when nothing was found."""
        tp, fp = self._sum(self.tp, code), self._sum(self.fp, code)
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, code: str | None = None) -> float:
        """TP / (TP + FN); 1.0 when nothing was expected."""
        tp, fn = self._sum(self.tp, code), self._sum(self.fn, code)
        return tp / (tp + fn) if tp + fn else 1.0

    def exact_share(self, code: str | None = None) -> float:
        """Share of true positives whose quantity is exactly the truth's."""
        tp = self._sum(self.tp, code)
        return self._sum(self.exact, code) / tp if tp else 1.0

    @staticmethod
    def _sum(d: dict, code: str | None) -> int:
        return d.get(code, 0) if code is not None else sum(d.values())

    def perfect(self) -> bool:
        """100% precision, 100% recall and every quantity exact."""
        return not self.false_pos and not self.false_neg and not self.wrong_qty


def expected_findings(truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The truth records flattened to one dict per expected finding (with its fault)."""
    return [{**f, "fault": t["fault"]} for t in truth for f in t["findings"]]


def score(truth: list[dict[str, Any]], found: list[dict[str, Any]]) -> Score:
    """Match ``found`` (findings as JSON dicts) to ``truth`` on (code, order, line)."""
    s = Score()
    want: dict = defaultdict(list)
    for f in expected_findings(truth):
        want[(f["code"], f["order"], f["line"])].append(f)
    got: dict = defaultdict(list)
    for f in found:
        got[(f["code"], f["order"], f["line"])].append(f)
    for key in sorted(set(want) | set(got), key=lambda k: tuple(str(x) for x in k)):
        code = key[0]
        ws, gs = list(want.get(key, ())), list(got.get(key, ()))
        # pair equal quantities first, then whatever is left in order
        for w in list(ws):
            g = next((g for g in gs if Decimal(str(g["qty"])) == Decimal(w["qty"])), None)
            if g is not None:
                ws.remove(w)
                gs.remove(g)
                s.tp[code] += 1
                s.exact[code] += 1
        while ws and gs:
            w, g = ws.pop(0), gs.pop(0)
            s.tp[code] += 1
            s.wrong_qty.append((w, g))
        for w in ws:
            s.fn[code] += 1
            s.false_neg.append(w)
        for g in gs:
            s.fp[code] += 1
            s.false_pos.append(g)
    return s


def found_findings(ledger: Ledger) -> list[dict[str, Any]]:
    """``findings --json`` plus ``policy check --json`` of a ledger, as plain dicts."""
    from backflush.projections import asof
    from backflush.projections import materialise as mat
    from backflush.projections.findings import policy_overlaps

    found = asof.findings_replay(ledger)
    recorded = None  # the parameters in force at the end of the history
    for ev in mat.events_for_replay(ledger, types=["ProductionParametersSet"]):
        recorded = ev
    found += policy_overlaps(recorded)
    return [orjson.loads(orjson.dumps(f.as_dict(), default=str)) for f in found]


def run(orders: int, seed: int, faults: Any, workdir: Path, db: str | None = None
        ) -> tuple[Score, dict[str, Any]]:
    """Simulate, import, find and score; returns the score and some figures.

    ``db``: the ledger (SQLite path or ``postgresql://`` URL of an empty database); default a
    new SQLite file in ``workdir``.
    """
    hist = workdir / f"sim-{orders}-{seed}.jsonl"
    truth: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n = 0
    with open(hist, "wb") as fh:
        for ev in simulate(orders, seed, faults, truth=truth):
            fh.write(orjson.dumps(ev) + b"\n")
            n += 1
    t1 = time.perf_counter()
    ledger = Ledger(db or str(workdir / f"ledger-{orders}-{seed}.db"))
    try:
        res = run_import(ledger, [str(hist)])
        if res.errors:
            raise RuntimeError(f"import failed: {res.errors[:3]}")
        t2 = time.perf_counter()
        found = found_findings(ledger)
        t3 = time.perf_counter()
    finally:
        ledger.close()
    figures = {"events": n, "faults injected": sum(1 for t in truth if t["order"]),
               "expected findings": len(expected_findings(truth)), "found": len(found),
               "simulate s": round(t1 - t0, 2), "import s": round(t2 - t1, 2),
               "findings s": round(t3 - t2, 2)}
    return score(truth, found), figures


def report(s: Score, figures: dict[str, Any], show: int = 5) -> str:
    """The printed report: figures, a table per code, first mistakes."""
    out = [", ".join(f"{k}: {v}" for k, v in figures.items()), ""]
    out.append(f"{'code':<20} {'expected':>8} {'found':>8} {'precision':>9} {'recall':>7} "
               f"{'exact qty':>9}")
    for code in CODES:
        exp = s.tp.get(code, 0) + s.fn.get(code, 0)
        got = s.tp.get(code, 0) + s.fp.get(code, 0)
        if not exp and not got:
            continue
        out.append(f"{code:<20} {exp:>8} {got:>8} {s.precision(code):>9.1%} "
                   f"{s.recall(code):>7.1%} {s.exact_share(code):>9.1%}")
    out.append(f"{'all':<20} {sum(s.tp.values()) + sum(s.fn.values()):>8} "
               f"{sum(s.tp.values()) + sum(s.fp.values()):>8} {s.precision():>9.1%} "
               f"{s.recall():>7.1%} {s.exact_share():>9.1%}")
    for title, rows in (("false positives", s.false_pos), ("false negatives", s.false_neg)):
        if rows:
            out.append(f"\nfirst {title} ({len(rows)}):")
            for r in rows[:show]:
                extra = (f"events {', '.join(r['events'])}" if "events" in r
                         else f"fault {r['fault']}")
                out.append(f"  {r['code']} order {r['order']} line {r['line']} item {r['item']} "
                           f"qty {r['qty']}: {extra}")
    if s.wrong_qty:
        out.append(f"\nfirst wrong quantities ({len(s.wrong_qty)}):")
        for w, g in s.wrong_qty[:show]:
            out.append(f"  {w['code']} order {w['order']} line {w['line']}: expected {w['qty']} "
                       f"({w['fault']}), found {g['qty']} (events {', '.join(g['events'])})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Command line: exit 0 when precision, recall and quantities are all perfect."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fault", action="append", default=None,
                   help=f"NAME[:RATE] (default: all of {', '.join(FAULTS)})")
    p.add_argument("--clean", action="store_true", help="no fault at all")
    p.add_argument("--dir", type=Path, default=None, help="keep the files here")
    p.add_argument("--db", default=None, help="ledger: SQLite path or postgresql:// URL")
    a = p.parse_args(argv)
    faults = {} if a.clean else parse_faults(a.fault if a.fault else list(FAULTS))
    if a.dir is not None:
        a.dir.mkdir(parents=True, exist_ok=True)
        s, fig = run(a.orders, a.seed, faults, a.dir, a.db)
    else:
        with tempfile.TemporaryDirectory() as d:
            s, fig = run(a.orders, a.seed, faults, Path(d), a.db)
    print(report(s, fig))
    return 0 if s.perfect() else 1


if __name__ == "__main__":
    sys.exit(main())
