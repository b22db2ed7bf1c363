"""What ``backflush.Ledger``'s writing and checking methods return.

Apart from ``backflush.api`` so that a query process, which never builds one, does not
import ``dataclasses`` (and with it ``inspect`` and ``ast``). ``backflush.api`` still exports
both names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ImportReport:
    """What an import did: events appended, duplicates skipped, lines read, warnings."""

    appended: int = 0
    duplicates: int = 0
    lines: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class Verification:
    """The result of ``Ledger.verify``: events checked and integrity problems found."""

    checked: int
    problems: list[Any]

    @property
    def ok(self) -> bool:
        """True when every chain verified."""
        return not self.problems
