"""A deterministic plant simulator: JSONL histories for demos, tests and benchmarks.

``simulate(orders=N, seed=S, faults=...)`` yields interchange-format event dicts of a small
plant (three resources on a 10/20/30 route, finished goods with 4-7 component lines,
batch-tracked components, picking to the production input locations) with the faults of
the seeds switched on by name:

- ``double-flush``: job terminals flush finish lines at the operation and the mobile
  scanner reports as finished (seed 001, situation 1);
- ``scrap``: error quantity reported at operations, mobile report on good only;
- ``late``: one event in fifty is sent late (recorded after later events), as a scanner
  that syncs hours afterwards;
- ``no-stock``: some orders consume components that were never received.

Same arguments, same events: it takes a ``random.Random(seed)`` and no clock.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

FAULTS = ("double-flush", "scrap", "late", "no-stock")
START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
RESOURCES = [("R10", 10), ("R20", 20), ("R30", 30)]


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def simulate(
    orders: int, seed: int = 0, faults: tuple[str, ...] = (), products: int = 20
) -> Iterator[dict[str, Any]]:
    """Yield the events of a simulated plant history, in sending order."""
    for f in faults:
        if f not in FAULTS:
            raise ValueError(f"unknown fault {f!r} (known: {', '.join(FAULTS)})")
    rnd = random.Random(seed)
    n = 0

    def ev(type_: str, at: datetime, **fields: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {"type": type_, "at": _ts(at), "id": f"sim{seed}-{n:08d}", **fields}

    t = START
    comps = [f"C{i:03d}" for i in range(1, 41)]
    tracked = {c for c in comps if int(c[1:]) % 4 == 0}
    for c in comps:
        yield ev(
            "ItemDefined", t, item=c, tracking="batch" if c in tracked else "none",
            flushing=rnd.choice(["finish", "finish", "finish", "start", "available_at_location"]),
            decimals=rnd.choice([0, 2, 3]),
        )
    fgs = [f"FG{i:03d}" for i in range(1, products + 1)]
    for fg in fgs:
        yield ev("ItemDefined", t, item=fg, decimals=0)
    for res, _op in RESOURCES:
        yield ev(
            "ResourceDefined", t, resource=res, input_location=f"{res}-IN",
            output_location=f"{res}-OUT",
        )
    yield ev(
        "RouteDefined", t, route="RT-STD",
        operations=[
            {"op": op, "resource": res, "setup_hours": "0.5", "run_hours": "0.02"}
            for res, op in RESOURCES
        ],
    )
    boms: dict[str, list[dict[str, Any]]] = {}
    for fg in fgs:
        lines = []
        for i, c in enumerate(rnd.sample(comps, rnd.randint(4, 7)), start=1):
            line = {"line": i * 10, "item": c, "qty": str(rnd.choice([1, 2, 3, "0.5", "1.25"])),
                    "operation": rnd.choice([10, 20, 30, None])}
            if rnd.random() < 0.2:
                line["scrap_pct"] = "2"
            if rnd.random() < 0.1:
                line["flushing"] = "manual"
            lines.append(line)
        boms[fg] = lines
        yield ev("BomDefined", t, bom=f"B-{fg}", item=fg, lines=lines)
    rules = None
    if "double-flush" in faults:
        rules = [
            {"trigger": "start", "flush": ["start"]},
            {"trigger": "put", "flush": ["available_at_location"]},
            {"trigger": "operation", "flush": ["operation_finish"]},
            {"trigger": "operation", "device": "job_terminal", "flush": ["finish"]},
            {"trigger": "finish", "device": "client", "flush": ["finish", "production_finish"]},
            {"trigger": "finish", "device": "mobile", "flush": ["finish", "production_finish"],
             "basis": "good"},
        ]
    params: dict[str, Any] = {"default_input_location": "BACKFLUSH", "tolerance_pct": "1"}
    if rules is not None:
        params["rules"] = rules
    yield ev("ProductionParametersSet", t, **params)

    late: list[tuple[int, int, dict[str, Any]]] = []  # heap: (send after n, tiebreak, event)
    batch_no = 0
    on_hand: dict[str, list[tuple[str | None, Decimal]]] = {}
    for o in range(1, orders + 1):
        t += timedelta(minutes=rnd.randint(5, 40))
        fg = rnd.choice(fgs)
        qty = rnd.choice([10, 20, 25, 50, 100])
        order = f"P{o:07d}"
        starve = "no-stock" in faults and rnd.random() < 0.1
        # Receive what the order needs (a bit more), in batches for tracked items.
        for line in boms[fg]:
            c = line["item"]
            need = Decimal(line["qty"]) * qty * Decimal("1.1")
            stock = on_hand.setdefault(c, [])
            have = sum((q for _, q in stock), Decimal(0))
            if have < need and not starve:
                batch_no += 1
                batch = f"BT{batch_no:07d}" if c in tracked else None
                # Stock turns over: receive a little more than the order needs, so batches
                # are used up by the next orders instead of piling up for ever.
                rq = (need * Decimal("1.2")).quantize(Decimal(1))
                fields = {"item": c, "qty": str(rq), "location": "BULK"}
                if batch:
                    fields["batch"] = batch
                yield ev("InventoryReceived", t, **fields)
                stock.append((batch, rq))
        staged: set[tuple[str, str, str | None]] = set()
        yield ev("OrderCreated", t, order=order, item=fg, qty=qty, bom=f"B-{fg}",
                 route="RT-STD")
        t1 = t + timedelta(minutes=1)
        yield ev("OrderReleased", t1, order=order)
        # Pick and put the order's material to the input location of its operation.
        for line in boms[fg]:
            c = line["item"]
            q = Decimal(line["qty"]) * qty
            op = line["operation"] or 10
            loc = f"R{op}-IN"
            stock = on_hand.get(c, [])
            # One pick/put per batch taken (FIFO), as warehouse work lines would be.
            parts: list[tuple[str | None, Decimal]] = []
            taken = q
            while stock and taken > 0:
                b, have = stock[0]
                use = min(have, taken)
                parts.append((b, use))
                taken -= use
                if use == have:
                    stock.pop(0)
                else:
                    stock[0] = (b, have - use)
            if taken > 0:
                parts.append((None, taken))
            for b, _pq in parts:
                staged.add((c, loc, b))
            for b, pq in parts:
                fields = {"item": c, "qty": str(pq), "order": order, "line": line["line"]}
                if b:
                    fields["batch"] = b
                t1 += timedelta(seconds=30)
                yield ev("Picked", t1, location="BULK", work=f"W{o}", **fields)
                t1 += timedelta(seconds=30)
                yield ev("Put", t1, location=loc, work=f"W{o}", **fields)
        t1 += timedelta(minutes=2)
        yield ev("OrderStarted", t1, order=order)
        units = qty
        for _res, op in RESOURCES:
            error = 0
            if "scrap" in faults and rnd.random() < 0.5:
                error = rnd.randint(1, max(1, units // 10))
            good = units - error
            n_reports = rnd.choice([1, 2, 3])
            done_good = done_err = 0
            for p in range(n_reports):
                t1 += timedelta(minutes=rnd.randint(10, 60))
                g = good // n_reports if p < n_reports - 1 else good - done_good
                e = error if p == n_reports - 1 else 0
                done_good += g
                done_err += e
                e_rep = ev("OperationReported", t1, order=order, op=op, good=g, error=e)
                if "late" in faults and rnd.random() < 0.02:
                    heapq.heappush(late, (n + rnd.randint(20, 200), n, e_rep))
                else:
                    yield e_rep
            units = good
        t1 += timedelta(minutes=5)
        device = "mobile" if ({"double-flush", "scrap"} & set(faults)) else "client"
        yield ev("ReportedAsFinished", t1, order=order, good=units, device=device,
                 location="FG-STOCK")
        for line in boms[fg]:
            if line.get("flushing") == "manual":
                t1 += timedelta(seconds=10)
                yield ev("MaterialConsumed", t1, order=order, item=line["item"],
                         qty=str(Decimal(line["qty"]) * units), line=line["line"],
                         location=f"R{line['operation'] or 10}-IN")
        t1 += timedelta(minutes=1)
        yield ev("OrderEnded", t1, order=order)
        # Count the staging at the end of the run (seed 002): what is left of this order's
        # material at the input locations is written off, so staging does not drift.
        for c, loc, b in sorted(staged, key=lambda k: (k[0], k[1], k[2] or "")):
            t1 += timedelta(seconds=5)
            fields = {"item": c, "location": loc, "qty": 0}
            if b:
                fields["batch"] = b
            yield ev("InventoryCounted", t1, **fields)
        while late and late[0][0] <= n:
            yield heapq.heappop(late)[2]
    while late:
        yield heapq.heappop(late)[2]
