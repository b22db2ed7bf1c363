"""The exceptions of backflush: one root, one subclass per kind of failure.

The command line maps each to an exit code in one place (``backflush.cli.app``): bad input,
unknown names, a missing ledger and a failed verification are 2; operational failures
(database unavailable, locked too long, read-only, disk full, output not writable) are 3.
Exit 1 is kept for "findings at or above ``--fail-on``", never for an error.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:
    from collections.abc import Iterable


class BackflushError(Exception):
    """Root of every error backflush raises on purpose."""

    exit_code = 2


class BadInput(BackflushError):
    """Input that cannot be accepted: carries one ``FILE:LINE: field: reason`` per problem.

    ``summary`` (optional) is the one-line conclusion printed after the problems.
    """

    def __init__(self, errors: list[str] | str, summary: str | None = None):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.summary = summary
        super().__init__("\n".join(self.errors))


class UnknownName(BadInput):
    """A filter value (order, item, location, resource, event type, code) never seen."""

    def __init__(self, kind: str, value: str, suggestions: list[str] | tuple[str, ...] = ()):
        self.kind, self.value, self.suggestions = kind, value, list(suggestions)
        hint = f"; did you mean {' or '.join(map(repr, self.suggestions))}?" \
            if self.suggestions else "; the ledger has never seen it"
        super().__init__(f"unknown {kind} {value!r}{hint}")


def close_names(value: str, known: Iterable[str | None], n: int = 3) -> list[str]:
    """Did-you-mean candidates for ``value`` among ``known``: the names equal to it but for
    case, else up to ``n`` close spellings (difflib's ratio, at least 0.6), the closest
    first and, among equally close ones, the one sharing the longest start with it.

    Ids differ by a digit or two: ``P000500`` is as close to ``P0020500`` as to
    ``P0005000`` by the ratio alone, and difflib then prefers the larger string."""
    names = sorted({k for k in known if k is not None})
    low = value.lower()
    same = [k for k in names if k.lower() == low]
    if same:
        return same[:n]
    from difflib import SequenceMatcher
    from os.path import commonprefix

    matcher = SequenceMatcher()
    matcher.set_seq2(low)
    scored = []
    for k in names:
        matcher.set_seq1(k.lower())
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:
                scored.append((-ratio, -len(commonprefix([k.lower(), low])), k))
    scored.sort()
    return [k for _, _, k in scored[:n]]


class UnknownOrder(UnknownName):
    """An order id the ledger has never seen."""

    def __init__(self, value: str, suggestions: list[str] | tuple[str, ...] = ()):
        super().__init__("order", value, suggestions)


class LedgerNotFound(BackflushError):
    """A read on a ledger that does not exist (nothing is created by a read)."""


class DriverMissing(BackflushError):
    """A ``postgresql://`` ledger on an installation without PostgreSQL support (psycopg):
    what was installed cannot open what was asked for, exit 2 as other usage errors."""


class LedgerTampered(BackflushError):
    """``verify`` found a stored event, index row or projection that does not match its hash."""


class StoredEventUnreadable(LedgerTampered):
    """A stored event whose state does not read as a ledger event: the database was edited
    or damaged behind the ledger's back (``verify`` names every such place). Raised where
    an event is read, with its seq, instead of the parser's traceback."""

    def __init__(self, seq: int | None):
        self.seq = seq
        where = "a stored event" if seq is None else f"the stored event at seq {seq}"
        super().__init__(f"{where} does not read as a ledger event: the database was edited"
                         " or damaged (backflush verify says where)")


class ProjectionUnreadable(LedgerTampered):
    """A stored projection row whose quantity is not a number: the database was edited or
    damaged behind the ledger's back. ``verify --deep`` reports each such row; a query
    that meets one stops with this (``rebuild`` rewrites the projections from the events)."""

    def __init__(self, table: str, key: dict, value: object):
        self.table, self.key, self.value = table, dict(key), value
        where = " ".join(f"{k}={'-' if v is None else v}" for k, v in self.key.items())
        super().__init__(f"the projection {table} holds {value!r} for {where}, not a"
                         " quantity: the database was edited or damaged (backflush rebuild"
                         " rewrites the projections from the events)")


class OperationalError(BackflushError):
    """The database is unavailable, locked too long, read-only or out of space; or an output
    could not be written."""

    exit_code = 3


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) after an import's events were committed, while the projections were
    being brought up to date: the events are recorded (``appended``, ``duplicates``); the
    next command that reads the ledger finishes the catch-up. Still a ``KeyboardInterrupt``,
    so callers that stop on one keep doing so. ``terminated``: it was SIGTERM
    (``Terminated``), not Ctrl-C."""

    def __init__(self, appended: int, duplicates: int, warnings: list[str] | None = None,
                 terminated: bool = False):
        self.appended, self.duplicates = appended, duplicates
        self.warnings = list(warnings or [])
        self.terminated = terminated
        super().__init__(f"interrupted after {appended} events were recorded")


class CatchUpFailed(OperationalError):
    """An import's events were committed, then bringing the projections up to date failed
    for an operational reason (``cause``: the database went away, a lock wait ran out, the
    disk filled). The events are recorded (``appended``, ``duplicates``); the next command
    that reads the ledger catches up. Exit 3, as its cause."""

    def __init__(self, appended: int, duplicates: int, warnings: list[str] | None,
                 cause: BaseException):
        self.appended, self.duplicates = appended, duplicates
        self.warnings = list(warnings or [])
        self.cause = cause
        said = " ".join(str(cause).split()) or type(cause).__name__
        super().__init__(
            f"{appended} appended, {duplicates} duplicates (recorded); bringing the projections"
            f" up to date then failed: {said}; the next command catches up")


# Database errors by class name: sqlite3's and psycopg's share these names, and naming them
# keeps psycopg (~150 ms to import) out of processes that never touch PostgreSQL.
DB_ERROR_NAMES = frozenset({
    "OperationalError", "InterfaceError", "DatabaseError", "InternalError", "PersistenceError",
    "PoolTimeout", "PoolError", "ConnectionTimeout"})


def is_operational(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the machine around backflush (database, disk, lock),
    not of its input or its code: what the command line reports as exit 3."""
    if isinstance(exc, BackflushError):
        return exc.exit_code == OperationalError.exit_code
    if isinstance(exc, OSError):
        return True
    return bool({c.__name__ for c in type(exc).__mro__} & DB_ERROR_NAMES)


class Terminated(KeyboardInterrupt):
    """SIGTERM to the command line (a supervisor stopping it, ``timeout``, ``docker stop``),
    raised where it lands and handled as Ctrl-C is: what was committed stays, a long
    catch-up keeps its progress, and the command exits 143 (128 + SIGTERM)."""


def interruption(exc: BaseException) -> tuple[str, int]:
    """How the command line reports a ``KeyboardInterrupt``: ("interrupted", 130) for
    Ctrl-C, ("terminated", 143) for SIGTERM."""
    if isinstance(exc, Terminated) or getattr(exc, "terminated", False):
        return "terminated", 143
    return "interrupted", 130
