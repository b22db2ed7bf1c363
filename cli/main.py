"""The ``backflush`` console entry point: the command group with every command registered.

Exit codes (mapped in one place, ``backflush.cli.app``): 0 success, 1 findings at or above
``--fail-on``, 2 bad input or usage, 3 operational error, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM, handled as Ctrl-C).

A command line names one command, so ``main()`` imports only the module that defines it
(``backflush --version`` imports none): a short query stays a short process. Importing
``cli`` from here (tests, other tools) registers every command.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["cli", "main"]  # noqa: F822  (cli: module __getattr__ below)

# Command modules, and which of them defines each command. A command missing from the map
# (or `--help`) loads them all, so a new module only has to be listed in COMMAND_MODULES.
COMMAND_MODULES = ("ledger_cmds", "integrity_cmds", "queries", "audit", "tools", "moves")
COMMAND_HOME = {
    "import": "ledger_cmds", "export": "ledger_cmds", "events": "ledger_cmds",
    "verify": "integrity_cmds", "anchor": "integrity_cmds", "onhand": "queries",
    "wip": "queries", "consumption": "queries",
    "hours": "queries", "rebuild": "queries", "findings": "audit", "audit": "audit",
    "policy": "audit", "demo": "audit", "simulate": "tools", "moves": "moves",
}
_GLOBAL_OPTIONS_WITH_VALUE = {"--db"}


def _group():
    from backflush.cli.app import cli

    return cli


def load_commands(names: tuple[str, ...] | None = None) -> None:
    """Import (register) the command modules named, or all of them."""
    for name in names or COMMAND_MODULES:
        importlib.import_module(f"backflush.cli.{name}")


def _command_of(argv: list[str]) -> str | None:
    """The command word of a command line (skipping the group's options), if any."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def __getattr__(name: str):
    if name == "cli":
        load_commands()
        return _group()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _terminated(signum: int, frame: object) -> None:
    from backflush.errors import Terminated

    raise Terminated


def terminate_as_interrupt() -> None:
    """Handle SIGTERM as Ctrl-C is handled (``backflush.errors.Terminated``): a supervisor
    stopping a long import or catch-up then leaves what was committed said, and the
    catch-up's progress kept, instead of a process killed mid-transaction."""
    import _signal  # signal's own module, without the enum wrappers of ``signal``

    _signal.signal(_signal.SIGTERM, _terminated)


def main() -> None:
    """Console entry point."""
    argv = sys.argv[1:]
    if argv == ["--version"]:
        # The most common probe of an installation, answered before click loads (~20 ms of a
        # ~60 ms process); the text is click's version_option's, pinned by a test.
        from backflush import __version__

        sys.stdout.write(f"backflush, version {__version__}\n")
        return
    from backflush.cli import quick

    terminate_as_interrupt()
    try:
        code = quick.run(argv)
    except KeyboardInterrupt as exc:  # as click's run reports it (``BackflushGroup``)
        from backflush.errors import interruption

        said, code = interruption(exc)
        sys.stderr.write(f"Error: {said}\n")
        sys.exit(code)
    if code is not None:
        sys.exit(code)
    from backflush.cli.app import run

    group = _group()
    command = _command_of(argv)
    if command is not None and command in COMMAND_HOME:
        load_commands((COMMAND_HOME[command],))
    if command is None and "--version" in argv and "--help" not in argv:
        pass  # the version needs no command
    elif command not in group.commands:  # moved or new: load everything rather than fail
        load_commands()
    run(group)
