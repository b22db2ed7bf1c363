"""The ``backflush`` console entry point: the command group with every command registered.

Exit codes: 0 success, 1 findings at or above ``--fail-on``, 2 bad input or usage.
"""

from __future__ import annotations

from backflush.cli import audit as _audit  # noqa: F401  (registers commands)
from backflush.cli import integrity_cmds as _integrity_cmds  # noqa: F401
from backflush.cli import ledger_cmds as _ledger_cmds  # noqa: F401
from backflush.cli import queries as _queries  # noqa: F401
from backflush.cli import tools as _tools  # noqa: F401
from backflush.cli.app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console entry point."""
    cli(prog_name="backflush")
