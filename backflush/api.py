"""The public Python API: ``backflush.Ledger``, the door the command line is a thin layer over.

In the style of ``sqlite_utils.Database``::

    import backflush
    ledger = backflush.Ledger("plant.db")          # a SQLite path or a postgresql:// URL
    ledger.import_files(["events.jsonl"])
    for row in ledger.onhand(item="WHS6"):
        print(row["location"], row["qty"])          # quantities are Decimals

Every query takes ``at`` (what had happened on the floor by then; default: now),
``known_at`` (what the ledger had recorded by then; default: everything) and, where a replay
decides the answer, ``policy`` (a ``backflush.Policy``, a policy file path or a dict of
production parameters: the what-if). Rows are plain dicts with DESIGN §7's keys; long results
(``events``, ``export``) are iterators with bounded memory.

Nothing is created or destroyed by accident: a read on a SQLite path that does not exist raises
``LedgerNotFound`` (no file is made), an import that fails removes the file it created, and a
filter value the ledger has never seen raises ``UnknownName`` with a did-you-mean. Errors are
``backflush.errors`` exceptions; the CLI maps them to exit codes in one place.

Heavy modules (pydantic, the replay engine, psycopg) are imported inside the methods that need
them, so that a short query stays a short process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta

from backflush.errors import BadInput, LedgerNotFound, UnknownName, UnknownOrder

TYPE_CHECKING = False  # not typing's: a query process never imports typing (~3 ms)
if TYPE_CHECKING:  # loaded when a policy is given (parsing it needs hashlib, re, pydantic)
    from pathlib import Path
    from typing import Any

    from backflush.policy import Policy
    from backflush.reports import ImportReport, Verification

__all__ = [
    "FUTURE_MARGIN",
    "FINDING_CODES",
    "ImportReport",
    "Ledger",
    "Policy",
    "Verification",
    "event_types",
    "safe_url",
]


# An event dated further ahead of the moment it is recorded than this is reported at import:
# a clock or a typo (2062 for 2026) would otherwise sit in the ledger, invisible to every
# default (``--at`` now) query until that day comes.
FUTURE_MARGIN = timedelta(hours=24)
FUTURE_SHOWN = 10  # future-dated events named one by one in an import's warnings
# Events in one import from which PostgreSQL's planner statistics are refreshed (Ledger.analyze):
# a few hundred ms at 1M events, against seconds of bad plans; below it the old ones serve.
ANALYZE_AFTER = 10_000

# The finding codes (DESIGN §5), kept here so validating ``--code`` needs no engine import.
FINDING_CODES = (
    "DOUBLE_FLUSH", "SCRAP_SHORTFALL", "OVER_CONSUMPTION", "UNDER_CONSUMPTION",
    "MANUAL_NOT_POSTED", "NEGATIVE_ON_HAND", "UNRESOLVED_BATCH", "RESIDUAL_AT_INPUT",
    "WIP_NOT_CLEARED", "OUT_OF_SEQUENCE", "POLICY_OVERLAP",
)
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}

_SIDE_FILES = ("-wal", "-shm", "-journal")


def __getattr__(name: str) -> Any:
    if name == "Policy":  # ``backflush.api.Policy`` as before, loaded on first use
        from backflush.policy import Policy

        return Policy
    # In backflush.reports (dataclasses): loaded when an import or a verify returns one, not
    # by every query process that imports this module.
    if name in ("ImportReport", "Verification"):
        from backflush import reports

        return getattr(reports, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def event_types() -> tuple[str, ...]:
    """The event type names (DESIGN §2), without loading the pydantic models."""
    from backflush.ledger.names import EVENT_TYPES

    return tuple(EVENT_TYPES)


def safe_url(url: str) -> str:
    """The ledger location without a password (for messages and report provenance)."""
    if "://" not in url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = parts.username or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def now() -> datetime:
    """The current time, tz-aware (the default ``at``)."""
    return datetime.now(UTC)


def when(value: datetime | date | str | None, name: str = "at",
         default: datetime | None = None) -> datetime | None:
    """A point in time for ``at``/``known_at``: an aware datetime, a date (the end of that day,
    UTC) or ISO 8601 text (a bare date likewise; a time without offset is UTC); None gives
    ``default``. A naive datetime is refused: the ledger never guesses a time zone for it."""
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise BadInput(f"{name}: a datetime without time zone: {value.isoformat()}")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(23, 59, 59, 999999), tzinfo=UTC)
    text = str(value).strip()
    try:
        if len(text) == 10:
            return when(date.fromisoformat(text), name)
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{name}: not an ISO 8601 date or timestamp: {text!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _us(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    from backflush.ledger.store import to_us

    return to_us(dt)


def suggestions(value: str, known: Iterable[str]) -> list[str]:
    """Did-you-mean candidates (``backflush.errors.close_names``)."""
    from backflush.errors import close_names

    return close_names(value, known)


def policy_params(policy: Policy | str | os.PathLike | dict | None) -> dict[str, Any] | None:
    """The engine's form of a policy given as a Policy, a file path or a dict (None: recorded)."""
    if policy is None:
        return None
    from backflush.policy import Policy

    if isinstance(policy, Policy):
        return policy.params
    if isinstance(policy, dict):
        return Policy.parse(policy).params
    return Policy.from_file(policy).params


def policy_overlaps(policy: Any) -> list[dict[str, Any]]:
    """POLICY_OVERLAP findings of a policy (a Policy, file path, dict; None: D365 defaults)."""
    return _overlaps(policy_params(policy))


def _overlaps(params: dict[str, Any] | None) -> list[dict[str, Any]]:
    from backflush.projections.findings import policy_overlaps as overlaps

    return [f.as_dict() for f in overlaps(params)]


class Ledger:
    """A backflush ledger: a SQLite file (default ``./backflush.db``) or a PostgreSQL URL.

    The store is opened on first use and closed by ``close()`` (or a ``with`` block). Reading
    methods never create a ledger: on a SQLite path that does not exist they raise
    ``LedgerNotFound``. Importing creates it, and removes it again if that import fails.
    """

    def __init__(self, path_or_url: str | os.PathLike | None = None):
        if path_or_url is None:
            path_or_url = os.environ.get("BACKFLUSH_DB") or "./backflush.db"
        self.url = os.fspath(path_or_url)
        self.is_sqlite = not self.url.startswith(("postgresql://", "postgres://"))
        self._store: Any = None

    # --- plumbing ---------------------------------------------------------------------------

    def _file(self) -> str | None:
        if not self.is_sqlite:
            return None
        p = self.url.removeprefix("sqlite:///")
        return None if p == ":memory:" or p.startswith("file:") else p

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for PostgreSQL or an in-memory database)."""
        p = self._file()
        if p is None:
            return None
        from pathlib import Path

        return Path(p)

    def files(self) -> list[Path]:
        """The SQLite file and its side files (-wal, -shm, -journal): what outputs must avoid."""
        p = self.path
        if p is None:
            return []
        return [p] + [type(p)(str(p) + s) for s in _SIDE_FILES]

    def exists(self) -> bool:
        """Whether there is a ledger to read (always True for PostgreSQL)."""
        p = self._file()  # os.path: a query need not load pathlib
        return p is None or os.path.exists(p)

    def __repr__(self) -> str:
        return f"<backflush.Ledger {safe_url(self.url)}>"

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the store's connections (the object can be used again: it reopens)."""
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def store(self, *, create: bool = False, readonly: bool = False) -> Any:
        """The underlying event store (``backflush.ledger.store.Ledger``), opened once.

        ``create`` allows making a new SQLite file; without it a missing path raises
        ``LedgerNotFound`` and nothing is written to disk. ``readonly`` opens a SQLite file
        read-only (the first opening decides).
        """
        if self._store is None:
            if not create and (not self.exists() or self._empty_file()):
                raise LedgerNotFound(
                    f"no ledger at {self.url}: import first or pass --db (or set BACKFLUSH_DB)"
                )
            if create:
                path = self._file()
                folder = os.path.dirname(path) if path is not None else ""
                if folder and not os.path.isdir(folder):
                    # sqlite3 would say only "unable to open database file" (exit 3).
                    raise LedgerNotFound(
                        f"cannot create a ledger at {path}: the folder {folder} does not"
                        " exist (check --db or BACKFLUSH_DB)")
            from backflush.ledger.store import Ledger as Store

            if not create and not readonly and self._read_only_media():
                readonly = True  # a ledger on read-only media (or a file we may not write)
            self._store = Store(self.url, readonly=readonly, create=create)
        return self._store

    def _empty_file(self) -> bool:
        """A SQLite path that is an empty file: no ledger, and a read must not write the
        database header into it (opening in WAL mode would)."""
        path = self._file()
        try:
            return path is not None and os.path.getsize(path) == 0
        except OSError:
            return False

    def _read_only_media(self) -> bool:
        """A SQLite ledger whose file or folder cannot be written (read-only media, a copy
        handed to an auditor with mode 444): it is opened read-only instead of failing."""
        path = self._file()
        if path is None or not os.path.exists(path):
            return False
        folder = os.path.dirname(path) or "."
        return not (os.access(path, os.W_OK) and os.access(folder, os.W_OK))

    def _discard_created(self) -> None:
        """Remove the SQLite file (and side files) this object created: a failed import."""
        self.close()
        for f in self.files():
            f.unlink(missing_ok=True)

    # --- writing ----------------------------------------------------------------------------

    def import_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportReport:
        """Import JSON Lines files (plain or gzip-compressed), all or nothing, idempotent by
        event id.

        Raises ``BadInput`` with one ``FILE:LINE: field: reason`` per problem (nothing is
        appended then). Events dated more than ``FUTURE_MARGIN`` ahead of now are accepted
        and listed in the report's ``warnings``.
        """
        from backflush.ledger.importer import run_import

        paths = [os.fspath(p) for p in paths]
        created = not self.exists()
        recorded = now()
        try:
            store = self.store(create=True)
            result = run_import(store, paths, dry_run=dry_run, progress=progress, now=recorded)
        except BaseException:
            if created:
                self._discard_created()
            raise
        if result.errors:
            if created:
                self._discard_created()
            n = result.problems
            listed = "" if n == len(result.errors) else f" (the first {len(result.errors)} listed)"
            raise BadInput(
                [str(e) for e in result.errors],
                summary=f"{n} problem{'s' if n != 1 else ''}{listed}; nothing appended",
            )
        if dry_run and created:
            self._discard_created()
        if result.appended and not dry_run:
            # After the events' transaction committed, so queries never pay catch-up; a crash
            # here loses nothing (the next command catches up).
            from backflush.projections.materialise import catch_up

            try:
                if result.appended >= ANALYZE_AFTER:
                    store.analyze(("bf_events", "bf_chain"))
                # The import's connection holds a 32 MiB page cache: let it go before the
                # catch-up, so the two do not add up in one process's memory.
                store.connections.release_idle()
                _return_free_memory()
                catch_up(store)
            except KeyboardInterrupt as exc:
                # The events are committed whatever happens now: say so, not "aborted".
                from backflush.errors import ImportInterrupted, Terminated

                raise ImportInterrupted(result.appended, result.duplicates,
                                        getattr(result, "warnings", None),
                                        terminated=isinstance(exc, Terminated)) from None
            except Exception as exc:
                # Said as for an interruption: exit 3 alone reads as "nothing imported".
                from backflush.errors import CatchUpFailed, is_operational

                if not is_operational(exc):
                    raise  # a bug: its traceback, not a one-liner
                raise CatchUpFailed(result.appended, result.duplicates,
                                    getattr(result, "warnings", None), exc) from exc
        from backflush.reports import ImportReport

        report = ImportReport(result.appended, result.duplicates, result.lines, dry_run)
        report.warnings.extend(getattr(result, "warnings", None) or [])
        if not report.warnings:
            report.warnings.extend(self._future_warnings(paths, recorded, dry_run))
        return report

    def import_events(
        self,
        events: Iterable[dict[str, Any] | str | bytes],
        *,
        source: str = "<events>",
        dry_run: bool = False,
    ) -> ImportReport:
        """Import events given as dicts or JSON lines (one event each), like a file.

        Problems name ``source`` and the event's 1-based position as its line.
        """
        import tempfile

        import orjson

        fd, tmp = tempfile.mkstemp(prefix="backflush-events-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "wb") as fh:
                for ev in events:
                    if isinstance(ev, dict):
                        line = orjson.dumps(ev, default=str)
                    else:
                        line = ev.encode() if isinstance(ev, str) else bytes(ev)
                        line = line.strip() or b"{}"  # keep positions: a blank is an error
                    fh.write(line.replace(b"\n", b" ") + b"\n")
            try:
                return self.import_files([tmp], dry_run=dry_run)
            except BadInput as exc:
                raise BadInput([e.replace(tmp, source) for e in exc.errors],
                               summary=exc.summary) from None
        finally:
            os.unlink(tmp)

    def _future_warnings(self, paths: list[str], recorded: datetime, dry_run: bool) -> list[str]:
        """``FILE:LINE: at: ...`` for events dated more than FUTURE_MARGIN after recording.

        At most ``FUTURE_SHOWN`` lines, then one line counting the rest: a simulated or
        planned history may hold thousands, and the warning must stay readable.
        """
        limit = recorded + FUTURE_MARGIN
        total = None
        if not dry_run and self._store is not None:
            # Cheap check first (the recorded-time index): did this import store any?
            with self._store.transaction(commit=False) as cur:
                row = cur.execute(
                    "SELECT COUNT(*) AS n FROM bf_events WHERE rec_us = ? AND at_us > ?",
                    (_us(recorded), _us(limit)),
                ).fetchone()
            total = row["n"]
            if not total:
                return []
        import orjson

        from backflush.ledger.importer import read_lines

        out: list[str] = []
        seen = 0
        for path in paths:
            if path == "-":  # standard input cannot be read twice: only counted, below
                continue
            # (as the import read it: gzip-compressed or not, numbered as its lines)
            lines = read_lines(path)
            try:
                for n, raw in lines:
                    if raw is None or b'"at"' not in raw:
                        continue
                    try:
                        at = datetime.fromisoformat(orjson.loads(raw)["at"])
                    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                        continue
                    if at.tzinfo is None or at <= limit:
                        continue
                    seen += 1
                    if len(out) < FUTURE_SHOWN:
                        out.append(f"{path}:{n}: at: {at.isoformat()} is "
                                   f"{_days(at - recorded)} ahead of its recording; it shows "
                                   "only in queries --at or after it")
                    elif total is not None:
                        break
                else:
                    continue
                break
            except OSError:
                continue
            finally:
                lines.close()
        rest = (total if total is not None else seen) - len(out)
        if rest > 0:
            more = " more" if out else ""  # none named: standard input is not read twice
            out.append(f"{rest}{more} event{'s' if rest != 1 else ''} dated more than "
                       f"{_days(FUTURE_MARGIN)} ahead of their recording")
        return out

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Drop every projection and rebuild it from the event log; returns events applied."""
        from backflush.projections import materialise

        return materialise.rebuild(self.store(), progress) if progress else \
            materialise.rebuild(self.store())

    # --- names the ledger has seen (filters are checked against them) -----------------------

    def _master_values(self, types: list[str], pick: Callable[[dict], Iterable[str]]) -> set[str]:
        from backflush.ledger.codec import payload_of

        out: set[str] = set()
        for r in self.store().iter_rows(types=types, by="seq"):
            out.update(v for v in pick(payload_of(r["state"], r["seq"])) if v)
        return out

    def orders(self) -> list[str]:
        """Every production order the ledger has seen created."""
        with self.store().transaction(commit=False) as cur:
            rows = cur.execute(
                "SELECT DISTINCT ord FROM bf_events WHERE type = 'OrderCreated'"
            ).fetchall()
        return sorted(r["ord"] for r in rows)

    def _check_order(self, order: str) -> None:
        with self.store().transaction(commit=False) as cur:
            row = cur.execute(
                "SELECT 1 AS x FROM bf_events WHERE ord = ? AND type = 'OrderCreated' LIMIT 1",
                (order,),
            ).fetchone()
        if row is None:
            raise UnknownOrder(order, suggestions(order, self.orders()))

    def items(self) -> set[str]:
        """Every item the ledger has seen defined."""
        return self._master_values(["ItemDefined"], lambda e: [e.get("item")])

    def resources(self) -> set[str]:
        """Every resource the ledger has seen defined."""
        return self._master_values(["ResourceDefined"], lambda e: [e.get("resource")])

    def locations(self) -> set[str]:
        """Every location the ledger has seen: resources', BOM lines', parameters', stock's."""

        def pick(e: dict) -> list[str]:
            vals = [e.get("input_location"), e.get("output_location"),
                    e.get("default_input_location")]
            vals += [ln.get("location") for ln in e.get("lines") or ()]
            return vals

        out = self._master_values(["ResourceDefined", "BomDefined", "ProductionParametersSet"],
                                  pick)
        out.add("BACKFLUSH")  # default_input_location when no parameters are recorded
        try:
            with self.store().transaction(commit=False) as cur:
                rows = cur.execute("SELECT DISTINCT location FROM bf_onhand_keys").fetchall()
            out.update(r["location"] for r in rows)
        except Exception:  # noqa: BLE001  projections not materialised: scan the stock moves
            out |= self._master_values(
                ["InventoryReceived", "InventoryTransferred", "InventoryCounted", "Picked", "Put",
                 "ReportedAsFinished", "MaterialConsumed"],
                lambda e: [e.get("location"), e.get("from_location"), e.get("to_location")],
            )
        return out

    def _check_name(self, kind: str, value: str, known: Callable[[], Iterable[str]]) -> None:
        names = set(known())
        if value not in names:
            raise UnknownName(kind, value, suggestions(value, names))

    @staticmethod
    def _check_static(kind: str, value: str, known: Iterable[str]) -> None:
        known = list(known)
        if value not in known:
            raise UnknownName(kind, value, suggestions(value, known))

    # --- reading ----------------------------------------------------------------------------

    def count(self) -> int:
        """Number of events recorded."""
        return self.store().count()

    def events(
        self,
        *,
        order: str | None = None,
        type: str | None = None,  # noqa: A002  (the DESIGN's filter name)
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The events the ledger holds, in ``at`` order (ties: recording order), streamed.

        Each row: seq, stream, version, at, recorded, type, id, order, event (the payload).
        """
        if type is not None:
            self._check_static("event type", type, event_types())
        store = self.store()
        if order is not None:
            self._check_order(order)
        at, known_at = when(at, "at", now()), when(known_at, "known_at")
        return _event_rows(store, order, type, _us(at), _us(known_at))

    def export(self, *, order: str | None = None) -> Iterator[bytes]:
        """The ledger's events as JSON Lines (bytes without newline), in recording order.

        Importing them into an empty ledger gives the same events back (same ids, values).
        """
        store = self.store()
        if order is not None:
            self._check_order(order)
        return _export_lines(store, order)

    def _query(self, at: Any, known_at: Any, policy: Any, order: str | None = None
               ) -> tuple[Any, datetime, datetime | None, dict[str, Any] | None]:
        """What every query starts with, in this order: the policy validated, the store
        opened, the order known, the times resolved (``at`` defaults to now)."""
        params = policy_params(policy)
        store = self.store()
        if order is not None:
            self._check_order(order)
        return store, when(at, "at", now()), when(known_at, "known_at"), params

    def onhand(
        self,
        *,
        item: str | None = None,
        location: str | None = None,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> list[dict[str, Any]]:
        """On-hand rows (item, location, batch, lp, qty) as of ``at``, in transit included."""
        store, at, known_at, params = self._query(at, known_at, policy)
        from backflush.projections import asof

        rows = asof.onhand(store, at, known_at, params, item=item, location=location)
        if not rows:
            if item is not None:
                self._check_name("item", item, self.items)
            if location is not None:
                self._check_name("location", location, self.locations)
        return rows

    def wip(
        self,
        *,
        resource: str | None = None,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> list[dict[str, Any]]:
        """WIP rows per resource location: staged material, units waiting between operations."""
        store, at, known_at, params = self._query(at, known_at, policy)
        from backflush.projections import asof

        rows = asof.wip(store, at, known_at, params, resource=resource)
        if not rows and resource is not None:
            self._check_name("resource", resource, self.resources)
        return rows

    def consumption(
        self,
        order: str,
        *,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> list[dict[str, Any]]:
        """Consumption per BOM line of ``order``: expected, posted, by trigger, variance."""
        store, at, known_at, params = self._query(at, known_at, policy, order)
        from backflush.projections import asof

        return asof.consumption(store, order, at, known_at, params)

    def hours(
        self,
        *,
        order: str | None = None,
        resource: str | None = None,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> list[dict[str, Any]]:
        """Standard vs reported hours per order, operation and resource."""
        store, at, known_at, params = self._query(at, known_at, policy, order)
        from backflush.projections import asof

        rows = asof.hours(store, order, resource, at, known_at, params)
        if not rows and resource is not None:
            self._check_name("resource", resource, self.resources)
        return rows

    def iter_hours(
        self,
        *,
        resource: str | None = None,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """`hours` of every order as an iterator: the same rows in the same order, each
        yielded as soon as it is final, so a long answer starts at once."""
        store, at, known_at, params = self._query(at, known_at, policy)
        from itertools import chain

        from backflush.projections import asof

        rows = asof.iter_hours_by_order(store, resource, at, known_at, params)
        first = next(rows, None)
        if first is None:
            if resource is not None:
                self._check_name("resource", resource, self.resources)
            return iter(())
        return chain([first], rows)

    def _finding_code(self, code: str | None) -> str | None:
        if code is None:
            return None
        upper = code.upper()
        self._check_static("finding code", upper, FINDING_CODES)
        if upper == "POLICY_OVERLAP":
            raise BadInput("--code: POLICY_OVERLAP is reported by `backflush policy check`")
        return upper

    def findings(
        self,
        *,
        order: str | None = None,
        code: str | None = None,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> list[dict[str, Any]]:
        """Findings by replay (code, severity, order, line, item, qty, events, message).

        Always a replay of the whole ledger: negative on-hand and batch resolution depend on
        other orders. ``code`` is case-insensitive; POLICY_OVERLAP comes from
        ``policy_overlaps``.
        """
        code = self._finding_code(code)
        store, at, known_at, params = self._query(at, known_at, policy, order)
        return [f.as_dict() for f in _findings(store, at, known_at, params, order, code)]

    def iter_findings(
        self,
        *,
        code: str | None = None,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """`findings` of the whole ledger as an iterator: the same findings in the same
        order, yielded while the replay runs whenever that order allows."""
        code = self._finding_code(code)
        store, at, known_at, params = self._query(at, known_at, policy)
        from backflush.projections import asof

        found = asof.iter_findings(store, at, known_at, params, [code] if code else None)
        return (f.as_dict() for f in found)

    def audit(
        self,
        order: str,
        *,
        at: datetime | date | str | None = None,
        known_at: datetime | date | str | None = None,
        policy: Any = None,
        timeline: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """One order's history replayed step by step: flushes, running totals, findings.

        ``timeline``: a callable handed each timeline entry as the replay makes it, instead
        of the list under ``"timeline"`` (then None). For an order whose timeline is too
        large to hold: hundreds of BOM lines times thousands of events.
        """
        store, at, known_at, params = self._query(at, known_at, policy, order)
        return audit_of(store, order, at, known_at, params, timeline)

    def recorded_policy(
        self, *, at: datetime | None = None, known_at: datetime | None = None
    ) -> dict[str, Any] | None:
        """The ProductionParametersSet in force (None: none recorded, the D365 defaults)."""
        from backflush.projections import materialise as mat

        last = None
        for ev in mat.events_for_replay(
            self.store(), types=["ProductionParametersSet"],
            at_lte=_us(when(at, "at", now())), rec_lte=_us(when(known_at, "known_at")),
        ):
            last = ev
        return last

    def policy_overlaps(
        self, policy: Any = None, *, at: datetime | None = None, known_at: datetime | None = None
    ) -> list[dict[str, Any]]:
        """POLICY_OVERLAP findings of ``policy``, else of the parameters recorded in force."""
        if policy is None:
            return _overlaps(self.recorded_policy(at=at, known_at=known_at))
        return policy_overlaps(policy)

    def verify(self, **options: Any) -> Verification:
        """Check every stream's hash chain: nothing altered, removed or reordered.

        Returns a ``Verification`` (``.ok``, ``.checked``, ``.problems``); extra keyword
        options go to ``backflush.ledger.integrity.verify``.
        """
        from backflush.ledger.integrity import verify

        result = verify(self.store(), **options)
        if isinstance(result, tuple):
            checked, problems = result
            from backflush.reports import Verification

            return Verification(checked, list(problems))
        return result


def _days(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 72 else f"{hours / 24:.0f} days"


def _event_rows(store: Any, order: str | None, type_: str | None, at_us: int | None,
                known_us: int | None) -> Iterator[dict[str, Any]]:
    from backflush.ledger.codec import payload_of
    from backflush.ledger.store import from_us

    # Pages by ``at`` are separate snapshots: without a last position an import committed
    # meanwhile would show in part (its events after the page reached only).
    last_rec, recorded = None, ""  # an import's events share one recorded time
    for r in store.iter_rows(order=order, types=[type_] if type_ else None, at_lte=at_us,
                             rec_lte=known_us, seq_lte=store.max_seq()):
        payload = payload_of(r["state"], r["seq"])
        if r["rec_us"] != last_rec:
            last_rec = r["rec_us"]
            recorded = from_us(last_rec).isoformat()
        yield {
            "seq": r["seq"],
            "stream": r["stream"],
            "version": r["version"],
            "at": payload["at"],
            "recorded": recorded,
            "type": r["type"],
            "id": r["id"],
            "order": r["ord"],
            "event": payload,
        }


def _export_lines(store: Any, order: str | None) -> Iterator[bytes]:
    import orjson

    from backflush.ledger.codec import payload_of

    for row in store.iter_rows(order=order, by="seq"):
        payload = payload_of(row["state"], row["seq"])
        head = {"type": payload["type"], "at": payload["at"], "id": payload["id"]}
        head.update((k, v) for k, v in payload.items() if k not in head)
        yield orjson.dumps(head)


def _findings(store: Any, at: datetime | None, known_at: datetime | None,
              params: dict[str, Any] | None, order: str | None, code: str | None) -> list[Any]:
    from backflush.projections import asof

    if order is not None and params is None and known_at is None:
        return asof.order_findings(store, order, at, [code] if code else None)
    found = asof.findings_replay(store, at, known_at, params, [code] if code else None)
    return found if order is None else [f for f in found if f.order == order]


def audit_of(store: Any, order: str, at: datetime | None = None,
             known_at: datetime | date | str | None = None,
             params: dict[str, Any] | None = None,
             timeline: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The audit of one order on a store; the fast order-local path unless a policy or
    ``known_at`` asks for a replay of what was known. ``timeline``: as ``Ledger.audit``."""
    from backflush.projections import asof
    from backflush.projections import audit as A
    from backflush.projections import materialise as mat

    if params is None and known_at is None:
        from backflush.ledger.names import MASTER_TYPES
        from backflush.ledger.store import to_us

        mat.catch_up(store)
        at_us = to_us(at) if at is not None else None
        events = list(asof.order_events(store, order, at, None))
        tracked = {e["item"] for e in events
                   if e["type"] == "ItemDefined" and e.get("tracking") in ("batch", "serial")}
        seqs = {e["seq"]: e["id"] for e in events if e["type"] not in MASTER_TYPES}
        # The takes with no batch of tracked items now; every posting as the replay goes.
        unbatched = mat.flushes_of(store, order, at_us, items=tracked)
        unresolved_takes = {(r["event_id"], r["item"], r["location"]) for r in unbatched
                            if r["qty"] > 0}

        def global_findings(o: Any) -> list[Any]:
            glob = A.unresolved_from_rows(order, unbatched, tracked)
            # as the engine decides: an unresolved take is not also NEGATIVE_ON_HAND
            takes = [t for t in A.negative_takes(store, seqs)
                     if not (t["batch"] is None
                             and (t["event_id"], t["item"], t["location"]) in unresolved_takes)]
            glob += A.negative_findings(order, takes, o.all_lines())
            return glob

        pos = {e["id"]: (to_us(e["at"]), e["seq"]) for e in events}

        def onhand_at(item: str, location: str, event_id: str, batch: Any = ...) -> Any:
            return A.onhand_after(store, item, location, *pos[event_id], batch)

        # (a Reversal is stored under its target's order: the order's events hold them all)
        reversible = {e["reverses"] for e in events if e["type"] == "Reversal"}
        result = A.audit_order(events, order, None, mat.iter_flushes_of(store, order, at_us),
                               global_findings, onhand_at, timeline, reversible)
    else:
        engine_events = mat.events_for_replay(store, at_lte=_us(at), rec_lte=_us(known_at))
        result = A.audit_order(engine_events, order, params, timeline=timeline,
                               reversible=mat.reversal_targets(store))
    if result is None:
        if at is None and known_at is None:
            raise UnknownOrder(order)
        # The ledger knows the order (Ledger.audit checked), only not by then.
        def text(v: Any) -> str:
            return v.isoformat() if hasattr(v, "isoformat") else str(v)

        by = f"by {text(at)}" if at is not None else "yet"
        if known_at is not None:
            by += f", as recorded by {text(known_at)}"
        raise BadInput(f"order {order!r} had not been created {by}")
    return result



def _return_free_memory() -> None:
    """Hand the heap the import freed back to the system (glibc keeps it otherwise).

    Measured at 1M events: the import's own process catches up afterwards, and without
    this its peak RSS was the ingest's leftover (~40 MB of freed page cache and rows, held
    in malloc's free lists) plus the replay's, 152 MB against 109 MB for a rebuild alone.
    """
    import sys

    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        pass
