"""backflush: an event-sourced shop-floor transaction ledger for manufacturing backflushing.

The public API, in three lines::

    import backflush
    ledger = backflush.Ledger("plant.db")
    ledger.import_files(["events.jsonl"]); print(ledger.findings())

`Ledger` is the door to a stored ledger (SQLite path or `postgresql://` URL), `Policy` a set of
production parameters to replay under, `replay` a pure in-memory replay for tests, and
`BackflushError` the root of every error raised on purpose. Names are loaded on first use so
that `backflush --version` and the CLI stay short processes.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = [
    "BackflushError",
    "BadInput",
    "CatchUpFailed",
    "DriverMissing",
    "ImportInterrupted",
    "Ledger",
    "LedgerNotFound",
    "LedgerTampered",
    "OperationalError",
    "Policy",
    "ProjectionUnreadable",
    "StoredEventUnreadable",
    "Terminated",
    "UnknownName",
    "UnknownOrder",
    "__version__",
    "replay",
]

_LAZY = {
    "Ledger": "backflush.api",
    "Policy": "backflush.policy",
    "replay": "backflush.memory",
    "BackflushError": "backflush.errors",
    "BadInput": "backflush.errors",
    "CatchUpFailed": "backflush.errors",
    "DriverMissing": "backflush.errors",
    "ImportInterrupted": "backflush.errors",
    "LedgerNotFound": "backflush.errors",
    "LedgerTampered": "backflush.errors",
    "OperationalError": "backflush.errors",
    "ProjectionUnreadable": "backflush.errors",
    "StoredEventUnreadable": "backflush.errors",
    "Terminated": "backflush.errors",
    "UnknownName": "backflush.errors",
    "UnknownOrder": "backflush.errors",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'backflush' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
