"""The shape of a plant a state machine generates histories for: master data and habits.

A `Plant` holds the master data (items, resources, BOMs, routes and recorded parameters, as
interchange dicts), the (BOM, route) pairs orders are made for, the devices each kind of
report is made on (per route: seed 001's plant reports one route as finished on the mobile
scanner and another on the job terminal) and the locations stock is received at.

``Plant.from_events(events)`` / ``Plant.from_jsonl(path)`` take it from a real history (an
export of your ledger, or an example), so that generated histories look like your floor;
``plants(...)`` draws a made-up one with knobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from backflush.ledger.events import DEVICES, MASTER_TYPES, PRINCIPLES

REPORT_KINDS = ("start", "operation", "finish")
# DESIGN §2 device defaults per kind of report.
_DEFAULT_DEVICE = {"start": "client", "operation": "job_terminal", "finish": "client"}
_KIND_OF = {"OrderStarted": "start", "OperationReported": "operation",
            "ReportedAsFinished": "finish"}


@dataclass(frozen=True)
class Plant:
    """Master data plus how the floor reports; see the module docstring.

    ``devices`` maps ``"kind"`` or ``"kind@route"`` (kind: start, operation, finish) to the
    devices such reports are made on; the route-specific entry wins, a kind without any
    entry may use every device.
    """

    master: tuple[dict[str, Any], ...]
    products: tuple[tuple[str, str | None], ...]
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    locations: tuple[str, ...] = ("BULK", "BACKFLUSH")

    # --- derived views ------------------------------------------------------------------

    def _latest(self, type_: str, key: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for ev in self.master:
            if ev["type"] == type_:
                out[ev[key]] = ev
        return out

    @cached_property
    def items(self) -> dict[str, dict[str, Any]]:
        """Item name -> its (latest) ItemDefined."""
        return self._latest("ItemDefined", "item")

    @cached_property
    def boms(self) -> dict[str, dict[str, Any]]:
        """BOM name -> its (latest) BomDefined."""
        return self._latest("BomDefined", "bom")

    @cached_property
    def routes(self) -> dict[str, dict[str, Any]]:
        """Route name -> its (latest) RouteDefined."""
        return self._latest("RouteDefined", "route")

    @cached_property
    def components(self) -> tuple[str, ...]:
        """Items used on some BOM line (what gets received, picked and consumed)."""
        return tuple(sorted({ln["item"] for b in self.boms.values() for ln in b["lines"]}))

    def ops(self, route: str | None) -> tuple[int, ...]:
        """The operation numbers of ``route`` (none without a route)."""
        if route is None or route not in self.routes:
            return ()
        return tuple(sorted(o["op"] for o in self.routes[route]["operations"]))

    def devices_for(self, kind: str, route: str | None) -> tuple[str, ...]:
        """Devices a ``kind`` report (start, operation, finish) on ``route`` is made on."""
        return (self.devices.get(f"{kind}@{route}") or self.devices.get(kind)
                or DEVICES)

    # --- from a history -----------------------------------------------------------------

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]], extra_locations: Iterable[str] = ()
                    ) -> Plant:
        """The plant of a history (interchange dicts): its master data and reporting habits."""
        master: list[dict[str, Any]] = []
        products: dict[tuple[str, str | None], None] = {}
        route_of: dict[str, str | None] = {}
        devices: dict[str, dict[str, None]] = {}
        locations: dict[str, None] = dict.fromkeys(("BULK", "BACKFLUSH"))
        for ev in events:
            t = ev["type"]
            if t in MASTER_TYPES:
                master.append({k: v for k, v in ev.items() if k != "id"})
                if t == "ResourceDefined":
                    locations.setdefault(ev["input_location"])
            elif t == "OrderCreated":
                products.setdefault((ev["bom"], ev.get("route")))
                route_of[ev["order"]] = ev.get("route")
            elif t in _KIND_OF and ev["order"] in route_of:
                kind = _KIND_OF[t]
                device = ev.get("device") or _DEFAULT_DEVICE[kind]
                devices.setdefault(kind, {}).setdefault(device)
                devices.setdefault(f"{kind}@{route_of[ev['order']]}", {}).setdefault(device)
            elif t == "InventoryReceived":
                locations.setdefault(ev["location"])
        for loc in extra_locations:
            locations.setdefault(loc)
        plant = cls(master=tuple(master), products=tuple(products),
                    devices={k: tuple(v) for k, v in devices.items()},
                    locations=tuple(locations))
        if not plant.products:
            routes = list(plant.routes) or [None]
            plant = cls(master=plant.master,
                        products=tuple((b, r) for b in plant.boms for r in routes),
                        devices=plant.devices, locations=plant.locations)
        if not plant.products:
            raise ValueError("the history defines no BOM: nothing to make orders for")
        return plant

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Plant:
        """``from_events`` of a JSONL file (e.g. ``backflush export > plant.jsonl``)."""
        text = Path(path).read_text(encoding="utf-8")
        return cls.from_events(json.loads(line) for line in text.splitlines() if line.strip())


def _names(spec: int | Iterable[str], prefix: str) -> tuple[str, ...]:
    names = tuple(f"{prefix}{i}" for i in range(1, spec + 1)) if isinstance(spec, int) \
        else tuple(spec)
    if not names:
        raise ValueError(f"need at least one {prefix!r}")
    return names


@st.composite
def plants(draw: Any, items: int | Iterable[str] = 3, resources: int | Iterable[str] = 2,
           routes: int = 2, operations: int = 3, boms: int = 1,
           devices: Iterable[str] | Mapping[str, Iterable[str]] = DEVICES) -> Plant:
    """A strategy for a made-up `Plant`.

    ``items`` components (C1.. or the names given), ``resources`` (R1..), ``routes`` routes
    of 1..``operations`` operations (10, 20, ...), ``boms`` BOMs of 1-3 lines for finished
    goods FG1.., every BOM made on every route. ``devices``: the devices every report may be
    made on, or a mapping like `Plant.devices` (``{"finish": ["mobile"]}``).
    """
    comps = _names(items, "C")
    res = _names(resources, "R")
    master: list[dict[str, Any]] = []
    at = "2026-11-21T06:00:00Z"
    tracked = {}
    for c in comps:
        tracked[c] = draw(st.sampled_from(("none", "none", "batch")))
        master.append({"type": "ItemDefined", "at": at, "item": c,
                       "decimals": draw(st.sampled_from((0, 2, 3))), "tracking": tracked[c],
                       "flushing": draw(st.sampled_from(PRINCIPLES))})
    for i, r in enumerate(res):
        master.append({"type": "ResourceDefined", "at": at, "resource": r,
                       "input_location": "BACKFLUSH" if i % 2 else f"IN-{r}",
                       "output_location": f"OUT-{r}"})
    op_pool = tuple(10 * (i + 1) for i in range(operations))
    route_names = _names(routes, "RT")
    for rt in route_names:
        nos = sorted(draw(st.lists(st.sampled_from(op_pool), min_size=1,
                                   max_size=len(op_pool), unique=True)))
        master.append({"type": "RouteDefined", "at": at, "route": rt, "operations": [
            {"op": n, "resource": draw(st.sampled_from(res)),
             "setup_hours": draw(st.sampled_from(("0", "0.5"))),
             "run_hours": draw(st.sampled_from(("0", "0.1", "0.25")))} for n in nos]})
    bom_names = tuple(f"B{i}" for i in range(1, boms + 1))
    for k, b in enumerate(bom_names, start=1):
        fg = f"FG{k}"
        master.append({"type": "ItemDefined", "at": at, "item": fg, "decimals": 0})
        lines = []
        for j in range(draw(st.integers(1, 3))):
            line = {"line": 10 * (j + 1), "item": draw(st.sampled_from(comps)),
                    "qty": draw(st.sampled_from(("1", "2", "0.5", "0.25", "3"))),
                    "per": draw(st.sampled_from(("1", "1", "2"))),
                    "scrap_pct": draw(st.sampled_from(("0", "0", "5"))),
                    "scrap_const": draw(st.sampled_from(("0", "0", "1")))}
            principle = draw(st.one_of(st.none(), st.sampled_from(PRINCIPLES)))
            if principle is not None:
                line["flushing"] = principle
            op = draw(st.one_of(st.none(), st.sampled_from(op_pool)))
            if op is not None:
                line["operation"] = op
            lines.append(line)
        master.append({"type": "BomDefined", "at": at, "bom": b, "item": fg, "lines": lines})
    if isinstance(devices, Mapping):
        dev_map = {k: tuple(v) for k, v in devices.items()}
    else:
        every = tuple(devices)
        dev_map = {kind: every for kind in REPORT_KINDS}
    return Plant(master=tuple(master),
                 products=tuple((b, rt) for b in bom_names for rt in route_names),
                 devices=dev_map,
                 locations=("BULK", "BACKFLUSH", *(f"IN-{r}" for r in res[::2])))
