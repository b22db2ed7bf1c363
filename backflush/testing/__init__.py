"""backflush.testing: the property-testing kit for flushing rules (needs ``backflush[testing]``).

- strategies with knobs: ``histories``, ``policies``, ``rule_sets``, ``plants`` ...
  (`backflush.testing.strategies`);
- ``PlantMachine``: a Hypothesis ``RuleBasedStateMachine`` to subclass with your plant's
  policy; it draws receipts, picks and puts, operation reports, reports as finished,
  reversals and late arrivals, and checks that stock is conserved, that incremental catch-up
  equals a rebuild, that as-of T equals the replay of what happened by T, and that no
  forbidden finding (by default ``DOUBLE_FLUSH``) appears (`backflush.testing.machine`);
- ``to_jsonl`` / ``plain``: a history as an importable JSONL file;
- a pytest plugin (fixtures ``backflush_ledger`` and ``backflush_replay``) and
  ``st.from_type(<event model>)``, both registered by entry points on install.

See docs/testing.md for the tutorial.
"""

from __future__ import annotations

import importlib
import importlib.util

if importlib.util.find_spec("hypothesis") is None:  # pragma: no cover - depends on the install
    raise ImportError(
        "backflush.testing needs Hypothesis, which the base install leaves out: "
        "pip install 'backflush[testing]'"
    )

__all__ = [
    "DEFAULT_SETTINGS",
    "FAULTS",
    "CheckFailed",
    "History",
    "Plant",
    "PlantMachine",
    "check_ledger",
    "event_models",
    "histories",
    "plain",
    "plants",
    "policies",
    "rule_sets",
    "rules",
    "split_histories",
    "to_jsonl",
]

_LAZY = {
    "FAULTS": "backflush.testing.strategies",
    "History": "backflush.testing.strategies",
    "histories": "backflush.testing.strategies",
    "plain": "backflush.testing.strategies",
    "policies": "backflush.testing.strategies",
    "rule_sets": "backflush.testing.strategies",
    "rules": "backflush.testing.strategies",
    "split_histories": "backflush.testing.strategies",
    "event_models": "backflush.testing.models",
    "Plant": "backflush.testing.plant",
    "plants": "backflush.testing.plant",
    "PlantMachine": "backflush.testing.machine",
    "CheckFailed": "backflush.testing.machine",
    "DEFAULT_SETTINGS": "backflush.testing.machine",
    "check_ledger": "backflush.testing.machine",
    "to_jsonl": "backflush.memory",
}


def __getattr__(name: str):
    # Loaded on first use: the Hypothesis entry point imports this package while Hypothesis
    # itself is being imported, and must stay cheap.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'backflush.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
