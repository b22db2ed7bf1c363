"""The ``backflush`` command group and what every command shares (click).

Command modules register on ``cli``; ``backflush.cli.main`` imports them all. Commands are a
thin layer over ``backflush.Ledger`` (``backflush.api``): they parse options, call the API and
render. Errors are mapped to exit codes here, in one place (``BackflushGroup.invoke`` and
``run``), and printed as one line on stderr, never as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import click

from backflush import __version__
from backflush.errors import (
    DB_ERROR_NAMES,
    BackflushError,
    BadInput,
    CatchUpFailed,
    UnknownName,
    interruption,
)

if TYPE_CHECKING:  # pathlib loads when a command writes a file (not for a query)
    from datetime import datetime
    from pathlib import Path

EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_OPERATIONAL = 3

EPILOG = """\b
Exit codes:
  0  success
  1  findings at or above --fail-on
  2  bad input or usage: a malformed file, an unknown order/item/location/
     resource/type/code (with a did-you-mean), a ledger path that does not
     exist for a read command, an output path that is the ledger itself
  3  operational error: the database is unavailable, locked too long,
     read-only or out of space, or the output cannot be written (disk
     full, closed pipe); an import that failed after its commit says
     "N appended ... (recorded)"
  130  interrupted (Ctrl-C): nothing was written, except the events of an
     import that says they were recorded, and a long catch-up's or rebuild's
     projections up to its last checkpoint (the next command goes on from there)
  143  terminated (SIGTERM): handled as Ctrl-C is
"""


class Fail(click.ClickException):
    """A clear one-line usage error with exit code 2 (CLI parsing only; the library raises
    ``backflush.errors``)."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class _Reported(click.ClickException):
    """An error already classified: its lines go to stderr, then the exit code."""

    def __init__(self, lines: list[str], exit_code: int):
        super().__init__(lines[-1] if lines else "")
        self.lines = lines
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        try:
            for line in self.lines:
                click.echo(line, err=True)
        except OSError:  # stderr gone too: the exit code still tells
            pass


# The option a filter value came from, named in its error (an order may be an argument).
_OPTION_OF = {"item": "--item", "location": "--location", "resource": "--resource",
              "event type": "--type", "finding code": "--code"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def classify(exc: BaseException) -> tuple[list[str], int] | None:
    """(stderr lines, exit code) for an error the CLI reports cleanly; None: not ours.

    - ``BackflushError``: its message (``BadInput``: one line per problem, then a summary),
      its own exit code (2, operational 3);
    - database errors (sqlite3, psycopg, psycopg_pool, eventsourcing's wrappers): exit 3,
      except a file that is not a database (exit 2);
    - ``OSError`` (disk full, broken pipe, permission on an output): exit 3.
    """
    if isinstance(exc, CatchUpFailed):
        inner = classify(exc.cause)
        why = inner[0][-1].removeprefix("Error: ") if inner else _one_line(exc.cause)
        return [f"Error: {exc.appended} appended, {exc.duplicates} duplicates (recorded);"
                f" bringing the projections up to date then failed: {why}; the next command"
                " catches up"], EXIT_OPERATIONAL
    if isinstance(exc, UnknownName) and exc.kind in _OPTION_OF:
        return [f"Error: {_OPTION_OF[exc.kind]}: {exc}"], exc.exit_code
    if isinstance(exc, BadInput):
        lines = list(exc.errors)
        if exc.summary:
            lines.append(f"Error: {exc.summary}")
        elif lines:
            lines[-1] = f"Error: {lines[-1]}"
        return lines, exc.exit_code
    if isinstance(exc, BackflushError):
        return [f"Error: {_one_line(exc)}"], exc.exit_code
    names = {c.__name__ for c in type(exc).__mro__}
    if names & DB_ERROR_NAMES:
        msg = _one_line(exc)
        if "file is not a database" in msg:
            return [f"Error: not a backflush ledger (not a SQLite database): {msg}"], EXIT_USAGE
        if msg == "database is locked":  # SQLite's busy handler gave up
            return ["Error: database: the ledger stayed locked by another process writing it"
                    " (an import or a catch-up); BACKFLUSH_LOCK_TIMEOUT sets the wait"
                    " (seconds)"], EXIT_OPERATIONAL
        return [f"Error: database: {msg}"], EXIT_OPERATIONAL
    if _stored_text_not_a_number(exc):
        return ["Error: a stored quantity is not a number: the ledger's database was edited"
                " or damaged (backflush verify --deep says where; backflush rebuild rewrites"
                " the projections from the events)"], EXIT_USAGE
    if isinstance(exc, OSError):
        if exc.errno == errno.EPIPE:
            return ["Error: output closed before everything was written (broken pipe)"], \
                EXIT_OPERATIONAL
        where = f": {exc.filename}" if exc.filename else ""
        return [f"Error: {exc.strerror or _one_line(exc)}{where}"], EXIT_OPERATIONAL
    return None


def _stored_text_not_a_number(exc: BaseException) -> bool:
    """Whether ``exc`` is ``Decimal(text)`` refusing its text. Every quantity a command is
    given is validated before use (an import's lines, a policy file), so in a command this
    is a stored one: a projection row edited behind the ledger's back. (The on-hand and WIP
    readers say which row: ``ProjectionUnreadable``.)"""
    import decimal

    return isinstance(exc, decimal.InvalidOperation) and bool(exc.args) \
        and isinstance(exc.args[0], list) and decimal.ConversionSyntax in exc.args[0]


class BackflushGroup(click.Group):
    """The command group: maps every error a command raises to its exit code (one place)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            # Not click's "Aborted!", exit 1: 1 means "findings at or above --fail-on", and
            # a gate must not read an interrupted run as a verdict.
            said, code = interruption(exc)
            raise _Reported([f"Error: {said}"], code) from None
        except Exception as exc:  # noqa: BLE001  classified below; the rest is a real bug
            found = classify(exc)
            if found is None:
                raise
            if found[1] == EXIT_OPERATIONAL:
                _silence_stdout()
            raise _Reported(*found) from exc


def _silence_stdout() -> None:
    """After an output error, point stdout at /dev/null so the interpreter's final flush of
    what is still buffered cannot fail a second time (and print a traceback)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (CliRunner): nothing to do
        pass


def run(group: click.Group) -> None:
    """Console entry point: run the group, then flush stdout under the same error mapping."""
    try:
        group.main(prog_name="backflush")
    except SystemExit as exit_:
        code = exit_.code
    else:
        code = 0
    try:
        sys.stdout.flush()
    except OSError as exc:
        lines, code = classify(exc) or ([f"Error: {exc}"], EXIT_OPERATIONAL)
        _silence_stdout()
        _Reported(lines, code).show()
    sys.exit(code)


def parse_when(text: str | None, option: str) -> datetime | None:
    """``--at``/``--known-at``/``--to`` value (``--from``: a bare date is its start).

    The accepted formats are documented once, in `backflush.cli.dates`. None stays None:
    the API's default (``--at``: now).
    """
    if text is None:
        return None
    from backflush.cli.dates import DateError, parse_instant

    try:
        return parse_instant(text, start_of_day=option == "--from")
    except DateError as exc:
        raise Fail(f"{option}: {exc}") from None


def db_location(ctx: click.Context) -> str:
    """The ``--db`` value (or ``BACKFLUSH_DB`` / ``./backflush.db``)."""
    return ctx.find_root().obj["db"]


def api_ledger(ctx: click.Context) -> Any:
    """The ``backflush.Ledger`` named by ``--db`` (one per command, closed at its end)."""
    obj = ctx.find_root().obj
    if obj.get("api") is None:
        from backflush.api import Ledger

        obj["api"] = Ledger(obj["db"])
        ctx.call_on_close(obj["api"].close)
    return obj["api"]


def open_ledger(ctx: click.Context, *, readonly: bool = False) -> Any:
    """The event store under ``--db`` (``backflush.ledger.store.Ledger``) for commands that
    still need it; raises ``LedgerNotFound`` for a SQLite path that does not exist.
    ``readonly``: a SQLite ledger opened read-only (works on read-only media)."""
    return api_ledger(ctx).store(readonly=readonly)


def _ledger_files(db: str) -> list[Path]:
    if "://" in db or db == ":memory:":
        return []
    from pathlib import Path

    p = Path(db.removeprefix("sqlite:///"))
    return [p] + [Path(str(p) + s) for s in ("-wal", "-shm", "-journal")]


def check_output_path(ctx: click.Context, path: str, option: str) -> None:
    """Refuse an output path that is the ledger's database or one of its side files."""
    from pathlib import Path

    target = Path(path)
    resolved = target.resolve()
    for f in _ledger_files(db_location(ctx)):
        same = f.resolve() == resolved
        if not same and f.exists() and target.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(f, target)
        if same:
            raise BadInput(f"{option}: {path} is the ledger's database file ({f}); "
                           "refusing to overwrite it")


@contextlib.contextmanager
def output_file(ctx: click.Context, path: str | None, option: str, *,
                binary: bool = True) -> Iterator[IO[Any]]:
    """Where a command writes: stdout for None or "-", else ``path`` written through a
    temporary file in the same directory and renamed into place on success (a failure or a
    full disk never leaves a half-written file, and never the ledger overwritten)."""
    if path is None or path == "-":
        sys.stdout.flush()  # what click.echo wrote so far goes first
        stream = (getattr(sys.stdout, "buffer", None) or sys.stdout) if binary else sys.stdout
        yield stream
        stream.flush()
        return
    check_output_path(ctx, path, option)
    from pathlib import Path

    target = Path(path)
    if target.exists() and not target.is_file():  # a device or pipe: no rename possible
        with open(target, "wb" if binary else "w") as fh:
            yield fh
        return
    directory = target.parent if str(target.parent) else Path(".")
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise BadInput(f"{option}: {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) \
                as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@click.group(cls=BackflushGroup, epilog=EPILOG)
@click.option(
    "--db",
    default=None,
    metavar="PATH|URL",
    help="Ledger: a SQLite file (default ./backflush.db, env BACKFLUSH_DB) or postgresql:// URL.",
)
@click.version_option(version=__version__, prog_name="backflush")
@click.pass_context
def cli(ctx: click.Context, db: str | None) -> None:
    """backflush: an event-sourced shop-floor ledger for backflushing.

    Every query answers as of --at (default: now) and --known-at (default: everything
    recorded). Events dated more than 24 h after the moment they are imported are accepted
    with a warning naming FILE:LINE.
    """
    ctx.ensure_object(dict)
    ctx.obj["db"] = db or os.environ.get("BACKFLUSH_DB") or "./backflush.db"
    ctx.obj["db_given"] = db is not None
