"""The exceptions of backflush: one root, one subclass per kind of failure.

The command line maps each to an exit code in one place (`backflush.cli.main`):
bad input and unknown names are 2, operational failures 3.
"""

from __future__ import annotations


class BackflushError(Exception):
    """Root of every error backflush raises on purpose."""

    exit_code = 2


class BadInput(BackflushError):
    """Input that cannot be accepted: carries one `FILE:LINE: field: reason` per problem."""

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


class UnknownName(BackflushError):
    """A filter value (order, item, location, resource, event type) the ledger never saw."""

    def __init__(self, kind: str, value: str, suggestions: list[str] | tuple[str, ...] = ()):
        self.kind, self.value, self.suggestions = kind, value, list(suggestions)
        hint = f"; did you mean {' or '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown {kind} {value!r}{hint}")


class UnknownOrder(UnknownName):
    """An order id the ledger has never seen."""

    def __init__(self, value: str, suggestions: list[str] | tuple[str, ...] = ()):
        super().__init__("order", value, suggestions)


class LedgerNotFound(BackflushError):
    """A read on a ledger that does not exist (nothing is created by a read)."""


class LedgerTampered(BackflushError):
    """`verify` found a stored event, index row or projection that does not match its hash."""


class OperationalError(BackflushError):
    """The database is unavailable, locked too long, read-only or out of space."""

    exit_code = 3
